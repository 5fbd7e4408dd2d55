"""A client killed mid-run no longer leaves its run RUNNING: the team server app's reaper.

Servers run as a team runs them (``mlflow server --app-name team``, MLflow's default worker
count), with ``[server] stale-after-seconds = 10`` and a ``[reserved-tags]`` list naming
``team.end_reason`` in the ``mlflow-team.toml`` of their working directory: on SQLite, and on
PostgreSQL with a second server process on the same database. Clients are real processes with
mlflow-team installed (tests/helpers/fluent_client.py): one is SIGKILLed on each server process,
one stays alive and idle, one sends no heartbeats (``MLFLOW_TEAM_HEARTBEAT=off``, as a stock
client) and is killed too; a run made with ``MlflowClient.create_run`` (no fluent run) sits
beside them. Every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import RestException

from mlflow_team import errors
from mlflow_team.server import heartbeats, reaper
from tests.helpers.server import DEFAULT_WORKERS, mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

STALE_S = 10
POLICY = f'[server]\nstale-after-seconds = {STALE_S}\n\n[reserved-tags]\nextra = ["{reaper.END_REASON_TAG}"]\n'
CLIENT = Path(__file__).resolve().parents[1] / "helpers" / "fluent_client.py"
TIMEOUT_S = 180


def wait_for(condition, what: str, timeout: float = TIMEOUT_S):
    """``condition()``'s first truthy value, looked at four times a second until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.25)


@dataclass
class Servers:
    urls: list[str]
    database: str  # the plain SQLAlchemy URL they share
    workdir: Path

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("server-*.log")))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def servers(request, tmp_path_factory):
    """One team server on SQLite; on PostgreSQL two server processes on one database (the
    second with two workers, to spare the machine)."""
    workdir = tmp_path_factory.mktemp(f"reaper-{request.param}")
    (workdir / "mlflow-team.toml").write_text(POLICY)
    if request.param == "sqlite":
        backend, workers = f"team+sqlite:///{workdir}/mlflow.db", [DEFAULT_WORKERS]
    else:
        backend, workers = "team+" + request.getfixturevalue("postgresql_url"), [DEFAULT_WORKERS, 2]
    extra = ["--app-name", "team"]
    with ExitStack() as stack:
        urls = [stack.enter_context(mlflow_server(backend, workdir, workers=w, extra=extra)) for w in workers]
        yield Servers(urls, backend.removeprefix("team+"), workdir)


@dataclass
class Client:
    process: subprocess.Popen
    output: Path
    run_id: str = ""

    def text(self) -> str:
        return self.output.read_text(errors="replace")


def start_client(url: str, experiment: str, workdir: Path, name: str, stop: Path, **env: str) -> Client:
    output = workdir / f"{name}.out"
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TEAM_HEARTBEAT"}
    with open(output, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(CLIENT), url, experiment, str(stop)],
            stdout=out, stderr=subprocess.STDOUT, env={**environment, **env}, cwd=workdir,
        )
    return Client(process, output)


def first_line(client: Client) -> str:
    if client.process.poll() is not None:
        raise AssertionError(f"the client exited with {client.process.returncode}:\n{client.text()[-3000:]}")
    lines = [line for line in client.text().splitlines() if len(line) == 32 and line.isalnum()]
    return lines[0] if lines else ""


@dataclass
class Scenario:
    servers: Servers
    engine: sa.engine.Engine
    idle: Client
    silent: Client  # no heartbeats, killed
    killed: list[Client] = field(default_factory=list)  # one per server process
    stock_run_id: str = ""
    stop: Path = Path()

    def run(self, run_id: str):
        return MlflowClient(self.servers.urls[0]).get_run(run_id)


@pytest.fixture(scope="module")
def scenario(servers):
    """The clients, started together; the killed ones killed once the server has their first
    heartbeat; the fixture returns once every killed client's run is FAILED."""
    workdir, url = servers.workdir, servers.urls[0]
    experiment = f"reaper-{workdir.name}"
    stop = workdir / "stop"
    engine = sa.create_engine(servers.database, poolclass=sa.pool.NullPool)
    with ExitStack() as stack:
        clients = []

        def client(*args, **env) -> Client:
            started = start_client(*args, **env)
            clients.append(started)
            return started

        idle = client(url, experiment, workdir, "idle", stop)
        silent = client(url, experiment, workdir, "silent", stop, MLFLOW_TEAM_HEARTBEAT="off")
        killed = [client(u, experiment, workdir, f"killed-{i}", stop) for i, u in enumerate(servers.urls)]

        @stack.callback
        def _stop_clients():
            for each in clients:
                if each.process.poll() is None:
                    each.process.kill()
                    each.process.wait()

        for each in clients:
            each.run_id = wait_for(lambda: first_line(each), f"a run id from {each.output.name}")
        tracking = MlflowClient(url)
        stock_run_id = tracking.create_run(tracking.get_experiment_by_name(experiment).experiment_id).info.run_id
        for each in (idle, *killed):
            wait_for(lambda: heartbeats.last_seen(engine, each.run_id), f"the first heartbeat of {each.output.name}")
        for each in (silent, *killed):
            each.process.send_signal(signal.SIGKILL)
            each.process.wait()
        for each in killed:
            wait_for(lambda: tracking.get_run(each.run_id).info.status == "FAILED",
                     f"the run of {each.output.name} to be ended FAILED")
        yield Scenario(servers, engine, idle, silent, killed, stock_run_id, stop)
    engine.dispose()


