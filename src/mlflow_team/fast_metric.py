"""A lean path for the most frequent writes, metrics (``log_metric`` and a ``log_batch``'s), on SQLite.

A training loop logs a metric per step, so this call sets the pace. MLflow's own path loads the
run and the latest-metric row as ORM objects and flushes twice; this does the same work with four
small driver statements inside the same managed transaction: check the run is active, insert the
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
