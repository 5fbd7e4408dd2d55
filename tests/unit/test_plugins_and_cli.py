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
        ("mlflow.request_header_provider", "team-author"),
        ("mlflow.request_auth_provider", "team"),
        ("mlflow.artifact_repository", "team+file"),
        ("mlflow.artifact_repository", "team+s3"),
    }
    assert [row for row in rows if not row[2]] == []


def test_entry_point_module_imports_nothing_from_mlflow():
    code = (
        "import sys, mlflow_team.entrypoints, mlflow_team.client_plugins, mlflow_team,"
        " mlflow_team.artifacts;"
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
    result = CliRunner().invoke(cli, ["doctor", "--tracking-uri", f"team+sqlite:///{tmp_path}/d.db"])
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
