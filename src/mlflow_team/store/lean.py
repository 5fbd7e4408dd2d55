"""Lean paths for a run's own writes on SQLite: create it, log a batch to it, end it.

Every run pays for these three, and a hyperparameter search pays for them once per trial. MLflow's
own paths load the experiment and the run as ORM objects (with their tags, params and latest
metrics), flush them and read the run's inputs back: about 4 ms for a ``create_run`` on this
kind of database, most of it Python. Here the same work is a few driver-level statements inside
the store's managed transaction (so retries, the writer lock and all-or-none stay as they are).
Validation is MLflow's own functions, the messages and error codes are stock's, and the results
are stock's: the contract suite runs the same scenarios through both stores and compares them.

Workspace-aware stores, other databases and metrics tied to a logged model keep MLflow's path.
"""

from __future__ import annotations

import uuid
from typing import Any

from mlflow_team.store import compat


# Driver-level SQL (sqlite3, qmark style): no statement to build or compile per call.
_EXPERIMENT = "SELECT lifecycle_stage, artifact_location FROM experiments WHERE experiment_id = ?"
_INSERT_RUN = (
    "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
    "status, start_time, end_time, deleted_time, source_version, lifecycle_stage, artifact_uri, "
    "experiment_id) VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, NULL, '', ?, ?, ?)"
)
_INSERT_TAG = 'INSERT INTO tags ("key", value, run_uuid) VALUES (?, ?, ?)'
_UPSERT_TAG = (
    'INSERT INTO tags ("key", value, run_uuid) VALUES (?, ?, ?) '
    'ON CONFLICT ("key", run_uuid) DO UPDATE SET value = excluded.value'
)
_PARAMS = 'SELECT "key", value FROM params WHERE run_uuid = ?'
_INSERT_PARAM = 'INSERT INTO params ("key", value, run_uuid) VALUES (?, ?, ?)'
_RUN = (
    "SELECT run_uuid, name, experiment_id, user_id, status, start_time, end_time, "
    "lifecycle_stage, artifact_uri FROM runs WHERE run_uuid = ?"
)
_RUN_NAME_TAG = "SELECT value FROM tags WHERE run_uuid = ? AND \"key\" = 'mlflow.runName'"


def create_run(store: Any, experiment_id, user_id, start_time, tags, run_name):
    """Stock ``SqlAlchemyStore.create_run``: the same checks, rows and returned ``Run``."""
    from mlflow.entities import LifecycleStage, Run, RunData, RunInfo, RunInputs, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, _get_run_name_from_tags
    from mlflow.utils.name_utils import _generate_random_name
    from mlflow.utils.uri import append_to_uri_path
    experiment_int = _parse_experiment_id(experiment_id or store.DEFAULT_EXPERIMENT_ID)
    tags = list(tags or [])
    run_name_tag = _get_run_name_from_tags(tags)
    with store.ManagedSessionMaker.driver() as sql:
        experiment = sql.first(_EXPERIMENT, (experiment_int,))
        if experiment is None:
            raise MlflowException(
                f"No Experiment with id={experiment_int} exists", RESOURCE_DOES_NOT_EXIST
            )
        stage, artifact_location = experiment
        if stage != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"The experiment {experiment_int} must be in the 'active' state. "
                f"Current state is {stage}.",
                INVALID_PARAMETER_VALUE,
            )
        if run_name and run_name_tag and run_name != run_name_tag:
            raise MlflowException(
                "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                f"different values (run_name='{run_name}', mlflow.runName='{run_name_tag}').",
                INVALID_PARAMETER_VALUE,
            )
        run_name = run_name or run_name_tag or _generate_random_name()
        if not run_name_tag:
            tags.append(RunTag(MLFLOW_RUN_NAME, run_name))
        run_id = uuid.uuid4().hex
        artifact_uri = append_to_uri_path(artifact_location, run_id, store.ARTIFACTS_FOLDER_NAME)
        sql.run(
            _INSERT_RUN,
            (run_id, run_name, user_id, start_time, LifecycleStage.ACTIVE, artifact_uri, experiment_int),
        )
        sql.many(_INSERT_TAG, [(tag.key, tag.value, run_id) for tag in tags])
        # Built inside the transaction, as stock does: a value RunInfo refuses (a start time of
        # None) undoes the insert.
        info = RunInfo(
            run_id=run_id, run_name=run_name, experiment_id=str(experiment_int), user_id=user_id,
            status="RUNNING", start_time=start_time, end_time=None,
            lifecycle_stage=LifecycleStage.ACTIVE, artifact_uri=artifact_uri,
        )
    data = RunData(metrics=[], params=[], tags=[RunTag(t.key, t.value) for t in tags])
    return Run(info, data, RunInputs(dataset_inputs=[]))