def test_the_heartbeat_endpoint_answers_with_the_policys_stale_after(servers):
    for url in servers.urls:
        answer = requests.post(url + reaper.HEARTBEAT_PATH, json={"run_id": "0" * 32}, timeout=30)
        assert answer.status_code == 200
        assert answer.json() == {"stale_after_seconds": STALE_S, "runs": {"0" * 32: {"status": "NOT_FOUND"}}}
        refused = requests.post(url + reaper.HEARTBEAT_PATH, json={"run_ids": []}, timeout=30)
        assert refused.status_code == 400
        assert refused.json()["message"] == errors.HEARTBEAT_BAD_REQUEST.format(
            limit=reaper.MAX_RUN_IDS, got=repr('{"run_ids": []}')
        )


def test_a_killed_clients_run_is_ended_failed_with_end_reason_stale(scenario):
    for each in scenario.killed:
        run = scenario.run(each.run_id)
        assert run.info.status == "FAILED"
        assert run.data.tags[reaper.END_REASON_TAG] == reaper.STALE
        assert run.info.start_time <= run.info.end_time  # the last heartbeat: when it was last heard of
        assert heartbeats.last_seen(scenario.engine, each.run_id) is None  # no longer tracked


def test_the_end_reason_the_server_writes_is_reserved_for_it(scenario):
    client = MlflowClient(scenario.servers.urls[0])
    with pytest.raises(RestException, match=r"Tag 'team.end_reason'.*\[rule: reserved-tags\]"):
        client.set_tag(scenario.idle.run_id, reaper.END_REASON_TAG, reaper.STALE)


def test_a_live_client_idle_beyond_stale_after_keeps_its_run_running(scenario):
    run = scenario.run(scenario.idle.run_id)
    # It started before the killed runs' first heartbeat, which the reaper waited out.
    assert heartbeats.now_ms() - run.info.start_time > STALE_S * 1000
    assert run.info.status == "RUNNING" and reaper.END_REASON_TAG not in run.data.tags
    assert scenario.idle.process.poll() is None


def test_runs_that_never_sent_a_heartbeat_are_never_reaped(scenario):
    for run_id in (scenario.silent.run_id, scenario.stock_run_id):
        assert scenario.run(run_id).info.status == "RUNNING"
        assert heartbeats.last_seen(scenario.engine, run_id) is None


def test_each_stale_run_is_ended_by_exactly_one_worker(scenario):
    for each in scenario.killed:
        line = errors.RUN_ENDED_STALE.split("{silent}")[0].format(run_id=each.run_id)
        wait_for(lambda: line in scenario.servers.logs(), f"the server's log line for {each.output.name}")
        assert scenario.servers.logs().count(line) == 1


def test_a_run_ended_normally_stops_being_tracked(scenario):
    scenario.stop.touch()
    assert scenario.idle.process.wait(timeout=TIMEOUT_S) == 0, scenario.idle.text()[-3000:]
    run = scenario.run(scenario.idle.run_id)
    assert run.info.status == "FINISHED" and reaper.END_REASON_TAG not in run.data.tags
    assert heartbeats.last_seen(scenario.engine, scenario.idle.run_id) is None
    assert "mlflow-team" not in scenario.idle.text()  # no warning reached the user


def test_a_client_of_a_server_without_the_team_app_stays_quiet(tmp_path):
    """A stock server app answers the first heartbeat 404: the client sends no more, and says nothing."""
    stop = tmp_path / "stop"
    with mlflow_server(f"team+sqlite:///{tmp_path}/mlflow.db", tmp_path, workers=1) as url:
        client = start_client(url, "stock-app", tmp_path, "client", stop)
        try:
            wait_for(lambda: first_line(client), "the client's run id")
            log = next(tmp_path.glob("server-*.log"))
            wait_for(lambda: f"{reaper.HEARTBEAT_PATH} HTTP/1.1\" 404" in log.read_text(), "the heartbeat's 404")
            stop.touch()
            assert client.process.wait(timeout=TIMEOUT_S) == 0, client.text()[-3000:]
        finally:
            if client.process.poll() is None:
                client.process.kill()
                client.process.wait()
        assert log.read_text().count(reaper.HEARTBEAT_PATH) == 1
    assert "mlflow-team" not in client.text() and "heartbeat" not in client.text().lower()
