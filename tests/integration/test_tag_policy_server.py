"""The tag rule through a real `mlflow server` on the team store, with MLflow's default worker
count: MLflow's client and a plain REST call meet the refusal as an MLflow error carrying the
policy's message, on every entity, and the server's own stamp still lands."""

from __future__ import annotations

import json
import subprocess
import uuid

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_team import errors, policy
from mlflow_team.config import parse_policy
from tests.conftest import stock_env
from tests.helpers.server import mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

POLICY = {"reserved-tags": {"extra": ["team.cost-center"]}}
POLICY_TOML = '[reserved-tags]\nextra = ["team.cost-center"]\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tag-policy-server")
    (workdir / "policy.toml").write_text(POLICY_TOML)
    env = {"MLFLOW_TEAM_POLICY": str(workdir / "policy.toml")}
    with mlflow_server(f"team+sqlite:///{workdir}/mlflow.db", workdir, env=env, workers=None) as url:
        yield url


@pytest.fixture
def client(server):
    return MlflowClient(tracking_uri=server, registry_uri=server)


@pytest.fixture
def made(client):
    """One of each entity, made through the server."""
    experiment_id = client.create_experiment(f"tags/{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id).info.run_id
    name = f"tags.{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = str(client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version)
    return {"experiment": experiment_id, "run": run_id, "model": name, "version": version}


def expected(entity, action, ids, key, value=None) -> str:
    """The refusal the policy makes, as MLflow's client shows a REST error: code, then message."""
    write = policy.tag_write(entity, action, ids, [(key, value)])
    with pytest.raises(errors.ReservedTag) as info:
        policy.decide_tag_write(parse_policy(POLICY), write)
    return f"PERMISSION_DENIED: {info.value.message}"


def test_every_entity_refuses_author_and_reserved_tags_over_http_with_the_policys_message(client, made):
    experiment_id, run_id, name, version = made["experiment"], made["run"], made["model"], made["version"]
    cases = [
        (lambda: client.set_tag(run_id, "team.author", "mallory"),
         (policy.RUN, policy.SET, [run_id], "team.author", "mallory")),
        (lambda: client.delete_tag(run_id, "team.cost-center"),
         (policy.RUN, policy.DELETE, [run_id], "team.cost-center")),
        (lambda: client.create_run(experiment_id, tags={"team.cost-center": "42"}),
         (policy.RUN, policy.CREATE, [experiment_id], "team.cost-center", "42")),
        (lambda: client.set_experiment_tag(experiment_id, "team.author", "mallory"),
         (policy.EXPERIMENT, policy.SET, [experiment_id], "team.author", "mallory")),
        (lambda: client.delete_experiment_tag(experiment_id, "mlflow.user"),
         (policy.EXPERIMENT, policy.DELETE, [experiment_id], "mlflow.user")),
        (lambda: client.create_experiment("tags/forged", tags={"team.author": "mallory"}),
         (policy.EXPERIMENT, policy.CREATE, ["tags/forged"], "team.author", "mallory")),
        (lambda: client.set_registered_model_tag(name, "team.cost-center", "42"),
         (policy.REGISTERED_MODEL, policy.SET, [name], "team.cost-center", "42")),
        (lambda: client.delete_registered_model_tag(name, "team.author"),
         (policy.REGISTERED_MODEL, policy.DELETE, [name], "team.author")),
        (lambda: client.create_registered_model("tags.forged", tags={"team.author_verified": "true"}),
         (policy.REGISTERED_MODEL, policy.CREATE, ["tags.forged"], "team.author_verified", "true")),
        (lambda: client.set_model_version_tag(name, version, "team.author", "mallory"),
         (policy.MODEL_VERSION, policy.SET, [name, version], "team.author", "mallory")),
        (lambda: client.delete_model_version_tag(name, version, "team.author_verified"),
         (policy.MODEL_VERSION, policy.DELETE, [name, version], "team.author_verified")),
        (lambda: client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id,
                                             tags={"team.cost-center": "42"}),
         (policy.MODEL_VERSION, policy.CREATE, [name], "team.cost-center", "42")),
    ]
    for attempt, refusal in cases:
        with pytest.raises(MlflowException) as info:
            attempt()
        assert info.value.message == expected(*refusal)
        assert info.value.get_http_status_code() == 403
    assert client.get_experiment_by_name("tags/forged") is None
    assert client.search_registered_models("name = 'tags.forged'") == []
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == [version]
    assert client.get_experiment(experiment_id).tags == {}
    assert client.get_registered_model(name).tags == {}


def test_a_plain_rest_call_meets_the_refusal_as_an_mlflow_error(server, made):
    """A client in another language, or one without mlflow-team: the JSON error MLflow sends."""
    body = {"name": made["model"], "key": "team.author", "value": "mallory"}
    response = requests.post(f"{server}/api/2.0/mlflow/registered-models/set-tag", json=body, timeout=30)
    assert response.status_code == 403
    error = response.json()
    assert error["error_code"] == "PERMISSION_DENIED"
    assert f"PERMISSION_DENIED: {error['message']}" == expected(
        policy.REGISTERED_MODEL, policy.SET, [made["model"]], "team.author", "mallory"
    )


def test_the_servers_own_stamp_still_lands_on_runs_and_versions(client, server, made, monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    mlflow.set_tracking_uri(server)  # the author header goes to the tracking server in use
    run = client.create_run(made["experiment"], tags={"note": "stamped"})
    assert (run.data.tags["team.author"], run.data.tags["team.author_verified"]) == ("alice@example.com", "false")
    version = client.create_model_version(made["model"], f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                          tags={"data": "jan"})
    assert version.tags == {"data": "jan", "team.author": "alice@example.com", "team.author_verified": "false"}
    assert version.user_id == "alice@example.com"
    client.set_model_version_tag(made["model"], version.version, "checked", "yes")
    client.delete_model_version_tag(made["model"], version.version, "data")
    assert client.get_model_version(made["model"], version.version).tags == {
        "checked": "yes", "team.author": "alice@example.com", "team.author_verified": "false"
    }


STOCK_CLIENT = r"""
import json, sys
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

url, name, version, experiment_id = sys.argv[1:5]
client = MlflowClient(url, registry_uri=url)
seen = []
for attempt in (
    lambda: client.set_model_version_tag(name, version, "team.author", "mallory"),
    lambda: client.set_experiment_tag(experiment_id, "team.cost-center", "42"),
    lambda: client.set_model_version_tag(name, version, "checked", "yes"),
):
    try:
        attempt()
        seen.append(None)
    except MlflowException as exc:
        seen.append([exc.error_code, exc.message])
print(json.dumps(seen))
"""


def test_a_client_without_mlflow_team_meets_the_refusal_as_an_mlflow_error(stock_python, server, made, tmp_path):
    script = tmp_path / "stock_tags.py"
    script.write_text(STOCK_CLIENT)
    result = subprocess.run(
        [stock_python, str(script), server, made["model"], made["version"], made["experiment"]],
        capture_output=True, text=True, cwd=tmp_path, env=stock_env(), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == [
        ["PERMISSION_DENIED", expected(policy.MODEL_VERSION, policy.SET, [made["model"], made["version"]],
                                       "team.author", "mallory")],
        ["PERMISSION_DENIED", expected(policy.EXPERIMENT, policy.SET, [made["experiment"]], "team.cost-center", "42")],
        None,
    ]
