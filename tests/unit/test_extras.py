"""A missing optional dependency names the extra that installs it: in the store, the CLI, the server.

Nothing is uninstalled: ``sys.modules[name] = None`` makes Python refuse ``import name`` exactly as
if it were missing (in a subprocess through ``-c``, or for one test through ``monkeypatch``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_team import errors, extras
from mlflow_team.cli import cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PG_URL = "team+postgresql://alice:s3cret-pw@127.0.0.1:1/mlflow"
PG_SHOWN = "team+postgresql://alice:***@127.0.0.1:1/mlflow"
POSTGRES = 'pip install "mlflow-team[postgres]" (from a clone: pip install -e ".[postgres]")'


def without(*modules: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c code`` in a process where ``modules`` cannot be imported."""
    block = "import sys; sys.modules.update(dict.fromkeys(%r)); " % (list(modules),)
    return subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_every_extra_the_table_names_is_declared_in_pyproject():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {entry.extra for entry in extras.OPTIONAL.values()}
    assert named <= declared and "spark" in named
    assert extras.declared_extras() == declared  # the installed metadata is this pyproject's


def test_a_module_without_a_declared_extra_is_installed_by_its_package_name(monkeypatch):
    monkeypatch.setattr(extras, "declared_extras", lambda: frozenset({"mysql"}))  # an older mlflow-team
    assert extras.install_command("pyspark") == 'pip install "pyspark"'
    assert extras.install_command("pymysql") == 'pip install "mlflow-team[mysql]" (from a clone: pip install -e ".[mysql]")'


