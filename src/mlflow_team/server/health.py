"""What the team server runs on, and whether it answers: ``GET /api/2.0/mlflow-team/health``.

MLflow's ``/health`` says "OK" while the process is up, even when the database or the bucket
behind it is gone. The team endpoint beside it checks both (one read of the tracking store, one
listing of the artifact destination's root) and says which policy file and which mlflow-team
version are in force; it answers 200 when both answer, 503 when one does not. At start-up the
team app logs the policy it loaded, and checks the artifact destination at once: a missing bucket
is an error in the server's log when it starts, not at the first upload.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from mlflow_team import errors
from mlflow_team.policy import Policy

_logger = logging.getLogger(__name__)

HEALTH_PATH = "/api/2.0/mlflow-team/health"


def install(app: Any, team_policy: Policy) -> None:
    def team_health():
        import flask

        report = health(team_policy)
        status = 200 if report["status"] == "ok" else 503
        return flask.Response(json.dumps(report), status=status, mimetype="application/json")

    app.add_url_rule(HEALTH_PATH, "mlflow_team_health", team_health, methods=["GET"])
    _logger.warning(
        "mlflow-team %s server app: policy from %s; rules on: %s", _version(), team_policy.source,
        ", ".join(team_policy.enabled_rules()) or "none",
    )
    destination = artifact_destination()
    if destination is not None:
        problem = _check_artifacts(destination)
        if problem is not None:
            _logger.error(errors.ARTIFACT_DESTINATION_UNREACHABLE.format(destination=destination, problem=problem))


def health(team_policy: Policy) -> dict[str, Any]:
    store = _check_store()
    destination = artifact_destination()
    artifacts = None if destination is None else _check_artifacts(destination)
    return {
        "status": "ok" if store is None and artifacts is None else "unavailable",
        "store": "ok" if store is None else store,
        "artifacts": "not served" if destination is None else ("ok" if artifacts is None else artifacts),
        "policy": team_policy.source,
        "rules": team_policy.enabled_rules(),
        "mlflow_team_version": _version(),
    }


def artifact_destination() -> str | None:
    """The ``--artifacts-destination`` this server proxies (None with ``--no-serve-artifacts``)."""
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR

    if os.environ.get(SERVE_ARTIFACTS_ENV_VAR, "").lower() not in ("true", "1"):
        return None
    return os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR) or None


def _check_store() -> str | None:
    from mlflow_team.store import compat

    get_store = compat.get("mlflow.server.handlers:_get_tracking_store")
    if get_store is None:
        return "unknown (this MLflow does not expose its server's store)"
    try:
        get_store().search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return _first_line(exc)
    return None


def _check_artifacts(destination: str) -> str | None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        get_artifact_repository(destination).list_artifacts("")
    except Exception as exc:  # noqa: BLE001
        return _first_line(exc)
    return None


def _first_line(exc: BaseException) -> str:
    from mlflow_team import redact

    text = str(exc).strip().splitlines()
    return redact.mask_secrets(f"{type(exc).__name__}: {text[0] if text else ''}"[:300], "")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow-team")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"
