"""Policy rejections on every database: the client sees the rule, and nothing is stored."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from tests.conftest import unique

pytestmark = pytest.mark.usefixtures("policy_file")


@pytest.fixture
def client(db_url):
    uri = f"team+{db_url}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_names_and_required_tags_are_enforced(client):
    with pytest.raises(MlflowException, match=r"\[rule: experiment-name\]"):
        client.create_experiment("Not A Team Name")
    experiment_id = client.create_experiment(unique("policy/names"))
    with pytest.raises(MlflowException, match=r"\[rule: required-tags\]"):
        client.create_run(experiment_id)
    assert client.search_runs([experiment_id], run_view_type=ViewType.ALL) == []


def test_rejected_batch_leaves_nothing(client):
    experiment_id = client.create_experiment(unique("policy/batch"))
    run_id = client.create_run(experiment_id, tags={"team.project": "p"}).info.run_id
    with pytest.raises(MlflowException, match=r"\[rule: lossless-values\]"):
        client.log_batch(
            run_id,
            metrics=[Metric("rmse", 1.0, 0, 0), Metric("bad", float("inf"), 0, 0)],
            params=[Param("ok", "1")],
            tags=[RunTag("note", "x")],
        )
    data = client.get_run(run_id).data
    assert data.metrics == {} and data.params == {} and "note" not in data.tags


def test_links_protect_runs_experiments_and_aliased_versions(client):
    experiment_id = client.create_experiment(unique("policy/links"))
    run_id = client.create_run(experiment_id, tags={"team.project": "p"}).info.run_id
    name = unique("policy.links").replace("/", "-")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version
    client.set_registered_model_alias(name, "champion", version)

    with pytest.raises(MlflowException, match=rf"Run '{run_id}' cannot be deleted"):
        client.delete_run(run_id)
    with pytest.raises(MlflowException, match=rf"Experiment '{experiment_id}' cannot be deleted"):
        client.delete_experiment(experiment_id)
    with pytest.raises(MlflowException, match=r"holds the alias\(es\) \['champion'\]"):
        client.delete_model_version(name, version)
    assert client.get_run(run_id).info.lifecycle_stage == "active"

    client.delete_registered_model_alias(name, "champion")
    client.delete_model_version(name, version)
    client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
