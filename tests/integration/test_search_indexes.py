"""The search accelerator's indexes: made with a new database and by ``mlflow-team db upgrade``,
kept through MLflow's own migrations, and without them MLflow's own search, said once."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from mlflow.entities import RunTag, ViewType
from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from sqlalchemy.pool import NullPool

from mlflow_team import errors
from mlflow_team.cli import cli
from mlflow_team.store import compat, search
from mlflow_team.store.tracking import TeamSqlAlchemyStore
from tests.conftest import stock_env

pytestmark = pytest.mark.slow


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=NullPool)


def _runs(store, experiment_id) -> list[str]:
    return [r.info.run_id for r in store.search_runs([experiment_id], "tags.model = 'xgboost'", ViewType.ALL)]


@pytest.fixture(autouse=True)
def fresh_probe():
    compat.reset()
    search._WARNED.clear()
    yield
    compat.reset()


def test_a_database_the_team_store_creates_has_the_indexes(fresh_db, tmp_path):
    store = TeamSqlAlchemyStore(f"team+{fresh_db}", tmp_path.as_uri())
    assert search.missing_indexes(_engine(fresh_db)) == []
    assert store._search_path


def test_a_database_stock_made_keeps_mlflows_search_and_says_once_how_to_add_the_indexes(
    fresh_db, tmp_path, caplog
):
    stock = SqlAlchemyStore(fresh_db, tmp_path.as_uri())
    experiment_id = stock.create_experiment("made-by-stock")
    run_id = stock.create_run(experiment_id, "bo", 1, [], "one").info.run_id
    stock.set_tag(run_id, RunTag("model", "xgboost"))

    with caplog.at_level(logging.WARNING, logger="mlflow_team.store.search"):
        team = TeamSqlAlchemyStore(f"team+{fresh_db}", tmp_path.as_uri())
        TeamSqlAlchemyStore(f"team+{fresh_db}", tmp_path.as_uri())  # a second store: no second line
    said = [r.getMessage() for r in caplog.records if "search index" in r.getMessage()]
    assert len(said) == 1, said
    assert "mlflow-team db upgrade" in said[0] and "team_runs_search" in said[0]
    assert not team._search_path
    assert _runs(team, experiment_id) == [run_id]  # MLflow's own search answers

    doctor = CliRunner().invoke(cli, ["doctor", "--tracking-uri", f"team+{fresh_db}"])
    assert "[slow] search_runs takes MLflow's own path" in doctor.output
    assert "run mlflow-team db upgrade team+" in doctor.output

    result = CliRunner().invoke(cli, ["db", "upgrade", f"team+{fresh_db}"])
    assert result.exit_code == 0, result.output
    assert "search indexes are in place: team_runs_search" in result.output
    assert search.missing_indexes(_engine(fresh_db)) == []
    upgraded = TeamSqlAlchemyStore(f"team+{fresh_db}", tmp_path.as_uri())
    assert upgraded._search_path and _runs(upgraded, experiment_id) == [run_id]
    assert "[slow]" not in CliRunner().invoke(cli, ["doctor", "--tracking-uri", f"team+{fresh_db}"]).output


def test_the_indexes_survive_mlflows_own_migrations(old_database, tmp_path):
    """A database one migration behind (made by ``mlflow-team db upgrade``, indexes included),
    upgraded by stock ``mlflow db upgrade`` on the plain URL: the migration runs, the indexes
    stay, searches agree."""
    url = old_database
    engine = _engine(url)
    assert _get_schema_version(engine) != _get_latest_schema_revision()
    assert search.missing_indexes(engine) == []

    stock_upgrade = subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", url], capture_output=True, text=True,
        env=stock_env(), timeout=300,
    )
    assert stock_upgrade.returncode == 0, stock_upgrade.stderr[-2000:]
    assert _get_schema_version(engine) == _get_latest_schema_revision()
    assert search.missing_indexes(engine) == []

    team = TeamSqlAlchemyStore(f"team+{url}", tmp_path.as_uri())
    stock = SqlAlchemyStore(url, tmp_path.as_uri())
    experiment_id = team.create_experiment("migrated/search")
    for i in range(3):
        team.create_run(experiment_id, "bo", i, [RunTag("model", "xgboost")], f"r{i}")
    assert team._search_path and _runs(team, experiment_id) == _runs(stock, experiment_id)
    assert len(_runs(team, experiment_id)) == 3


def test_the_missing_index_message_names_the_command_and_eject():
    message = errors.SEARCH_INDEX_MISSING.format(uri="team+sqlite:///m.db", index="team_runs_search")
    assert "mlflow-team db upgrade" in message and "eject" in message and "team_runs_search" in message


@pytest.mark.parametrize("fresh_db", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_eject_that_cannot_drop_the_indexes_says_the_rewrite_is_done_and_how_to_finish(fresh_db, tmp_path):
    from mlflow_team.store.eject import EjectError, eject

    TeamSqlAlchemyStore(f"team+{fresh_db}", tmp_path.as_uri()).create_experiment("eject/indexes")
    engine = _engine(fresh_db)
    with engine.begin() as conn:  # the database itself refuses DROP INDEX
        conn.execute(sa.text(
            "CREATE FUNCTION no_drop_index() RETURNS event_trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'index drops refused by a test trigger'; END $$ LANGUAGE plpgsql"
        ))
        conn.execute(sa.text(
            "CREATE EVENT TRIGGER no_drop_index ON ddl_command_start WHEN TAG IN ('DROP INDEX') "
            "EXECUTE FUNCTION no_drop_index()"
        ))
    try:
        with pytest.raises(EjectError, match=r"rewrote every location, but dropping mlflow-team's search indexes "
                                             r"\(team_runs_search, .*index drops refused by a test trigger"):
            eject(f"team+{fresh_db}", apply=True)
        assert search.missing_indexes(engine) == []  # nothing half-dropped
        with engine.connect() as conn:  # the rewrite itself committed
            locations = conn.execute(sa.text("SELECT artifact_location FROM experiments")).scalars().all()
        assert locations and not any(loc.startswith("team+") for loc in locations)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP EVENT TRIGGER no_drop_index"))
