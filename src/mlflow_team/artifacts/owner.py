"""Which run (or logged model) an artifact key belongs to, and the values its objects carry.

Artifact keys follow MLflow's layout: ``<experiment id>/<run id>/artifacts/...`` for runs and
``<experiment id>/models/<model id>/artifacts/...`` for logged models. The run's tags and the
experiment's name are read through the tracking store once per run and kept for the process.

A lookup that fails is tried again (``ATTEMPTS`` times in all) and then refused with
``OwnerUnknown``: the experiment decides an object's encryption key and tags, so an upload never
goes ahead with a guess, and a failure is never kept (the next upload asks again).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field

from mlflow_team import errors

_KEY = re.compile(
    r"(?:^|/)(?P<experiment>[^/]+)/(?:(?P<run>[0-9a-f]{32})|models/(?P<model>m-[0-9a-f]{32}))"
    r"/artifacts(?:/|$)"
)
#: Lookups per upload before it is refused, and the pause before each retry (seconds).
ATTEMPTS = 3
BACKOFF_S = (0.25, 1.0)
_CACHE: dict[tuple[str, str], "Owner"] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Owner:
    experiment_id: str | None = None
    experiment_name: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def values(self) -> dict[str, str]:
        """Run tags plus the ids, under the keys a policy's ``object-tags`` can name."""
        values = dict(self.tags)
        if self.run_id:
            values["mlflow.run_id"] = self.run_id
        if self.experiment_id:
            values["mlflow.experiment_id"] = self.experiment_id
        return values


def tracking_uri_for(explicit: str | None) -> str:
    """The tracking store to ask: the repository's, the server's backend, or the current one."""
    if explicit:
        return explicit
    server_backend = os.environ.get("_MLFLOW_SERVER_FILE_STORE")
    if server_backend:
        return server_backend
    import mlflow

    return mlflow.get_tracking_uri()


def owner_of(key: str, tracking_uri: str | None, shown: str | None = None) -> Owner:
    """The run or logged model ``key`` belongs to (``Owner()`` for a key outside that layout).

    Raises ``OwnerUnknown`` when the tracking store cannot say, after ``ATTEMPTS`` tries.
    """
    match = _KEY.search(key)
    if match is None:
        return Owner()
    experiment_id, run_id, model_id = match.group("experiment", "run", "model")
    uri = tracking_uri_for(tracking_uri)
    cache_key = (uri, run_id or model_id)
    with _LOCK:
        if cache_key in _CACHE:
            return _CACHE[cache_key]
    owner = _look_up(uri, experiment_id, run_id, model_id, shown or key)
    with _LOCK:
        if len(_CACHE) > 1024:
            _CACHE.clear()
        _CACHE[cache_key] = owner
    return owner


def _look_up(uri: str, experiment_id: str, run_id: str | None, model_id: str | None, shown: str) -> Owner:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    reason, code = "", errors.TEMPORARILY_UNAVAILABLE
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)])
        try:
            client = MlflowClient(tracking_uri=uri)
            found_run = run_id
            found_experiment = experiment_id
            if model_id is not None:
                model = client.get_logged_model(model_id)
                found_run, found_experiment = model.source_run_id, model.experiment_id
            tags = {}
            if found_run:
                run = client.get_run(found_run)
                tags, found_experiment = run.data.tags, run.info.experiment_id
            name = client.get_experiment(found_experiment).name
            return Owner(found_experiment, name, found_run, dict(tags))
        except MlflowException as exc:
            reason = f"{type(exc).__name__}: {exc.message}"
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                code = errors.RESOURCE_DOES_NOT_EXIST
                break  # asking again will not make it exist
        except Exception as exc:  # a connection, driver or plugin failure: worth another try
            reason = f"{type(exc).__name__}: {exc}"
    raise errors.OwnerUnknown(_refusal(uri, run_id, model_id, shown, reason, attempt + 1), code)


def _refusal(uri: str, run_id: str | None, model_id: str | None, shown: str, reason: str, attempts: int) -> str:
    from mlflow_team.redact import mask_secrets, mask_url

    what, ident = ("logged model", model_id) if model_id else ("run", run_id)
    reason = mask_secrets(reason, uri)
    if len(reason) > 300:
        reason = reason[:297] + "..."
    return errors.ARTIFACT_OWNER_UNKNOWN.format(
        artifact=shown, what=what, id=ident, tracking=mask_url(uri), attempts=attempts, reason=reason,
    )


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
