"""The course's NYC taxi workflow, end to end, on whatever tracking URI MLflow is given.

1. data: the green-taxi files given, or generated ones (``data.generate``), prepared as the course
   does (``data.read_dataframe``: duration, 1-60 min, ``PU_DO``; a ``DictVectorizer``);
2. baselines (linear regression, lasso) logged with the stock fluent API;
3. xgboost tuned with hyperopt under ``mlflow_team.hyperopt.autolog()`` (a progress bar);
4. selection: the lowest validation RMSE among runs within a training-time and size budget;
5. the pick registered with the alias ``champion`` and loaded back through
   ``models:/<name>@champion`` to predict.

Every model is a scikit-learn pipeline (records -> ``DictVectorizer`` -> regressor), so the
registered model predicts from the raw columns (``PU_DO``, ``trip_distance``) as a pyfunc.
"""

from __future__ import annotations

import pickle
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mlflow_team.demo import data, selection

EXPERIMENT = "nyc-taxi/trip-duration"
MODEL_NAME = "nyc-taxi.trip-duration"
ALIAS = "champion"
TAG_INVOCATION = "demo.invocation"
TAG_MODEL_URI = "demo.model_uri"
TRUSTED_TYPES = [f"{__name__}.to_records", f"{__name__}.int32_indices", "xgboost.sklearn.XGBRegressor", "xgboost.core.Booster"]


@dataclass
class Settings:
    workdir: Path
    trials: int = 20
    train: Path | None = None
    valid: Path | None = None
    train_rows: int = 20_000
    valid_rows: int = 10_000
    max_training_time_s: float = 10.0
    max_model_size_mb: float = 5.0
    seed: int = 42
    progress: bool = True


@dataclass
class Outcome:
    experiment_id: str
    invocation: str
    candidates: list
    version: str | None
    predictions: list
    actual: list


def to_records(frame) -> list[dict]:
    """First step of every pipeline: a DataFrame's columns as the records DictVectorizer takes."""
    return frame[data.CATEGORICAL + data.NUMERICAL].to_dict(orient="records")


def int32_indices(matrix):
    """DictVectorizer's sparse matrix with 32-bit indices (Lasso refuses 64-bit ones)."""
    matrix = matrix.tocsr()
    matrix.indices = matrix.indices.astype("int32")
    matrix.indptr = matrix.indptr.astype("int32")
    return matrix


def _pipeline(regressor):
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(
        FunctionTransformer(to_records), DictVectorizer(), FunctionTransformer(int32_indices), regressor
    )


def _fit(pipeline, train_frame, valid_frame):
    """Fit and score; return (rmse, seconds, size in MB)."""
    from sklearn.metrics import root_mean_squared_error

    started = time.perf_counter()
    pipeline.fit(train_frame, train_frame[data.TARGET].to_numpy())
    seconds = time.perf_counter() - started
    rmse = float(root_mean_squared_error(valid_frame[data.TARGET], pipeline.predict(valid_frame)))
    return rmse, seconds, len(pickle.dumps(pipeline)) / 1e6


