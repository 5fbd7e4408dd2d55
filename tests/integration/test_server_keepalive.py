"""``mlflow server --app-name team`` with MLflow's default worker count: the connection a client
keeps alive has TCP_NODELAY on the server's end (no 40 ms delayed-ACK stall per request,
whatever uvicorn the server runs), and MLflow's client works through the wrapped app as before."""

from __future__ import annotations

import http.client
import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.helpers import sockets
from tests.helpers.server import DEFAULT_WORKERS, mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("keepalive-server")
    (workdir / "policy.toml").write_text("")
    env = {"MLFLOW_TEAM_POLICY": str(workdir / "policy.toml")}
    with mlflow_server(f"team+sqlite:///{workdir}/mlflow.db", workdir, env=env,
                       extra=["--app-name", "team"], workers=DEFAULT_WORKERS) as url:
        yield url


def call(connection: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> dict:
    payload = None if body is None else json.dumps(body)
    connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    assert response.status == 200, data
    return json.loads(data)


@pytest.mark.skipif(sockets.available() is not None, reason=str(sockets.available()))
def test_the_connection_a_client_keeps_alive_has_tcp_nodelay_on_the_server_end(server):
    parts = urlsplit(server)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        experiment = call(connection, "POST", "/api/2.0/mlflow/experiments/create",
                          {"name": f"keepalive/{uuid.uuid4().hex[:8]}"})["experiment_id"]
        run = call(connection, "POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment})
        run_id = run["run"]["info"]["run_id"]
        for step in range(3):
            call(connection, "POST", "/api/2.0/mlflow/runs/log-metric",
                 {"run_id": run_id, "key": "loss", "value": 1.0 / (step + 1), "timestamp": 0, "step": step})
        got = call(connection, "GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}")
        assert [m["key"] for m in got["run"]["data"]["metrics"]] == ["loss"]
        assert sockets.server_no_delay(connection.sock) is True
    finally:
        connection.close()


def test_mlflow_client_works_through_the_wrapped_app(server, tmp_path):
    client = MlflowClient(server)
    experiment = client.create_experiment(f"keepalive/{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment).info.run_id
    client.log_param(run_id, "max_depth", "6")
    client.set_tag(run_id, "model", "xgboost")
    client.log_metric(run_id, "rmse", 0.5)
    client.log_text(run_id, "hello", "notes/hello.txt")  # the artifact proxy's streaming routes
    client.set_terminated(run_id)
    run = client.get_run(run_id)
    assert (run.data.params, run.data.metrics, run.data.tags["model"], run.info.status) == (
        {"max_depth": "6"}, {"rmse": 0.5}, "xgboost", "FINISHED")
    downloaded = client.download_artifacts(run_id, "notes/hello.txt", dst_path=str(tmp_path))
    assert Path(downloaded).read_text() == "hello"
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST|not found"):
        client.get_run("0" * 32)
