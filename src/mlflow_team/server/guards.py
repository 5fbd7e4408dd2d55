"""The team app's guards: artifact deletions through the proxy, and search regular expressions.

**Deletions.** ``DELETE <prefix>/(api|ajax-api)/2.0/mlflow-artifacts/artifacts/<path>`` makes
MLflow call ``delete_artifacts(path)`` on the ``--artifacts-destination`` repository, whatever
``<path>`` is: ``.`` (percent-encoded, so no client drops it) deletes every proxied artifact, an
experiment id all of that experiment's. The team app lets a deletion through only inside (or at
the root of) one run's, logged model's or trace's artifacts, in MLflow's layout under the
destination (see ``SqlAlchemyStore``: ``<experiment location>/<run id>/artifacts``,
``.../models/<model id>/artifacts``, ``.../traces/<trace id>/artifacts``), which is what
``mlflow gc`` and an artifact repository's ``delete_artifacts`` on a run send. Everything else
is answered 403 PERMISSION_DENIED before MLflow's handler runs, for every destination.

**Regular expressions.** :mod:`.regex_budget`: a filter's ``RLIKE`` pattern that can backtrack
catastrophically is refused (400 INVALID_PARAMETER_VALUE) before the search; the others are
matched within ``[server] regex-budget-ms`` per request, and a search that runs out is answered
400 with no results. Writers never wait on a search: SQLite matches without the GIL and
PostgreSQL cancels the statement.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from typing import Any
from urllib.parse import unquote

from mlflow_team import errors
from mlflow_team.server import regex_budget
from mlflow_team.server.requests import error_response

_logger = logging.getLogger(__name__)

#: The proxy's artifact route, after MLflow's optional static prefix.
_PROXY_ROUTE = re.compile(r"/(?:api|ajax-api)/2\.0/mlflow-artifacts/artifacts(?:/(?P<path>.*))?$", re.DOTALL)
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_OWNER_IDS = {"models": re.compile(r"m-[0-9a-f]{32}"), "traces": re.compile(r"tr-[0-9a-f]{32}")}
#: JSON bodies larger than this are not read for filters (searches send a few hundred bytes).
_MAX_SCANNED_BODY = 16 * 1024 * 1024


def install(app: Any, team_policy: Any) -> None:
    """Add the guards to MLflow's Flask ``app``."""
    from flask import g, request

    _require_deletes_through_flask()
    budget_s = team_policy.server.regex_budget_ms / 1000.0
    regex_budget.install_database_hooks()

    @app.before_request
    def _team_guards():
        if request.method == "DELETE" and (route := _PROXY_ROUTE.search(request.path)):
            raw = route.group("path") or ""
            if not deletion_allowed(raw):
                _logger.warning("mlflow-team: refused DELETE of proxied artifacts at %r", raw)
                return error_response(errors.ProxyDeletionRefused(
                    errors.PROXY_DELETE_REFUSED.format(path=errors.preview(raw))))
            return None
        patterns = _request_patterns(request)
        for pattern in patterns:
            found = regex_budget.hazard(pattern)
            if found is not None:
                kind, what = found
                reason = (errors.REGEX_REASON_NESTED if kind == "nested" else errors.REGEX_REASON_BACKREFERENCE)
                _logger.warning("mlflow-team: refused search regular expression %r (%s)", pattern, kind)
                return error_response(errors.SearchRegexRefused(errors.SEARCH_REGEX_REFUSED.format(
                    pattern=errors.preview(pattern), reason=reason.format(found=errors.preview(what)))))
        g.mlflow_team_regex_budget = regex_budget.CURRENT.set(regex_budget.Budget(budget_s, patterns))
        return None

    @app.after_request
    def _team_regex_cut_off(response):
        budget = regex_budget.CURRENT.get()
        if budget is None or budget.exceeded is None:
            return response
        pattern = budget.patterns[0] if budget.patterns else budget.exceeded
        _logger.warning("mlflow-team: a search ran past its regex budget (%r)", pattern)
        return error_response(errors.SearchRegexRefused(errors.SEARCH_REGEX_CUT_OFF.format(
            pattern=errors.preview(pattern), budget_ms=team_policy.server.regex_budget_ms)))

    @app.teardown_request
    def _team_regex_done(_exc):
        token = g.pop("mlflow_team_regex_budget", None)
        if token is not None:
            regex_budget.CURRENT.reset(token)


# --- deletions -------------------------------------------------------------------------------------


def deletion_allowed(raw: str) -> bool:
    """Whether a DELETE on the proxy at ``raw`` stays inside one run's, logged model's or trace's
    artifacts, read both as mlflow-team reads it and as MLflow's handler will."""
    decoded = raw
    for _ in range(10):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        return False
    if not _inside_one_owner(decoded):
        return False
    from mlflow.utils.uri import validate_path_is_safe

    try:  # exactly what MLflow's handler passes to the repository
        return _inside_one_owner(validate_path_is_safe(raw))
    except Exception:  # noqa: BLE001 - MLflow refuses it too; say why in our words
        return False


def _inside_one_owner(path: str) -> bool:
    if (
        not path
        or path.startswith("/")
        or any(ord(c) < 32 or ord(c) == 127 or c in "\\#" for c in path)
    ):
        return False
    parts = path.split("/")
    if ".." in parts or ":" in parts[0]:
        return False
    parts = [p for p in posixpath.normpath(path).split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part != "artifacts" or i == 0:
            continue
        owner = parts[i - 1]
        if _RUN_ID.fullmatch(owner):
            return True
        if i >= 2 and parts[i - 2] in _OWNER_IDS and _OWNER_IDS[parts[i - 2]].fullmatch(owner):
            return True
    return False


def _require_deletes_through_flask() -> None:
    """Under uvicorn MLflow serves some artifact routes from FastAPI, outside the Flask app's
    hooks: refuse to start if DELETE is one of them (it is not, up to 3.17)."""
    if os.environ.get("_MLFLOW_SGI_NAME") != "uvicorn":
        return
    try:
        from mlflow.server.artifact_router import artifact_router
    except ImportError:
        return
    for route in artifact_router.routes:
        if "DELETE" in (getattr(route, "methods", None) or ()):
            from mlflow.exceptions import MlflowException

            from mlflow_team.store import compat

            lo, hi = compat.TESTED_MINORS[0], compat.TESTED_MINORS[-1]
            raise MlflowException(errors.PROXY_DELETE_GUARD_UNAVAILABLE.format(
                version="%d.%d" % compat.mlflow_version(), route=getattr(route, "path", "?"),
                tested=f"{lo[0]}.{lo[1]} to {hi[0]}.{hi[1]}",
            ))


# --- searches --------------------------------------------------------------------------------------


def _request_patterns(request: Any) -> list[str]:
    if "/mlflow-artifacts/" in request.path:
        return []
    body = None
    # What MLflow reads as JSON itself (POST and PUT only as application/json; other methods
    # whatever their type), and never a stream a handler still has to read.
    as_json = request.mimetype == "application/json" or request.method not in ("POST", "PUT")
    if as_json and request.content_length is not None and 0 < request.content_length <= _MAX_SCANNED_BODY:
        # only a body that names a filter can hold a pattern (a log_batch is not parsed again);
        # a key written with \u escapes is parsed too
        raw = request.get_data(cache=True)
        if b"filter" in raw or b"\\u" in raw:
            body = regex_budget.parse_body(request.get_json(force=True, silent=True, cache=True))
    return regex_budget.request_patterns(request.args, body)
