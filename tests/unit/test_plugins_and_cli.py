"""Entry points load through MLflow's registries; the CLI reports what a user needs to know."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from mlflow_team.cli import cli, plugin_status
from mlflow_team.store.uri import TEAM_SCHEMES


def test_every_entry_point_is_registered_by_mlflow():
    rows = plugin_status()
    assert {(group, name) for group, name, _, _ in rows} == {
        (group, scheme)
        for group in ("mlflow.tracking_store", "mlflow.model_registry_store")
        for scheme in TEAM_SCHEMES
    } | {
        ("mlflow.run_context_provider", "team-author"),
        ("mlflow.run_context_provider", "team-heartbeat"),
        ("mlflow.request_header_provider", "team-author"),
        ("mlflow.request_auth_provider", "team"),
        ("mlflow.artifact_repository", "team+file"),
        ("mlflow.artifact_repository", "team+s3"),
        ("mlflow.artifact_repository", "mlflow-artifacts"),  # MLflow's proxy client, marking folder uploads
        ("mlflow.app", "team"),  # mlflow server --app-name team
    }
    assert [row for row in rows if not row[2]] == []


def test_entry_point_module_imports_nothing_from_mlflow():
    code = (
        "import sys, mlflow_team.entrypoints, mlflow_team.identity.client, mlflow_team,"
        " mlflow_team.artifacts, mlflow_team.heartbeat;"
        "print(sorted(m for m in sys.modules if m == 'mlflow' or m.startswith('mlflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_mlflow_loads_the_plugins_without_warnings():
    code = (
        "import warnings; warnings.simplefilter('error');"
        "import mlflow;"
        "from mlflow.tracking._tracking_service.utils import _tracking_store_registry as r;"
        "print('team+sqlite' in r._registry)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_unknown_team_scheme_is_refused_by_mlflow_with_the_supported_list(tmp_path):
    import pytest
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"unsupported URI 'team\+nosuchdb://x'.*'team\+sqlite'"):
        MlflowClient(tracking_uri="team+nosuchdb://x").search_experiments()


def test_doctor_reports_plugins_policy_and_store(tmp_path, policy_file):
    url = f"team+sqlite:///{tmp_path}/d.db"
    assert CliRunner().invoke(cli, ["db", "upgrade", url]).exit_code == 0  # doctor creates nothing
    result = CliRunner().invoke(cli, ["doctor", "--tracking-uri", url])
    assert result.exit_code == 0, result.output
    assert "[ok] mlflow.tracking_store: team+sqlite" in result.output
    assert "[ok] mlflow.model_registry_store: team+postgresql+psycopg" in result.output
    assert f"from: {policy_file}" in result.output
    assert "rules on: experiment-name, registered-model-name, required-tags" in result.output
    assert "answers (TeamSqlAlchemyStore" in result.output


def test_doctor_fails_on_a_broken_policy_and_an_unreachable_store(tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment-name]\npattern = '('\nexample = 'x'\n")
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(bad))
    result = CliRunner().invoke(
        cli, ["doctor", "--tracking-uri", "team+postgresql://nobody@127.0.0.1:1/none"]
    )
    assert result.exit_code == 1
    assert "[ERROR] Policy file" in result.output and "is not a valid regular expression" in result.output
    assert "[ERROR] team+postgresql://nobody@127.0.0.1:1/none" in result.output


def test_doctor_without_a_uri_says_the_store_was_not_checked():
    result = CliRunner().invoke(cli, ["doctor"])
    assert "no tracking URI given" in result.output


def test_policy_check_accepts_a_good_file_and_explains_a_bad_one(tmp_path):
    from tests.conftest import EVERY_RULE_TOML

    good = tmp_path / "good.toml"
    good.write_text(EVERY_RULE_TOML)
    result = CliRunner().invoke(cli, ["policy", "check", str(good)])
    assert result.exit_code == 0 and "valid. Rules on: experiment-name" in result.output

    bad = tmp_path / "bad.toml"
    bad.write_text("[required-tag]\n")
    result = CliRunner().invoke(cli, ["policy", "check", str(bad)])
    assert result.exit_code == 1
    assert f"Policy file {bad}: unknown rule [required-tag]" in result.output


def test_policy_check_prints_patterns_as_written_in_the_file(tmp_path):
    from tests.conftest import EVERY_RULE_TOML

    good = tmp_path / "good.toml"
    good.write_text(EVERY_RULE_TOML)
    result = CliRunner().invoke(cli, ["policy", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "  experiment-name: ^[a-z0-9-]+/[a-z0-9-]+$\n" in result.output
    assert "  registered-model-name: ^[a-z0-9-]+\\.[a-z0-9-]+$\n" in result.output  # one backslash
    assert "\\\\" not in result.output


def test_doctor_reports_a_missing_sqlite_folder_and_creates_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    result = CliRunner().invoke(cli, ["doctor", "--tracking-uri", f"team+sqlite:///{root}/missing/dir/x.db"])
    assert result.exit_code == 1
    assert f"[ERROR] The SQLite database {root}/missing/dir/x.db" in result.output
    assert f"does not exist (nor does its folder {root}/missing/dir)" in result.output
    assert f"mlflow-team db upgrade team+sqlite:///{root}/missing/dir/x.db" in result.output
    assert list(root.iterdir()) == []


def test_doctor_reports_a_missing_sqlite_file_in_an_existing_folder_and_creates_nothing(tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for url in ("team+sqlite:///x.db", "sqlite:///x.db"):
        result = CliRunner().invoke(cli, ["doctor", "--tracking-uri", url])
        assert result.exit_code == 1
        assert "[ERROR] The SQLite database x.db behind" in result.output
        assert "does not exist (no such file); doctor checks a store and never creates one" in result.output
        assert f"counts from the working directory, {workdir})" in result.output
    assert list(workdir.iterdir()) == []  # no x.db, no mlruns/


def test_sqlite_database_missing_message_names_the_path_and_the_command_that_creates_it():
    from mlflow_team import errors

    message = errors.SQLITE_DATABASE_MISSING.format(
        path="/data/x.db", uri="team+sqlite:////data/x.db", what="no such file", cwd="/home/me"
    )
    assert message == (
        "The SQLite database /data/x.db behind 'team+sqlite:////data/x.db' does not exist (no such "
        "file); doctor checks a store and never creates one. Fix the path (a relative one counts "
        "from the working directory, /home/me), or create the database with: "
        "mlflow-team db upgrade team+sqlite:////data/x.db"
    )


def test_doctor_never_shows_the_database_password(monkeypatch):
    import mlflow.store.db.utils

    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 1)  # one attempt, no 100 s of retries
    for url in (
        "team+postgresql://root:s3cret-pw@127.0.0.1:5432/nosuchdb",
        "team+mysql+pymysql://root:s3cret-pw@127.0.0.1:3306/nosuchdb",
        "team+oracle://root:s3cret-pw@127.0.0.1:1521/nosuchdb",  # refused before any connection
    ):
        result = CliRunner().invoke(cli, ["doctor", "--tracking-uri", url])
        assert result.exit_code == 1
        assert "[ERROR]" in result.output and "root:***@127.0.0.1" in result.output
        assert "s3cret-pw" not in result.output
