"""Hyperopt autologging with ``SparkTrials`` on a real local[2] Spark session (issue 13, section 2).

Every trial is evaluated in a Spark executor (a Python worker process of its own); the runs are
read back as the MLflow UI shows them.
"""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

pytest.importorskip("hyperopt")
pytest.importorskip("xgboost")
from hyperopt import STATUS_FAIL, STATUS_OK, SparkTrials, fmin, hp, tpe  # noqa: E402

from tests.unit.test_hyperopt_objectives import (  # noqa: E402
    SEARCH_SPACE,
    all_runs,
    objective,
    the_ui_shows_one_trial_run_per_trial,
)

pytestmark = pytest.mark.slow
EXPERIMENT_PREFIX = "spark"


@pytest.fixture(autouse=True)
def _autologging_testing(monkeypatch):
    """The driver's side under MLFLOW_AUTOLOGGING_TESTING for the tests without the ``experiment``
    fixture too (the executors' is set by the spark fixture)."""
    monkeypatch.setenv("MLFLOW_AUTOLOGGING_TESTING", "true")


def spark_search(fn, space=SEARCH_SPACE, max_evals=4, seed=0, **trials_kwargs):
    trials = SparkTrials(parallelism=2, **trials_kwargs)
    fmin(fn, space, algo=tpe.suggest, max_evals=max_evals, trials=trials, rstate=np.random.default_rng(seed),
         show_progressbar=False)
    return trials


def test_the_course_objective_logs_into_one_trial_run_per_trial_on_spark(spark, experiment):
    spark_search(objective)
    parent, children = the_ui_shows_one_trial_run_per_trial(experiment, 4)
    # Evaluated in executors (other processes), not in this one: the trials ran two at a time.
    assert all(c.data.params["max_depth"] for c in children)
    assert parent.data.tags["hyperopt.best_run_id"] in {c.info.run_id for c in children}
    assert mlflow.active_run() is None


def test_framework_autologging_turned_on_in_the_driver_lands_in_the_trial_runs(spark, experiment):
    mlflow.xgboost.autolog(log_models=False, log_datasets=False)
    spark_search(trains_without_logging, max_evals=2)
    runs = all_runs(experiment)
    trials = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(trials) == 2
    for run in trials:
        # xgboost's autologging ran in the executor, inside the trial's run
        assert "validation-rmse" in run.data.metrics and run.data.params["num_boost_round"] == "10"
        assert run.data.metrics["loss"] == pytest.approx(run.data.metrics["validation-rmse"])


def trains_without_logging(params):
    from tests.unit.test_hyperopt_objectives import train, valid, xgb

    booster = xgb.train(params=params, dtrain=train, num_boost_round=10, evals=[(valid, "validation")])
    return {"loss": float(booster.eval(valid).split(":")[1]), "status": STATUS_OK}


def reports_its_process(point):
    return {"loss": point["x"], "status": STATUS_OK, "pid": os.getpid()}


def test_trials_run_in_the_python_workers_earlier_trials_warmed_up(spark, experiment):
    # each trial finds a worker an earlier one left (MLflow, the objective's libraries, its
    # broadcast data already loaded) instead of a new process: at most one per core of local[2]
    # (the session's earlier tests may have left two idle), where hyperopt alone starts six
    trials = SparkTrials(parallelism=1)
    fmin(reports_its_process, {"x": hp.uniform("x", -1, 1)}, algo=tpe.suggest, max_evals=6, trials=trials,
         rstate=np.random.default_rng(0), show_progressbar=False)
    assert len({result["pid"] for result in trials.results}) <= 2
    assert len([r for r in all_runs(experiment) if r.info.run_name.startswith("trial-")]) == 6


def fails_for_small_x(point):
    if point["x"] < -1:
        raise ValueError(f"x={point['x']:.2f} is out of range")
    if point["x"] < 0:
        return {"status": STATUS_FAIL}
    mlflow.log_metric("seen_x", point["x"])
    return {"loss": point["x"], "status": STATUS_OK}


