"""A PySpark worker daemon whose workers start with MLflow already imported.

PySpark forks a fresh Python worker from its daemon for most tasks, and a SparkTrials trial is a
task of its own, so every trial of an MLflow objective would import MLflow again (seconds). Run as
the daemon (``spark.python.daemon.module = mlflow_team.hyperopt.daemon``, which
``mlflow_team.hyperopt.spark.local_session`` sets), it imports MLflow and mlflow-team's executor
side once; the workers it forks inherit them.
"""

if __name__ == "__main__":
    try:
        import mlflow  # noqa: F401
        import mlflow.tracking.fluent  # noqa: F401

        import mlflow_team.hyperopt.spark  # noqa: F401
        import mlflow_team.store.tracking  # noqa: F401 - the team store (and MLflow's SQLAlchemy store)
    except Exception:  # noqa: BLE001 - a worker then imports them itself, as without this daemon
        pass
    from pyspark.daemon import manager

    manager()
