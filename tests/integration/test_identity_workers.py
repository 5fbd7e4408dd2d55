"""Identity on a team server as a team runs it: `mlflow server` with its default worker count.

The servers hold a keyring and the policy switch ``[identity] require-verified = true``, on
SQLite and on PostgreSQL. A request no signature or login vouches for (a client without
mlflow-team, a REST call from another language) is a 401 that says how to identify, and a
captured signed request is accepted once, whichever worker each copy reaches.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
import requests
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_team import errors
from mlflow_team.identity import signing
from tests.conftest import stock_env, unique
from tests.helpers.server import DEFAULT_WORKERS, mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

ALICE_KEY = "a1" * 32
CREATE_RUN = "/api/2.0/mlflow/runs/create"


class ServerUrl(str):
    """A server's URL that also knows the SQLAlchemy URL of its database."""

    database: str


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def strict_server(request, tmp_path_factory):
    """A team server with a keyring and require-verified, on its default worker count."""
    workdir = tmp_path_factory.mktemp(f"strict-{request.param}")
    (workdir / "keyring.toml").write_text(f'[keys]\n"alice@example.com" = "{ALICE_KEY}"\n')
    (workdir / "mlflow-team.toml").write_text('[identity]\nkeyring = "keyring.toml"\nrequire-verified = true\n')
    if request.param == "sqlite":
        backend = f"team+sqlite:///{workdir}/mlflow.db"
    else:
        backend = "team+" + request.getfixturevalue("postgresql_url")
    with mlflow_server(backend, workdir, workers=DEFAULT_WORKERS) as url:
        server = ServerUrl(url)
        server.database = backend.removeprefix("team+")
        yield server


@pytest.fixture
def alice(monkeypatch):
    """This process signs as alice."""
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_KEY", ALICE_KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "team")


def create_run_body(**tags: str) -> bytes:
    return json.dumps({
        "experiment_id": "0",
        "start_time": int(time.time() * 1000),
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }).encode()