@pytest.mark.parametrize(
    "url, module, extra",
    [
        ("team+postgresql://u:pw@127.0.0.1:1/db", "psycopg", "postgres"),  # SQLAlchemy 2.1's default driver
        ("team+postgresql+psycopg://u:pw@127.0.0.1:1/db", "psycopg", "postgres"),
        ("team+postgresql+psycopg2://u:pw@127.0.0.1:1/db", "psycopg2", "postgres"),
        ("team+mysql+pymysql://u:pw@127.0.0.1:1/db", "pymysql", "mysql"),
    ],
)
def test_building_a_store_without_its_driver_names_the_extra(monkeypatch, url, module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    shown = url.replace("u:pw@", "u:***@")
    with pytest.raises(errors.MissingDependency, match=rf"The store for '{re.escape(shown)}' needs the .* driver") as info:
        MlflowClient(tracking_uri=url).search_experiments()
    assert f'Install it with: pip install "mlflow-team[{extra}]"' in info.value.message
    assert (info.value.module, info.value.extra) == (module, extra)
    assert "pw@" not in info.value.message


def test_the_registry_store_without_its_driver_names_the_extra_too(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(errors.MissingDependency, match=r"needs the PostgreSQL driver psycopg 3, which is not installed"):
        MlflowClient(tracking_uri="team+sqlite:///x.db", registry_uri=PG_URL).search_registered_models()


def test_doctor_names_the_extra_instead_of_printing_module_not_found(tmp_path):
    code = f"from mlflow_team.cli import cli; cli(['doctor', '--tracking-uri', {PG_URL!r}])"
    result = without("psycopg", code=code, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        f"[ERROR] {PG_SHOWN}: The store for '{PG_SHOWN}' needs the PostgreSQL driver psycopg 3, which is not "
        f"installed here (import of psycopg halted; None in sys.modules). Install it with: {POSTGRES}"
    ) in result.stdout
    assert "ModuleNotFoundError" not in result.stdout + result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_db_upgrade_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymysql", None)
    result = CliRunner().invoke(cli, ["db", "upgrade", "team+mysql+pymysql://root@127.0.0.1:1/mlflow"])
    assert result.exit_code == 1
    assert "needs the MySQL/MariaDB driver PyMySQL" in result.output
    assert 'pip install "mlflow-team[mysql]"' in result.output


def test_mlflow_server_start_up_names_the_extra(tmp_path):
    # `mlflow server` builds the stores before it serves anything: it stops there, with our message.
    code = (
        "from mlflow.cli import cli; "
        f"cli(['server', '--backend-store-uri', {PG_URL!r}, '--default-artifact-root', {str(tmp_path / 'a')!r}])"
    )
    result = without("psycopg", code=code, cwd=tmp_path)
    assert result.returncode == 1
    assert f"MissingDependency: The store for '{PG_SHOWN}' needs the PostgreSQL driver psycopg 3" in result.stderr
    assert POSTGRES in result.stderr
    assert "s3cret-pw" not in result.stderr


def test_a_team_s3_repository_without_boto3_names_the_s3_extra_when_it_is_built(monkeypatch):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(
        errors.MissingDependency,
        match=r"The artifact repository for 'team\+s3://bucket/prefix' needs boto3 \(the AWS SDK\), which is not installed",
    ) as info:
        get_artifact_repository("team+s3://bucket/prefix")
    assert 'pip install "mlflow-team[s3]"' in info.value.message


def test_a_missing_dependency_is_an_mlflow_exception_the_server_shows_as_400():
    error = extras.missing_dependency(ModuleNotFoundError("No module named 'boto3'", name="boto3"), "X")
    assert isinstance(error, errors.TeamStoreConfigError)
    assert error.get_http_status_code() == 400


def test_a_driver_failing_inside_its_own_import_is_blamed_on_the_driver_of_the_url():
    # psycopg is installed but finds no libpq: its ImportError names no module.
    error = extras.missing_dependency(ImportError("no pq wrapper available"), "The store for 'x'", default="psycopg")
    assert error is not None and error.message == (
        "The store for 'x' needs the PostgreSQL driver psycopg 3, which is not installed here (no pq wrapper "
        f"available). Install it with: {POSTGRES}"
    )


def test_sqlalchemy_no_such_module_error_for_a_known_driver_names_its_extra():
    from sqlalchemy.exc import NoSuchModuleError

    with pytest.raises(errors.MissingDependency, match=r"needs the PostgreSQL driver psycopg2"):
        with extras.translated("The store for 'x'"):
            raise NoSuchModuleError("Can't load plugin: sqlalchemy.dialects:postgresql.psycopg2")


def test_an_import_error_of_anything_else_passes_through_unchanged():
    with pytest.raises(ModuleNotFoundError, match=r"No module named 'no_such_module_here'"):
        with extras.translated("The store for 'x'", default="psycopg"):
            import no_such_module_here  # noqa: F401


def test_where_raising_is_not_allowed_a_missing_hyperopt_is_one_warning_naming_the_extra(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "hyperopt", None)
    with caplog.at_level(logging.WARNING, logger="mlflow_team.extras"):
        missing = extras.warn_if_missing("hyperopt", "mlflow_team.hyperopt.autolog()", "hyperopt searches are not logged")
    assert missing is True
    assert [r.getMessage() for r in caplog.records] == [
        "mlflow-team: mlflow_team.hyperopt.autolog() needs hyperopt, which is not installed here (import of hyperopt "
        "halted; None in sys.modules), so hyperopt searches are not logged. Install it with: "
        'pip install "mlflow-team[hyperopt]" (from a clone: pip install -e ".[hyperopt]")'
    ]


def test_an_installed_dependency_is_neither_an_error_nor_a_warning(caplog):
    extras.require("pymysql", "X")
    assert extras.warn_if_missing("pymysql", "X", "Y") is False
    assert caplog.records == []


def test_hyperopt_autologging_without_hyperopt_says_which_extra_and_does_nothing(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys, logging; sys.modules['hyperopt'] = None; logging.basicConfig()\n"
        "import mlflow_team.hyperopt\n"
        "mlflow_team.hyperopt.autolog()\n"
        "print('ran on')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ran on" in result.stdout
    assert 'pip install "mlflow-team[hyperopt]"' in result.stderr
    assert "hyperopt searches are not logged" in result.stderr


def test_hyperopt_autologging_without_matplotlib_logs_the_search_without_plots(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys, logging; sys.modules['matplotlib'] = None; logging.basicConfig()\n"
        "import mlflow, mlflow_team.hyperopt\n"
        "from hyperopt import fmin, hp, tpe\n"
        f"mlflow.set_tracking_uri('team+sqlite:///{tmp_path}/mlflow.db')\n"
        "mlflow_team.hyperopt.autolog()\n"
        "fmin(lambda x: x ** 2, hp.uniform('x', -1, 1), algo=tpe.suggest, max_evals=3, show_progressbar=False)\n"
        "[parent] = mlflow.search_runs(filter_string=\"tags.hyperopt.stop_reason != ''\", output_format='list')\n"
        "print(sorted(a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, 'hyperopt')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "['hyperopt/search_space.json', 'hyperopt/trials.csv']" in result.stdout
    assert 'pip install "mlflow-team[hyperopt]"' in result.stderr


def test_artifacts_clean_up_without_boto3_names_the_s3_extra(monkeypatch):
    from click.testing import CliRunner

    from mlflow_team.cli import cli

    monkeypatch.setitem(sys.modules, "boto3", None)
    result = CliRunner().invoke(cli, ["artifacts", "clean-up", "team+s3://bucket/prefix"])
    assert result.exit_code == 1
    assert 'pip install "mlflow-team[s3]"' in result.output
