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


def test_author_and_reserved_tags_are_refused_on_every_entity(client):
    """One rule for every tag write: what a client cannot write on a run it cannot write on an
    experiment, a registered model or a model version either, and a refused create makes nothing."""
    experiment_name = unique("policy/tags")
    with pytest.raises(MlflowException, match=r"Tag 'team.author' .* on new experiment .*\[rule: identity\]"):
        client.create_experiment(experiment_name, tags={"team.author": "mallory"})
    assert client.get_experiment_by_name(experiment_name) is None
    experiment_id = client.create_experiment(experiment_name)
    run_id = client.create_run(experiment_id, tags={"team.project": "p"}).info.run_id
    name = unique("policy.tags")
    with pytest.raises(MlflowException, match=r"Tag 'mlflow.user' .* on new registered model .*\[rule: identity\]"):
        client.create_registered_model(name, tags={"mlflow.user": "mallory"})
    assert client.search_registered_models(f"name = '{name}'") == []
    client.create_registered_model(name)
    with pytest.raises(MlflowException, match=r"Tag 'team.author' .* on a new version .*\[rule: reserved-tags\]"):
        client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={"team.author": "mallory"})
    assert client.search_model_versions(f"name = '{name}'") == []
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version
    stamped = client.get_model_version(name, version).tags

    for attempt in (
        lambda: client.set_experiment_tag(experiment_id, "team.author", "mallory"),
        lambda: client.delete_experiment_tag(experiment_id, "mlflow.user"),
        lambda: client.set_registered_model_tag(name, "team.author_verified", "true"),
        lambda: client.delete_registered_model_tag(name, "team.author"),
        lambda: client.set_model_version_tag(name, version, "team.author", "mallory"),
        lambda: client.delete_model_version_tag(name, version, "team.author_verified"),
        lambda: client.set_tag(run_id, "team.author", "mallory"),
        lambda: client.delete_tag(run_id, "team.author"),
    ):
        with pytest.raises(MlflowException, match=r"\[rule: identity\]") as info:
            attempt()
        assert info.value.get_http_status_code() == 403
    assert client.get_experiment(experiment_id).tags == {}
    assert client.get_registered_model(name).tags == {}
    assert client.get_model_version(name, version).tags == stamped
    assert stamped["team.author_verified"] == "false"
