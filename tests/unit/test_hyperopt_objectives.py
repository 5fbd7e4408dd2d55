"""Objectives written before autologging, under hyperopt autologging (issue 13, sections 1 and 3).

The course's objective opens its own run; with autologging on, that run is the trial's run. Two
searches running at once in one process keep to their own trials and autologging sessions. Every
search here is real, on a team+sqlite store, read back as the MLflow UI would show it.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import threading

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

hyperopt = pytest.importorskip("hyperopt")
xgb = pytest.importorskip("xgboost")
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe  # noqa: E402
from hyperopt.pyll import scope  # noqa: E402
from sklearn.metrics import root_mean_squared_error  # noqa: E402

import mlflow_team.hyperopt as team_hyperopt  # noqa: E402
from tests.unit.test_hyperopt_autolog import ThreadedTrials  # noqa: E402

#: The course's search space, with smaller trees and xgboost's current name for squared error.
SEARCH_SPACE = {
    "max_depth": scope.int(hp.quniform("max_depth", 2, 6, 1)),
    "learning_rate": hp.loguniform("learning_rate", -3, 0),
    "reg_alpha": hp.loguniform("reg_alpha", -5, -1),
    "reg_lambda": hp.loguniform("reg_lambda", -6, -1),
    "min_child_weight": hp.loguniform("min_child_weight", -1, 3),
    "objective": "reg:squarederror",
    "seed": 42,
}


def _course_data():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(160, 4))
    target = features @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(scale=0.1, size=160)
    return xgb.DMatrix(features[:120], label=target[:120]), xgb.DMatrix(features[120:], label=target[120:]), target[120:]


# The course's data, as globals of the module (the notebook's); small.
train, valid, y_val = _course_data()


def objective(params):
    """The course's objective, verbatim apart from sizes and scikit-learn's root_mean_squared_error.
    At module level, as in the notebook: a thread-parallel Trials pickles it (by reference)."""
    with mlflow.start_run():
        mlflow.set_tag("model", "xgboost")
        mlflow.log_params(params)
        booster = xgb.train(
            params=params,
            dtrain=train,
            num_boost_round=20,
            evals=[(valid, "validation")],
            early_stopping_rounds=5,
        )
        y_pred = booster.predict(valid)
        rmse = root_mean_squared_error(y_val, y_pred)
        mlflow.log_metric("rmse", rmse)
    return {"loss": rmse, "status": STATUS_OK}


EXPERIMENT_PREFIX = "objectives"  # experiments of this module: <prefix>/<test name>


def search(objective, max_evals=3, seed=0, **kwargs):
    return fmin(
        objective, SEARCH_SPACE, algo=tpe.suggest, max_evals=max_evals, rstate=np.random.default_rng(seed),
        show_progressbar=False, **kwargs,
    )


def search_serially_or_in_threads(threads: bool, max_evals: int = 3) -> None:
    """The course's objective with ``Trials``, or with trials evaluated two at a time in threads."""
    trials = ThreadedTrials(workers=2) if threads else Trials()
    try:
        search(objective, max_evals=max_evals, trials=trials, max_queue_len=2 if threads else 1)
    finally:
        if threads:
            trials.pool.shutdown()


def parent_and_own_runs(experiment_id):
    """The search's parent run, and every other run of the experiment."""
    runs = all_runs(experiment_id)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parent, [r for r in runs if r is not parent]


def all_runs(experiment_id):
    return MlflowClient().search_runs([experiment_id], order_by=["attributes.start_time ASC"], max_results=1000)


def the_ui_shows_one_trial_run_per_trial(experiment_id, trials: int):
    """One parent run, and under it exactly one FINISHED ``trial-<tid>`` run per trial, carrying
    the objective's ``model`` tag and ``rmse`` metric; no other run. Returns (parent, trial runs)."""
    runs = all_runs(experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_name for p in parents] == ["hyperopt-tpe.suggest"]
    [parent] = parents
    children = [r for r in runs if r is not parent]
    assert sorted(c.info.run_name for c in children) == sorted(f"trial-{tid}" for tid in range(trials))
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert child.data.tags["model"] == "xgboost"
        assert child.data.metrics["rmse"] == pytest.approx(child.data.metrics["loss"])
        assert child.data.params["objective"] == "reg:squarederror" and child.data.params["seed"] == "42"
        assert child.data.tags["hyperopt.status"] == "ok" and child.data.metrics["trial_duration_s"] > 0
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_ok"] == trials
    assert parent.data.metrics["best_loss"] == pytest.approx(min(c.data.metrics["rmse"] for c in children))
    return parent, children


