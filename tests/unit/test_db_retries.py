"""Lock errors are retried with backoff; anything else is not."""

from __future__ import annotations

import logging
import sqlite3
import threading

import pytest
import sqlalchemy
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_team.store import db


def test_write_blocked_past_the_busy_timeout_is_retried_and_lands(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TEAM_SQLITE_BUSY_TIMEOUT_MS", "50")
    uri = f"team+sqlite:///{tmp_path}/busy.db"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run("0").info.run_id

    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    release = threading.Timer(0.6, holder.execute, args=("COMMIT",))
    release.start()
    with caplog.at_level(logging.INFO, logger="mlflow_team.store.db"):
        client.log_metric(run_id, "loss", 0.25, step=1)
    release.join()
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.25]
    assert any("Database busy" in r.message for r in caplog.records)


def test_retries_give_up_with_the_database_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_SQLITE_BUSY_TIMEOUT_MS", "10")
    monkeypatch.setenv("MLFLOW_TEAM_LOCK_RETRIES", "1")
    client = MlflowClient(tracking_uri=f"team+sqlite:///{tmp_path}/stuck.db")
    run_id = client.create_run("0").info.run_id
    holder = sqlite3.connect(tmp_path / "stuck.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(MlflowException, match=r"database is locked"):
            client.log_metric(run_id, "loss", 1.0)
    finally:
        holder.execute("ROLLBACK")
    assert client.get_metric_history(run_id, "loss") == []


def test_only_database_lock_errors_count_as_transient():
    locked = sqlalchemy.exc.OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked"))
    wrapped = MlflowException("database is locked")
    wrapped.__cause__ = locked
    assert db.is_transient(locked) and db.is_transient(wrapped)
    # A user's value that mentions a deadlock is not a deadlock.
    assert not db.is_transient(MlflowException("Experiment name 'deadlock' was rejected"))
    assert not db.is_transient(ValueError("database is locked"))


def test_a_policy_rejection_is_not_retried(tmp_path, policy_file, caplog):
    client = MlflowClient(tracking_uri=f"team+sqlite:///{tmp_path}/p.db")
    with caplog.at_level(logging.INFO, logger="mlflow_team.store.db"):
        with pytest.raises(MlflowException, match=r"\[rule: experiment-name\]"):
            client.create_experiment("deadlock")
    assert not any("Database busy" in r.message for r in caplog.records)


def test_pooled_connections_keep_the_configured_busy_timeout(tmp_path, monkeypatch):
    """MLflow's own session maker sets a 20 s busy timeout; it must never run on our engine."""
    from mlflow_team.store.tracking import TeamSqlAlchemyStore

    monkeypatch.setenv("MLFLOW_TEAM_SQLITE_BUSY_TIMEOUT_MS", "1234")
    store = TeamSqlAlchemyStore(f"team+sqlite:///{tmp_path}/bt.db")
    store.search_experiments()
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
