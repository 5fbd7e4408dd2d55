"""`mlflow server --app-name team` as a team runs it: default workers, MLflow's client and raw HTTP.

Each row of the team app's table: bodies a store would take or choke on are refused with a 400
that names the problem and creates nothing; an error body never carries the database's text; the
health endpoint says what the server runs on; with ``[server] auth = "basic"`` MLflow's login
runs inside the team app.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from mlflow import MlflowClient

from mlflow_team import errors
from tests.conftest import stock_env
from tests.helpers.server import DEFAULT_WORKERS, free_port, mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

TEAM_APP = ["--app-name", "team"]


class TeamServer(str):
    """The server's URL, with its database URL and folder."""

    database: str
    workdir: Path


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("team-app")
    database = f"sqlite:///{workdir}/mlflow.db"
    with mlflow_server(f"team+{database}", workdir, workers=DEFAULT_WORKERS, extra=TEAM_APP) as url:
        server = TeamServer(url)
        server.database, server.workdir = database, workdir
        yield server


def post(server: str, endpoint: str, body: bytes | str) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    return requests.post(f"{server}/api/2.0/mlflow/{endpoint}", data=data,
                         headers={"Content-Type": "application/json"}, timeout=60)


def run_count(server: str) -> int:
    return len(MlflowClient(server).search_runs(["0"], max_results=50000))


def refused(response: requests.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "INSERT" not in body["message"] and "[SQL" not in body["message"]
    return body["message"]


CREATE = "/api/2.0/mlflow/runs/create"


@pytest.mark.parametrize("body, problem", [
    ('{"experiment_id": "0", "start_time": 12', errors.REQUEST_BODY_NOT_JSON.format(
        endpoint=CREATE, problem="Expecting ',' delimiter at line 1, column 40")),
    ('{"experiment_id": "0", "tags": [{"key": "a", "val', None),
    ("", errors.REQUEST_BODY_EMPTY.format(endpoint=CREATE)),
    ("   \n", errors.REQUEST_BODY_EMPTY.format(endpoint=CREATE)),
    ('["experiment_id", "0"]', errors.REQUEST_BODY_NOT_OBJECT.format(endpoint=CREATE, kind="list")),
    ("[" * 20_000 + "]" * 20_000, errors.REQUEST_BODY_TOO_DEEP.format(endpoint=CREATE, limit=32)),
    ('{"experiment_id": "0", "note": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", errors.REQUEST_BODY_TOO_DEEP.format(
        endpoint=CREATE, limit=32)),
], ids=["malformed", "truncated", "empty", "blank", "a-list", "20000-deep", "40-deep"])
def test_a_create_run_body_that_is_not_one_json_object_is_refused_and_creates_nothing(team_server, body, problem):
    before = run_count(team_server)
    message = refused(post(team_server, "runs/create", body))
    if problem is not None:
        assert message == problem
    else:
        assert message.startswith(f"{CREATE} was sent a body that is not valid JSON (")
    assert run_count(team_server) == before


@pytest.fixture
def run_id(team_server) -> str:
    return MlflowClient(team_server).create_run("0").info.run_id


def metric(run_id: str, **fields) -> str:
    entry = {"key": "rmse", "value": 5.5, "timestamp": 1_700_000_000_000, "step": 0, **fields}
    return json.dumps({"run_id": run_id, "metrics": [entry]})


@pytest.mark.parametrize("fields, text", [
    ({"value": "1e309"}, errors.REQUEST_FIELD_OVERFLOW.format(
        endpoint="/api/2.0/mlflow/runs/log-batch", field="metrics[0].value", text="1e309")),
    ({"step": "1.5"}, errors.REQUEST_FIELD_NOT_INT64.format(
        endpoint="/api/2.0/mlflow/runs/log-batch", field="metrics[0].step", value="1.5", what="a whole number")),
    ({"step": str(2**64)}, errors.REQUEST_FIELD_NOT_INT64.format(
        endpoint="/api/2.0/mlflow/runs/log-batch", field="metrics[0].step", value=str(2**64), what="within 64 bits")),
    ({"timestamp": str(2**63)}, errors.REQUEST_FIELD_NOT_INT64.format(
        endpoint="/api/2.0/mlflow/runs/log-batch", field="metrics[0].timestamp", value=str(2**63),
        what="within 64 bits")),
], ids=["value-1e309", "step-1.5", "step-2^64", "timestamp-2^63"])
def test_a_metric_value_step_or_timestamp_that_would_be_stored_altered_is_refused(team_server, run_id, fields, text):
    # The numbers go in as JSON number literals, as a client in another language would write them.
    body = metric(run_id, **{k: f"@{k}@" for k in fields})
    for key, literal in fields.items():
        body = body.replace(f'"@{key}@"', literal)
    assert refused(post(team_server, "runs/log-batch", body)) == text
    assert MlflowClient(team_server).get_metric_history(run_id, "rmse") == []


def test_a_metrics_field_that_is_a_list_of_lists_is_refused(team_server, run_id):
    body = json.dumps({"run_id": run_id, "metrics": [["rmse", 5.5, 0, 0]]})
    message = refused(post(team_server, "runs/log-batch", body))
    assert message.startswith("/api/2.0/mlflow/runs/log-batch: metrics must be a list of objects")
    assert MlflowClient(team_server).get_run(run_id).data.metrics == {}


