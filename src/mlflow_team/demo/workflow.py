"""The course's NYC taxi workflow, end to end, on whatever tracking URI MLflow is given.

1. data: the green-taxi files given, or generated ones (``data.generate``), prepared as the course
   does (``data.read_dataframe``: duration, 1-60 min, ``PU_DO``; a ``DictVectorizer``);
2. baselines (linear regression, lasso) logged with the stock fluent API;
3. xgboost tuned with hyperopt under ``mlflow_team.hyperopt.autolog()`` (a progress bar);
4. selection: the lowest validation RMSE among runs within a training-time and size budget, as
   a table and a picture (a PNG artifact of the tuning run);
5. the pick registered with the alias ``champion`` and loaded back through
   ``models:/<name>@champion`` to predict.

Every model is a scikit-learn pipeline (records -> ``DictVectorizer`` -> regressor), so the
registered model predicts from the raw columns (``PU_DO``, ``trip_distance``) as a pyfunc. Its
size is measured on what was logged: the sum of the logged model's artifact files as stored.

Models are logged as cloudpickle, not skops (MLflow's default): skops writes the fitted
``DictVectorizer`` vocabulary as indented JSON, a node per entry in ``vocabulary_`` and in
``feature_names_``, uncompressed, about 1 KB per feature (8.5 MB for 8,500 ``PU_DO`` pairs, where
cloudpickle needs 0.3 MB), and checks each dump by loading it back (3 s a model). MLflow gates
loading behind ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` for every format, skops included.
"""

from __future__ import annotations

import logging
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
#: Where the selection plot goes on the tuning run.
PLOT_ARTIFACT_DIR = "selection"
SERIALIZATION_FORMAT = "cloudpickle"
_PICKLE_WARNING = "Saving scikit-learn models in the pickle or cloudpickle format"


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
    #: Run the tuning step on a local Spark session with ``SparkTrials(parallelism=spark)`` (0: ``Trials``).
    spark: int = 0


@dataclass
class Outcome:
    experiment_id: str
    invocation: str
    candidates: list
    version: str | None
    predictions: list
    actual: list
    tuning_run_id: str | None = None
    #: The selection plot: a local copy, and its path among the tuning run's artifacts.
    plot: Path | None = None
    plot_artifact: str | None = None
    #: The logged models of this invocation, and their bytes as stored (all files summed).
    logged_models: int = 0
    logged_bytes: int = 0


def to_records(frame) -> list[dict]:
    """First step of every pipeline: a DataFrame's columns as the records DictVectorizer takes."""
    return frame[data.CATEGORICAL + data.NUMERICAL].to_dict(orient="records")


def int32_indices(matrix):
    """DictVectorizer's sparse matrix with 32-bit indices (Lasso refuses 64-bit ones)."""
    matrix = matrix.tocsr()
    matrix.indices = matrix.indices.astype("int32")
    matrix.indptr = matrix.indptr.astype("int32")
    return matrix


def search_space() -> dict:
    """The demo's hyperopt search space for xgboost (the course's, with a number of trees)."""
    from hyperopt import hp

    return {
        "max_depth": hp.quniform("max_depth", 3, 10, 1),
        "learning_rate": hp.loguniform("learning_rate", -3, 0),
        "reg_alpha": hp.loguniform("reg_alpha", -5, -1),
        "reg_lambda": hp.loguniform("reg_lambda", -6, -1),
        "min_child_weight": hp.loguniform("min_child_weight", -1, 3),
        "n_estimators": hp.quniform("n_estimators", 20, 120, 10),
    }


def xgb_regressor(params: dict, seed: int, n_jobs: int):
    """The demo's xgboost regressor for a point of :func:`search_space`."""
    from xgboost import XGBRegressor

    return XGBRegressor(
        max_depth=int(params["max_depth"]), n_estimators=int(params["n_estimators"]),
        learning_rate=params["learning_rate"], reg_alpha=params["reg_alpha"],
        reg_lambda=params["reg_lambda"], min_child_weight=params["min_child_weight"],
        objective="reg:squarederror", random_state=seed, n_jobs=n_jobs,
    )


