"""A hyperopt team's experiment at scale, written straight into MLflow's tables (populated once).

    python benchmarks/search_data.py sqlite:////tmp/runs.db 100000

Creating 100,000 runs through MLflow's API takes hours; this writes the rows MLflow itself would
write (``runs``, ``params``, ``tags``, ``latest_metrics``, ``metrics``) in bulk, on a database whose
schema MLflow created. The experiment looks like a course's tuning history: searches of 50 trials,
each a parent run with its trials nested under it (``mlflow.parentRunId``), xgboost hyperparameters
as params, ``rmse``/``training_time``/``model_size_mb`` as metrics, a few baselines, failures,
NaN losses, deleted runs, and runs started in the same millisecond. A second, small experiment
sits beside it so that the experiment filter matters.
"""

from __future__ import annotations

import random
import sys
import uuid

EXPERIMENT = "nyc-taxi/duration"
OTHER = "nyc-taxi/other"
TRIALS_PER_SEARCH = 50
DEVELOPERS = ("alexa", "bo", "chen", "dana", "eli")
START = 1_760_000_000_000
_CHUNK = 20_000


def _runs(n: int, experiment_id: int, rng: random.Random, artifact_root: str):
    """Rows for n runs: (run, params, tags, metrics) as dicts for MLflow's tables."""
    t = START
    parent = None
    for i in range(n):
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        t += rng.choice((0, 1, 7, 250, 1_000, 31_000))  # ties on purpose
        is_parent = i % (TRIALS_PER_SEARCH + 1) == 0
        developer = DEVELOPERS[(i // (TRIALS_PER_SEARCH + 1)) % len(DEVELOPERS)]
        status = rng.choices(("FINISHED", "FAILED", "KILLED", "RUNNING"), (94, 3, 1, 2))[0]
        stage = "deleted" if rng.random() < 0.01 else "active"
        name = f"search-{i // (TRIALS_PER_SEARCH + 1)}" if is_parent else f"trial-{i % (TRIALS_PER_SEARCH + 1) - 1}"
        run = dict(
            run_uuid=run_id, name=name, source_type="LOCAL", source_name="train.py", entry_point_name="",
            user_id=developer, status=status, start_time=t, end_time=None if status == "RUNNING" else t + 900,
            source_version="", lifecycle_stage=stage, artifact_uri=f"{artifact_root}/{experiment_id}/{run_id}/artifacts",
            experiment_id=experiment_id, deleted_time=t + 5_000 if stage == "deleted" else None,
        )
        tags = {"mlflow.runName": name, "mlflow.user": developer, "mlflow.source.name": "train.py",
                "mlflow.source.type": "LOCAL", "developer": developer.title()}
        params: dict[str, str] = {}
        metrics: dict[str, float] = {}
        if is_parent:
            parent = run_id
            tags["model"] = "xgboost"
            tags["hyperopt.algo"] = rng.choice(("tpe", "random"))
        else:
            tags["mlflow.parentRunId"] = parent
            tags["model"] = rng.choices(("xgboost", "lasso", "ridge", "XGBoost"), (85, 6, 6, 3))[0]
            tags["hyperopt.trial"] = str(i % (TRIALS_PER_SEARCH + 1) - 1)
            if rng.random() < 0.1:
                tags["note"] = rng.choice(("baseline", "retry 50%", "with_snow", "C:\\data"))
            params = {
                "max_depth": str(rng.randint(4, 100)),
                "learning_rate": repr(round(rng.uniform(0.001, 0.5), 6)),
                "reg_alpha": repr(round(rng.uniform(0.0, 1.0), 4)),
                "reg_lambda": repr(round(rng.uniform(0.0, 1.0), 4)),
                "min_child_weight": repr(round(rng.uniform(0.5, 3.0), 3)),
                "objective": rng.choice(("reg:linear", "reg:squarederror")),
                "seed": "42",
            }
            if status != "RUNNING":
                r = rng.random()
                rmse = float("inf") if r < 0.007 else round(rng.uniform(5.0, 7.5), 5)
                metrics["rmse"] = float("nan") if r < 0.005 else rmse
                metrics["training_time"] = round(rng.uniform(0.5, 12.0), 3)
                metrics["model_size_mb"] = round(rng.uniform(0.1, 8.0), 3)
        yield run, params, tags, metrics, t


def populate(url: str, n: int, other: int = 1_000, seed: int = 0) -> str:
    """Create MLflow's schema at ``url`` (a plain SQLAlchemy URL), then the experiments and ``n``
    runs; returns the big experiment's id."""
    import math

    import sqlalchemy as sa
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(url, "/tmp/mlflow-search-bench-artifacts")
    exp_id = store.create_experiment(EXPERIMENT)
    other_id = store.create_experiment(OTHER)
    store.engine.dispose()
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    tables = {name: sa.Table(name, meta, autoload_with=engine)
              for name in ("runs", "params", "tags", "latest_metrics", "metrics")}
    rng = random.Random(seed)
    for eid, count in ((int(exp_id), n), (int(other_id), other)):
        rows: dict[str, list[dict]] = {name: [] for name in tables}
        for run, params, tags, metrics, t in _runs(count, eid, rng, "file:///tmp/mlruns"):
            rows["runs"].append(run)
            rid = run["run_uuid"]
            rows["params"].extend({"key": k, "value": v, "run_uuid": rid} for k, v in params.items())
            rows["tags"].extend({"key": k, "value": v, "run_uuid": rid} for k, v in tags.items())
            for k, v in metrics.items():
                nan = math.isnan(v)
                # as MLflow's store writes them: NaN as 0 with is_nan, infinities as the largest floats
                stored = 0.0 if nan else max(min(v, sys.float_info.max), -sys.float_info.max)
                rows["latest_metrics"].append(
                    {"key": k, "value": stored, "timestamp": t + 800, "step": 0, "is_nan": nan, "run_uuid": rid})
                rows["metrics"].append(
                    {"key": k, "value": stored, "timestamp": t + 800, "step": 0, "is_nan": nan, "run_uuid": rid})
            if len(rows["runs"]) >= _CHUNK:
                _flush(engine, tables, rows)
        _flush(engine, tables, rows)
    engine.dispose()
    return exp_id


def _flush(engine, tables, rows) -> None:
    with engine.begin() as conn:
        for name in ("runs", "params", "tags", "latest_metrics", "metrics"):
            if rows[name]:
                conn.execute(tables[name].insert(), rows[name])
                rows[name].clear()


if __name__ == "__main__":
    print(populate(sys.argv[1], int(sys.argv[2])))