def test_a_trial_that_raises_or_returns_fail_ends_failed_with_its_reason(spark, experiment):
    spark_search(fails_for_small_x, space={"x": hp.uniform("x", -3, 3)}, max_evals=8, seed=3)
    runs = all_runs(experiment)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r is not parent]
    assert len(trials) == 8 and not any(r.info.status == "RUNNING" for r in runs)
    by_status = {s: [r for r in trials if r.data.tags["hyperopt.status"] == s] for s in ("ok", "fail", "error")}
    assert all(by_status.values()), "the seed gives each outcome"
    for run in by_status["error"]:
        assert run.info.status == "FAILED" and run.data.tags["hyperopt.error"].startswith("ValueError: x=")
    for run in by_status["fail"]:
        assert run.info.status == "FAILED" and "loss" not in run.data.metrics
    for run in by_status["ok"]:
        assert run.info.status == "FINISHED" and run.data.metrics["seen_x"] == run.data.metrics["loss"]
    assert parent.data.metrics["trials_error"] == len(by_status["error"])


class KillsItsOwnWorkerOnce:
    """The first trial to claim the marker file kills its executor's Python mid-trial."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, point):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            os.kill(os.getpid(), 9)
        except FileExistsError:
            pass
        return {"loss": -point["x"], "status": STATUS_OK}


def test_an_executor_killed_mid_trial_leaves_no_run_running(spark, experiment, tmp_path):
    spark_search(KillsItsOwnWorkerOnce(str(tmp_path / "killed")), space={"x": hp.uniform("x", -1, 1)}, max_evals=4)
    runs = all_runs(experiment)
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(trials) == 4 and not any(r.info.status == "RUNNING" for r in runs)
    [killed] = [r for r in trials if r.info.status == "FAILED"]
    assert killed.data.tags["hyperopt.status"] == "error" and "Python worker exited" in killed.data.tags["hyperopt.error"]
    assert all(r.info.status == "FINISHED" for r in trials if r is not killed)


class SlowAfterTheFirst:
    """The first trial to claim the marker file returns at once; the others outlast the search's
    timeout (bounded, so a worker Spark did not interrupt frees its core)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __call__(self, point):
        import threading

        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            threading.Event().wait(120)
        return {"loss": point["x"], "status": STATUS_OK}


def test_trials_cancelled_by_the_timeout_end_killed_with_the_reason(spark, experiment, tmp_path):
    spark.sparkContext.setLocalProperty("spark.job.interruptOnCancel", "true")  # stop the cancelled tasks
    try:
        spark_search(SlowAfterTheFirst(str(tmp_path / "first")), space={"x": hp.uniform("x", -1, 1)}, max_evals=3,
                     timeout=12)  # the first trial returns within a second or two (warm executors)
    finally:
        spark.sparkContext.setLocalProperty("spark.job.interruptOnCancel", None)
    runs = all_runs(experiment)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r is not parent]
    assert not any(r.info.status == "RUNNING" for r in runs)
    killed = [r for r in trials if r.info.status == "KILLED"]
    assert killed and len(killed) == len(trials) - 1
    for run in killed:
        assert run.data.tags["hyperopt.status"] == "cancelled"
        assert run.data.tags["hyperopt.error"] == "cancelled by SparkTrials: fmin run timeout"
    assert parent.info.status == "FINISHED" and parent.data.tags["hyperopt.stop_reason"] == "timeout"


def test_without_trial_runs_the_objectives_own_runs_nest_under_the_parent(spark, experiment):
    import mlflow_team.hyperopt as team_hyperopt

    team_hyperopt.autolog(log_trial_runs=False)
    spark_search(objective, max_evals=2)
    runs = all_runs(experiment)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    own = [r for r in runs if r is not parent]
    assert len(own) == 2
    for run in own:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["model"] == "xgboost" and "rmse" in run.data.metrics and run.info.status == "FINISHED"
    assert MlflowClient().get_run(parent.info.run_id).info.status == "FINISHED"


def search_through(tracking_uri: str, experiment_name: str, max_evals: int = 3) -> str:
    """The course's objective with SparkTrials, autologged, against ``tracking_uri``."""
    import mlflow_team.hyperopt as team_hyperopt

    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment(experiment_name).experiment_id
    team_hyperopt.autolog()
    try:
        spark_search(objective, max_evals=max_evals)
    finally:
        team_hyperopt.autolog(disable=True)
    return experiment_id


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One `mlflow server` on a team+sqlite store for the module's searches through a server."""
    from tests.helpers.server import mlflow_server

    workdir = tmp_path_factory.mktemp("spark-server")
    with mlflow_server(f"team+sqlite:///{workdir}/server.db", workdir) as url:
        yield url


