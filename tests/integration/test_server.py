"""A real `mlflow server --backend-store-uri team+sqlite:///...` and MLflow's client over HTTP."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from mlflow_team.policy import Policy
from mlflow_team.store.tracking import TeamSqlAlchemyStore
from tests.helpers.server import mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import EVERY_RULE_TOML

    workdir = tmp_path_factory.mktemp("server")
    (workdir / "policy.toml").write_text(EVERY_RULE_TOML)
    backend = f"team+sqlite:///{workdir}/mlflow.db"
    with mlflow_server(backend, workdir, env={"MLFLOW_TEAM_POLICY": str(workdir / "policy.toml")}) as url:
        yield url, backend


@pytest.fixture
def client(server):
    url, _ = server
    return MlflowClient(tracking_uri=url, registry_uri=url)


def test_tracking_round_trip_over_http(client):
    experiment_id = client.create_experiment("server/round-trip")
    run = client.create_run(experiment_id, tags={"team.project": "taxi"})
    client.log_param(run.info.run_id, "alpha", "0.1")
    for step in range(3):
        client.log_metric(run.info.run_id, "rmse", 6.0 - step, step=step)
    client.set_terminated(run.info.run_id)
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"alpha": "0.1"}
    assert got.data.metrics == {"rmse": 4.0}
    assert got.data.tags["team.name"] == "vision"  # filled in by the policy's default
    found = client.search_runs([experiment_id], filter_string="metrics.rmse < 5")
    assert [r.info.run_id for r in found] == [run.info.run_id]


def test_policy_rejection_reaches_the_client_as_400_with_the_same_message(client, server):
    _, backend = server
    with pytest.raises(RestException) as over_http:
        client.create_experiment("Bad Name")
    direct = TeamSqlAlchemyStore(backend, team_policy=_every_rule())
    with pytest.raises(MlflowException) as in_process:
        direct.create_experiment("Bad Name")
    assert over_http.value.get_http_status_code() == 400
    # RestException puts the error code in front; the text is the store's, unchanged.
    assert over_http.value.message == f"INVALID_PARAMETER_VALUE: {in_process.value.message}"
    assert "[rule: experiment-name]" in over_http.value.message
    assert client.get_experiment_by_name("Bad Name") is None


def test_author_tag_write_is_a_403(client):
    experiment_id = client.create_experiment("server/reserved")
    run = client.create_run(experiment_id, tags={"team.project": "taxi"})
    with pytest.raises(RestException, match=r"Tag 'team.author'.*\[rule: identity\]") as info:
        client.set_tag(run.info.run_id, "team.author", "mallory")
    assert info.value.get_http_status_code() == 403
    assert client.get_run(run.info.run_id).data.tags["team.author"] != "mallory"


def test_registry_aliases_and_models_uri_over_http(server):
    import mlflow
    from sklearn.linear_model import LinearRegression

    url, _ = server
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        mlflow.set_experiment("server/registry")
        X = np.arange(20, dtype=float).reshape(10, 2)
        y = X @ np.array([1.0, 2.0])
        with mlflow.start_run(tags={"team.project": "taxi"}) as run:
            mlflow.sklearn.log_model(
                LinearRegression().fit(X, y), name="model", registered_model_name="taxi.duration"
            )
        client = MlflowClient()
        client.set_registered_model_alias("taxi.duration", "champion", "1")
        model = mlflow.pyfunc.load_model("models:/taxi.duration@champion")
        assert np.allclose(model.predict(X[:2]), y[:2])

        with pytest.raises(RestException, match=r"holds the alias\(es\) \['champion'\]") as info:
            client.delete_model_version("taxi.duration", "1")
        assert info.value.get_http_status_code() == 403
        with pytest.raises(RestException, match=rf"Run '{run.info.run_id}' cannot be deleted"):
            client.delete_run(run.info.run_id)
        assert client.get_model_version("taxi.duration", "1").run_id == run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def _every_rule() -> Policy:
    from mlflow_team.config import parse_policy
    from tests.conftest import EVERY_RULE

    return parse_policy(EVERY_RULE)
