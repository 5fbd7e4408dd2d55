"""A lean path for the most frequent write, one ``log_metric`` call, on SQLite.

A training loop logs a metric per step, so this call sets the pace. MLflow's own path loads the
run and the latest-metric row as ORM objects and flushes twice; this does the same work with four
small Core statements inside the same managed transaction: check the run is active, insert the
metric (a duplicate is ignored, as stock does), and insert or advance the run's latest value by
the same (step, timestamp, value) ordering stock uses. Messages for a missing or inactive run are
stock's own. The contract suite compares the results with stock's.
"""

from __future__ import annotations

from typing import Any

# Driver-level SQL (sqlite3, qmark style): no statement to build or compile per call.
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
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
    from mlflow.utils.validation import _validate_metric

    _validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
    is_nan, value = store.sanitize_metric_value(metric.value)
    row = (metric.key, value, metric.timestamp, metric.step, int(is_nan), run_id)
    with store.ManagedSessionMaker(read_only=False) as session:
        execute = session.connection().exec_driver_sql
        stage = execute(_RUN_STAGE, (run_id,)).scalar()
        if stage is None:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        if stage != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
                INVALID_PARAMETER_VALUE,
            )
        if not execute(_INSERT_METRIC, row).rowcount:
            return  # the very same metric was logged before: nothing changes
        current = execute(_LATEST, (run_id, metric.key)).first()
        if current is None:
            execute(_INSERT_LATEST, row)
        elif (metric.step, metric.timestamp, value) > tuple(current):
            execute(
                _UPDATE_LATEST,
                (value, metric.timestamp, metric.step, int(is_nan), run_id, metric.key),
            )
