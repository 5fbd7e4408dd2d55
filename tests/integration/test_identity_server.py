"""Author identity through real `mlflow server` processes: who gets stamped, and every forgery.

Three servers on team+sqlite: the default set-up (unsigned identities accepted and marked so), a
server with a keyring that accepts only signed authors, and a server behind MLflow's own
basic-auth app. Clients are MLflow's own, plus raw HTTP where an attacker would write requests by
hand.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pytest
import requests
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_team.identity import signing
from mlflow_team.cli import cli
from tests.helpers.server import mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

ALICE_KEY = "a1" * 32
CREATE_RUN = "/api/2.0/mlflow/runs/create"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("open")
    with mlflow_server(f"team+sqlite:///{workdir}/mlflow.db", workdir) as url:
        yield url


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("signed")
    (workdir / "keyring.toml").write_text(
        f'[keys]\n"alice@example.com" = "{ALICE_KEY}"\n"bob@example.com" = "{"b2" * 32}"\n'
    )
    (workdir / "mlflow-team.toml").write_text('[identity]\nkeyring = "keyring.toml"\n[reserved-tags]\n')
    with mlflow_server(f"team+sqlite:///{workdir}/mlflow.db", workdir) as url:
        yield url, workdir


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("auth")
    # MLflow's own auth config with the admin password replaced: the file form works on every
    # supported minor (MLFLOW_AUTH_ADMIN_PASSWORD only from 3.13).
    from pathlib import Path

    import mlflow.server.auth

    stock = (Path(mlflow.server.auth.__file__).parent / "basic_auth.ini").read_text()
    config = workdir / "basic_auth.ini"
    lines = [line for line in stock.splitlines() if not line.startswith(("admin_password", "database_uri"))]
    lines.insert(1, f"database_uri = sqlite:///{workdir}/basic_auth.db")
    lines.insert(1, "admin_password = admin-pass-1234")
    config.write_text("\n".join(lines) + "\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "s" * 32}
    with mlflow_server(
        f"team+sqlite:///{workdir}/mlflow.db", workdir, env=env, extra=["--app-name", "basic-auth"]
    ) as url:
        yield url


def author_tags(client: MlflowClient, run_id: str) -> tuple[str, str, str, str]:
    run = client.get_run(run_id)
    tags = run.data.tags
    return tags["team.author"], tags["team.author_verified"], tags["mlflow.user"], run.info.user_id


def create_run_body(experiment_id: str = "0", **tags: str) -> bytes:
    return json.dumps({
        "experiment_id": experiment_id,
        "start_time": int(time.time() * 1000),
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }).encode()


def signed(body: bytes, author: str = "alice@example.com", key: str = ALICE_KEY, when: float | None = None):
    return signing.sign_headers(
        key.encode(), author, time.time() if when is None else when, "POST", CREATE_RUN, "", body
    )


def post(server: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(server + CREATE_RUN, data=body, headers={"Content-Type": "application/json", **headers}, timeout=30)


def run_count(server: str) -> int:
    return len(MlflowClient(server).search_runs(["0"]))


# --- the default server: unsigned identities, marked unverified --------------------------------


def test_fluent_run_gets_the_clients_author_not_its_claimed_user(open_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    mlflow.set_tracking_uri(open_server)
    with mlflow.start_run(tags={"mlflow.user": "root"}) as run:
        mlflow.log_param("alpha", 0.1)
    assert author_tags(MlflowClient(open_server), run.info.run_id) == (
        "alice@example.com", "false", "alice@example.com", "alice@example.com")


def test_stock_client_without_the_header_is_stamped_with_its_claim(open_server):
    response = post(open_server, create_run_body(**{"mlflow.user": "bob"}), {})
    assert response.status_code == 200, response.text
    run_id = response.json()["run"]["info"]["run_id"]
    assert author_tags(MlflowClient(open_server), run_id)[:2] == ("bob", "false")


def test_request_naming_no_author_is_served_and_stamped_unknown(open_server):
    """A REST call from another language, or stock MLflow registering a version, names nobody:
    served as a stock server would, the author recorded as unknown and unverified."""
    response = post(open_server, create_run_body(), {})
    assert response.status_code == 200, response.text
    run_id = response.json()["run"]["info"]["run_id"]
    assert author_tags(MlflowClient(open_server), run_id)[:2] == ("unknown", "false")


def test_author_tags_cannot_be_rewritten_through_the_server(open_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    client = MlflowClient(open_server)
    mlflow.set_tracking_uri(open_server)
    run_id = client.create_run("0").info.run_id
    for attempt in (
        lambda: client.set_tag(run_id, "team.author", "mallory"),
        lambda: client.set_tag(run_id, "mlflow.user", "mallory"),
        lambda: client.delete_tag(run_id, "team.author_verified"),
    ):
        with pytest.raises(MlflowException, match=r"\[rule: identity\]") as info:
            attempt()
        assert info.value.get_http_status_code() == 403
    assert author_tags(client, run_id)[0] == "alice@example.com"


def test_identity_command_reports_what_the_open_server_accepts(open_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    result = CliRunner().invoke(cli, ["identity", "--server", open_server])
    assert result.exit_code == 0, result.output
    assert "author: alice@example.com (from MLFLOW_TEAM_AUTHOR)" in result.output
    assert "key: none" in result.output
    assert "accepts you as 'alice@example.com' (verified: False, from: header)" in result.output
    assert run_count(open_server) >= 0 and "Nothing was created" in result.output


# --- the signed server: a keyring, signatures required -----------------------------------------


def test_signed_client_is_the_verified_author_of_runs_and_versions(signed_server, monkeypatch):
    server, _ = signed_server
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_KEY", ALICE_KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "team")
    mlflow.set_tracking_uri(server)
    with mlflow.start_run(tags={"mlflow.user": "root"}) as run:
        mlflow.log_metric("rmse", 5.1)
    client = MlflowClient(server)
    assert author_tags(client, run.info.run_id) == (
        "alice@example.com", "true", "alice@example.com", "alice@example.com")
    client.create_registered_model("taxi")
    version = client.create_model_version("taxi", f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert (version.tags["team.author"], version.tags["team.author_verified"]) == ("alice@example.com", "true")


@pytest.mark.parametrize("given", ["tracking_uri", "registry_uri"])
def test_a_client_given_the_url_is_the_verified_author_with_no_global_uri(signed_server, monkeypatch, given, tmp_path):
    """MlflowClient(tracking_uri=url) or (registry_uri=url), nothing set globally: the signed
    author goes to that server (tests/unit/test_identity_client.py: and to no other host)."""
    server, _ = signed_server
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_KEY", ALICE_KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "team")
    assert not mlflow.get_tracking_uri().startswith("http")
    name = f"taxi-{given.replace('_', '-')}"
    if given == "tracking_uri":
        client = MlflowClient(tracking_uri=server)
        run_id = client.create_run("0").info.run_id
        assert author_tags(client, run_id)[:2] == ("alice@example.com", "true")
        source = f"runs:/{run_id}/model"
    else:
        client = MlflowClient(tracking_uri=f"team+sqlite:///{tmp_path}/local.db", registry_uri=server)
        run_id, source = None, "s3://models/taxi/1"
    client.create_registered_model(name)
    version = client.create_model_version(name, source, run_id)
    assert (version.tags["team.author"], version.tags["team.author_verified"]) == ("alice@example.com", "true")
    assert version.user_id == "alice@example.com"


@pytest.mark.parametrize(
    "attack, expected",
    [
        ("unsigned header", "accepts only signed or authenticated identities"),
        ("wrong key", "does not match the key the server holds"),
        ("unknown author", "keyring has no key for that author"),
        ("old signature", "away from the server's clock"),
        ("author swapped after signing", "does not match the key the server holds"),
        ("body changed after signing", "does not match the key the server holds"),
        ("signature without timestamp", "came without X-MLflow-Team-Timestamp"),
    ],
)
def test_forged_identities_are_refused_with_401_and_create_nothing(signed_server, attack, expected):
    server, workdir = signed_server
    body = create_run_body(**{"mlflow.user": "alice@example.com"})
    headers = {
        "unsigned header": {signing.AUTHOR_HEADER: "alice@example.com"},
        "wrong key": signed(body, key="f" * 64),
        "unknown author": signed(body, author="mallory@example.com", key="f" * 64),
        "old signature": signed(body, when=time.time() - 600),
        "author swapped after signing": {**signed(body), signing.AUTHOR_HEADER: "bob@example.com"},
        "body changed after signing": signed(create_run_body("0", note="other")),
        "signature without timestamp": {
            k: v for k, v in signed(body).items() if k != signing.TIMESTAMP_HEADER
        },
    }[attack]
    before = run_count(server)
    response = post(server, body, headers)
    assert response.status_code == 401, response.text
    message = response.json()["message"]
    assert expected in message and message.endswith("[rule: identity]")
    assert run_count(server) == before
    # Keys and signatures appear nowhere: not in the answer, not in the server's log.
    secrets = [ALICE_KEY, "f" * 64, headers.get(signing.SIGNATURE_HEADER, ALICE_KEY)]
    logs = "".join(p.read_text() for p in Path(workdir).glob("server-*.log"))
    assert not any(secret in message or secret in logs for secret in secrets)


def test_replayed_signed_request_is_refused(signed_server):
    server, _ = signed_server
    body = create_run_body()
    headers = signed(body)
    first = post(server, body, headers)
    assert first.status_code == 200, first.text
    again = post(server, body, headers)
    assert again.status_code == 401
    assert "already used" in again.json()["message"]


def test_identity_command_checks_a_key_against_the_server(signed_server, monkeypatch):
    server, _ = signed_server
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "team")
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_KEY", ALICE_KEY)
    ok = CliRunner().invoke(cli, ["identity", "--server", server])
    assert ok.exit_code == 0, ok.output
    assert "key: configured (MLFLOW_TEAM_AUTHOR_KEY)" in ok.output
    assert "(verified: True, from: signature)" in ok.output
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_KEY", "0" * 64)
    bad = CliRunner().invoke(cli, ["identity", "--server", server])
    assert bad.exit_code == 1
    assert "rejected (401)" in bad.output and "0" * 64 not in bad.output


# --- MLflow's own auth: the logged-in user is the author ---------------------------------------


def test_basic_auth_user_is_the_author_whatever_the_header_says(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-pass-1234")
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "mallory@example.com")
    mlflow.set_tracking_uri(auth_server)
    with mlflow.start_run(tags={"mlflow.user": "mallory"}) as run:
        pass
    assert author_tags(MlflowClient(auth_server), run.info.run_id) == ("admin", "true", "admin", "admin")
