"""Hyperopt autologging on a real team+sqlite store: real searches, read back with MlflowClient."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

hyperopt = pytest.importorskip("hyperopt")
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, space_eval, tpe  # noqa: E402

import mlflow_team  # noqa: E402
import mlflow_team.hyperopt as team_hyperopt  # noqa: E402

SPACE = {
    "model": hp.choice(
        "model",
        [
            {"type": "svm", "C": hp.lognormal("C", 0, 1)},
            {"type": "forest", "depth": hp.quniform("depth", 2, 8, 1)},
        ],
    ),
    "learning_rate": hp.loguniform("learning_rate", -5, 0),
    "seed": 42,
}


def objective(point):
    loss = point["learning_rate"] * (2.0 if point["model"]["type"] == "svm" else 1.0)
    return {"loss": loss, "status": STATUS_OK, "rmse": loss * 10, "note": "not a number"}


EXPERIMENT_PREFIX = "hyperopt"  # experiments of this module: <prefix>/<test name>


def runs_of(experiment_id):
    runs = MlflowClient().search_runs([experiment_id], order_by=["attributes.start_time ASC"], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def text_artifact(run_id, path):
    return MlflowClient().download_artifacts(run_id, path, dst_path=None)


def read_artifact(run_id, path) -> str:
    with open(text_artifact(run_id, path)) as handle:
        return handle.read()


def test_fmin_is_a_parent_run_and_each_trial_a_nested_run(experiment):
    best = fmin(objective, SPACE, algo=tpe.suggest, max_evals=6, rstate=np.random.default_rng(7), show_progressbar=False)

    [parent], children = runs_of(experiment)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "hyperopt-tpe.suggest"
    params = parent.data.params
    assert (params["algo"], params["max_evals"], params["seed"]) == ("tpe.suggest", "6", "7")
    # Best params resolved to real values: the chosen model's type, not hp.choice's index.
    resolved = space_eval(SPACE, best)
    assert params["best.model.type"] == resolved["model"]["type"]
    assert params["best.learning_rate"] == str(resolved["learning_rate"])
    assert params["best.seed"] == "42"
    assert parent.data.tags["hyperopt.stop_reason"] == "max_evals"
    metrics = parent.data.metrics
    assert metrics["trials_total"] == 6 and metrics["trials_ok"] == 6 and metrics["trials_error"] == 0
    assert metrics["best_loss"] == pytest.approx(min(objective(space_eval(SPACE, best))["loss"], metrics["best_loss"]))
    assert metrics["total_time_s"] > 0

    assert sorted(c.info.run_name for c in children) == [f"trial-{tid}" for tid in range(6)]
    losses = {}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        point = child.data.params
        assert point["model.type"] in ("svm", "forest") and point["seed"] == "42"
        assert ("model.C" in point) == (point["model.type"] == "svm")  # only the chosen branch
        assert child.data.metrics["rmse"] == pytest.approx(child.data.metrics["loss"] * 10)
        assert "note" not in child.data.metrics and child.data.metrics["trial_duration_s"] >= 0
        losses[child.info.run_id] = child.data.metrics["loss"]
    assert metrics["best_loss"] == pytest.approx(min(losses.values()))
    assert parent.data.tags["hyperopt.best_run_id"] == min(losses, key=losses.get)


def test_the_parent_carries_the_space_the_trials_table_and_plots(experiment):
    fmin(objective, SPACE, algo=tpe.suggest, max_evals=5, rstate=np.random.default_rng(1), show_progressbar=False)
    [parent], children = runs_of(experiment)
    files = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "hyperopt")}
    assert {"hyperopt/search_space.json", "hyperopt/trials.csv", "hyperopt/loss_by_trial.png",
            "hyperopt/loss_vs_learning_rate.png"} <= files

    described = json.loads(read_artifact(parent.info.run_id, "hyperopt/search_space.json"))
    assert described["learning_rate"] == {"hp": "loguniform", "label": "learning_rate", "low": -5, "high": 0}
    assert described["model"]["hp"] == "choice"
    assert described["model"]["options"][1]["depth"] == {"hp": "quniform", "label": "depth", "low": 2, "high": 8, "q": 1}
    assert described["seed"] == 42

    rows = list(csv.DictReader(io.StringIO(read_artifact(parent.info.run_id, "hyperopt/trials.csv"))))
    assert [row["tid"] for row in rows] == ["0", "1", "2", "3", "4"]
    by_run = {c.info.run_id: c for c in children}
    for row in rows:
        child = by_run[row["run_id"]]
        assert float(row["loss"]) == pytest.approx(child.data.metrics["loss"])
        assert row["model.type"] == child.data.params["model.type"] and row["status"] == "ok"
    with open(text_artifact(parent.info.run_id, "hyperopt/loss_by_trial.png"), "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_trial_run_is_active_while_the_objective_runs(experiment):
    seen = []

    def logs_by_hand(point):
        seen.append(mlflow.active_run().info.run_id)
        mlflow.log_metric("by_hand", 3.0)
        mlflow.set_tag("by_hand", "yes")
        return point["learning_rate"]

    fmin(logs_by_hand, SPACE, algo=tpe.suggest, max_evals=3, rstate=np.random.default_rng(2), show_progressbar=False)
    _, children = runs_of(experiment)
    assert sorted(seen) == sorted(c.info.run_id for c in children)
    assert all(c.data.metrics["by_hand"] == 3.0 and c.data.tags["by_hand"] == "yes" for c in children)
    assert mlflow.active_run() is None  # the parent this created was ended


def test_xgboost_autologging_inside_the_objective_lands_in_the_trial_run(experiment):
    xgboost = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 4))
    target = features @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(scale=0.1, size=200)
    train = xgboost.DMatrix(features[:150], label=target[:150])
    valid = xgboost.DMatrix(features[150:], label=target[150:])
    mlflow.xgboost.autolog(log_models=False, log_datasets=False, log_input_examples=False)
    space = {"max_depth": hp.quniform("max_depth", 2, 5, 1), "learning_rate": hp.uniform("learning_rate", 0.1, 0.5)}

    def train_booster(point):
        params = {"max_depth": int(point["max_depth"]), "learning_rate": point["learning_rate"], "objective": "reg:squarederror"}
        booster = xgboost.train(params, train, num_boost_round=10, evals=[(valid, "validation")], verbose_eval=False)
        rmse = float(np.sqrt(np.mean((booster.predict(valid) - target[150:]) ** 2)))
        return {"loss": rmse, "status": STATUS_OK}

    fmin(train_booster, space, algo=tpe.suggest, max_evals=3, rstate=np.random.default_rng(3), show_progressbar=False)
    [parent], children = runs_of(experiment)
    assert len(children) == 3
    for child in children:
        # xgboost's autologging wrote into the trial's run: its params and per-round metric.
        assert child.data.params["num_boost_round"] == "10"
        assert child.data.params["objective"] == "reg:squarederror"
        assert "validation-rmse" in child.data.metrics
        # The names both logged keep the autologger's spelling (int), hyperopt's 4.0 is left out.
        assert child.data.params["max_depth"] in {"2", "3", "4", "5"}
        assert child.data.metrics["loss"] > 0
    assert "num_boost_round" not in parent.data.params  # nothing leaked into the parent


def test_a_trial_that_raises_ends_failed_and_the_error_reaches_the_caller_unchanged(experiment):
    raised = ValueError("bad point")

    def fails_on_the_third(point, calls=[]):  # noqa: B006 - a counter across trials
        calls.append(point)
        if len(calls) == 3:
            raise raised
        return point["learning_rate"]

    with pytest.raises(ValueError) as caught:
        fmin(fails_on_the_third, SPACE, algo=tpe.suggest, max_evals=5, rstate=np.random.default_rng(4), show_progressbar=False)
    assert caught.value is raised
    [parent], children = runs_of(experiment)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["hyperopt.stop_reason"] == "error: ValueError: bad point"
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(children) == 3 and len(failed) == 1
    assert failed[0].data.tags["hyperopt.error"] == "ValueError: bad point"
    assert failed[0].data.tags["hyperopt.status"] == "error"
    assert mlflow.active_run() is None


def test_with_catch_eval_exceptions_the_search_carries_on(experiment):
    def fails_on_svm(point):
        if point["model"]["type"] == "svm":
            raise RuntimeError("svm diverged")
        return point["learning_rate"]

    trials = Trials()
    fmin(fails_on_svm, SPACE, algo=tpe.suggest, max_evals=8, trials=trials, catch_eval_exceptions=True,
         rstate=np.random.default_rng(5), show_progressbar=False)
    [parent], children = runs_of(experiment)
    errored = sum(1 for t in trials._dynamic_trials if t["state"] == hyperopt.JOB_STATE_ERROR)
    assert errored > 0
    assert parent.data.metrics["trials_error"] == errored
    assert parent.data.metrics["trials_ok"] == 8 - errored
    assert sum(c.info.status == "FAILED" for c in children) == errored
    assert parent.info.status == "FINISHED"


def test_a_status_fail_result_is_counted_and_tagged(experiment):
    def declines_big_rates(point):
        if point["learning_rate"] > 0.2:
            return {"status": STATUS_FAIL}
        return {"loss": point["learning_rate"], "status": STATUS_OK}

    fmin(declines_big_rates, SPACE, algo=tpe.suggest, max_evals=8, rstate=np.random.default_rng(6), show_progressbar=False)
    [parent], children = runs_of(experiment)
    failed = [c for c in children if c.data.tags["hyperopt.status"] == "fail"]
    assert parent.data.metrics["trials_fail"] == len(failed) > 0
    assert all("loss" not in c.data.metrics for c in failed)


def test_resuming_from_a_trials_save_file_logs_only_the_new_trials(experiment, tmp_path):
    saved = str(tmp_path / "trials.pkl")
    fmin(
        objective, SPACE, algo=tpe.suggest, max_evals=3, trials_save_file=saved,
        rstate=np.random.default_rng(8), show_progressbar=False,
    )
    fmin(
        objective, SPACE, algo=tpe.suggest, max_evals=5, trials_save_file=saved,
        rstate=np.random.default_rng(9), show_progressbar=False,
    )
    first, second = runs_of(experiment)[0]
    children = runs_of(experiment)[1]
    assert len(children) == 5  # no trial logged twice
    assert sum(c.data.tags["mlflow.parentRunId"] == second.info.run_id for c in children) == 2
    assert second.data.tags["hyperopt.resumed_from"] == first.info.run_id
    assert second.data.params["trials_before"] == "3"
    assert second.data.metrics["trials_total"] == 5 and second.data.metrics["trials_evaluated"] == 2
    rows = list(csv.DictReader(io.StringIO(read_artifact(second.info.run_id, "hyperopt/trials.csv"))))
    assert len(rows) == 5 and len({row["run_id"] for row in rows}) == 5


def test_points_to_evaluate_are_logged_as_the_first_trials(experiment):
    start = [{"model": 1, "depth": 3.0, "learning_rate": 0.05}]
    fmin(
        objective, SPACE, algo=tpe.suggest, max_evals=3, points_to_evaluate=start,
        rstate=np.random.default_rng(10), show_progressbar=False,
    )
    [parent], children = runs_of(experiment)
    first = next(c for c in children if c.info.run_name == "trial-0")
    params = first.data.params
    assert (params["model.type"], params["model.depth"], params["learning_rate"]) == ("forest", "3.0", "0.05")
    assert parent.data.params["points_to_evaluate"] == "1"


def test_early_stop_and_loss_threshold_are_named_as_the_reason(experiment):
    from hyperopt.early_stop import no_progress_loss

    fmin(
        lambda p: 1.0, SPACE, algo=tpe.suggest, max_evals=50, early_stop_fn=no_progress_loss(3),
        rstate=np.random.default_rng(11), show_progressbar=False,
    )
    fmin(
        objective, SPACE, algo=tpe.suggest, max_evals=50, loss_threshold=10.0,
        rstate=np.random.default_rng(12), show_progressbar=False,
    )
    early, threshold = runs_of(experiment)[0]
    assert early.data.tags["hyperopt.stop_reason"] == "early_stop_fn"
    assert early.data.params["early_stop_fn"].startswith("no_progress_loss")
    assert early.data.metrics["trials_total"] < 50
    assert threshold.data.tags["hyperopt.stop_reason"] == "loss_threshold"
    assert threshold.data.params["loss_threshold"] == "10.0"
    assert threshold.data.metrics["trials_total"] == 1


def test_an_active_run_is_the_parent_and_stays_open(experiment):
    with mlflow.start_run(run_name="tuning") as run:
        trials = Trials()
        trials.fmin(objective, SPACE, algo=tpe.suggest, max_evals=2, rstate=np.random.default_rng(13), show_progressbar=False)
        assert mlflow.active_run().info.run_id == run.info.run_id
    [parent], children = runs_of(experiment)
    assert parent.info.run_id == run.info.run_id and parent.info.run_name == "tuning"
    assert "best.learning_rate" in parent.data.params
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {run.info.run_id}


def test_exclusive_leaves_a_users_run_alone(experiment):
    team_hyperopt.autolog(exclusive=True)
    with mlflow.start_run():
        fmin(objective, SPACE, algo=tpe.suggest, max_evals=2, rstate=np.random.default_rng(14), show_progressbar=False)
    parents, children = runs_of(experiment)
    assert len(parents) == 1 and children == [] and parents[0].data.params == {}


def test_trial_params_are_the_point_proposed_even_if_the_objective_changes_it(experiment):
    def greedy(point):
        point.pop("seed")
        point["learning_rate"] = "changed"
        return {"loss": 1.0, "status": STATUS_OK}

    trials = Trials()
    fmin(greedy, SPACE, algo=tpe.suggest, max_evals=3, trials=trials, rstate=np.random.default_rng(3), show_progressbar=False)
    [parent], children = runs_of(experiment)
    for child in children:
        tid = int(child.data.tags["hyperopt.tid"])
        proposed = space_eval(SPACE, {k: v[0] for k, v in trials.trials[tid]["misc"]["vals"].items() if v})
        assert child.data.params["seed"] == "42"
        assert child.data.params["learning_rate"] == str(proposed["learning_rate"])
    rows = list(csv.DictReader(io.StringIO(read_artifact(parent.info.run_id, "hyperopt/trials.csv"))))
    assert {row["seed"] for row in rows} == {"42"}


def test_an_objective_given_expr_memo_ctrl_gets_its_params_from_the_space(experiment):
    from hyperopt import pyll
    from hyperopt.fmin import fmin_pass_expr_memo_ctrl

    @fmin_pass_expr_memo_ctrl
    def low_level(expr, memo, ctrl):
        point = pyll.rec_eval(expr, memo=memo)
        return {"loss": point["learning_rate"], "status": STATUS_OK}

    from hyperopt.base import Domain
    from hyperopt.fmin import FMinIter

    domain = Domain(low_level, SPACE)
    search = FMinIter(tpe.suggest, domain, Trials(), rstate=np.random.default_rng(4), max_evals=2, show_progressbar=False)
    search.exhaust()
    _, children = runs_of(experiment)
    assert len(children) == 2 and all(c.data.params["seed"] == "42" and "learning_rate" in c.data.params for c in children)
    assert domain.fn is low_level  # a domain's objective is its own again after the search


def test_autologging_changes_no_result(experiment):
    def search(**extra):
        return fmin(
            objective, SPACE, algo=tpe.suggest, max_evals=6, rstate=np.random.default_rng(15), show_progressbar=False, **extra
        )

    logged = (search(), search(return_argmin=False))
    team_hyperopt.autolog(disable=True)
    plain = (search(), search(return_argmin=False))
    assert logged == plain
    assert len(runs_of(experiment)[0]) == 2  # the two searches made while autologging was on


def test_disable_turns_it_off(experiment):
    team_hyperopt.autolog(disable=True)
    fmin(objective, SPACE, algo=tpe.suggest, max_evals=2, rstate=np.random.default_rng(16), show_progressbar=False)
    assert runs_of(experiment) == ([], [])


def test_log_trial_runs_false_logs_only_the_parent(experiment):
    team_hyperopt.autolog(log_trial_runs=False, log_plots=False)
    fmin(objective, SPACE, algo=tpe.suggest, max_evals=3, rstate=np.random.default_rng(17), show_progressbar=False)
    [parent], children = runs_of(experiment)
    assert children == [] and parent.data.metrics["trials_total"] == 3
    files = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "hyperopt")}
    assert "hyperopt/trials.csv" in files and "hyperopt/loss_by_trial.png" not in files


def test_mlflow_team_autolog_turns_on_mlflow_autolog_and_hyperopt_together(experiment):
    sklearn = pytest.importorskip("sklearn.linear_model")
    team_hyperopt.autolog(disable=True)
    # Spark's datasource autologging needs MLflow's JAR in a live session (a SparkTrials test's, in this process)
    mlflow_team.autolog(log_models=False, log_datasets=False, exclude_flavors=["spark"])
    features = np.arange(40, dtype=float).reshape(20, 2)

    def fit(point):
        model = sklearn.Ridge(alpha=point["alpha"]).fit(features, features[:, 0] * 2)
        return -model.score(features, features[:, 0] * 2)

    fmin(
        fit, {"alpha": hp.uniform("alpha", 0.1, 1.0)}, algo=tpe.suggest, max_evals=2, rstate=np.random.default_rng(18),
        show_progressbar=False,
    )
    [parent], children = runs_of(experiment)
    assert len(children) == 2
    assert all("training_score" in c.data.metrics for c in children)  # sklearn's autologging


class ThreadedTrials(Trials):
    """Trials evaluated by a pool of worker threads, as an asynchronous backend does."""

    asynchronous = True

    def __init__(self, workers: int = 3) -> None:
        super().__init__()
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.threads: set[str] = set()

    def insert_trial_docs(self, docs):
        tids = super().insert_trial_docs(docs)
        for doc in self._dynamic_trials:
            if doc["tid"] in tids:
                self.pool.submit(self._evaluate, doc)
        return tids

    def _evaluate(self, doc):
        from hyperopt import base
        from hyperopt.utils import pickler

        domain = pickler.loads(self.attachments["FMinIter_Domain"])
        doc["state"] = base.JOB_STATE_RUNNING
        try:
            doc["result"] = domain.evaluate(base.spec_from_misc(doc["misc"]), base.Ctrl(self, current_trial=doc))
            doc["state"] = base.JOB_STATE_DONE
        except Exception as exc:
            doc["misc"]["error"] = (str(type(exc)), str(exc))
            doc["state"] = base.JOB_STATE_ERROR
        self.threads.add(threading.current_thread().name)


def test_trials_evaluated_in_other_threads_nest_under_the_parent(experiment):
    trials = ThreadedTrials()
    fmin(
        objective, SPACE, algo=tpe.suggest, max_evals=4, max_queue_len=4, trials=trials, rstate=np.random.default_rng(19),
        show_progressbar=False,
    )
    trials.pool.shutdown()
    [parent], children = runs_of(experiment)
    assert trials.threads and threading.main_thread().name not in trials.threads
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.data.metrics["trials_ok"] == 4


def _evaluate_in_a_worker_process(domain_bytes: bytes, doc: dict, tracking_uri: str):
    """What a process-parallel backend's worker (MongoTrials' ``hyperopt-mongo-worker``) does:
    unpickle the published domain and evaluate one trial, with autologging turned on there too."""
    import os

    import mlflow
    from hyperopt import base
    from hyperopt.utils import pickler

    import mlflow_team.hyperopt

    mlflow.set_tracking_uri(tracking_uri)
    mlflow_team.hyperopt.autolog()
    domain = pickler.loads(domain_bytes)
    local = base.Trials()  # stands in for the backend's shared attachment store
    result = domain.evaluate(base.spec_from_misc(doc["misc"]), base.Ctrl(local, current_trial=doc))
    attachments = {k: v for k, v in local.attachments.items()}
    return result, attachments, os.getpid()


class ProcessTrials(Trials):
    """Trials evaluated by worker processes (spawned, so they share nothing with this one)."""

    asynchronous = True

    def __init__(self, tracking_uri: str, workers: int = 2) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        super().__init__()
        self.tracking_uri = tracking_uri
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        self.pids: set[int] = set()

    def insert_trial_docs(self, docs):
        tids = super().insert_trial_docs(docs)
        for doc in self._dynamic_trials:
            if doc["tid"] in tids:
                doc["state"] = 1  # JOB_STATE_RUNNING
                future = self.pool.submit(
                    _evaluate_in_a_worker_process, self.attachments["FMinIter_Domain"], doc, self.tracking_uri
                )
                future.add_done_callback(lambda f, doc=doc: self._done(doc, f))
        return tids

    def _done(self, doc, future):
        from hyperopt import base

        try:
            doc["result"], attachments, pid = future.result()
        except Exception as exc:
            doc["misc"]["error"] = (str(type(exc)), str(exc))
            doc["state"] = base.JOB_STATE_ERROR
            return
        self.attachments.update(attachments)  # keyed by tid: the trial's run id among them
        self.pids.add(pid)
        doc["state"] = base.JOB_STATE_DONE


def test_trials_evaluated_in_other_processes_nest_under_the_parent(database, experiment):
    import os

    trials = ProcessTrials(database)
    try:
        fmin(objective, SPACE, algo=tpe.suggest, max_evals=4, max_queue_len=4, trials=trials,
             rstate=np.random.default_rng(21), show_progressbar=False)
    finally:
        trials.pool.shutdown()
    [parent], children = runs_of(experiment)
    assert trials.pids and os.getpid() not in trials.pids
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" and "loss" in c.data.metrics for c in children)
    assert parent.data.metrics["trials_ok"] == 4
    assert parent.data.tags["hyperopt.best_run_id"] in {c.info.run_id for c in children}


def test_autolog_can_be_called_before_hyperopt_is_imported(database, tmp_path):
    script = f"""