@pytest.mark.server
def test_the_course_objective_on_spark_through_an_mlflow_server(spark, server):
    experiment_id = search_through(server, "spark/through-a-server")
    parent, children = the_ui_shows_one_trial_run_per_trial(experiment_id, 3)
    assert all(c.data.tags["team.author"] == parent.data.tags["team.author"] for c in children)


@pytest.mark.postgres
def test_the_course_objective_on_spark_with_a_postgresql_store(spark, postgresql_url):
    experiment_id = search_through(f"team+{postgresql_url}", "spark/postgresql")
    the_ui_shows_one_trial_run_per_trial(experiment_id, 3)


UNREACHABLE_SCRIPT = """
import json, sys
import mlflow, numpy as np
from hyperopt import SparkTrials, fmin, tpe
import mlflow_team.hyperopt as team_hyperopt
from mlflow_team.hyperopt.spark import local_session
from tests.unit.test_hyperopt_objectives import SEARCH_SPACE, objective

# Executors whose HTTP goes through a proxy that does not answer: the server is out of their reach.
local_session(2, {"spark.executorEnv.HTTP_PROXY": "http://127.0.0.1:9", "spark.executorEnv.NO_PROXY": "",
                  "spark.executorEnv.MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                  "spark.executorEnv.PYTHONPATH": sys.argv[2]})
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("spark/unreachable")
team_hyperopt.autolog()
fmin(objective, SEARCH_SPACE, algo=tpe.suggest, max_evals=2, trials=SparkTrials(parallelism=2),
     rstate=np.random.default_rng(0), show_progressbar=False)
"""


@pytest.mark.server
def test_executors_that_cannot_reach_the_server_still_get_their_trials_logged_by_the_driver(spark, server):
    import subprocess
    import sys
    from pathlib import Path

    from mlflow_team.hyperopt.spark import NOT_CAPTURED

    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, "-c", UNREACHABLE_SCRIPT, server, root], cwd=root, capture_output=True, text=True,
        timeout=600, env={**os.environ, "PYSPARK_PYTHON": sys.executable, "NO_PROXY": "127.0.0.1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # told once, saying why
    first_line = NOT_CAPTURED.split("{uri}")[0]
    assert done.stderr.count(first_line) == 1 and "Connection" in done.stderr
    mlflow.set_tracking_uri(server)
    experiment_id = mlflow.get_experiment_by_name("spark/unreachable").experiment_id
    # the objective's own tag, params and rmse came back with the result: the UI shows the same runs
    the_ui_shows_one_trial_run_per_trial(experiment_id, 2)


def test_while_autologging_is_on_sparktrials_polls_wake_when_a_trial_ends():
    """hyperopt polls a SparkTrials search once a second (fmin's loop and SparkTrials' dispatcher);
    with autologging on, a trial's end wakes both, and turning autologging off restores hyperopt."""
    import threading
    import time

    import hyperopt.spark

    import mlflow_team.hyperopt as team_hyperopt
    from mlflow_team.hyperopt import spark as team_spark

    fmin_module = __import__("importlib").import_module("hyperopt.fmin")
    team_hyperopt.autolog()
    try:
        assert fmin_module.time is not time and hyperopt.spark.time is not time
        assert fmin_module.time.time() > 0  # everything but sleep is the time module's
        woke = []
        sleepers = [threading.Thread(target=lambda m=m: (m.time.sleep(3600), woke.append(m)), daemon=True)
                    for m in (fmin_module, hyperopt.spark)]
        for sleeper in sleepers:
            sleeper.start()
        team_spark.PROMPT.trial_ended()  # before or after they fall asleep: neither sleeps the hour
        for sleeper in sleepers:
            sleeper.join(timeout=60)
        assert len(woke) == 2
    finally:
        team_hyperopt.autolog(disable=True)
    assert fmin_module.time is time and hyperopt.spark.time is time
