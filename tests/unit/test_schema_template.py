"""A new team+sqlite file is a copy of the schema MLflow's migrations made for the first one."""

from __future__ import annotations

import sqlite3

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_team.store import db


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(db.CACHE_DIR_ENV, str(folder))
    return folder


def schema(path) -> list[tuple]:
    """Every table and index with its definition, each definition's lines in sorted order: MLflow's
    own migrations write a table's CHECK constraints in an order that varies from run to run (a
    set's), so two migrated files differ there and nowhere else."""
    with sqlite3.connect(path) as connection:
        found = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return sorted((kind, name, table, tuple(sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())))
                  for kind, name, table, sql in found)


def rows(path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT * FROM {table}").fetchall()


def works(path) -> None:
    """MLflow's client logs and reads a run there, as on any new database."""
    mlflow.set_tracking_uri(f"team+sqlite:///{path}")
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.1)
        mlflow.log_metric("rmse", 5.2)
    assert MlflowClient().get_run(run.info.run_id).data.metrics == {"rmse": 5.2}
    assert MlflowClient().get_experiment("0").name == "Default"


def test_the_first_new_file_leaves_a_template_and_the_next_ones_are_copies_of_it(cache, tmp_path):
    works(tmp_path / "first.db")
    (template,) = cache.glob("sqlite-schema-*.db")
    with sqlite3.connect(template) as connection:  # a mark only a copy of this file can carry
        connection.execute("CREATE TABLE copied_from_the_template (x INTEGER)")
    works(tmp_path / "second.db")
    assert ("table", "copied_from_the_template") in [row[:2] for row in schema(tmp_path / "second.db")]
    assert rows(tmp_path / "second.db", "alembic_version") == rows(tmp_path / "first.db", "alembic_version")
    with sqlite3.connect(tmp_path / "second.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_copy_has_the_schema_and_rows_mlflows_migrations_make(cache, tmp_path, monkeypatch):
    works(tmp_path / "first.db")
    works(tmp_path / "copy.db")
    monkeypatch.setenv(db.CACHE_DIR_ENV, "off")
    works(tmp_path / "migrated.db")
    copy, migrated = tmp_path / "copy.db", tmp_path / "migrated.db"
    assert schema(copy) == schema(migrated)
    assert rows(copy, "alembic_version") == rows(migrated, "alembic_version") != []
    assert rows(copy, "workspaces") == rows(migrated, "workspaces")
    assert [r[:2] for r in rows(copy, "experiments")] == [r[:2] for r in rows(migrated, "experiments")] == [(0, "Default")]


def test_a_damaged_template_gives_way_to_mlflows_migrations_and_a_new_template(cache, tmp_path):
    works(tmp_path / "first.db")
    (template,) = cache.glob("sqlite-schema-*.db")
    template.write_bytes(b"not a database" * 100)
    works(tmp_path / "second.db")
    assert schema(tmp_path / "second.db") == schema(tmp_path / "first.db")
    # written again from the migrated file (MLflow's schema: mlflow-team's own tables come after)
    assert rows(template, "alembic_version") == rows(tmp_path / "first.db", "alembic_version")


def test_off_keeps_no_template(tmp_path, monkeypatch):
    monkeypatch.setenv(db.CACHE_DIR_ENV, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    works(tmp_path / "a.db")
    assert not (tmp_path / "xdg").exists()


def test_without_a_setting_the_template_is_in_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(db.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    works(tmp_path / "a.db")
    assert len(list((tmp_path / "xdg" / "mlflow-team").glob("sqlite-schema-*.db"))) == 1
