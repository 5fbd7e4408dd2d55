"""The team store through MLflow's own client on team+sqlite, every policy rule on.

Each rejection is checked twice: the client sees the message, and nothing of the request is
stored.
"""

from __future__ import annotations

import math

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

from mlflow_team.store.tracking import TeamSqlAlchemyStore


@pytest.fixture
def uri(tmp_path, policy_file):
    return f"team+sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def client(uri):
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def experiment_id(client):
    return client.create_experiment("vision/unit")


@pytest.fixture
def run_id(client, experiment_id):
    return client.create_run(experiment_id, tags={"team.project": "unit"}).info.run_id


def test_store_is_the_team_store_for_tracking_and_registry(client):
    assert type(client._tracking_client.store).__name__ == "TeamSqlAlchemyStore"
    assert type(client._get_registry_client().store).__name__ == "TeamModelRegistrySqlAlchemyStore"


def test_default_artifact_root_is_beside_the_database(client, tmp_path, experiment_id):
    location = client.get_experiment(experiment_id).artifact_location
    from mlflow.utils.file_utils import local_file_uri_to_path

    # MLflow writes the child URI as team+file:/abs/path (no empty authority): the same place.
    assert location.startswith("team+file:")
    assert local_file_uri_to_path(location[len("team+"):]) == str(tmp_path / "mlruns" / experiment_id)