def _parse_experiment_id(experiment_id) -> int:
    """MLflow's own parser (3.13+), or the same check and message that older minors inline."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    parse = compat.get("mlflow.utils.validation:_parse_experiment_id")
    if parse is not None:
        return parse(experiment_id)
    try:
        return int(experiment_id)
    except (ValueError, TypeError):
        raise MlflowException(
            f"Invalid experiment ID '{experiment_id}'. Experiment ID must be a valid integer.",
            INVALID_PARAMETER_VALUE,
        ) from None


def log_batch(store: Any, run_id: str, metrics, params, tags) -> None:
    """Stock ``SqlAlchemyStore.log_batch`` (params, then metrics, then tags) in one transaction."""
    from mlflow.store.tracking.sqlalchemy_store import (
        _validate_batch_log_data,
        _validate_batch_log_limits,
        _validate_param_keys_unique,
        _validate_run_id,
    )

    _validate_run_id(run_id)
    metrics, params, tags = _validate_batch_log_data(metrics, params, tags)
    _validate_batch_log_limits(metrics, params, tags)
    _validate_param_keys_unique(params)
    rows = metric_rows(store, run_id, metrics, validated=True)  # just above
    with store.ManagedSessionMaker.driver() as sql:
        check_run_active(sql, run_id)
        _log_params(sql, run_id, params)
        write_metric_rows(sql, run_id, rows)
        _set_tags(sql, run_id, tags)


def update_run_info(store: Any, run_id: str, run_status, end_time, run_name):
    """Stock ``SqlAlchemyStore.update_run_info``: end (or rename) an active run; its ``RunInfo``."""
    from mlflow.entities import RunInfo, RunStatus

    with store.ManagedSessionMaker.driver() as sql:
        check_run_active(sql, run_id)
        assignments, values = [], []
        if run_status is not None:
            assignments.append("status = ?")
            values.append(RunStatus.to_string(run_status))
        if end_time is not None:
            assignments.append("end_time = ?")
            values.append(end_time)
        if run_name:
            assignments.append("name = ?")
            values.append(run_name)
            sql.run(_UPSERT_TAG, ("mlflow.runName", run_name, run_id))
        if assignments:
            sql.run(f"UPDATE runs SET {', '.join(assignments)} WHERE run_uuid = ?", (*values, run_id))
        row = sql.first(_RUN, (run_id,))
        name = row[1] or sql.scalar(_RUN_NAME_TAG, (run_id,)) or row[1]
        return RunInfo(
            run_id=row[0], run_name=name, experiment_id=str(row[2]), user_id=row[3], status=row[4],
            start_time=row[5], end_time=row[6], lifecycle_stage=row[7], artifact_uri=row[8],
        )


def _log_params(sql, run_id: str, params) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    if not params:
        return
    existing = dict(sql.all(_PARAMS, (run_id,)))
    changed = [
        {"key": p.key, "old_value": existing[p.key], "new_value": p.value}
        for p in params
        if p.key in existing and p.value != existing[p.key]
    ]
    if changed:
        raise MlflowException(
            "Changing param values is not allowed. Params were already"
            f" logged='{changed}' for run ID='{run_id}'.",
            INVALID_PARAMETER_VALUE,
        )
    sql.many(_INSERT_PARAM, [(p.key, p.value, run_id) for p in params if p.key not in existing])


def _set_tags(sql, run_id: str, tags) -> None:
    """Insert or overwrite (the last of two equal keys wins). ``mlflow.runName`` renames the run
    as stock's ``set_tag`` does, and as there an empty name changes nothing."""
    sql.many(_UPSERT_TAG, [(t.key, t.value, run_id) for t in tags if t.key != "mlflow.runName"])
    names = [t.value for t in tags if t.key == "mlflow.runName" and t.value]
    if names:
        sql.run(_UPSERT_TAG, ("mlflow.runName", names[-1], run_id))
        sql.run("UPDATE runs SET name = ? WHERE run_uuid = ?", (names[-1], run_id))