def test_the_course_objective_logs_into_one_trial_run_per_trial(experiment):
    search(objective, trials=Trials())
    the_ui_shows_one_trial_run_per_trial(experiment, 3)
    assert mlflow.active_run() is None


def test_the_course_objective_logs_into_its_trial_runs_when_trials_run_in_threads(experiment):
    trials = ThreadedTrials(workers=2)
    try:
        search(objective, max_evals=4, max_queue_len=2, trials=trials)
    finally:
        trials.pool.shutdown()
    assert trials.threads and "MainThread" not in trials.threads
    the_ui_shows_one_trial_run_per_trial(experiment, 4)


def test_the_objectives_run_is_the_trial_run_with_its_tags_artifacts_and_end_run(experiment):
    seen = []

    def objective(params):
        trial_run = mlflow.active_run()
        mlflow.end_run()  # a defensive end_run() before start_run() ends nothing
        run = mlflow.start_run(run_name="my-run", tags={"model": "xgboost"}, description="by hand")
        seen.append((trial_run.info.run_id, run.info.run_id, mlflow.active_run().info.run_id))
        mlflow.log_metric("rmse", params["learning_rate"])
        mlflow.log_text("notes", "notes.txt")
        mlflow.end_run()
        mlflow.end_run()  # one too many: still nothing, as with no active run
        mlflow.log_metric("after_end_run", 1.0)  # the trial's run is still the active run
        return params["learning_rate"]

    search(objective, max_evals=2)
    _, children = the_ui_shows_one_trial_run_per_trial(experiment, 2)
    by_id = {c.info.run_id: c for c in children}
    assert sorted(by_id) == sorted(trial for trial, run, active in seen if trial == run == active)
    for child in children:
        assert child.info.run_name.startswith("trial-")  # the trial's name, not the objective's
        assert child.data.tags["mlflow.note.content"] == "by hand"
        assert child.data.metrics["after_end_run"] == 1.0
        assert [a.path for a in MlflowClient().list_artifacts(child.info.run_id)] == ["notes.txt"]


def test_start_run_nested_inside_the_objective_is_a_child_of_the_trial_run(experiment):
    def objective(params):
        with mlflow.start_run():
            mlflow.set_tag("model", "xgboost")
            mlflow.log_metric("rmse", params["learning_rate"])
            with mlflow.start_run(run_name="fold-0", nested=True):
                mlflow.log_metric("fold_rmse", 1.0)
        return params["learning_rate"]

    search(objective, max_evals=2)
    runs = all_runs(experiment)
    folds = [r for r in runs if r.info.run_name == "fold-0"]
    trial_runs = {r.info.run_id: r for r in runs if r.info.run_name.startswith("trial-")}
    assert len(runs) == 5 and len(folds) == 2 and len(trial_runs) == 2
    assert sorted(f.data.tags["mlflow.parentRunId"] for f in folds) == sorted(trial_runs)
    assert all(f.info.status == "FINISHED" and f.data.metrics["fold_rmse"] == 1.0 for f in folds)
    assert all("fold_rmse" not in t.data.metrics and t.data.tags["model"] == "xgboost" for t in trial_runs.values())


def test_a_param_the_objective_logs_with_another_value_keeps_the_objectives_value(experiment):
    def objective(params):
        with mlflow.start_run():
            mlflow.set_tag("model", "xgboost")
            mlflow.log_params({**params, "max_depth": 99})  # not the point's value
            mlflow.log_metric("rmse", params["learning_rate"])
        return params["learning_rate"]

    search(objective, max_evals=2)
    _, children = the_ui_shows_one_trial_run_per_trial(experiment, 2)
    for child in children:
        assert child.data.params["max_depth"] == "99"
        assert float(child.data.params["learning_rate"]) == pytest.approx(child.data.metrics["loss"])