def test_what_mlflow_clients_send_still_works(team_server, run_id):
    """MLflow's own client, and JSON as the REST docs write it (numbers as strings included)."""
    client = MlflowClient(team_server)
    client.log_metric(run_id, "rmse", 5.5, step=3)
    client.log_metric(run_id, "big", 2.0**70, timestamp=2**62)
    client.log_param(run_id, "max_depth", 6)
    body = json.dumps({"run_id": run_id, "key": "nan", "value": "NaN", "timestamp": "1700000000000", "step": "2"})
    assert post(team_server, "runs/log-metric", body).status_code == 200
    data = client.get_run(run_id).data
    assert data.metrics["rmse"] == 5.5 and data.params["max_depth"] == "6"
    assert [m.step for m in client.get_metric_history(run_id, "nan")] == [2]


FAIL_INSERTS = "CREATE TRIGGER team_test_fail BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"


def test_an_error_from_the_database_reaches_the_client_without_its_sql(team_server):
    engine = sa.create_engine(team_server.database)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(FAIL_INSERTS))
        try:
            response = post(team_server, "runs/create", json.dumps({"experiment_id": "0", "start_time": 1}))
        finally:
            with engine.begin() as connection:
                connection.execute(sa.text("DROP TRIGGER team_test_fail"))
    finally:
        engine.dispose()
    assert response.status_code >= 400
    message = response.json()["message"]
    for internal in ("INSERT", "[SQL", "sqlite3", "disk trouble", "[parameters", str(team_server.workdir)):
        assert internal not in message
    reference = message.split("under reference ")[1].split(",")[0]
    assert message == errors.SERVER_ERROR_HIDDEN.format(code=response.json()["error_code"], reference=reference)
    log = "".join(p.read_text() for p in team_server.workdir.glob("server-*.log"))
    logged = next(line for line in log.splitlines() if reference in line)
    assert "disk trouble" in logged  # the details are in the server's log


def test_the_health_endpoint_reports_the_store_the_artifacts_and_the_policy(team_server):
    from importlib.metadata import version

    response = requests.get(f"{team_server}/api/2.0/mlflow-team/health", timeout=60)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["status"], report["store"], report["artifacts"]) == ("ok", "ok", "ok")
    assert report["mlflow_team_version"] == version("mlflow-team")
    assert report["policy"].startswith("built-in defaults")
    log = "".join(p.read_text() for p in team_server.workdir.glob("server-*.log"))
    assert "server app: policy from built-in defaults" in log


STOCK_RUN = r"""
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
with mlflow.start_run() as run:
    mlflow.set_tag("model", "xgboost")
    mlflow.log_params({"max_depth": 6, "learning_rate": 0.1})
    mlflow.log_metric("rmse", 5.5)
print(run.info.run_id)
"""


def test_a_colleague_without_mlflow_team_logs_through_the_team_app(team_server, stock_python, tmp_path):
    result = subprocess.run([stock_python, "-c", STOCK_RUN, team_server], capture_output=True, text=True,
                            cwd=tmp_path, env=stock_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = MlflowClient(team_server).get_run(result.stdout.strip().splitlines()[-1])
    assert (run.info.status, run.data.tags["model"], run.data.metrics["rmse"]) == ("FINISHED", "xgboost", 5.5)
    assert run.data.tags["team.author_verified"] == "false"


# --- a missing bucket, MLflow's login ------------------------------------------------------------


def test_a_missing_bucket_is_reported_when_the_server_starts_and_by_health(tmp_path):
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        env = {"MLFLOW_S3_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        with mlflow_server(f"team+sqlite:///{tmp_path}/mlflow.db", tmp_path, env=env,
                           extra=[*TEAM_APP, "--artifacts-destination", "team+s3://no-such-bucket/mlflow"]) as url:
            response = requests.get(f"{url}/api/2.0/mlflow-team/health", timeout=60)
            log = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    finally:
        moto.stop()
    assert response.status_code == 503
    assert response.json()["store"] == "ok" and "bucket does not exist" in response.json()["artifacts"]
    assert "mlflow-team: the artifact destination team+s3://no-such-bucket/mlflow does not answer" in log


@pytest.fixture(scope="module")
def login_server(tmp_path_factory):
    """The team app with the policy's [server] auth = "basic": MLflow's basic-auth inside it."""
    import mlflow.server.auth

    workdir = tmp_path_factory.mktemp("team-login")
    (workdir / "mlflow-team.toml").write_text('[server]\nauth = "basic"\n')
    stock = (Path(mlflow.server.auth.__file__).parent / "basic_auth.ini").read_text()
    lines = [line for line in stock.splitlines() if not line.startswith(("admin_password", "database_uri"))]
    lines[1:1] = [f"database_uri = sqlite:///{workdir}/basic_auth.db", "admin_password = admin-pass-1234"]
    (workdir / "basic_auth.ini").write_text("\n".join(lines) + "\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(workdir / "basic_auth.ini"), "MLFLOW_FLASK_SERVER_SECRET_KEY": "s" * 32}
    with mlflow_server(f"team+sqlite:///{workdir}/mlflow.db", workdir, env=env, workers=DEFAULT_WORKERS,
                       extra=TEAM_APP) as url:
        yield url


def test_with_auth_basic_the_team_app_asks_for_a_login_and_stamps_the_user(login_server, monkeypatch):
    anonymous = post(login_server, "runs/create", json.dumps({"experiment_id": "0"}))
    assert anonymous.status_code == 401
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-pass-1234")
    run = MlflowClient(login_server).create_run("0")
    tags = run.data.tags
    assert (tags["team.author"], tags["team.author_verified"], run.info.user_id) == ("admin", "true", "admin")
    # and the team app's own checks run behind the login
    bad = requests.post(f"{login_server}/api/2.0/mlflow/runs/create", data=b"{", auth=("admin", "admin-pass-1234"),
                        headers={"Content-Type": "application/json"}, timeout=60)
    assert bad.status_code == 400 and bad.json()["message"].startswith(f"{CREATE} was sent a body that is not valid JSON")