def post(server: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(server + CREATE_RUN, data=body, headers={"Content-Type": "application/json", **headers}, timeout=60)


def run_count(server: str) -> int:
    return len(MlflowClient(server).search_runs(["0"], max_results=50000))


HOW = errors.UNVERIFIED_HOW_SIGN


def test_a_rest_call_naming_only_a_claimed_author_is_refused_with_how_to_identify(strict_server):
    before = run_count(strict_server)
    response = post(strict_server, create_run_body(**{"mlflow.user": "bob"}), {})
    assert response.status_code == 401, response.text
    message = response.json()["message"]
    assert message == errors.UNVERIFIED_REJECTED.format(author="'bob'", how=HOW)
    assert run_count(strict_server) == before


def test_a_client_without_the_identity_plugins_cannot_register_a_version(strict_server, monkeypatch):
    """MLflow's own client with mlflow-team's plugins off sends what a stock client sends."""
    monkeypatch.setenv("MLFLOW_TEAM_IDENTITY", "off")
    client = MlflowClient(strict_server)
    name = unique("taxi")
    client.create_registered_model(name)  # not an authored object: served as by a stock server
    with pytest.raises(MlflowException, match=r"require-verified = true") as info:
        client.create_model_version(name, "s3://models/taxi/1")
    assert info.value.get_http_status_code() == 401
    assert HOW in info.value.message
    assert client.search_model_versions(f"name = '{name}'") == []


def test_a_signed_client_is_the_verified_author(strict_server, alice):
    client = MlflowClient(tracking_uri=strict_server)
    run = client.create_run("0")
    assert (run.data.tags["team.author"], run.data.tags["team.author_verified"]) == ("alice@example.com", "true")
    name = unique("taxi")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert (version.tags["team.author"], version.user_id) == ("alice@example.com", "alice@example.com")


STOCK_CREATE_RUN = r"""
import sys, mlflow
from mlflow.exceptions import MlflowException
try:
    mlflow.MlflowClient(sys.argv[1]).create_run("0")
except MlflowException as exc:
    print(exc.get_http_status_code(), exc.message)
"""


def test_a_stock_client_is_refused_with_how_to_identify(strict_server, stock_python, tmp_path):
    result = subprocess.run([stock_python, "-c", STOCK_CREATE_RUN, strict_server], capture_output=True, text=True,
                            cwd=tmp_path, env=stock_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("401 ") and HOW in result.stdout


def test_the_identity_command_reports_the_refusal_and_how_to_identify(strict_server, monkeypatch):
    from click.testing import CliRunner

    from mlflow_team.cli import cli

    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    result = CliRunner().invoke(cli, ["identity", "--server", strict_server])
    assert result.exit_code == 1
    assert "rejected (401)" in result.output and "MLFLOW_TRACKING_AUTH=team" in result.output
    mlflow.set_tracking_uri(None)


def signed(body: bytes, when: float | None = None) -> dict[str, str]:
    now = time.time() if when is None else when
    return signing.sign_headers(ALICE_KEY.encode(), "alice@example.com", now, "POST", CREATE_RUN, "", body)


REPLAYS = 24


def test_a_signed_request_sent_many_times_at_once_is_accepted_exactly_once(strict_server):
    """Each copy goes on a connection of its own, so the server's workers share them out."""
    body = create_run_body(note=unique("replay"))
    headers = signed(body)
    before = run_count(strict_server)
    with ThreadPoolExecutor(REPLAYS) as pool:
        responses = list(pool.map(lambda _: post(strict_server, body, headers), range(REPLAYS)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [401] * (REPLAYS - 1), [r.text for r in responses if r.status_code not in (200, 401)]
    refused = [r.json()["message"] for r in responses if r.status_code == 401]
    assert all(m == errors.SIGNATURE_REPLAYED.format(author="alice@example.com") for m in refused)
    assert run_count(strict_server) == before + 1


def test_a_signed_request_replayed_one_by_one_is_refused_by_every_worker(strict_server):
    body = create_run_body(note=unique("replay"))
    headers = signed(body)
    assert post(strict_server, body, headers).status_code == 200
    again = [post(strict_server, body, headers) for _ in range(REPLAYS)]
    assert [r.status_code for r in again] == [401] * REPLAYS
    # The same body signed anew (a later second) is a new request: accepted.
    assert post(strict_server, body, signed(body, when=time.time() + 1)).status_code == 200


FAIL_INSERTS = {
    "sqlite": ["CREATE TRIGGER team_test_fail BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION team_test_fail() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk trouble'; END $$"
        " LANGUAGE plpgsql",
        "CREATE TRIGGER team_test_fail BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION team_test_fail()",
    ],
}


def test_a_signed_write_that_failed_on_the_server_is_accepted_when_the_client_retries_it(strict_server):
    """MLflow's client resends a request answered 5xx with the same headers, and a failed write
    wrote nothing: its signature is not used up (here the database refuses the insert once)."""
    body = create_run_body(note=unique("retried"))
    headers = signed(body)
    before = run_count(strict_server)
    engine = sa.create_engine(strict_server.database)
    dialect = engine.dialect.name
    try:
        with engine.begin() as connection:
            for statement in FAIL_INSERTS[dialect]:
                connection.execute(sa.text(statement))
        try:
            failed = post(strict_server, body, headers)
        finally:
            with engine.begin() as connection:
                connection.execute(sa.text("DROP TRIGGER team_test_fail" + (" ON runs" if dialect == "postgresql" else "")))
    finally:
        engine.dispose()
    assert failed.status_code >= 400 and "disk trouble" in failed.text, failed.text
    assert run_count(strict_server) == before
    assert post(strict_server, body, headers).status_code == 200
    assert run_count(strict_server) == before + 1
    again = post(strict_server, body, headers)
    assert again.status_code == 401 and again.json()["message"] == errors.SIGNATURE_REPLAYED.format(author="alice@example.com")