def test_an_error_inside_the_objectives_run_fails_the_trial_and_reaches_the_caller_unchanged(experiment):
    raised = ValueError("diverged")

    def objective(params):
        with mlflow.start_run():
            raise raised

    with pytest.raises(ValueError, match="diverged") as caught:
        search(objective, max_evals=2)
    assert caught.value is raised
    runs = all_runs(experiment)
    assert [(r.info.run_name, r.info.status) for r in runs] == [("hyperopt-tpe.suggest", "FAILED"), ("trial-0", "FAILED")]
    assert runs[1].data.tags["hyperopt.error"] == "ValueError: diverged"


@pytest.mark.parametrize("threads", [False, True], ids=["serial", "threads"])
def test_with_log_trial_runs_false_the_objectives_own_runs_nest_under_the_parent(experiment, threads):
    team_hyperopt.autolog(log_trial_runs=False, log_plots=False)
    search_serially_or_in_threads(threads)
    parent, own = parent_and_own_runs(experiment)
    assert len(own) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in own} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" and r.data.tags["model"] == "xgboost" and "rmse" in r.data.metrics for r in own)
    assert parent.data.metrics["best_loss"] == pytest.approx(min(r.data.metrics["rmse"] for r in own))


def test_with_exclusive_the_course_objective_logs_into_its_trial_runs(experiment):
    team_hyperopt.autolog(exclusive=True)
    search(objective)
    the_ui_shows_one_trial_run_per_trial(experiment, 3)


AUTOLOG_CASES = {
    "trial-runs": ({}, False),
    "threads": ({}, True),
    "exclusive": ({"exclusive": True}, False),
    "no-trial-runs": ({"log_trial_runs": False}, False),
    "no-trial-runs-threads": ({"log_trial_runs": False}, True),
}


@pytest.mark.parametrize("case", AUTOLOG_CASES)
def test_xgboost_autologging_inside_the_course_objective_lands_in_its_run(experiment, case):
    settings, threads = AUTOLOG_CASES[case]
    team_hyperopt.autolog(log_plots=False, **settings)
    mlflow.xgboost.autolog(log_models=False, log_datasets=False)
    search_serially_or_in_threads(threads, max_evals=2)
    parent, own = parent_and_own_runs(experiment)
    assert len(own) == 2
    for run in own:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.data.tags["model"] == "xgboost"
        # xgboost's autologging: its own params and its per-round metric, in the same run as rmse
        assert run.data.params["num_boost_round"] == "20" and run.data.params["early_stopping_rounds"] == "5"
        assert "validation-rmse" in run.data.metrics and "rmse" in run.data.metrics
    assert "num_boost_round" not in parent.data.params


def test_framework_autologging_turned_on_inside_the_objective_logs_models_into_the_trial_run(experiment):
    from sklearn.linear_model import Ridge

    def objective(params):
        mlflow.xgboost.autolog(log_datasets=False)
        mlflow.sklearn.autolog(log_datasets=False, log_models=False)
        with mlflow.start_run():
            mlflow.set_tag("model", "xgboost")
            booster = xgb.train(params=params, dtrain=train, num_boost_round=5)
            rmse = root_mean_squared_error(y_val, booster.predict(valid))
            mlflow.log_metric("rmse", rmse)
            Ridge(alpha=params["reg_alpha"]).fit(valid.get_data().toarray(), y_val)
        return {"loss": rmse, "status": STATUS_OK}

    search(objective, max_evals=2)
    _, children = the_ui_shows_one_trial_run_per_trial(experiment, 2)
    models = MlflowClient().search_logged_models([experiment])
    assert sorted(m.source_run_id for m in models) == sorted(c.info.run_id for c in children)
    assert all("training_score" in c.data.metrics and "num_boost_round" in c.data.params for c in children)


