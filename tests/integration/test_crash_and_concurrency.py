"""What parallel and crashing writers leave behind in the team store (stock MLflow's side of the
comparison is `benchmarks/bench_store.py`'s: the suite never asserts that stock fails)."""

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


def test_log_batch_killed_midway_leaves_nothing_of_the_batch(db_url):
    # (stock MLflow commits the params before it writes the metrics: half a batch)
    data = _crash_midway(f"team+{db_url}")
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
    deadline = time.monotonic() + 300
    while not all((directory / f"w{w}.json.ready").exists() for w in range(8)):  # MLflow imported
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "a writer never started"
        time.sleep(0.05)
    (directory / "go").touch()  # every writer hits the brand-new file at once
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


def test_eight_writers_on_a_new_sqlite_file_lose_nothing(tmp_path):
    team = _eight_writers(f"team+sqlite:///{tmp_path}/mlflow.db", tmp_path)

    assert team["errors"] == []
    assert len(team["acknowledged_runs"]) == 32 and team["stored_runs"] == team["acknowledged_runs"]
    assert team["acknowledged_metrics"] == team["expected_metrics"] == team["stored_metrics"]
