"""The reaper's lease and its sweep (``mlflow_team.server.heartbeats``, ``mlflow_team.server.reaper``).

Engines and stores of their own on one database stand for the workers of one or several server
processes (tests/integration/test_team_server_reaper.py runs real servers and clients). Each
test takes a lease name of its own: the databases are shared by the session.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from mlflow_team import errors, heartbeat
from mlflow_team.cli import cli
from mlflow_team.config import parse_policy
from mlflow_team.server import heartbeats, reaper
from mlflow_team.store.eject import TEAM_TABLES, eject
from mlflow_team.store.tracking import TeamSqlAlchemyStore
from tests.conftest import unique

STALE_S = 10
TTL_MS = 30_000


@pytest.fixture
def workers(db_url):
    """Four engines of their own on one database (MLflow's schema in it, as under a server), the
    tables created by two of them at once."""
    TeamSqlAlchemyStore(f"team+{db_url}")
    engines = [sa.create_engine(db_url, poolclass=sa.pool.NullPool) for _ in range(4)]
    _together(lambda engine: heartbeats.create_tables(engine), engines[:2])
    yield engines
    for engine in engines:
        engine.dispose()


def _together(fn, items: list) -> list:
    """``fn(item)`` for every item, each in a thread of its own, all released at one moment."""
    barrier = threading.Barrier(len(items))
    results: list = [None] * len(items)
    failures: list[BaseException] = []

    def call(index: int) -> None:
        barrier.wait()
        try:
            results[index] = fn(items[index])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    return results


# --- the lease -------------------------------------------------------------------------------


def test_of_workers_asking_together_for_a_new_lease_exactly_one_gets_it(workers):
    lease = unique("lease")
    got = _together(lambda w: heartbeats.acquire(w[1], f"worker-{w[0]}", TTL_MS, lease), list(enumerate(workers)))
    assert sum(got) == 1
    assert heartbeats.holder(workers[0], lease) == f"worker-{got.index(True)}"


def test_of_workers_asking_together_for_an_expired_lease_exactly_one_gets_it(workers):
    lease = unique("lease")
    past = heartbeats.now_ms() - 2 * TTL_MS
    assert heartbeats.acquire(workers[0], "dead-worker", TTL_MS, lease, at_ms=past)
    got = _together(lambda w: heartbeats.acquire(w[1], f"worker-{w[0]}", TTL_MS, lease), list(enumerate(workers)))
    assert sum(got) == 1
    assert heartbeats.holder(workers[0], lease) == f"worker-{got.index(True)}"


def test_the_holder_renews_its_lease_and_nobody_else_takes_it_before_it_expires(workers):
    first, second = workers[:2]
    lease = unique("lease")
    start = heartbeats.now_ms()
    assert heartbeats.acquire(first, "a", TTL_MS, lease, at_ms=start)
    assert not heartbeats.acquire(second, "b", TTL_MS, lease, at_ms=start + TTL_MS - 1)
    assert heartbeats.acquire(first, "a", TTL_MS, lease, at_ms=start + TTL_MS - 1)  # renewed
    assert not heartbeats.acquire(second, "b", TTL_MS, lease, at_ms=start + TTL_MS + 1)


def test_a_lease_whose_holder_stopped_renewing_goes_to_the_next_worker_that_asks(workers):
    first, second = workers[:2]
    lease = unique("lease")
    start = heartbeats.now_ms()
    assert heartbeats.acquire(first, "a", TTL_MS, lease, at_ms=start)
    assert heartbeats.acquire(second, "b", TTL_MS, lease, at_ms=start + TTL_MS)
    assert not heartbeats.acquire(first, "a", TTL_MS, lease, at_ms=start + TTL_MS + 1)  # too late
    assert heartbeats.holder(first, lease, at_ms=start + TTL_MS + 1) == "b"


# --- heartbeats and claims -------------------------------------------------------------------


def test_a_stale_row_is_claimed_by_exactly_one_of_several_reapers(workers):
    run_id = unique("run").replace("-", "")[:32]
    heartbeats.record(workers[0], run_id, at_ms=1_000)
    assert (run_id, 1_000) in heartbeats.stale(workers[1], older_than_ms=2_000, limit=100_000)
    assert sum(_together(lambda engine: heartbeats.claim(engine, run_id, 1_000), workers)) == 1
    assert heartbeats.last_seen(workers[0], run_id) is None


def test_a_heartbeat_after_the_stale_read_keeps_the_run_off_the_reapers_hands(workers):
    first, second = workers[:2]
    run_id = unique("run").replace("-", "")[:32]
    heartbeats.record(first, run_id, at_ms=1_000)
    heartbeats.record(second, run_id)  # the client is back
    assert not heartbeats.claim(first, run_id, 1_000)
    assert heartbeats.last_seen(first, run_id) > 1_000
    heartbeats.forget(first, [run_id])


def test_a_restored_claim_never_overwrites_a_newer_heartbeat(workers):
    first, second = workers[:2]
    run_id = unique("run").replace("-", "")[:32]
    heartbeats.record(first, run_id, at_ms=1_000)
    assert heartbeats.claim(first, run_id, 1_000)
    heartbeats.record(second, run_id, at_ms=5_000)
    heartbeats.restore(first, run_id, 1_000)
    assert heartbeats.last_seen(first, run_id) == 5_000
    heartbeats.forget(first, [run_id])


# --- the sweep, through a team store ---------------------------------------------------------


@pytest.fixture
def store(db_url):
    """A team store whose policy reserves the end-reason tag for the server."""
    policy = parse_policy({"reserved-tags": {"extra": [reaper.END_REASON_TAG]}})
    return TeamSqlAlchemyStore(f"team+{db_url}", team_policy=policy)


def _running_run(store) -> str:
    experiment_id = store.create_experiment(unique("reaper"))
    return store.create_run(experiment_id, "alice", int(time.time() * 1000) - 60_000, [], None).info.run_id


def _silent_since(store, run_id: str, seconds: int) -> int:
    seen = heartbeats.now_ms() - seconds * 1000
    heartbeats.record(store.engine, run_id, at_ms=seen)
    return seen


def test_two_workers_sweeping_together_end_a_stale_run_once(store):
    run_id = _running_run(store)
    seen = _silent_since(store, run_id, STALE_S + 5)
    lease = unique("lease")
    reapers = [reaper.Reaper(STALE_S, lambda: store, holder=f"worker-{i}", lease=lease) for i in range(2)]
    ended = _together(lambda r: r.sweep(), reapers)
    swept = [e for e in ended if e]  # the lease holder's list; the other worker's is empty
    assert len(swept) == 1 and run_id in swept[0]
    run = store.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.end_time == seen
    assert run.data.tags[reaper.END_REASON_TAG] == reaper.STALE
    assert heartbeats.last_seen(store.engine, run_id) is None


def test_the_policy_keeps_clients_from_writing_the_end_reason_the_reaper_writes(store):
    run_id = _running_run(store)
    from mlflow.entities import RunTag

    with pytest.raises(MlflowException, match=r"Tag 'team.end_reason'.*\[rule: reserved-tags\]"):
        store.set_tag(run_id, RunTag(reaper.END_REASON_TAG, reaper.STALE))
    _silent_since(store, run_id, STALE_S + 1)
    assert run_id in reaper.Reaper(STALE_S, lambda: store, lease=unique("lease")).sweep()
    assert store.get_run(run_id).data.tags[reaper.END_REASON_TAG] == reaper.STALE


def test_a_run_heard_from_within_stale_after_is_left_running(store):
    run_id = _running_run(store)
    _silent_since(store, run_id, STALE_S - 5)
    assert run_id not in reaper.Reaper(STALE_S, lambda: store, lease=unique("lease")).sweep()
    assert store.get_run(run_id).info.status == "RUNNING"
    heartbeats.forget(store.engine, [run_id])


def test_a_run_that_never_sent_a_heartbeat_is_never_reaped(store):
    run_id = _running_run(store)
    assert run_id not in reaper.Reaper(STALE_S, lambda: store, lease=unique("lease")).sweep()
    assert store.get_run(run_id).info.status == "RUNNING"


def test_a_run_that_ended_meanwhile_keeps_its_status_and_stops_being_tracked(store):
    run_id = _running_run(store)
    _silent_since(store, run_id, STALE_S + 5)
    store.update_run_info(run_id, RunStatus.FINISHED, int(time.time() * 1000), None)
    assert run_id not in reaper.Reaper(STALE_S, lambda: store, lease=unique("lease")).sweep()
    run = store.get_run(run_id)
    assert run.info.status == "FINISHED" and reaper.END_REASON_TAG not in run.data.tags
    assert heartbeats.last_seen(store.engine, run_id) is None


def test_a_worker_without_the_lease_ends_nothing(store):
    run_id = _running_run(store)
    _silent_since(store, run_id, STALE_S + 5)
    lease = unique("lease")
    assert heartbeats.acquire(store.engine, "another-server", TTL_MS, lease)
    assert reaper.Reaper(STALE_S, lambda: store, lease=lease).sweep() == []
    assert store.get_run(run_id).info.status == "RUNNING"
    heartbeats.forget(store.engine, [run_id])


def test_the_reaper_ends_runs_through_a_stock_store_too(db_url, tmp_path):
    """The team server app on a plain database URL: MLflow's own store, no policy to go past."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    TeamSqlAlchemyStore(f"team+{db_url}")  # the shared database's schema, if this test runs first
    stock = SqlAlchemyStore(db_url, str(tmp_path / "artifacts"))
    run_id = _running_run(stock)
    _silent_since(stock, run_id, STALE_S + 5)
    assert run_id in reaper.Reaper(STALE_S, lambda: stock, lease=unique("lease")).sweep()
    run = stock.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[reaper.END_REASON_TAG] == reaper.STALE


def test_sweeps_and_heartbeats_come_a_quarter_of_stale_after_apart_within_bounds():
    assert reaper.sweep_interval(10) == 2.5 and reaper.sweep_interval(900) == 30
    assert heartbeat.interval(10) == 2.5 and heartbeat.interval(900) == 120 and heartbeat.interval(2) == 1


# --- the tables: with the schema, and gone with eject ----------------------------------------


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_store_and_db_upgrade_create_the_tables_and_eject_drops_them(tmp_path):
    by_store, by_upgrade = f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/upgraded.db"
    TeamSqlAlchemyStore(f"team+{by_store}")
    result = CliRunner().invoke(cli, ["db", "upgrade", by_upgrade])
    assert result.exit_code == 0, result.output
    assert set(heartbeats.TABLES) <= _tables(by_store) and set(heartbeats.TABLES) <= _tables(by_upgrade)
    assert eject(f"team+{by_store}", apply=True).team_tables == list(TEAM_TABLES)
    assert not set(TEAM_TABLES) & _tables(by_store)


# --- the client's hook -----------------------------------------------------------------------


def test_the_client_hook_adds_no_tags_and_starts_nothing_without_an_http_server(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setattr(heartbeat, "_the_watcher", None)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/direct.db")
    assert heartbeat.HeartbeatRunContext().in_context() is False
    monkeypatch.setenv("MLFLOW_TEAM_HEARTBEAT", "off")
    mlflow.set_tracking_uri("http://127.0.0.1:1")
    assert heartbeat.HeartbeatRunContext().in_context() is False
    assert heartbeat._the_watcher is None


# --- messages --------------------------------------------------------------------------------


def test_bad_heartbeat_message_shows_the_expected_body_and_what_came():
    assert errors.HEARTBEAT_BAD_REQUEST.format(limit=100, got="'{}'") == (
        'A heartbeat was rejected: its body must be JSON like {"run_id": "<run id>"} or {"run_ids": ["<run id>", '
        "...]} with 1 to 100 run ids; got '{}'. The mlflow-team client plugin sends these itself while a fluent "
        "run (mlflow.start_run) is active."
    )


def test_no_database_message_names_the_store_and_a_backend_that_works():
    assert errors.HEARTBEAT_NO_DATABASE.format(store="FileStore") == (
        "This server keeps no heartbeats: its backend store (FileStore) is not a database, so the team server "
        "app can neither record heartbeats nor end stale runs. Run it on one, for example mlflow server "
        "--app-name team --backend-store-uri team+sqlite:///mlflow.db"
    )


def test_heartbeat_not_recorded_message_says_the_next_one_goes_as_usual():
    assert errors.HEARTBEAT_NOT_RECORDED.format(run_ids=["abc"], reason="OperationalError", stale=900) == (
        "The heartbeat of run(s) ['abc'] was not recorded: the database failed (OperationalError). The next "
        "heartbeat is sent as usual; the run is ended as stale only if none gets through for 900 s."
    )


def test_reaper_failure_message_says_it_retries_and_what_waits_meanwhile():
    assert errors.REAPER_FAILED.format(reason="OperationalError", interval=2.5) == (
        "mlflow-team: the stale-run reaper of this worker failed (OperationalError); it tries again every 2.5 s, "
        "and until it succeeds, runs whose client stopped sending heartbeats stay RUNNING."
    )


def test_run_ended_stale_log_line_names_the_run_the_silence_and_the_tag():
    assert errors.RUN_ENDED_STALE.format(run_id="abc", silent=12, stale=10) == (
        "mlflow-team: run abc had no heartbeat for 12 s (stale-after-seconds = 10): ended it FAILED with tag "
        "team.end_reason=stale."
    )


def test_client_heartbeat_failure_warning_says_the_run_goes_on_and_how_to_stop_them():
    assert errors.HEARTBEAT_CLIENT_FAILED.format(
        run_ids=["abc"], server="http://mlflow:5000", reason="HTTP 503: busy", stale="900 s"
    ) == (
        "mlflow-team: heartbeats for run(s) ['abc'] to http://mlflow:5000 failed (HTTP 503: busy). The run goes "
        "on, but a team server that hears none for 900 s ends it FAILED as stale. Set MLFLOW_TEAM_HEARTBEAT=off "
        "to stop sending them."
    )


def test_run_ended_by_the_server_warning_names_status_reason_and_the_likely_cause():
    assert errors.HEARTBEAT_RUN_ENDED.format(
        server="http://mlflow:5000", run_id="abc", status="FAILED", reason=" (team.end_reason=stale)", stale="10"
    ) == (
        "mlflow-team: http://mlflow:5000 reports run abc as FAILED (team.end_reason=stale) while this process "
        "still has it active; heartbeats for it stop. A run whose client is silent for 10 s is ended as stale: "
        "check the network between this process and the server."
    )
