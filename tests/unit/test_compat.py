"""The seam between the rules and MLflow's internals (``mlflow_team.store.compat``).

A renamed internal must turn its accelerator off (one log line, MLflow's own path, same
results), and an internal that enforces a rule must stop the store instead of silently not
guarding. Failures are forced the way a new MLflow minor would cause them: the attribute is
removed from MLflow for the duration of the test.
"""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow.utils.validation
import pytest
from mlflow import MlflowClient

from mlflow_team import errors
from mlflow_team.policy import Policy
from mlflow_team.store import compat, db
from mlflow_team.store.tracking import TeamSqlAlchemyStore

SRC = Path(__file__).resolve().parents[2] / "src" / "mlflow_team"


@pytest.fixture(autouse=True)
def _fresh_probe():
    compat.reset()
    yield
    compat.reset()


def test_every_internal_the_store_relies_on_is_present_on_this_mlflow():
    result = compat.probe()
    assert {group: reasons for group, reasons in result.failures.items()} == {}
    assert compat.TESTED_MINORS[0] <= result.version


def _private_mlflow_names(tree: ast.AST) -> set[tuple[str, str]]:
    """(module, name) of every private name imported from MLflow, and private attributes read
    off an MLflow module object (``mlflow.x._y``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlflow"):
            module = node.module or ""
            for alias in node.names:
                if alias.name.startswith("_") or any(p.startswith("_") for p in module.split(".")):
                    found.add((module, alias.name))
    return found


def test_every_private_mlflow_name_the_package_imports_is_in_the_compat_list():
    listed = {(i.path.split(":")[0], i.path.split(":")[1].split(".")[0]) for i in compat.INTERNALS}
    listed_modules = {i.path.split(":")[0] for i in compat.INTERNALS}
    unlisted = []
    for path in sorted(SRC.rglob("*.py")):
        for module, name in _private_mlflow_names(ast.parse(path.read_text())):
            private_module = any(p.startswith("_") for p in module.split("."))
            if (module, name) in listed or (private_module and not name.startswith("_") and module in listed_modules):
                continue
            unlisted.append(f"{path.relative_to(SRC)}: from {module} import {name}")
    assert unlisted == [], "add these to mlflow_team.store.compat.INTERNALS"


def test_a_renamed_internal_turns_the_lean_paths_off_with_one_log_line(tmp_path, monkeypatch, caplog):
    monkeypatch.delattr(mlflow.utils.validation, "_validate_metric")
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    with caplog.at_level(logging.WARNING, logger="mlflow_team.store.compat"):
        first = TeamSqlAlchemyStore(uri, team_policy=Policy())
        second = TeamSqlAlchemyStore(uri, team_policy=Policy())
    assert not first._lean_path and not second._lean_path
    lines = [r.getMessage() for r in caplog.records if "plain-SQL run writes" in r.getMessage()]
    assert len(lines) == 1
    assert "_validate_metric is missing" in lines[0] and "MLflow's ORM paths" in lines[0]
    # MLflow's own path does the work, with the same results and the team sessions still on.
    assert isinstance(first.ManagedSessionMaker, db.ManagedSessions)
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run("0").info.run_id
    client.log_metric(run_id, "loss", 0.5, step=3)
    client.set_terminated(run_id)
    run = client.get_run(run_id)
    assert run.data.metrics == {"loss": 0.5} and run.info.status == "FINISHED"


def test_a_changed_table_turns_the_lean_paths_off(monkeypatch):
    from mlflow.store.tracking.dbmodels.models import SqlRun

    expected = dict(compat.LEAN_COLUMNS)
    key = ("mlflow.store.tracking.dbmodels.models", "SqlRun")
    expected[key] = {c.name for c in SqlRun.__table__.columns} - {"source_version"}
    monkeypatch.setattr(compat, "LEAN_COLUMNS", expected)
    result = compat.probe()
    assert not result.ok("lean") and result.ok("sessions")
    assert any("source_version" in reason for reason in result.failures["lean"])


def test_a_minor_newer_than_the_tested_ones_keeps_the_lean_paths_off(monkeypatch):
    newest = compat.TESTED_MINORS[-1]
    monkeypatch.setattr(compat, "mlflow_version", lambda: (newest[0], newest[1] + 1))
    result = compat.probe()
    assert not result.ok("lean")
    assert result.ok("engine") and result.ok("sessions") and result.ok("gc")


def test_a_changed_run_data_turns_the_field_by_field_pages_off(tmp_path, monkeypatch, caplog):
    """A RunData that grows a field: search pages are built with its constructor, so runs carry it."""
    from mlflow.entities import RunData

    constructor = RunData.__init__

    def grown(self, metrics=None, params=None, tags=None):
        constructor(self, metrics, params, tags)
        self._grown = sorted(self._params)

    monkeypatch.setattr(RunData, "__init__", grown)
    result = compat.probe()
    assert not result.ok("entities") and result.ok("search")
    assert "_grown" in "; ".join(result.failures["entities"])
    client = MlflowClient(tracking_uri=f"team+sqlite:///{tmp_path}/mlflow.db")
    run_id = client.create_run("0").info.run_id
    client.log_param(run_id, "max_depth", "4")
    client.set_tag(run_id, "model", "xgboost")
    client.log_metric(run_id, "rmse", 6.5)
    with caplog.at_level(logging.WARNING, logger="mlflow_team.store.compat"):
        (found,) = client.search_runs(["0"], "params.max_depth = '4'")
    assert found.data._grown == ["max_depth"]
    assert (found.data.params, found.data.tags["model"], found.data.metrics) == ({"max_depth": "4"}, "xgboost",
                                                                                 {"rmse": 6.5})
    assert any("RunData's constructor instead" in r.getMessage() for r in caplog.records)


def test_run_data_field_by_field_is_what_its_constructor_makes():
    from mlflow.entities import Metric, Param, RunData, RunTag

    metrics = [Metric("rmse", 6.5, 1, 0), Metric("loss", float("nan"), 2, 3)]
    made = RunData(metrics=list(metrics), params=[Param("max_depth", "4")], tags=[RunTag("model", "xgboost")])
    ours = compat.run_data_from_dicts(list(metrics), {"max_depth": "4"}, {"model": "xgboost"})
    assert ours.to_proto() == made.to_proto()
    assert (ours.params, ours.tags, ours.metrics.keys()) == (made.params, made.tags, made.metrics.keys())


def test_a_missing_session_hook_turns_the_team_sessions_off(tmp_path, monkeypatch, caplog):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # A `_get_or_create_engine` MLflow no longer calls would leave the team sessions on a plain
    # engine: the probe takes engine, sessions and the lean paths down together.
    monkeypatch.delattr(SqlAlchemyStore, "_get_or_create_engine")
    result = compat.probe()
    assert not result.ok("engine") and not result.ok("sessions") and not result.ok("lean")


def test_gc_calling_a_method_the_store_does_not_guard_refuses_a_protecting_store(tmp_path, monkeypatch, every_rule):
    monkeypatch.setattr(compat, "GC_GUARDED", compat.GC_GUARDED - {"_hard_delete_logged_model"})
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(errors.TeamStoreConfigError, match=r"cannot guard `mlflow gc`.*_hard_delete_logged_model"):
        TeamSqlAlchemyStore(uri, team_policy=every_rule)
    # Without the rule there is nothing to guard: the store starts.
    assert TeamSqlAlchemyStore(uri, team_policy=Policy()) is not None


def test_gc_guard_message_says_what_to_do():
    text = errors.GC_GUARD_UNAVAILABLE.format(
        uri="team+sqlite:///m.db", version="3.99", reason="gone", tested="3.12 to 3.17"
    )
    assert "mlflow gc" in text and "[protected-deletions] enabled = false" in text
    assert text.endswith("[rule: protected-deletions]")


def test_the_switch_names_groups_and_all(monkeypatch):
    monkeypatch.setenv(compat.DISABLE_ENV, "lean")
    assert not compat.probe().ok("lean") and compat.probe().ok("sessions")
    monkeypatch.setenv(compat.DISABLE_ENV, "all")
    compat.reset()
    assert not any(compat.probe().ok(group) for group in compat.GROUPS)


def test_an_unlisted_internal_cannot_be_fetched():
    with pytest.raises(KeyError, match="not in mlflow_team.store.compat.INTERNALS"):
        compat.get("mlflow.store.db.utils:_something_new")


def _gc_scenario(tmp_path):
    uri = f"team+sqlite:///{tmp_path}/gc.db"
    lax = TeamSqlAlchemyStore(uri, team_policy=Policy())  # a database from before the rule
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment("vision/gc")
    run = client.create_run(experiment_id, tags={"team.project": "p"})
    client.log_text(run.info.run_id, "weights", "model/weights.txt")
    client.create_registered_model("vision.gc")
    client.create_model_version("vision.gc", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    lax.delete_run(run.info.run_id)
    from mlflow.utils.file_utils import local_file_uri_to_path

    weights = Path(local_file_uri_to_path(run.info.artifact_uri.removeprefix("team+"))) / "model" / "weights.txt"
    assert weights.exists()
    return uri, weights, run.info.run_id


@pytest.mark.slow
@pytest.mark.parametrize(
    ("disabled", "expected"),
    [
        ("", "Run '{run_id}' cannot be deleted"),  # mlflow gc stops before deleting any file
        ("engine,sessions,schema,lean", "Run '{run_id}' cannot be deleted"),  # MLflow's own paths: still guarded
        ("gc", "cannot guard `mlflow gc`"),  # no guard: the store does not start
    ],
)
def test_a_protected_gc_is_refused_whatever_the_probe_says(tmp_path, policy_file, disabled, expected):
    """`mlflow gc` would hard-delete a deleted run and its files while its version stays."""
    uri, weights, run_id = _gc_scenario(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "MLFLOW_TEAM_POLICY": str(policy_file), "MLFLOW_TRACKING_URI": uri,
             compat.DISABLE_ENV: disabled},
    )
    assert result.returncode != 0
    assert expected.format(run_id=run_id) in result.stderr
    assert weights.exists()


def test_hyperopt_autologging_without_its_internals_leaves_searches_alone(tmp_path, monkeypatch, caplog):
    import mlflow
    from hyperopt import fmin, hp, tpe
    from mlflow.utils.autologging_utils import safety

    import mlflow_team.hyperopt

    monkeypatch.delattr(safety, "_wrap_patch")
    mlflow.set_tracking_uri(f"team+sqlite:///{tmp_path}/mlflow.db")
    with caplog.at_level(logging.WARNING, logger="mlflow_team.store.compat"):
        mlflow_team.hyperopt.autolog()
    try:
        best = fmin(lambda x: x**2, hp.uniform("x", -1, 1), algo=tpe.suggest, max_evals=3, show_progressbar=False)
    finally:
        mlflow_team.hyperopt.autolog(disable=True)
    assert "x" in best
    assert MlflowClient().search_runs(["0"]) == []
    assert any("hyperopt autologging patches off" in r.getMessage() for r in caplog.records)


def test_artifact_repositories_refuse_to_start_where_downloads_would_skip_their_check(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    from mlflow_team.artifacts.local import TeamLocalArtifactRepository
    from mlflow_team.artifacts.s3 import TeamS3ArtifactRepository

    monkeypatch.delattr(S3ArtifactRepository, "_upload_file")  # an S3 hook gone: S3 only
    with pytest.raises(MlflowException, match=r"team\+s3 artifact repository .* was not started.*_upload_file"):
        TeamS3ArtifactRepository("team+s3://bucket/prefix")
    assert TeamLocalArtifactRepository(f"team+file://{tmp_path}").artifact_dir == str(tmp_path)

    compat.reset()

    def download_artifacts(self, artifact_path, dst_path=None):  # a new MLflow fetching otherwise
        return dst_path

    monkeypatch.setattr(ArtifactRepository, "download_artifacts", download_artifacts)
    with pytest.raises(MlflowException, match=r"team\+file artifact repository .* no longer downloads through"):
        TeamLocalArtifactRepository(f"team+file://{tmp_path}")


def test_artifact_guard_message_names_the_plain_scheme():
    text = errors.ARTIFACT_GUARD_UNAVAILABLE.format(
        scheme="team+s3", uri="team+s3://b/p", version="3.99", reason="gone", tested="3.12 to 3.17", plain="s3"
    )
    assert "plain s3 scheme" in text and "Install an MLflow release" in text
