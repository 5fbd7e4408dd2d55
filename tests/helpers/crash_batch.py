"""Log one batch and die (SIGKILL) the moment the first metric row is sent to the database.

Run as ``python crash_batch.py TRACKING_URI RUN_ID``. The kill comes from a SQLAlchemy event on
the driver, and on SQLite also from the driver's own statement trace (the team store's lean
paths send plain statements to the driver, past SQLAlchemy's events), so nothing in MLflow is
replaced: it is a crash at a precise point.
"""

import os
import signal
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine


def _die_if_metrics(statement: str) -> None:
    if statement.lstrip().upper().startswith("INSERT INTO METRICS"):
        os.kill(os.getpid(), signal.SIGKILL)


def _die_on_metrics(conn, cursor, statement, parameters, context, executemany):
    _die_if_metrics(statement)


def _trace_sqlite(dbapi_connection, record):
    if hasattr(dbapi_connection, "set_trace_callback"):  # sqlite3: every statement it runs
        dbapi_connection.set_trace_callback(_die_if_metrics)


def main() -> None:
    uri, run_id = sys.argv[1], sys.argv[2]
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    event.listen(Engine, "before_cursor_execute", _die_on_metrics)
    event.listen(Engine, "connect", _trace_sqlite)
    MlflowClient(tracking_uri=uri).log_batch(
        run_id,
        metrics=[Metric(f"m{i}", float(i), 0, 0) for i in range(10)],
        params=[Param(f"p{i}", str(i)) for i in range(10)],
        tags=[RunTag("batch", "yes")],
    )
    sys.exit("the batch finished: the crash point was never reached")


if __name__ == "__main__":
    main()
