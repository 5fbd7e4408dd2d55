"""`mlflow-team demo`, run as a new user runs it, twice, and read back through MLflow's client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

pytest.importorskip("hyperopt")
pytest.importorskip("xgboost")

pytestmark = pytest.mark.slow

MODEL = "nyc-taxi.trip-duration"


def run_demo(workdir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_team.cli", "demo", "--workdir", str(workdir), "--trials", "3", "--rows", "4000"],
        capture_output=True, text=True, timeout=600, cwd=workdir.parent,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_demo_runs_the_course_workflow_and_a_rerun_adds_a_version(tmp_path):
    workdir = tmp_path / "demo"
    first = run_demo(workdir)
    assert "model selection (validation RMSE" in first
    assert f"registered {MODEL} version 1 as @champion" in first
    assert f"mlflow ui --backend-store-uri team+sqlite:///{workdir / 'mlflow.db'}" in first
    second = run_demo(workdir)  # same data files, same database: a new version, no failure
    assert f"registered {MODEL} version 2 as @champion" in second

    mlflow.set_tracking_uri(f"team+sqlite:///{workdir / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("nyc-taxi/trip-duration")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_invocation: dict[str, list] = {}
    for run in runs:
        by_invocation.setdefault(run.data.tags["demo.invocation"], []).append(run)
    assert len(by_invocation) == 2
    for group in by_invocation.values():
        names = sorted(r.info.run_name for r in group)
        # Two baselines, the tuning run (hyperopt's parent) and a nested run per trial.
        assert names == ["baseline-lasso", "baseline-linear-regression", "trial-0", "trial-1", "trial-2", "xgboost-hyperopt"]
        parent = next(r for r in group if r.info.run_name == "xgboost-hyperopt")
        assert "best.max_depth" in parent.data.params and parent.data.tags["hyperopt.stop_reason"] == "max_evals"
        assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in group if r.info.run_name.startswith("trial-"))
        assert all(r.data.tags.get("team.author") for r in group)

    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == "2"
    picked = client.get_run(champion.tags["run_id"])
    assert champion.tags["author"] == picked.data.tags["team.author"]
    assert "green_tripdata_2021-01.parquet" in champion.tags["data.train"]
    # The pick has the lowest RMSE of its invocation's runs (budgets are generous here).
    group = by_invocation[picked.data.tags["demo.invocation"]]
    assert picked.data.metrics["rmse"] == min(r.data.metrics["rmse"] for r in group if "rmse" in r.data.metrics)

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    import pandas as pd

    predictions = model.predict(pd.DataFrame({"PU_DO": ["74_75", "41_42"], "trip_distance": [1.2, 3.5]}))
    assert len(predictions) == 2 and all(0 < p < 120 for p in predictions)


def test_the_server_demo_runs_through_http_and_ctrl_c_stops_both_servers(tmp_path):
    import os
    import re
    import signal

    workdir = tmp_path / "demo-server"
    demo = subprocess.Popen(
        [sys.executable, "-m", "mlflow_team.cli", "demo", "--server", "--workdir", str(workdir),
         "--trials", "2", "--rows", "3000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    seen = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "Both servers stay up until Ctrl-C" in line:
                break
        output = "".join(seen)
        assert "Both servers stay up" in output, output[-3000:]
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]
        assert len(pids) == 2
        assert f"registered {MODEL} version 1 as @champion" in output
        # Artifacts went through the server's proxy to S3, tagged with the run's values.
        assert re.search(r"S3: \d+ objects in team\+s3://mlflow-demo/artifacts; tags of one: .*team\.author=", output)
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert "Both servers stopped." in rest
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
