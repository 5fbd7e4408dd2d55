"""One rule for every tag write, as MLflow's own client meets it on team+sqlite: creating, setting
and deleting tags on runs, experiments, registered models and model versions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from mlflow import MlflowClient
from mlflow.entities import RunTag, ViewType
from mlflow.exceptions import MlflowException

AUTHOR = "alice@example.com"
AUTHOR_TAGS = ("mlflow.user", "team.author", "team.author_verified")
RESERVED = "team.cost-center"  # an extra reserved tag of the policy below


@dataclass(frozen=True)
class Entity:
    """How a client creates one kind of entity with tags, sets, deletes and reads them."""

    name: str
    create: Callable[[MlflowClient, dict[str, str]], Any]  # returns the handle set/delete/tags take
    set: Callable[[MlflowClient, Any, str, str], None]
    delete: Callable[[MlflowClient, Any, str], None]
    tags: Callable[[MlflowClient, Any], dict[str, str]]
    count: Callable[[MlflowClient], int]  # how many exist: a refused create adds none


def _name() -> str:
    return f"tags-{uuid.uuid4().hex[:8]}"


def _new_version(client: MlflowClient, tags: dict[str, str]):
    run_id = client.create_run("0").info.run_id
    name = "tags.versions"
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    return name, client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=tags).version


ENTITIES = [
    Entity(
        "run",
        lambda c, tags: c.create_run("0", tags=tags).info.run_id,
        lambda c, run_id, k, v: c.set_tag(run_id, k, v),
        lambda c, run_id, k: c.delete_tag(run_id, k),
        lambda c, run_id: c.get_run(run_id).data.tags,
        lambda c: len(c.search_runs(["0"], run_view_type=ViewType.ALL)),
    ),
    Entity(
        "experiment",
        lambda c, tags: c.create_experiment(_name(), tags=tags),
        lambda c, experiment_id, k, v: c.set_experiment_tag(experiment_id, k, v),
        lambda c, experiment_id, k: c.delete_experiment_tag(experiment_id, k),
        lambda c, experiment_id: c.get_experiment(experiment_id).tags,
        lambda c: len(c.search_experiments(view_type=ViewType.ALL)),
    ),
    Entity(
        "registered model",
        lambda c, tags: c.create_registered_model(_name(), tags=tags).name,
        lambda c, name, k, v: c.set_registered_model_tag(name, k, v),
        lambda c, name, k: c.delete_registered_model_tag(name, k),
        lambda c, name: c.get_registered_model(name).tags,
        lambda c: len(c.search_registered_models()),
    ),
    Entity(
        "model version",
        _new_version,
        lambda c, version, k, v: c.set_model_version_tag(*version, k, v),
        lambda c, version, k: c.delete_model_version_tag(*version, k),
        lambda c, version: c.get_model_version(*version).tags,
        lambda c: len(c.search_model_versions()),
    ),
]
BY_NAME = pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name.replace(" ", "-"))


@pytest.fixture
def client_under(database, tmp_path, monkeypatch):
    """A client on the module's team+sqlite database (tests/unit/conftest.py) under the given
    policy file in the working directory: the store reads it when built, built anew per test."""
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", AUTHOR)

    def build(policy_text: str) -> MlflowClient:
        (tmp_path / "mlflow-team.toml").write_text(policy_text)
        return MlflowClient(tracking_uri=database, registry_uri=database)

    return build


@pytest.fixture
def client(client_under):
    """The default policy (identity stamping on) plus one reserved tag of the team's own."""
    return client_under(f'[reserved-tags]\nextra = ["{RESERVED}"]\n')


def refused(rule: str, key: str):
    return pytest.raises(MlflowException, match=rf"^Tag '{key}' .* was rejected: .*\[rule: {rule}\]$")


@BY_NAME
def test_tags_of_ones_own_are_created_set_and_deleted_on_every_entity(client, entity):
    handle = entity.create(client, {"owner": "vision", "stage": "dev"})
    entity.set(client, handle, "stage", "prod")
    entity.delete(client, handle, "owner")
    tags = {k: v for k, v in entity.tags(client, handle).items() if not k.startswith(("mlflow.", "team."))}
    assert tags == {"stage": "prod"}


@BY_NAME
@pytest.mark.parametrize("key", AUTHOR_TAGS)
def test_a_client_cannot_set_or_delete_an_author_tag_on_any_entity(client, entity, key):
    handle = entity.create(client, {})
    before = entity.tags(client, handle)
    with refused("identity", key) as info:
        entity.set(client, handle, key, "mallory")
    assert info.value.get_http_status_code() == 403
    with refused("identity", key):
        entity.delete(client, handle, key)
    assert entity.tags(client, handle) == before


@BY_NAME
def test_a_client_cannot_create_set_or_delete_a_reserved_tag_on_any_entity(client, entity):
    count = entity.count(client)
    with refused("reserved-tags", RESERVED):
        entity.create(client, {RESERVED: "42", "owner": "vision"})
    assert entity.count(client) == count
    handle = entity.create(client, {"owner": "vision"})
    for attempt in (lambda: entity.set(client, handle, RESERVED, "42"), lambda: entity.delete(client, handle, RESERVED)):
        with refused("reserved-tags", RESERVED):
            attempt()
    assert RESERVED not in entity.tags(client, handle)


@pytest.mark.parametrize("entity", ENTITIES[1:3], ids=["experiment", "registered-model"])
@pytest.mark.parametrize("key", AUTHOR_TAGS)
def test_an_entity_the_store_does_not_stamp_is_not_created_with_an_author_tag(client, entity, key):
    count = entity.count(client)
    with refused("identity", key):
        entity.create(client, {key: AUTHOR})
    assert entity.count(client) == count


def test_a_run_and_a_version_still_get_the_stamp_with_the_author_tags_reserved(client_under):
    """The store's own writes of the author tags pass: the stamp is part of the create it decides."""
    client = client_under("[reserved-tags]\n")
    run = client.create_run("0", tags={"mlflow.user": "root", "team.author": AUTHOR})
    stamped = {k: run.data.tags[k] for k in AUTHOR_TAGS}
    assert stamped == {"mlflow.user": AUTHOR, "team.author": AUTHOR, "team.author_verified": "false"}
    name = _name()
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/m", run_id=run.info.run_id,
                                          tags={"data": "jan"})
    assert version.tags == {"data": "jan", "team.author": AUTHOR, "team.author_verified": "false"}
    assert version.user_id == AUTHOR


@pytest.mark.parametrize("entity", [ENTITIES[0], ENTITIES[3]], ids=["run", "model-version"])
def test_a_forged_author_is_not_created_on_a_run_or_version(client_under, entity):
    client = client_under("[reserved-tags]\n")
    count = entity.count(client)
    with refused("reserved-tags", "team.author"):
        entity.create(client, {"team.author": "mallory"})
    assert entity.count(client) == count


def test_a_batch_with_an_author_tag_writes_nothing(client):
    run_id = client.create_run("0").info.run_id
    with refused("identity", "team.author"):
        client.log_batch(run_id, tags=[RunTag("note", "x"), RunTag("team.author", "mallory")])
    assert "note" not in client.get_run(run_id).data.tags


@BY_NAME
def test_with_identity_and_reserved_tags_off_author_tags_are_ordinary_tags(client_under, entity):
    client = client_under("[identity]\nenabled = false\n")
    handle = entity.create(client, {"team.author": "bob"})
    entity.set(client, handle, "mlflow.user", "bob")
    entity.delete(client, handle, "team.author")
    tags = entity.tags(client, handle)
    assert tags["mlflow.user"] == "bob" and "team.author" not in tags
