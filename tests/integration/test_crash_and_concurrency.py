"""What parallel and crashing writers leave behind, stock MLflow against the team store."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

HELPERS = Path(__file__).resolve().parents[1] / "helpers"

pytestmark = pytest.mark.slow


# --- log_batch killed midway -----------------------------------------------------------------


def _crash_midway(uri: str) -> dict:
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name("Default").experiment_id
    run_id = client.create_run(experiment_id).info.run_id
    result = subprocess.run(
        [sys.executable, str(HELPERS / "crash_batch.py"), uri, run_id],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    return client.get_run(run_id).data


@pytest.mark.parametrize("flavour", ["stock", "team"])
def test_log_batch_killed_midway(db_url, flavour):
    uri = db_url if flavour == "stock" else f"team+{db_url}"
    data = _crash_midway(uri)
    if flavour == "stock":
        # Stock commits params before it writes metrics: the crash leaves half a batch.
        assert len(data.params) == 10 and data.metrics == {}
    else:
        assert data.params == {} and data.metrics == {} and "batch" not in data.tags


# --- eight writers on one new SQLite file ----------------------------------------------------


def _eight_writers(uri: str, directory: Path, runs: int = 4, metrics: int = 15) -> dict:
    processes = [
        subprocess.Popen(
            [sys.executable, str(HELPERS / "writer.py"), uri, str(w), str(runs), str(metrics), str(directory / f"w{w}.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for w in range(8)
    ]
    time.sleep(1.0)
    (directory / "go").touch()  # the writers poll for it while importing MLflow
    for process in processes:
        process.wait(timeout=600)
    reports = [json.loads((directory / f"w{w}.json").read_text()) for w in range(8)]
    acknowledged_runs = {run_id for r in reports for run_id in r["runs"]}
    acknowledged_metrics = sum(r["metric_writes"] for r in reports)
    database = directory / "mlflow.db"
    stored_runs, stored_metrics = set(), 0
    if database.exists():
        with sqlite3.connect(database) as connection:
            try:
                stored_runs = {row[0] for row in connection.execute("SELECT run_uuid FROM runs")}
                stored_metrics = connection.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
            except sqlite3.OperationalError:
                pass  # the schema never got created
    return {
        "errors": [e for r in reports for e in r["errors"]],
        "expected_metrics": 8 * runs * metrics,
        "acknowledged_runs": acknowledged_runs,
        "acknowledged_metrics": acknowledged_metrics,
        "stored_runs": stored_runs,
        "stored_metrics": stored_metrics,
    }


def test_eight_writers_on_a_new_sqlite_file_lose_nothing_with_team_and_fail_with_stock(tmp_path):
    (tmp_path / "stock").mkdir()
    (tmp_path / "team").mkdir()
    stock = _eight_writers(f"sqlite:///{tmp_path}/stock/mlflow.db", tmp_path / "stock")
    team = _eight_writers(f"team+sqlite:///{tmp_path}/team/mlflow.db", tmp_path / "team")

    assert team["errors"] == []
    assert len(team["acknowledged_runs"]) == 32 and team["stored_runs"] == team["acknowledged_runs"]
    assert team["acknowledged_metrics"] == team["expected_metrics"] == team["stored_metrics"]

    # The same load on stock MLflow: writers fail (migration races, "database is locked").
    assert stock["errors"], "stock MLflow survived eight writers on a new file this time"
    assert stock["stored_metrics"] < stock["expected_metrics"]