import mlflow, numpy as np
import mlflow_team.hyperopt
mlflow_team.hyperopt.autolog()
import sys; assert "hyperopt" not in sys.modules
from hyperopt import fmin, hp, tpe
mlflow.set_tracking_uri({database!r})
mlflow.set_experiment("hyperopt/before-import")
fmin(
    lambda x: x ** 2, hp.uniform("x", -1, 1), algo=tpe.suggest, max_evals=2, rstate=np.random.default_rng(0),
    show_progressbar=False,
)
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    mlflow.set_tracking_uri(database)
    experiment = mlflow.get_experiment_by_name("hyperopt/before-import")
    [parent], children = runs_of(experiment.experiment_id)
    assert len(children) == 2 and "best.x" in parent.data.params
    assert {c.data.params["x"] for c in children} and all(-1 <= float(c.data.params["x"]) <= 1 for c in children)


@pytest.fixture
def project_required(tmp_path, monkeypatch):
    """A policy whose required-tags rule wants team.project on every run (asked for before
    ``experiment``: a store reads the policy when it is built)."""
    policy = tmp_path / "mlflow-team.toml"
    policy.write_text("[required-tags]\ntags = ['team.project']\n")
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(policy))


def test_under_a_required_tags_policy_trial_runs_inherit_the_parents_tags(project_required, experiment):
    with mlflow.start_run(tags={"team.project": "taxi"}):
        fmin(objective, SPACE, algo=tpe.suggest, max_evals=2, rstate=np.random.default_rng(20), show_progressbar=False)
    team_hyperopt.autolog(extra_tags={"team.project": "fraud"})
    fmin(objective, SPACE, algo=tpe.suggest, max_evals=2, rstate=np.random.default_rng(21), show_progressbar=False)
    parents, children = runs_of(experiment)
    projects = {p.info.run_id: p.data.tags["team.project"] for p in parents}
    assert sorted(projects.values()) == ["fraud", "taxi"]
    assert len(children) == 4
    assert all(c.data.tags["team.project"] == projects[c.data.tags["mlflow.parentRunId"]] for c in children)


def test_a_failure_of_autologging_is_a_warning_and_the_search_runs_unchanged(project_required, experiment, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_AUTOLOGGING_TESTING", raising=False)
    # No team.project anywhere: the store refuses the parent run autologging tries to create.
    best = fmin(objective, SPACE, algo=tpe.suggest, max_evals=3, rstate=np.random.default_rng(22), show_progressbar=False)
    team_hyperopt.autolog(disable=True)
    assert best == fmin(objective, SPACE, algo=tpe.suggest, max_evals=3, rstate=np.random.default_rng(22), show_progressbar=False)
    assert runs_of(experiment) == ([], [])
    assert "team.project" in caplog.text and "hyperopt" in caplog.text