def test_sqlite_runs_in_wal_mode(client, tmp_path):
    import sqlite3

    client.search_experiments()
    mode = sqlite3.connect(tmp_path / "mlflow.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_bad_experiment_name_is_rejected_and_not_created(client):
    with pytest.raises(MlflowException, match=r"Experiment name 'test1' was rejected.*\[rule: experiment-name\]"):
        client.create_experiment("test1")
    assert client.get_experiment_by_name("test1") is None


def test_renaming_to_a_bad_name_is_rejected(client, experiment_id):
    with pytest.raises(MlflowException, match=r"Experiment name 'Renamed' was rejected"):
        client.rename_experiment(experiment_id, "Renamed")
    assert client.get_experiment(experiment_id).name == "vision/unit"


def test_run_without_a_required_tag_is_rejected_and_not_created(client, experiment_id):
    with pytest.raises(MlflowException, match=r"runs must carry the tag\(s\) \['team.project'\]"):
        client.create_run(experiment_id)
    assert client.search_runs([experiment_id], run_view_type=ViewType.ALL) == []


def test_required_tag_defaults_are_stamped_on_new_runs(client, run_id):
    tags = client.get_run(run_id).data.tags
    assert tags["team.name"] == "vision"
    assert tags["team.project"] == "unit"


def test_required_tag_cannot_be_deleted(client, run_id):
    with pytest.raises(MlflowException, match=r"Deleting tag 'team.project'"):
        client.delete_tag(run_id, "team.project")
    assert client.get_run(run_id).data.tags["team.project"] == "unit"


def test_reserved_tag_cannot_be_set_at_creation(client, experiment_id):
    with pytest.raises(MlflowException, match=r"Tag 'team.author' .* \[rule: reserved-tags\]"):
        client.create_run(experiment_id, tags={"team.project": "p", "team.author": "mallory"})
    assert client.search_runs([experiment_id], run_view_type=ViewType.ALL) == []


def test_reserved_tag_cannot_be_set_later_or_in_a_batch(client, run_id):
    author = client.get_run(run_id).data.tags["team.author"]
    with pytest.raises(MlflowException, match=r"Tag 'team.author'"):
        client.set_tag(run_id, "team.author", "mallory")
    with pytest.raises(MlflowException, match=r"Tag 'team.author_verified'"):
        client.log_batch(run_id, tags=[RunTag("team.author_verified", "true")])
    with pytest.raises(MlflowException, match=r"Tag 'mlflow.user'"):
        client.delete_tag(run_id, "mlflow.user")
    tags = client.get_run(run_id).data.tags
    assert (tags["team.author"], tags["team.author_verified"], tags["mlflow.user"]) == (author, "false", author)


def test_too_long_param_is_rejected_not_truncated(client, run_id):
    with pytest.raises(MlflowException, match=r"Param 'config' value .* \(6001 characters\) was rejected"):
        client.log_param(run_id, "config", "x" * 6001)
    assert client.get_run(run_id).data.params == {}


def test_infinite_metric_is_rejected(client, run_id):
    with pytest.raises(MlflowException, match=r"Metric 'loss' value inf was rejected"):
        client.log_metric(run_id, "loss", float("1e309"))
    assert client.get_metric_history(run_id, "loss") == []


def test_fractional_step_is_rejected(client, run_id):
    with pytest.raises(MlflowException, match=r"Metric 'loss' step 1.5 was rejected"):
        client.log_metric(run_id, "loss", 0.5, step=1.5)
    assert client.get_metric_history(run_id, "loss") == []


def test_nan_metric_is_kept(client, run_id):
    client.log_metric(run_id, "loss", math.nan)
    assert math.isnan(client.get_run(run_id).data.metrics["loss"])


def test_batch_with_one_bad_value_stores_nothing(client, run_id):
    with pytest.raises(MlflowException, match=r"Param 'big'"):
        client.log_batch(
            run_id,
            metrics=[Metric("rmse", 1.0, 0, 0)],
            params=[Param("ok", "1"), Param("big", "y" * 7000)],
            tags=[RunTag("note", "hi")],
        )
    data = client.get_run(run_id).data
    assert data.params == {} and data.metrics == {} and "note" not in data.tags


def test_batch_changing_a_param_stores_nothing(client, run_id):
    client.log_param(run_id, "depth", "6")
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        client.log_batch(
            run_id,
            metrics=[Metric("rmse", 1.0, 0, 0)],
            params=[Param("eta", "0.3"), Param("depth", "7")],
            tags=[RunTag("note", "hi")],
        )
    data = client.get_run(run_id).data
    assert data.params == {"depth": "6"} and data.metrics == {} and "note" not in data.tags


def test_allowed_batch_is_stored_whole(client, run_id):
    client.log_batch(
        run_id,
        metrics=[Metric("rmse", 1.0, 0, s) for s in range(50)],
        params=[Param(f"p{i}", str(i)) for i in range(20)],
        tags=[RunTag("note", "hi")],
    )
    data = client.get_run(run_id).data
    assert len(data.params) == 20 and data.tags["note"] == "hi"
    assert len(client.get_metric_history(run_id, "rmse")) == 50


# --- protected deletions ---------------------------------------------------------------------


@pytest.fixture
def registered(client, run_id):
    """A registered version built from ``run_id``, holding the alias 'champion'."""
    name = "vision.resnet"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return name, version.version


def test_bad_registered_model_name_is_rejected(client):
    with pytest.raises(MlflowException, match=r"Registered model name 'ResNet' was rejected"):
        client.create_registered_model("ResNet")
    assert client.search_registered_models() == []


def test_run_backing_a_version_cannot_be_deleted(client, run_id, registered):
    with pytest.raises(MlflowException, match=rf"Run '{run_id}' cannot be deleted: it backs .*'vision.resnet' v1"):
        client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "active"


def test_experiment_backing_a_version_cannot_be_deleted(client, experiment_id, registered):
    with pytest.raises(MlflowException, match=rf"Experiment '{experiment_id}' cannot be deleted"):
        client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


def test_version_holding_an_alias_cannot_be_deleted_until_the_alias_goes(client, run_id, registered):
    name, version = registered
    with pytest.raises(MlflowException, match=r"holds the alias\(es\) \['champion'\]"):
        client.delete_model_version(name, version)
    with pytest.raises(MlflowException, match=r"Registered model 'vision.resnet' cannot be deleted"):
        client.delete_registered_model(name)
    client.delete_registered_model_alias(name, "champion")
    client.delete_model_version(name, version)
    client.delete_run(run_id)  # the link is gone, so the run may go too
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"


def test_version_from_a_deleted_run_is_rejected(client, experiment_id):
    run_id = client.create_run(experiment_id, tags={"team.project": "p"}).info.run_id
    client.delete_run(run_id)
    client.create_registered_model("vision.late")
    with pytest.raises(MlflowException, match=r"that run is deleted"):
        client.create_model_version("vision.late", f"runs:/{run_id}/model", run_id=run_id)
    assert client.search_model_versions("name='vision.late'") == []


def test_unprotected_run_deletes_and_restores_as_stock(client, run_id):
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    client.restore_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "active"


def test_logged_model_backing_a_version_cannot_be_deleted(client, experiment_id):
    run_id = client.create_run(experiment_id, tags={"team.project": "p"}).info.run_id
    model = client.create_logged_model(experiment_id, source_run_id=run_id, name="net")
    client.create_registered_model("vision.logged")
    client.create_model_version("vision.logged", f"models:/{model.model_id}", run_id=run_id, model_id=model.model_id)
    with pytest.raises(MlflowException, match=rf"Logged model '{model.model_id}' cannot be deleted"):
        client.delete_logged_model(model.model_id)


def test_read_replica_serves_reads(tmp_path, monkeypatch):
    from mlflow_team.store import compat

    if not compat.accepts("mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore.__init__", "read_db_uri"):
        pytest.skip("this MLflow has no read replicas (3.17+): `mlflow server` offers no replica flag")
    primary = f"team+sqlite:///{tmp_path}/primary.db"
    replica = f"team+sqlite:///{tmp_path}/replica.db"
    TeamSqlAlchemyStore(replica).create_experiment("only-on-replica")
    monkeypatch.setenv("_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE", replica)
    from mlflow_team.store.tracking import build

    store = build(primary)
    assert store.read_engine is not None
    assert store.get_experiment_by_name("only-on-replica") is not None


def test_store_builder_accepts_unknown_keywords(tmp_path):
    from mlflow_team.entrypoints import registry_store, tracking_store

    uri = f"team+sqlite:///{tmp_path}/kw.db"
    assert tracking_store(store_uri=uri, artifact_uri=None, future_keyword=1) is not None
    assert registry_store(store_uri=uri, tracking_uri=uri, future_keyword=1) is not None


def test_workspace_mode_uses_the_workspace_aware_stores(tmp_path, monkeypatch, policy_file):
    from mlflow.utils.workspace_context import WorkspaceContext

    from mlflow_team.store.registry import build as build_registry
    from mlflow_team.store.tracking import build

    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    uri = f"team+sqlite:///{tmp_path}/ws.db"
    store = build(uri)
    assert type(store).__name__ == "TeamWorkspaceAwareSqlAlchemyStore" and store.supports_workspaces
    assert build_registry(uri).supports_workspaces
    with WorkspaceContext("default"):
        with pytest.raises(MlflowException, match=r"\[rule: experiment-name\]"):
            store.create_experiment("No Good")
        experiment_id = store.create_experiment("vision/workspaces")
        assert store.get_experiment(experiment_id).workspace == "default"


def test_an_in_memory_database_works_as_stock_in_memory_does(policy_file):
    """`team+sqlite:///:memory:` is one database per process, as `sqlite:///:memory:` is, with
    the policy in force (MLflow's own engine and sessions serve it)."""
    uri = "team+sqlite:///:memory:"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment("vision/in-memory")
    run = client.create_run(experiment_id, tags={"team.project": "memory"})
    client.log_batch(run.info.run_id, metrics=[Metric("rmse", 5.5, 0, 0)], params=[Param("alpha", "0.1")])
    client.set_terminated(run.info.run_id)
    client.create_registered_model("vision.in-memory")
    client.create_model_version("vision.in-memory", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("vision.in-memory", "champion", 1)

    again = MlflowClient(tracking_uri=uri, registry_uri=uri)  # the same database, as with stock
    found = again.search_runs([experiment_id])
    assert [(r.data.metrics, r.data.params, r.info.status) for r in found] == [
        ({"rmse": 5.5}, {"alpha": "0.1"}, "FINISHED")
    ]
    assert found[0].data.tags["team.author"]
    assert str(again.get_model_version_by_alias("vision.in-memory", "champion").version) == "1"
    with pytest.raises(MlflowException, match=r"\[rule: experiment-name\]"):
        client.create_experiment("Not A Team Name")