def _pipeline(regressor):
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(
        FunctionTransformer(to_records), DictVectorizer(), FunctionTransformer(int32_indices), regressor
    )


def _fit(pipeline, train_frame, valid_frame):
    """Fit and score; return (rmse, seconds)."""
    from sklearn.metrics import root_mean_squared_error

    started = time.perf_counter()
    pipeline.fit(train_frame, train_frame[data.TARGET].to_numpy())
    seconds = time.perf_counter() - started
    rmse = float(root_mean_squared_error(valid_frame[data.TARGET], pipeline.predict(valid_frame)))
    return rmse, seconds


def logged_model_bytes(model_id: str, client=None) -> int:
    """The bytes of a logged model as stored: every file under its artifact location, summed
    (what ``models:/<id>`` downloads), listed through the tracking server or store."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    total, folders = 0, [None]
    while folders:
        for entry in client.list_logged_model_artifacts(model_id, folders.pop()):
            if entry.is_dir:
                folders.append(entry.path)
            else:
                total += entry.file_size or 0
    return total


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 if it does not exist), without SQLite's write-ahead
    log and shared-memory files, which last only while a connection is open."""
    return sum(
        f.stat().st_size for f in Path(folder).rglob("*")
        if f.is_file() and not f.is_symlink() and not f.name.endswith(("-wal", "-shm"))
    )


