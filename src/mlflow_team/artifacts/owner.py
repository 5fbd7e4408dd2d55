"""Which run (or logged model) an artifact key belongs to, and the values its objects carry.

Artifact keys follow MLflow's layout: ``<experiment id>/<run id>/artifacts/...`` for runs and
``<experiment id>/models/<model id>/artifacts/...`` for logged models. The run's tags and the
experiment's name are read through the tracking store once per run and kept for the process.
A lookup that fails degrades to what the key itself says, with one warning.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field

_logger = logging.getLogger(__name__)

_KEY = re.compile(
    r"(?:^|/)(?P<experiment>[^/]+)/(?:(?P<run>[0-9a-f]{32})|models/(?P<model>m-[0-9a-f]{32}))"
    r"/artifacts(?:/|$)"
)
_CACHE: dict[tuple[str, str], "Owner"] = {}
_LOCK = threading.Lock()
_WARNED: set[str] = set()


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


def owner_of(key: str, tracking_uri: str | None) -> Owner:
    match = _KEY.search(key)
    if match is None:
        return Owner()
    experiment_id, run_id, model_id = match.group("experiment", "run", "model")
    uri = tracking_uri_for(tracking_uri)
    cache_key = (uri, run_id or model_id)
    with _LOCK:
        if cache_key in _CACHE:
            return _CACHE[cache_key]
    owner = _look_up(uri, experiment_id, run_id, model_id)
    with _LOCK:
        if len(_CACHE) > 1024:
            _CACHE.clear()
        _CACHE[cache_key] = owner
    return owner


def _look_up(uri: str, experiment_id: str, run_id: str | None, model_id: str | None) -> Owner:
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        if model_id is not None:
            model = client.get_logged_model(model_id)
            run_id = model.source_run_id
            experiment_id = model.experiment_id
        tags = {}
        if run_id:
            run = client.get_run(run_id)
            tags, experiment_id = run.data.tags, run.info.experiment_id
        name = client.get_experiment(experiment_id).name
        return Owner(experiment_id, name, run_id, dict(tags))
    except Exception as exc:  # never fail an upload over its labels
        if uri not in _WARNED:
            _WARNED.add(uri)
            _logger.warning(
                "mlflow-team: could not read run %s from %s to tag its artifacts (%s); objects "
                "are tagged with the ids in their path only.", run_id or model_id, uri, exc,
            )
        # The folder above the run is its experiment id only under the default layout.
        return Owner(experiment_id=experiment_id if experiment_id.isdigit() else None, run_id=run_id)


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
        _WARNED.clear()
