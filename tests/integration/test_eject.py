"""`mlflow-team eject`: the way out to stock MLflow, and the way in from it.

The way out is checked with stock MLflow alone: a second virtual environment with MLflow but
without mlflow-team (``$MLFLOW_TEAM_STOCK_PYTHON``) opens the ejected database, downloads an
artifact and loads ``models:/<name>@champion``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from mlflow import MlflowClient
from sqlalchemy.pool import NullPool

from mlflow_team import errors
from mlflow_team.cli import cli
from mlflow_team.store import search
from mlflow_team.store.eject import EjectError, eject
from tests.conftest import _dispose_engines, stock_env

MODEL = "eject.model"
EXPERIMENT = "eject/demo"
TEXT = "hello from the team store"

#: (table, column, extra condition): where MLflow keeps artifact locations, read independently of
#: the module under test.
LOCATIONS = (
    ("experiments", "artifact_location", ""),
    ("runs", "artifact_uri", ""),
    ("logged_models", "artifact_location", ""),
    ("model_versions", "source", ""),
    ("model_versions", "storage_location", ""),
    ("trace_tags", "value", "AND {key} = 'mlflow.artifactLocation'"),
)


# --- databases and data ----------------------------------------------------------------------


def _use(uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


def _log_sklearn_model(registered_name: str):
    from sklearn.linear_model import LinearRegression

    x = np.arange(10.0).reshape(-1, 1)
    return mlflow.sklearn.log_model(
        LinearRegression().fit(x, 2 * x[:, 0]), name="model",
        registered_model_name=registered_name, pip_requirements=["scikit-learn"],
    )


def populate_through_the_plugin(team_uri: str) -> str:
    """An experiment, a run with an artifact, a registered sklearn model with @champion, a version
    registered from a direct location, and a trace, all under the strictest policy. Returns the
    run id."""
    client = _use(team_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(tags={"team.project": "eject"}) as run:
        mlflow.log_text(TEXT, "notes/hello.txt")
        info = _log_sklearn_model(MODEL)
    # An int: MLflow 3.12 compares the version column (an integer) to a string version, which
    # PostgreSQL refuses through psycopg 3, SQLAlchemy 2.1's driver for postgresql://.
    client.set_registered_model_alias(MODEL, "champion", 1)
    # A version registered from a location rather than from models:/: its source is the location.
    location = client.get_logged_model(info.model_id).artifact_location
    assert location.startswith("team+file:")
    client.create_model_version(MODEL, source=location, run_id=run.info.run_id)

    @mlflow.trace
    def double(x):
        return 2 * x

    double(1)
    mlflow.flush_trace_async_logging()
    return run.info.run_id


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=NullPool)


def locations(url: str) -> dict[str, list[str]]:
    """Every artifact location in the database, by table.column."""
    engine = _engine(url)
    found = {}
    with engine.connect() as connection:
        quote = connection.dialect.identifier_preparer.quote
        for table, column, extra in LOCATIONS:
            rows = connection.execute(sa.text(
                f"SELECT {quote(column)} FROM {quote(table)} WHERE {quote(column)} IS NOT NULL "
                + extra.format(key=quote("key"))
            ))
            found[f"{table}.{column}"] = sorted(row[0] for row in rows)
    engine.dispose()
    return found


def team_values_anywhere(url: str) -> list[tuple[str, str, str]]:
    """(table, column, value) of every string value in any table that starts with a team+
    artifact scheme: a column eject does not know about would show up here."""
    engine = _engine(url)
    hits = []
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        quote = connection.dialect.identifier_preparer.quote
        for table in inspector.get_table_names():
            for column in inspector.get_columns(table):
                if not isinstance(column["type"], sa.String):
                    continue
                name = quote(column["name"])
                rows = connection.execute(sa.text(
                    f"SELECT {name} FROM {quote(table)} WHERE {name} LIKE 'team+file:%' OR {name} LIKE 'team+s3:%'"
                ))
                hits += [(table, column["name"], row[0]) for row in rows]
    engine.dispose()
    return hits


def _counts(report) -> dict[str, int]:
    return {change.label: change.rows for change in report.changes}


# --- eject itself ----------------------------------------------------------------------------


def test_a_dry_run_counts_every_team_location_and_changes_nothing(fresh_db, policy_file):
    populate_through_the_plugin(f"team+{fresh_db}")
    before = locations(fresh_db)

    report = eject(f"team+{fresh_db}")

    assert not report.applied
    assert _counts(report) == {
        "experiments.artifact_location": 2,  # Default and eject/demo
        "runs.artifact_uri": 1,
        "logged_models.artifact_location": 1,
        "model_versions.storage_location": 2,
        "model_versions.source": 1,
        "trace_tags.value [mlflow.artifactLocation]": 1,
    }
    assert report.absent == []
    for change in report.changes:
        assert change.example_old.startswith("team+file:")
        assert change.example_new == change.example_old.removeprefix("team+")
    assert locations(fresh_db) == before


def test_apply_drops_the_team_prefix_everywhere_and_a_second_apply_changes_nothing(fresh_db, policy_file):
    populate_through_the_plugin(f"team+{fresh_db}")
    before = locations(fresh_db)
    assert len(team_values_anywhere(fresh_db)) == 8

    assert search.missing_indexes(_engine(fresh_db)) == []  # the team store made the database
    report = eject(fresh_db, apply=True)  # the plain URL of the same database works too

    assert report.applied and report.rows == 8
    wanted = [name for name in search.index_names(fresh_db)]
    assert sorted(report.team_indexes) == sorted(wanted)
    assert sorted(search.missing_indexes(_engine(fresh_db))) == sorted(wanted)  # dropped
    expected = {
        label: sorted(value.removeprefix("team+") if value.startswith(("team+file:", "team+s3:")) else value
                      for value in values)
        for label, values in before.items()
    }
    assert locations(fresh_db) == expected
    assert team_values_anywhere(fresh_db) == []
    assert "models:/m-" in " ".join(expected["model_versions.source"])  # the other source is untouched

    again = eject(f"team+{fresh_db}", apply=True)
    assert again.rows == 0 and all(change.rows == 0 for change in again.changes)
    assert locations(fresh_db) == expected


TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER eject_refused BEFORE UPDATE ON runs "
        "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION eject_refused() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER eject_refused BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION eject_refused()",
    ],
    "mysql": [
        "CREATE TRIGGER eject_refused BEFORE UPDATE ON runs FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by a test trigger'"
    ],
}


def test_a_failure_midway_leaves_every_location_as_it_was(fresh_db, policy_file):
    populate_through_the_plugin(f"team+{fresh_db}")
    before = locations(fresh_db)
    # The database itself refuses the second rewrite (runs), after experiments was rewritten.
    engine = _engine(fresh_db)
    with engine.begin() as connection:
        for statement in TRIGGERS[engine.dialect.name]:
            connection.execute(sa.text(statement))
    engine.dispose()

    refused = r"failed while rewriting runs\.artifact_uri \(.*refused by a test trigger.*\)\. Nothing was changed"
    with pytest.raises(EjectError, match=refused):
        eject(f"team+{fresh_db}", apply=True)

    assert locations(fresh_db) == before
    assert eject(f"team+{fresh_db}").rows == 8  # still all there to rewrite


# --- messages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri", ["http://alice:s3cret@mlflow.example.com:5000", "file:///tmp/mlruns", "databricks", "team+file:///tmp/x"]
)
def test_a_url_that_is_not_a_database_is_refused_without_showing_its_password(uri):
    refused = r"is not a database URL: .* it takes sqlite://\.\.\., postgresql://\.\.\., mysql://\.\.\. "
    with pytest.raises(EjectError, match=refused) as caught:
        eject(uri, apply=True)
    assert "s3cret" not in caught.value.message


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(EjectError, match=r"holds no MLflow tracking data \(no file at .*nope\.db\)"):
        eject(f"team+sqlite:///{path}")
    assert not path.exists()


def test_a_database_without_mlflow_tables_is_refused(tmp_path):
    path = tmp_path / "other.db"
    engine = _engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE notes (body TEXT)"))
    engine.dispose()
    with pytest.raises(EjectError, match=r"holds no MLflow tracking data \(it has no 'experiments' table\)"):
        eject(f"sqlite:///{path}", apply=True)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("team+postgresql://root:s3cret@127.0.0.1:1/mlflow", "team+postgresql://root:***@127.0.0.1:1/mlflow"),
        ("mysql+pymysql://root@127.0.0.1:1/mlflow?password=s3cret", "mysql+pymysql://root@127.0.0.1:1/mlflow?password=***"),
    ],
)
def test_a_database_that_does_not_answer_is_named_without_its_password(uri, shown):
    expected = re.escape(repr(shown)) + r" could not be opened \(\w+Error: .+\)\. Check that"
    with pytest.raises(EjectError, match=expected) as caught:
        eject(uri)
    assert "s3cret" not in caught.value.message


def test_the_command_without_a_tracking_uri_says_how_to_give_one():
    result = CliRunner().invoke(cli, ["eject"], env={"MLFLOW_TRACKING_URI": None})
    assert result.exit_code == 1
    assert errors.EJECT_NO_TRACKING_URI in result.output


def test_the_command_shows_the_dry_run_then_applies_and_says_what_to_use_next(tmp_path):
    url = f"sqlite:///{tmp_path}/mlflow.db"
    populate_through_the_plugin(f"team+{url}")
    runner = CliRunner()

    dry = runner.invoke(cli, ["eject"], env={"MLFLOW_TRACKING_URI": f"team+{url}"})
    assert dry.exit_code == 0, dry.output
    assert f"Dry run (nothing is written): team+{url}" in dry.output
    assert "runs.artifact_uri" in dry.output and " -> file:" in dry.output
    assert "8 location(s) would change. Run again with --apply" in dry.output

    applied = runner.invoke(cli, ["eject", "--tracking-uri", f"team+{url}", "--apply"])
    assert applied.exit_code == 0, applied.output
    assert "Rewrote 8 location(s) in one transaction." in applied.output
    assert f"export MLFLOW_TRACKING_URI={url}\n" in applied.output
    assert ".mlflow-team-sha256" in applied.output

    again = runner.invoke(cli, ["eject", "--tracking-uri", url])
    assert "Nothing to rewrite" in again.output


def test_the_command_reports_a_refused_url_as_an_error():
    result = CliRunner().invoke(cli, ["eject", "--tracking-uri", "http://bob:s3cret@host:5000", "--apply"])
    assert result.exit_code == 1
    assert "is not a database URL" in result.output and "s3cret" not in result.output


# --- the way out: stock MLflow alone reads what the plugin wrote -----------------------------

STOCK_READER = """
import json, sys
try:
    import mlflow_team  # noqa: F401
    plugin = True
