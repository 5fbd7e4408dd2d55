"""Hyperopt autologging through a real `mlflow server`: xgboost trials, read back over HTTP."""

from __future__ import annotations

import csv
import io

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from tests.helpers.server import mlflow_server

hyperopt = pytest.importorskip("hyperopt")
xgboost = pytest.importorskip("xgboost")
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe  # noqa: E402

import mlflow_team.hyperopt as team_hyperopt  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTOLOGGING_TESTING", "true")  # as MLflow tests its own integrations
    with mlflow_server(f"team+sqlite:///{tmp_path}/server.db", tmp_path) as url:
        mlflow.set_tracking_uri(url)
        yield url
    team_hyperopt.autolog(disable=True)
    mlflow.autolog(disable=True)


def test_an_xgboost_search_through_the_server(server):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 5))
    target = features @ np.array([3.0, -1.0, 0.5, 0.0, 2.0]) + rng.normal(scale=0.2, size=300)
    train = xgboost.DMatrix(features[:200], label=target[:200])
    valid = xgboost.DMatrix(features[200:], label=target[200:])
    mlflow.set_experiment("taxi/duration-tuning")
    mlflow.xgboost.autolog(log_models=False, log_datasets=False)
    team_hyperopt.autolog()
    space = {
        "max_depth": hp.quniform("max_depth", 2, 6, 1),
        "learning_rate": hp.loguniform("learning_rate", -3, 0),
        "objective": "reg:squarederror",
        "seed": 42,
    }

    def objective(params):
        params = {**params, "max_depth": int(params["max_depth"])}
        booster = xgboost.train(params, train, num_boost_round=15, evals=[(valid, "validation")], verbose_eval=False)
        rmse = float(np.sqrt(np.mean((booster.predict(valid) - target[200:]) ** 2)))
        mlflow.log_metric("rmse", rmse)
        return {"loss": rmse, "status": STATUS_OK}

    trials = Trials()
    best = fmin(objective, space, algo=tpe.suggest, max_evals=4, trials=trials,
                rstate=np.random.default_rng(1), show_progressbar=False)

    client = MlflowClient()
    experiment = client.get_experiment_by_name("taxi/duration-tuning")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and parent.info.status == "FINISHED"
    assert all(c.info.status == "FINISHED" for c in children)
    # Every run carries the author the server stamped, trials included.
    assert {r.data.tags.get("team.author") for r in runs} == {parent.data.tags["team.author"]}
    for child in children:
        assert child.data.metrics["rmse"] == pytest.approx(child.data.metrics["loss"])
        assert "validation-rmse" in child.data.metrics  # xgboost's autologging, in the trial's run
        assert child.data.params["objective"] == "reg:squarederror"
    assert parent.data.params["best.max_depth"] == str(float(best["max_depth"]))
    assert parent.data.metrics["best_loss"] == pytest.approx(min(trials.losses()))
    best_child = client.get_run(parent.data.tags["hyperopt.best_run_id"])
    assert best_child.data.metrics["loss"] == pytest.approx(parent.data.metrics["best_loss"])

    table = client.download_artifacts(parent.info.run_id, "hyperopt/trials.csv")
    with open(table) as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    assert {row["run_id"] for row in rows} == {c.info.run_id for c in children}
    # The course's pick: lowest RMSE, found through the API a user (or the UI) queries.
    [top] = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        order_by=["metrics.rmse ASC"], max_results=1,
    )
    assert top.info.run_id == parent.data.tags["hyperopt.best_run_id"]
