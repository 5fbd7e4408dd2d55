"""A PySpark worker daemon whose workers start with MLflow (and the objective's libraries) imported.

PySpark forks a fresh Python worker from its daemon for most tasks, and a SparkTrials trial is a
task of its own, so every trial of an MLflow objective would import MLflow and its training
libraries again (seconds per trial). Run as the daemon (``spark.python.daemon.module =
mlflow_team.hyperopt.daemon``, which ``mlflow_team.hyperopt.spark.local_session`` sets), it imports
them once; the workers it forks inherit them. What it imports: MLflow, mlflow-team's executor side
and its store, and the modules named in ``MLFLOW_TEAM_SPARK_IMPORTS`` (comma-separated, e.g.
``xgboost,sklearn``; ``local_session(imports=...)`` sets it for the executors). A module that
fails to import is left to the worker, as without this daemon.

What it imported is then frozen out of the garbage collector (``gc.freeze()``, as Python's docs
advise before forking): otherwise every task of a worker pays for collections that walk the whole
of MLflow's objects (a trivial task: 0.4 s against 0.16 s with PySpark's own daemon, here).
"""

import gc
import importlib
import os

IMPORTS_ENV = "MLFLOW_TEAM_SPARK_IMPORTS"
ALWAYS = (
    "mlflow", "mlflow.tracking.fluent", "mlflow.utils.autologging_utils", "hyperopt",
    "mlflow_team.hyperopt", "mlflow_team.hyperopt.runs", "mlflow_team.hyperopt.scope", "mlflow_team.hyperopt.search",
    "mlflow_team.hyperopt.spark", "mlflow_team.store.tracking",
)


def preload() -> None:
    extra = [name.strip() for name in os.environ.get(IMPORTS_ENV, "").split(",") if name.strip()]
    for name in (*ALWAYS, *extra):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the worker imports it itself if the objective needs it
            pass
    try:  # the compatibility probe autologging runs in every worker, once here instead
        from mlflow_team.store import compat

        compat.probe()
    except Exception:  # noqa: BLE001
        pass
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    preload()
    from pyspark.daemon import manager

    manager()