except ImportError:
    plugin = False
import mlflow, numpy as np

uri = sys.argv[1]
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
runs = mlflow.search_runs(experiment_names=[{experiment!r}], output_format="list")
path = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="notes/hello.txt")
model = mlflow.pyfunc.load_model("models:/{model}@champion")
print(json.dumps({{
    "plugin": plugin, "mlflow": mlflow.__version__, "runs": len(runs),
    "artifact_uri": runs[0].info.artifact_uri, "text": open(path).read(),
    "prediction": model.predict(np.array([[3.0]])).tolist(),
}}))
""".format(experiment=EXPERIMENT, model=MODEL)


def _read_with_stock(python: str, uri: str, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "stock_reader.py"
    script.write_text(STOCK_READER)
    return subprocess.run([python, str(script), uri], capture_output=True, text=True, cwd=cwd,
                          env=stock_env(), timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fresh_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_after_eject_stock_mlflow_alone_reads_runs_artifacts_and_the_champion(
    stock_python, fresh_db, tmp_path, policy_file  # stock_python first: skip before a database is made
):
    url = fresh_db
    populate_through_the_plugin(f"team+{url}")
    _dispose_engines()

    if url.startswith("sqlite"):  # without eject, stock MLflow cannot resolve the plugin's scheme
        before = _read_with_stock(stock_python, url, tmp_path)
        assert before.returncode != 0 and "team+file" in before.stderr, before.stderr[-2000:]

    result = CliRunner().invoke(cli, ["eject", "--tracking-uri", f"team+{url}", "--apply"])
    assert result.exit_code == 0 and "Rewrote 8 location(s)" in result.output, result.output

    # SQLAlchemy 2.1 reads bare postgresql:// as psycopg 3; the stock environment has psycopg2.
    after = _read_with_stock(stock_python, url.replace("postgresql://", "postgresql+psycopg2://"), tmp_path)
    assert after.returncode == 0, after.stderr[-3000:]
    seen = json.loads(after.stdout.strip().splitlines()[-1])
    assert seen["plugin"] is False and seen["mlflow"] == mlflow.__version__
    assert seen["runs"] == 1 and seen["text"] == TEXT
    assert seen["artifact_uri"].startswith("file:")
    assert seen["prediction"] == pytest.approx([6.0])


# --- the way in: a database stock MLflow made works as a team store --------------------------


def test_a_database_stock_mlflow_made_keeps_working_through_the_team_store(fresh_db):
    # Stock MLflow (the plain URL is MLflow's own store) with its default artifact location.
    stock = _use(fresh_db)
    experiment_id = stock.create_experiment("legacy")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text(TEXT, "notes/hello.txt")
        _log_sklearn_model("legacy-model")
    stock.set_registered_model_alias("legacy-model", "champion", 1)  # an int: see populate_through_the_plugin
    assert not locations(fresh_db)["runs.artifact_uri"][0].startswith("team+")

    team = _use(f"team+{fresh_db}")
    runs = team.search_runs([experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="notes/hello.txt")
    assert Path(downloaded).read_text() == TEXT
    champion = mlflow.pyfunc.load_model("models:/legacy-model@champion")
    assert champion.predict(np.array([[3.0]])).tolist() == pytest.approx([6.0])

    # and it writes: a new run, its artifact, a new version that takes the alias
    with mlflow.start_run(experiment_id=experiment_id) as new_run:
        mlflow.log_text("written by the team store", "notes/new.txt")
        _log_sklearn_model("legacy-model")
    team.set_registered_model_alias("legacy-model", "champion", 2)
    assert "team.author" in team.get_run(new_run.info.run_id).data.tags
    written = mlflow.artifacts.download_artifacts(run_id=new_run.info.run_id, artifact_path="notes/new.txt")
    assert Path(written).read_text() == "written by the team store"
    champion = mlflow.pyfunc.load_model("models:/legacy-model@champion")
    assert champion.predict(np.array([[1.0]])).tolist() == pytest.approx([2.0])
    version = team.get_model_version_by_alias("legacy-model", "champion")
    assert str(version.version) == "2" and "team.author" in version.tags