def run(settings: Settings, echo=print) -> Outcome:
    import mlflow
    import numpy as np
    from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import Lasso, LinearRegression
    from xgboost import XGBRegressor

    import mlflow_team.hyperopt
    from mlflow_team.artifacts.integrity import sha256_of_file

    train_path, valid_path = _data_files(settings, echo)
    train_frame, valid_frame = data.read_dataframe(train_path), data.read_dataframe(valid_path)
    echo(f"data: {len(train_frame):,} training and {len(valid_frame):,} validation trips (1-60 min)")
    invocation = uuid.uuid4().hex[:12]
    data_tags = {
        TAG_INVOCATION: invocation,
        "team.project": "nyc-taxi",
        "data.train": str(train_path),
        "data.valid": str(valid_path),
    }
    experiment_id = mlflow.set_experiment(EXPERIMENT).experiment_id
    example = valid_frame[data.CATEGORICAL + data.NUMERICAL].head(5)

    requirements = _requirements()

    def log_model(pipeline) -> None:
        info = mlflow.sklearn.log_model(
            pipeline, name="model", input_example=example,
            signature=infer_signature(example, pipeline.predict(example)),
            # skops (MLflow's default format) loads only types it is told to trust.
            skops_trusted_types=TRUSTED_TYPES,
            # Given, not inferred: inferring starts a Python process for every model.
            pip_requirements=requirements,
        )
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)

    # 2. Baselines, logged by hand with the stock fluent API.
    for name, regressor in (("linear-regression", LinearRegression()), ("lasso", Lasso(alpha=0.001))):
        with mlflow.start_run(run_name=f"baseline-{name}", tags={**data_tags, "model": name}):
            pipeline = _pipeline(regressor)
            rmse, seconds, size = _fit(pipeline, train_frame, valid_frame)
            mlflow.log_params({"model": name, **{k: v for k, v in regressor.get_params().items() if k == "alpha"}})
            mlflow.log_metrics({selection.RMSE: rmse, selection.TRAINING_TIME: seconds, selection.MODEL_SIZE: size})
            log_model(pipeline)
        echo(f"baseline {name}: RMSE {rmse:.3f} ({seconds:.2f} s)")

    # 3. xgboost tuned with hyperopt; autologging makes every trial a run of its own.
    mlflow_team.hyperopt.autolog(extra_tags=data_tags)
    space = {
        "max_depth": hp.quniform("max_depth", 3, 10, 1),
        "learning_rate": hp.loguniform("learning_rate", -3, 0),
        "reg_alpha": hp.loguniform("reg_alpha", -5, -1),
        "reg_lambda": hp.loguniform("reg_lambda", -6, -1),
        "min_child_weight": hp.loguniform("min_child_weight", -1, 3),
        "n_estimators": hp.quniform("n_estimators", 20, 120, 10),
    }

    def objective(params):
        regressor = XGBRegressor(
            max_depth=int(params["max_depth"]), n_estimators=int(params["n_estimators"]),
            learning_rate=params["learning_rate"], reg_alpha=params["reg_alpha"],
            reg_lambda=params["reg_lambda"], min_child_weight=params["min_child_weight"],
            objective="reg:squarederror", random_state=settings.seed, n_jobs=2,
        )
        pipeline = _pipeline(regressor)
        rmse, seconds, size = _fit(pipeline, train_frame, valid_frame)
        mlflow.set_tag("model", "xgboost")
        log_model(pipeline)
        return {
            "loss": rmse, "status": STATUS_OK, selection.RMSE: rmse,
            selection.TRAINING_TIME: seconds, selection.MODEL_SIZE: size,
        }

    echo(f"tuning xgboost: {settings.trials} hyperopt trials (tpe)")
    try:
        with mlflow.start_run(run_name="xgboost-hyperopt", tags={**data_tags, "model": "xgboost"}):
            fmin(objective, space, algo=tpe.suggest, max_evals=settings.trials, trials=Trials(),
                 rstate=np.random.default_rng(settings.seed), show_progressbar=settings.progress)
    finally:
        mlflow_team.hyperopt.autolog(disable=True)

    # 4. Selection among this invocation's runs.
    client = MlflowClient()
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_INVOCATION}` = '{invocation}'", max_results=1000
    )
    candidates = selection.select(runs, settings.max_training_time_s, settings.max_model_size_mb)
    echo("\nmodel selection (validation RMSE, within "
         f"{settings.max_training_time_s:g} s of training and {settings.max_model_size_mb:g} MB):")
    echo(selection.table(candidates))
    pick = next((c for c in candidates if c.picked), None)
    if pick is None:
        echo("\nno run fits both budgets: nothing registered (raise --max-train-seconds / --max-model-mb)")
        return Outcome(experiment_id, invocation, candidates, None, [], [])

    # 5. Register the pick, point the alias at it, load it back by alias and predict.
    picked_run = client.get_run(pick.run_id)
    version = mlflow.register_model(picked_run.data.tags[TAG_MODEL_URI], MODEL_NAME)
    for key, value in {
        "run_id": pick.run_id,
        "author": picked_run.data.tags.get("team.author", ""),
        "data.train": f"{train_path} (sha256 {sha256_of_file(str(train_path))[:16]})",
        "data.valid": f"{valid_path} (sha256 {sha256_of_file(str(valid_path))[:16]})",
        "rmse": f"{pick.rmse:.4f}",
    }.items():
        client.set_model_version_tag(MODEL_NAME, version.version, key, value)
    client.set_registered_model_alias(MODEL_NAME, ALIAS, version.version)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@{ALIAS}")
    sample = valid_frame.head(5)
    predictions = [float(p) for p in model.predict(sample[data.CATEGORICAL + data.NUMERICAL])]
    actual = [float(a) for a in sample[data.TARGET]]
    echo(f"\nregistered {MODEL_NAME} version {version.version} as @{ALIAS} ({pick.name})")
    echo(f"models:/{MODEL_NAME}@{ALIAS} predicts (minutes): "
         + ", ".join(f"{p:.1f} (actual {a:.1f})" for p, a in zip(predictions, actual)))
    return Outcome(experiment_id, invocation, candidates, version.version, predictions, actual)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for names in (("mlflow",), ("mlflow-team",), ("scikit-learn",), ("xgboost", "xgboost-cpu"), ("pandas",), ("scipy",)):
        for name in names:
            try:
                pins.append(f"{name}=={version(name)}")
                break
            except PackageNotFoundError:
                continue
    return pins


def _data_files(settings: Settings, echo) -> tuple[Path, Path]:
    if settings.train and settings.valid:
        return Path(settings.train), Path(settings.valid)
    folder = settings.workdir / "data"
    train = folder / "green_tripdata_2021-01.parquet"
    valid = folder / "green_tripdata_2021-02.parquet"
    if not train.exists():
        data.generate(train, 2021, 1, settings.train_rows, seed=settings.seed)
        echo(f"generated {train}")
    if not valid.exists():
        data.generate(valid, 2021, 2, settings.valid_rows, seed=settings.seed + 1)
        echo(f"generated {valid}")
    return train, valid