class _Once(logging.Filter):
    """Let a log record that starts with ``prefix`` through once, then drop its repeats."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.seen = prefix, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        seen, self.seen = self.seen, True
        return not seen


def run(settings: Settings, echo=print) -> Outcome:
    # MLflow warns about pickle formats at every log_model: once is enough for the demo's 20 models.
    once = _Once(_PICKLE_WARNING)
    logging.getLogger("mlflow.sklearn").addFilter(once)
    try:
        return _run(settings, echo)
    finally:
        logging.getLogger("mlflow.sklearn").removeFilter(once)


def _run(settings: Settings, echo) -> Outcome:
    import mlflow
    import numpy as np
    from hyperopt import STATUS_OK, Trials, fmin, tpe
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import Lasso, LinearRegression

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
    client = MlflowClient()
    logged: list[int] = []

    def log_model(pipeline) -> float:
        """Log the pipeline as the active run's model; return its size as stored, in MB. (Also called in
        Spark executors: it takes nothing from this process but what pickles.)"""
        info = mlflow.sklearn.log_model(
            pipeline, name="model", input_example=example,
            signature=infer_signature(example, pipeline.predict(example)),
            serialization_format=SERIALIZATION_FORMAT,
            # Given, not inferred: inferring starts a Python process for every model.
            pip_requirements=requirements,
        )
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
        return logged_model_bytes(info.model_id) / 1e6

    echo(f"models: scikit-learn pipelines logged as {SERIALIZATION_FORMAT} (not skops, MLflow's default, "
         "which writes the DictVectorizer's vocabulary as about 1 KB of JSON per feature)")

    # 2. Baselines, logged by hand with the stock fluent API.
    for name, regressor in (("linear-regression", LinearRegression()), ("lasso", Lasso(alpha=0.001))):
        with mlflow.start_run(run_name=f"baseline-{name}", tags={**data_tags, "model": name}):
            pipeline = _pipeline(regressor)
            rmse, seconds = _fit(pipeline, train_frame, valid_frame)
            mlflow.log_params({"model": name, **{k: v for k, v in regressor.get_params().items() if k == "alpha"}})
            size = log_model(pipeline)
            mlflow.log_metrics({selection.RMSE: rmse, selection.TRAINING_TIME: seconds, selection.MODEL_SIZE: size})
        logged.append(round(size * 1e6))
        echo(f"baseline {name}: RMSE {rmse:.3f} ({seconds:.2f} s, logged model {size:.3f} MB)")

    # 3. xgboost tuned with hyperopt; autologging makes every trial a run of its own.
    mlflow_team.hyperopt.autolog(extra_tags=data_tags)
    space = search_space()

    frames = (train_frame, valid_frame)  # under SparkTrials, a broadcast of them (below)

    def objective(params):
        pipeline = _pipeline(xgb_regressor(params, settings.seed, n_jobs=1 if settings.spark > 1 else 2))
        rmse, seconds = _fit(pipeline, *(frames.value if hasattr(frames, "value") else frames))
        mlflow.set_tag("model", "xgboost")
        size = log_model(pipeline)
        return {
            "loss": rmse, "status": STATUS_OK, selection.RMSE: rmse,
            selection.TRAINING_TIME: seconds, selection.MODEL_SIZE: size,
        }

    if settings.spark:
        from hyperopt import SparkTrials

        from mlflow_team.hyperopt.spark import local_session

        session = local_session(max(settings.spark, 1), imports=("pandas", "sklearn", "xgboost", "mlflow.sklearn"))
        # Spark's way to share a data set: each executor's Python reads it once, not with every
        # trial's task (the frames pickled into each task cost seconds per trial)
        frames = session.sparkContext.broadcast(frames)
        trials = SparkTrials(parallelism=settings.spark)
        echo(f"tuning xgboost: {settings.trials} hyperopt trials (tpe) on a local Spark session, "
             f"{settings.spark} at a time")
    else:
        trials = Trials()
        echo(f"tuning xgboost: {settings.trials} hyperopt trials (tpe)")
    try:
        with mlflow.start_run(run_name="xgboost-hyperopt", tags={**data_tags, "model": "xgboost"}) as tuning:
            fmin(objective, space, algo=tpe.suggest, max_evals=settings.trials, trials=trials,
                 max_queue_len=max(settings.spark, 1), rstate=np.random.default_rng(settings.seed),
                 show_progressbar=settings.progress)
    finally:
        mlflow_team.hyperopt.autolog(disable=True)

    # 4. Selection among this invocation's runs, as a table and as a picture on the tuning run.
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_INVOCATION}` = '{invocation}'", max_results=1000
    )
    logged += [round(r.data.metrics[selection.MODEL_SIZE] * 1e6) for r in runs
               if r.data.tags.get("mlflow.parentRunId") == tuning.info.run_id and selection.MODEL_SIZE in r.data.metrics]
    candidates = selection.select(runs, settings.max_training_time_s, settings.max_model_size_mb)
    echo("\nmodel selection (validation RMSE, within "
         f"{settings.max_training_time_s:g} s of training and {settings.max_model_size_mb:g} MB of logged model, "
         "all its artifact files as stored):")
    echo(selection.table(candidates))
    plots = settings.workdir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    plot = plots / f"model-selection-{invocation}.png"
    selection.plot(candidates, settings.max_training_time_s, settings.max_model_size_mb, plot)
    client.log_artifact(tuning.info.run_id, str(plot), PLOT_ARTIFACT_DIR)
    plot_artifact = f"{PLOT_ARTIFACT_DIR}/{plot.name}"
    echo(f"\nselection plot: {plot}\n  (also {plot_artifact} among the artifacts of run xgboost-hyperopt "
         f"{tuning.info.run_id})")
    outcome = Outcome(experiment_id, invocation, candidates, None, [], [], tuning.info.run_id, plot, plot_artifact,
                      len(logged), sum(logged))
    pick = next((c for c in candidates if c.picked), None)
    if pick is None:
        echo("\nno run fits both budgets: nothing registered (raise --max-train-seconds / --max-model-mb)")
        return outcome

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
    outcome.version, outcome.predictions, outcome.actual = version.version, predictions, actual
    return outcome


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
