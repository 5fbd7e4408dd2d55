"""The client-side identity plugins MLflow loads through its entry points.

Standard library only at import time: MLflow registers these classes while ``import mlflow``
runs. Each one degrades to doing nothing (with one warning) rather than break a user's run.

- :class:`AuthorRunContext` (``mlflow.run_context_provider``): direct mode, the tracking URI is a
  database: every fluent run gets ``mlflow.user`` and ``team.author``.
- :class:`AuthorHeaderProvider` (``mlflow.request_header_provider``): the author header on
  requests to the tracking and registry servers a client was asked to talk to, however the URL
  was given (``MlflowClient(tracking_uri=url)``, ``registry_uri=url``, ``mlflow.set_tracking_uri``,
  ``MLFLOW_TRACKING_URI``), and to no other host (``MLFLOW_TEAM_AUTHOR_HOSTS`` overrides).
- :class:`TeamRequestAuthProvider` (``mlflow.request_auth_provider``, ``MLFLOW_TRACKING_AUTH=team``):
  signs each request to those servers with the author's personal key.
"""

from __future__ import annotations

import fnmatch
import logging
import sys
import time
from urllib.parse import unquote, urlsplit

_logger = logging.getLogger(__name__)
_warned: set[str] = set()


def _warn_once(key: str, message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        _logger.warning(message, *args)


def _http_host(uri: str | None) -> str | None:
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    return _netloc(parts)


def _netloc(parts) -> str:
    host = parts.hostname.lower()
    default = 443 if parts.scheme == "https" else 80
    return f"{host}:{parts.port or default}"


#: MLflow's REST stores for http(s) tracking and registry URIs (exact classes: Databricks' and
#: other plugins' subclasses talk to servers that are no team server).
_REST_STORES = (
    ("mlflow.store.tracking.rest_store", "RestStore"),
    ("mlflow.store.model_registry.rest_store", "RestStore"),
)
#: ``host:port`` of every server one of this process's MLflow clients was built to talk to: a
#: tracking or registry URI given to ``MlflowClient(...)``, set globally or in the environment.
_asked: set[str] = set()


def _allowed(destination: str, asked: bool = False) -> bool:
    """May the author headers go to ``destination`` (an http(s) URL)?

    ``asked``: one of MLflow's REST stores, built for this very host, is making the request.
    """
    from mlflow_team import config

    parts = urlsplit(destination)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return False
    netloc = _netloc(parts)
    patterns = config.author_hosts()
    if patterns is not None:
        return any(
            fnmatch.fnmatchcase(netloc, p) or fnmatch.fnmatchcase(parts.hostname.lower(), p)
            for p in patterns
        )
    # Default: the tracking and registry servers a client of this process was asked to talk to,
    # however the URL was given (MlflowClient(tracking_uri=...), registry_uri=..., globally).
    if asked:
        _asked.add(netloc)
        return True
    if netloc in _asked:
        return True
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return False
    in_use = {_http_host(mlflow.get_tracking_uri())}
    try:
        in_use.add(_http_host(mlflow.get_registry_uri()))
    except Exception:  # noqa: BLE001
        pass
    return netloc in in_use


def _current_request(depth: int = 32) -> tuple[str | None, bool]:
    """``(destination, asked)`` for the request MLflow's ``http_request`` is about to make: a
    header provider is told neither.

    The destination is the ``host_creds`` in a caller's frame (when it cannot be found nothing
    is sent); ``asked`` says that further up, one of MLflow's REST stores built for that host is
    the caller. Requests whose URL comes from elsewhere (an ``http`` artifact location a server
    handed out, a deployments client, a judge's endpoint) are not a store's.
    """
    frame = sys._getframe(2)
    destination = None
    stores = tuple(
        cls for cls in (getattr(sys.modules.get(m), n, None) for m, n in _REST_STORES) if cls is not None
    )
    for _ in range(depth):
        if frame is None:
            break
        scope = frame.f_locals
        if destination is None:
            host = getattr(scope.get("host_creds"), "host", None)
            destination = host if isinstance(host, str) else None
        elif type(scope.get("self")) in stores:
            return destination, _same_host(scope["self"], destination)
        frame = frame.f_back
    return destination, False


def _same_host(store, destination: str) -> bool:
    own = _http_host(getattr(store.get_host_creds(), "host", None))
    return own is not None and own == _http_host(destination)


class AuthorRunContext:
    """``mlflow.user`` and ``team.author`` on every fluent run when the tracking URI is a database."""

    def in_context(self) -> bool:
        try:
            from mlflow_team import config

            if not config.client_identity_on():
                return False
            import mlflow

            return _http_host(mlflow.get_tracking_uri()) is None and not mlflow.get_tracking_uri().startswith("databricks")
        except Exception as exc:  # noqa: BLE001
            _warn_once("context", "mlflow-team: author tags skipped: %s", exc)
            return False

    def tags(self) -> dict[str, str]:
        from mlflow_team.identity import whoami

        name = whoami.author().name
        return {"mlflow.user": name, "team.author": name}


class AuthorHeaderProvider:
    """The (unsigned) author header, sent only to the servers a client was asked to talk to."""

    def in_context(self) -> bool:
        try:
            from mlflow_team import config

            if not config.client_identity_on():
                return False
            destination, asked = _current_request()
            return destination is not None and _allowed(destination, asked)
        except Exception as exc:  # noqa: BLE001
            _warn_once("header", "mlflow-team: author header skipped: %s", exc)
            return False

    def request_headers(self) -> dict[str, str]:
        from mlflow_team.identity import signing, whoami

        return {signing.AUTHOR_HEADER: signing.encode_author(whoami.author().name)}


class AuthorSigner:
    """A ``requests`` auth hook: sign author, time, method, path and body digest."""

    def __call__(self, request):
        try:
            self._sign(request)
        except Exception as exc:  # noqa: BLE001 - an unsigned request beats a crashed run
            _warn_once("sign", "mlflow-team: request not signed: %s", exc)
        return request

    @staticmethod
    def _sign(request) -> None:
        from mlflow_team import config
        from mlflow_team.identity import signing, whoami

        if not config.client_identity_on():
            return
        destination, asked = _current_request()  # requests' auth hook, called by http_request
        if not _allowed(request.url, asked and _http_host(destination) == _http_host(request.url)):
            return
        key = whoami.signing_key()
        if key is None:
            _warn_once(
                "nokey",
                "mlflow-team: MLFLOW_TRACKING_AUTH=team but no key is configured (set %s or %s); "
                "requests go out unsigned",
                config.AUTHOR_KEY_ENV,
                config.AUTHOR_KEY_FILE_ENV,
            )
            return
        parts = urlsplit(request.url)
        headers = signing.sign_headers(
            key.secret,
            whoami.author().name,
            time.time(),
            request.method,
            unquote(parts.path),  # the server sees the decoded path
            parts.query,
            request.body,
        )
        request.headers.update(headers)


class TeamRequestAuthProvider:
    """``MLFLOW_TRACKING_AUTH=team`` selects the signer."""

    def get_name(self) -> str:
        return "team"

    def get_auth(self):
        return AuthorSigner()