def test_start_run_outside_a_trial_is_mlflows_own_and_disable_restores_it(experiment):
    assert mlflow.start_run is not mlflow.tracking.fluent.start_run  # patched while autologging is on
    with mlflow.start_run():
        with pytest.raises(Exception, match="is already active"):
            mlflow.start_run()
    team_hyperopt.autolog(disable=True)
    assert mlflow.start_run is mlflow.tracking.fluent.start_run
    assert mlflow.end_run is mlflow.tracking.fluent.end_run


def test_a_failure_of_the_integration_is_a_warning_and_mlflow_decides(experiment, monkeypatch, caplog):
    from mlflow_team.hyperopt import runs

    def broken():
        raise RuntimeError("integration broke")

    def objective(params):
        with mlflow.start_run(nested=True):
            mlflow.log_metric("rmse", 1.0)
        return 1.0

    monkeypatch.setattr(runs, "_top", broken)
    monkeypatch.delenv("MLFLOW_AUTOLOGGING_TESTING", raising=False)
    search(objective, max_evals=1)
    assert "integration broke" in caplog.text
    runs = {r.info.run_name: r for r in all_runs(experiment)}
    [child] = [r for name, r in runs.items() if not name.startswith(("trial-", "hyperopt-"))]
    assert child.data.tags["mlflow.parentRunId"] == runs["trial-0"].info.run_id and child.data.metrics["rmse"] == 1.0

    monkeypatch.setenv("MLFLOW_AUTOLOGGING_TESTING", "true")
    with pytest.raises(RuntimeError, match="integration broke"):
        search(objective, max_evals=1)


