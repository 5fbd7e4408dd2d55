"""The record of signatures already used, in the team database (``mlflow_team.identity.replay``).

Two engines on one database stand for two server processes (tests/integration/
test_identity_workers.py replays requests through a real server's workers). The table comes with
the store's schema, survives MLflow's own migrations, and goes with eject.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner
from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision, _get_schema_version

from mlflow_team import errors
from mlflow_team.cli import cli
from mlflow_team.identity import replay
from mlflow_team.store.eject import TEAM_TABLES, eject
from mlflow_team.store.tracking import TeamSqlAlchemyStore
from tests.conftest import unique

SKEW = 300


def has_table(url: str) -> bool:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return sa.inspect(engine).has_table(replay.TABLE)
    finally:
        engine.dispose()


@pytest.fixture
def two_processes(db_url):
    """Two engines of their own on one database, its table created by the first."""
    from mlflow_team.store.tracking import TeamSqlAlchemyStore

    # MLflow's schema first, as under a server: the database is shared by the session, and a team
    # store opened on it later refuses one that holds tables but no schema revision
    TeamSqlAlchemyStore(f"team+{db_url}")
    engines = [sa.create_engine(db_url, poolclass=sa.pool.NullPool) for _ in range(2)]
    replay.create_table(engines[0])
    replay.create_table(engines[1])  # a second creator finds it there
    yield engines
    for engine in engines:
        engine.dispose()


def test_a_signature_is_accepted_once_whichever_process_sees_it(two_processes):
    first, second = two_processes
    signature = unique("sig").ljust(64, "0")[:64]
    until = int(time.time()) + SKEW
    assert replay.first_use(first, signature, until, SKEW) is True
    assert replay.first_use(second, signature, until, SKEW) is False
    assert replay.first_use(first, signature, until, SKEW) is False
    assert replay.first_use(second, signature.replace(signature[0], "x", 1), until, SKEW) is True


def test_rows_past_their_window_are_pruned(two_processes, monkeypatch):
    first, _ = two_processes
    now = int(time.time())
    old = unique("old").ljust(64, "0")[:64]
    assert replay.first_use(first, old, now - 2 * SKEW - 1, SKEW)  # stale for every clock
    monkeypatch.setattr(replay, "_last_prune", {})
    assert replay.first_use(first, unique("new").ljust(64, "0")[:64], now + SKEW, SKEW)
    with first.connect() as connection:
        kept = connection.execute(sa.select(replay.SEEN.c.signature)).scalars().all()
    assert old not in kept


def test_a_database_without_the_table_gets_it_on_first_use(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/bare.db", poolclass=sa.pool.NullPool)
    assert replay.first_use(engine, "a" * 64, int(time.time()) + SKEW, SKEW) is True
    assert replay.first_use(engine, "a" * 64, int(time.time()) + SKEW, SKEW) is False
    engine.dispose()


def test_the_store_creates_the_table_beside_mlflows_schema(tmp_path):
    url = f"sqlite:///{tmp_path}/new.db"
    store = TeamSqlAlchemyStore(f"team+{url}")
    assert store.get_experiment("0").name == "Default"  # MLflow created its own tables first
    assert has_table(url)


def test_db_upgrade_creates_the_table(tmp_path):
    url = f"sqlite:///{tmp_path}/upgraded.db"
    result = CliRunner().invoke(cli, ["db", "upgrade", url])
    assert result.exit_code == 0, result.output
    assert has_table(url)


@pytest.mark.slow
def test_mlflows_own_db_upgrade_on_the_plain_url_keeps_working_and_keeps_the_table(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    TeamSqlAlchemyStore(f"team+{url}")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    config = _get_alembic_config(url)
    with engine.begin() as connection:  # one migration behind, as an older MLflow would leave it
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    result = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", url],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _get_schema_version(engine) == _get_latest_schema_revision()
    engine.dispose()
    assert has_table(url)
    assert TeamSqlAlchemyStore(f"team+{url}").get_experiment("0").name == "Default"


def test_eject_lists_the_table_in_a_dry_run_and_drops_it_when_applied(tmp_path):
    url = f"sqlite:///{tmp_path}/ejected.db"
    TeamSqlAlchemyStore(f"team+{url}")
    dry = eject(f"team+{url}")
    assert dry.team_tables == list(TEAM_TABLES) and has_table(url)
    applied = eject(f"team+{url}", apply=True)
    assert applied.team_tables == list(TEAM_TABLES) and not has_table(url)
    assert eject(url, apply=True).team_tables == []  # a second run finds nothing


def test_the_eject_command_says_it_drops_the_table(tmp_path):
    url = f"sqlite:///{tmp_path}/cli.db"
    TeamSqlAlchemyStore(f"team+{url}")
    dry = CliRunner().invoke(cli, ["eject", "--tracking-uri", f"team+{url}"])
    assert f"mlflow-team's own table(s) to drop: {', '.join(TEAM_TABLES)}" in dry.output
    applied = CliRunner().invoke(cli, ["eject", "--tracking-uri", f"team+{url}", "--apply"])
    assert applied.exit_code == 0, applied.output
    assert f"mlflow-team's own table(s) dropped: {', '.join(TEAM_TABLES)}" in applied.output


def test_replay_record_failure_message_names_the_cause_not_the_signature():
    assert errors.REPLAY_RECORD_FAILED.format(
        author="alice@example.com", reason="OperationalError: disk I/O error"
    ) == (
        "The author signature for 'alice@example.com' could not be checked against the signatures already used: "
        "the database did not record it (OperationalError: disk I/O error). Nothing was created; send the request "
        "again. [rule: identity]"
    )


def test_eject_drop_failure_message_says_the_rewrite_is_done_and_how_to_finish():
    assert errors.EJECT_DROP_FAILED.format(
        uri="team+sqlite:///mlflow.db", table=replay.TABLE, reason="OperationalError: database is locked"
    ) == (
        "Ejecting 'team+sqlite:///mlflow.db' rewrote every location, but dropping mlflow-team's own table "
        "team_signatures_seen failed (OperationalError: database is locked). Stock MLflow ignores that table; run "
        "mlflow-team eject --tracking-uri URL --apply again, or drop it by hand: DROP TABLE team_signatures_seen"
    )
