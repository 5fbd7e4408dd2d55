"""The client-side identity plugins MLflow loads through its entry points.

Standard library only at import time: MLflow registers these classes while ``import mlflow``
runs. Each one degrades to doing nothing (with one warning) rather than break a user's run.

- :class:`AuthorRunContext` (``mlflow.run_context_provider``): direct mode, the tracking URI is a
  database: every fluent run gets ``mlflow.user`` and ``team.author``.
- :class:`AuthorHeaderProvider` (``mlflow.request_header_provider``): the author header on
  requests to allowed HTTP tracking servers only.
- :class:`TeamRequestAuthProvider` (``mlflow.request_auth_provider``, ``MLFLOW_TRACKING_AUTH=team``):
  signs each request to an allowed server with the author's personal key.
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


def _allowed(destination: str) -> bool:
    """May the author headers go to ``destination`` (an http(s) URL)?"""
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
    # Default: the http(s) tracking and registry servers this process is configured to use.
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return False
    in_use = {_http_host(mlflow.get_tracking_uri())}
    try:
        in_use.add(_http_host(mlflow.get_registry_uri()))
    except Exception:  # noqa: BLE001
        pass
    return netloc in in_use


def _destination_of_current_request() -> str | None:
    """The host MLflow's ``http_request`` is about to call: a header provider is not told it.

    Found in the caller's frame (``host_creds``); when it cannot be found nothing is sent.
    """
    frame = sys._getframe(1)
    for _ in range(8):
        frame = frame.f_back
        if frame is None:
            return None
        creds = frame.f_locals.get("host_creds")
        host = getattr(creds, "host", None)
        if isinstance(host, str):
            return host
    return None


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
    """The (unsigned) author header, sent only to allowed HTTP tracking servers."""

    def in_context(self) -> bool:
        try:
            from mlflow_team import config

            if not config.client_identity_on():
                return False
            destination = _destination_of_current_request()
            return destination is not None and _allowed(destination)
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

        if not config.client_identity_on() or not _allowed(request.url):
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