def test_import_mlflow_team_then_hyperopt_autolog_works(database, tmp_path):
    script = f"""
import sys
import mlflow_team
assert "mlflow" not in sys.modules and "mlflow_team.hyperopt" not in sys.modules
mlflow_team.hyperopt.autolog()
import mlflow
from hyperopt import STATUS_OK, fmin, hp, tpe
mlflow.set_tracking_uri({database!r})
mlflow.set_experiment("objectives/import")

def objective(params):
    with mlflow.start_run():
        mlflow.set_tag("model", "xgboost")
        mlflow.log_metric("rmse", params["x"] ** 2)
    return {{"loss": params["x"] ** 2, "status": STATUS_OK}}

fmin(objective, {{"x": hp.uniform("x", -1, 1)}}, algo=tpe.suggest, max_evals=2, show_progressbar=False)
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    mlflow.set_tracking_uri(database)
    runs = all_runs(mlflow.get_experiment_by_name("objectives/import").experiment_id)
    assert sorted(r.info.run_name for r in runs) == ["hyperopt-tpe.suggest", "trial-0", "trial-1"]
    assert all(r.data.tags["model"] == "xgboost" for r in runs if r.info.run_name.startswith("trial-"))


def run_in_threads(*searches):
    """Run each search in a thread of its own, at once; re-raise what one of them raised."""
    errors = []

    def guarded(search):
        try:
            search()
        except BaseException as exc:  # noqa: B036 - handed back to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(s,)) for s in searches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]


def searches_by_tag(experiment_id, tag: str):
    """{tag value: (parent, its trial runs)} for searches whose objective tags its runs ``tag``."""
    runs = all_runs(experiment_id)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    found = {}
    for parent_id, parent in parents.items():
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
        [value] = {c.data.tags[tag] for c in children}  # a search's trials are all its own
        found[value] = (parent, children)
    assert len(found) == len(parents) and len(runs) == len(parents) + sum(len(c) for _, c in found.values())
    return found


def test_two_searches_at_once_in_two_threads_log_only_their_own_trials(experiment):
    both_in_a_trial = threading.Barrier(2, timeout=60)

    def tagged(name):
        def objective_of_search(params):
            if not getattr(objective_of_search, "met", False):  # both searches are mid-trial here
                objective_of_search.met = True
                both_in_a_trial.wait()
            result = objective(params)
            mlflow.set_tag("search", name)  # the trial's run is still the active run
            return result

        return objective_of_search

    run_in_threads(lambda: search(tagged("a"), max_evals=3, seed=1), lambda: search(tagged("b"), max_evals=2, seed=2))

    found = searches_by_tag(experiment, "search")
    assert {name: len(children) for name, (_, children) in found.items()} == {"a": 3, "b": 2}
    for parent, children in found.values():
        assert parent.info.status == "FINISHED" and parent.data.metrics["trials_total"] == len(children)
        assert all(c.info.status == "FINISHED" and c.data.tags["model"] == "xgboost" for c in children)
        assert parent.data.tags["hyperopt.best_run_id"] in {c.info.run_id for c in children}
        table = MlflowClient().download_artifacts(parent.info.run_id, "hyperopt/trials.csv")
        with open(table) as handle:
            assert {row["run_id"] for row in csv.DictReader(io.StringIO(handle.read()))} == {c.info.run_id for c in children}


def test_a_framework_autologging_failure_in_one_trial_does_not_switch_it_off_or_on_for_another(experiment, monkeypatch):
    """Search a's trial makes xgboost's autologging fail (a param logged by hand with another
    value) while search b's trials train in another thread: b's autologging stays on; then b's own
    failure stays b's, even when a's trial ends in the meantime."""
    monkeypatch.delenv("MLFLOW_AUTOLOGGING_TESTING", raising=False)  # the failure is to be a warning here
    mlflow.xgboost.autolog(log_models=False, log_datasets=False)
    a_failed, b_failed, a_next = threading.Event(), threading.Event(), threading.Event()

    def fit(num_boost_round, name):
        xgb.train(params={"objective": "reg:squarederror"}, dtrain=train, num_boost_round=num_boost_round,
                  evals=[(valid, name)], verbose_eval=False)

    def search_a(params, calls=[]):  # noqa: B006 - a counter across trials
        calls.append(params)
        mlflow.set_tag("search", "a")
        if len(calls) == 1:
            mlflow.log_param("num_boost_round", 999)
            fit(5, "validation")  # xgboost's autologging fails: this trial's session only
            a_failed.set()
            assert b_failed.wait(60)  # then ends, while b's failed trial goes on
        else:
            a_next.set()
        return 1.0

    def search_b(params, calls=[]):  # noqa: B006
        calls.append(params)
        mlflow.set_tag("search", "b")
        if len(calls) == 1:
            assert a_failed.wait(60)
            fit(5, "validation")  # a's failure does not switch b's autologging off
        else:
            mlflow.log_param("num_boost_round", 999)
            fit(5, "validation")  # b's own failure
            b_failed.set()
            assert a_next.wait(60)  # a's failed trial has ended: it must not switch b's back on
            fit(999, "second")
        return 1.0

    run_in_threads(lambda: search(search_a, max_evals=2, seed=3), lambda: search(search_b, max_evals=2, seed=4))

    (_, a_trials), (_, b_trials) = (searches_by_tag(experiment, "search")[name] for name in ("a", "b"))
    b_first, b_second = sorted(b_trials, key=lambda r: r.info.run_name)
    assert b_first.data.params["num_boost_round"] == "5" and "validation-rmse" in b_first.data.metrics
    assert b_second.data.params["num_boost_round"] == "999" and "second-rmse" not in b_second.data.metrics
    assert all(r.info.status == "FINISHED" for r in a_trials + b_trials)


def test_each_search_waits_for_and_reports_only_its_own_trial_writes():
    """Trial writes that go through a server are finished in the background, per search."""
    from mlflow_team.hyperopt import finisher

    release, finished = threading.Event(), []

    def blocked_write():
        assert release.wait(60)
        finished.append("b")

    def failing_write():
        raise RuntimeError("refused")

    finisher.submit("search-b", "trial run of b", blocked_write)
    finisher.submit("search-b", "trial run 2 of b", failing_write)
    finisher.submit("search-a", "trial run of a", lambda: finished.append("a"))
    assert finisher.flush("search-a") == [] and finished == ["a"]  # not held up by b's blocked write
    release.set()
    assert finisher.flush("search-b") == ["trial run 2 of b: refused"] and finished == ["a", "b"]
    assert finisher.flush("search-b") == []  # reported once
