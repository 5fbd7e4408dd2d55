"""An out-of-date database: the store and the server refuse it, `mlflow-team db upgrade` fixes it."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from mlflow_team import errors
from mlflow_team.cli import cli
from mlflow_team.store.tracking import TeamSqlAlchemyStore
from tests.helpers.server import run_server_expecting_failure


def test_store_on_an_old_schema_names_the_upgrade_command(old_database):
    team = f"team+{old_database}"
    expected = r"out-of-date MLflow schema .* run: mlflow-team db upgrade " + re.escape(team)
    with pytest.raises(errors.TeamStoreConfigError, match=expected):
        TeamSqlAlchemyStore(team)


@pytest.mark.server
def test_server_on_an_old_schema_fails_naming_the_upgrade_command(old_database, tmp_path):
    code, output = run_server_expecting_failure(f"team+{old_database}", tmp_path)
    assert code != 0
    assert f"mlflow-team db upgrade team+{old_database}" in output


def test_db_upgrade_migrates_a_team_url_and_the_store_opens(old_database):
    team = f"team+{old_database}"
    result = CliRunner().invoke(cli, ["db", "upgrade", team])
    assert result.exit_code == 0, result.output
    assert "migrated from schema revision" in result.output
    store = TeamSqlAlchemyStore(team)
    assert store.get_experiment("0").name == "Default"
    again = CliRunner().invoke(cli, ["db", "upgrade", team])
    assert "already at schema revision" in again.output


def test_db_upgrade_rejects_an_unknown_scheme():
    result = CliRunner().invoke(cli, ["db", "upgrade", "team+nosuchdb://x"])
    assert result.exit_code != 0
    assert "Tracking URI 'team+nosuchdb://x' was rejected: mlflow-team supports team+sqlite" in result.output


def test_store_on_a_schema_newer_than_mlflow_says_upgrade_mlflow(old_database):
    """A colleague's newer MLflow migrated the database: downgrading it is never the answer."""
    from mlflow.store.db.utils import create_sqlalchemy_engine
    from sqlalchemy import text

    engine = create_sqlalchemy_engine(old_database)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    engine.dispose()
    with pytest.raises(errors.TeamStoreConfigError, match=r"newer MLflow schema \(revision f00dfeedbeef\).*Upgrade MLflow"):
        TeamSqlAlchemyStore(f"team+{old_database}")