# --- metrics ---------------------------------------------------------------------------------


_RUN_STAGE = "SELECT lifecycle_stage FROM runs WHERE run_uuid = ?"
_INSERT_METRIC = (
    'INSERT INTO metrics ("key", value, timestamp, step, is_nan, run_uuid) '
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_LATEST = 'SELECT step, timestamp, value FROM latest_metrics WHERE run_uuid = ? AND "key" = ?'
_INSERT_LATEST = (
    'INSERT INTO latest_metrics ("key", value, timestamp, step, is_nan, run_uuid) '
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_UPDATE_LATEST = (
    "UPDATE latest_metrics SET value = ?, timestamp = ?, step = ?, is_nan = ? "
    'WHERE run_uuid = ? AND "key" = ?'
)


def log_metric(store: Any, run_id: str, metric: Any) -> None:
    log_metrics(store, run_id, [metric])


def log_metrics(store: Any, run_id: str, metrics: list) -> None:
    """Stock's ``_log_metrics`` (one call or a ``log_batch``'s metrics) in plain statements:
    the same validation and messages, duplicates in the batch or in the table skipped, and the
    latest value advanced by stock's (step, timestamp, value) ordering."""
    rows = metric_rows(store, run_id, metrics)
    with store.ManagedSessionMaker.driver() as sql:
        check_run_active(sql, run_id)
        write_metric_rows(sql, run_id, rows)


def metric_rows(store: Any, run_id: str, metrics: list, validated: bool = False) -> list[tuple]:
    """The metrics validated as stock validates them (unless a batch's validation already did),
    as rows; the batch's duplicates dropped."""
    from mlflow.utils.validation import _validate_metric

    rows, seen = [], set()
    single = len(metrics) == 1
    for index, metric in enumerate(metrics):
        if not validated:
            _validate_metric(
                metric.key, metric.value, metric.timestamp, metric.step,
                path="" if single else f"metrics[{index}]",
            )
        if metric in seen:
            continue
        seen.add(metric)
        is_nan, value = store.sanitize_metric_value(metric.value)
        # A float, as the ORM's Float column makes it (an int past 2**63 would not fit SQLite's).
        rows.append((metric.key, float(value), metric.timestamp, metric.step, int(is_nan), run_id))
    return rows


def check_run_active(sql, run_id: str) -> None:
    """Stock's messages for a run that does not exist or is deleted."""
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

    stage = sql.scalar(_RUN_STAGE, (run_id,))
    if stage is None:
        raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
    if stage != LifecycleStage.ACTIVE:
        raise MlflowException(
            f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
            INVALID_PARAMETER_VALUE,
        )


def write_metric_rows(sql, run_id: str, rows: list[tuple]) -> None:
    for row in rows:
        if not sql.run(_INSERT_METRIC, row):
            continue  # the very same metric was logged before: nothing changes
        key, value, timestamp, step, is_nan, _ = row
        current = sql.first(_LATEST, (run_id, key))
        if current is None:
            sql.run(_INSERT_LATEST, row)
        elif (step, timestamp, value) > tuple(current):
            sql.run(_UPDATE_LATEST, (value, timestamp, step, is_nan, run_id, key))
