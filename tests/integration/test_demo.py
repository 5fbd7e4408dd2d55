"""`mlflow-team demo`, run as a new user runs it, twice, and read back through MLflow's client."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
from mlflow import MlflowClient

pytest.importorskip("hyperopt")
pytest.importorskip("xgboost")

pytestmark = pytest.mark.slow

MODEL = "nyc-taxi.trip-duration"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The selection table's picked row: name, RMSE, training seconds, logged model MB.
PICKED_ROW = re.compile(r"^\*\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s", re.M)
#: Written into a model's folder when it is registered, after its size was measured.
REGISTRY_FILE = "registered_model_meta"


def model_id_of(run) -> str:
    """The id of the model a demo run logged (its ``models:/<id>`` URI is in a tag)."""
    return run.data.tags["demo.model_uri"].rsplit("/", 1)[-1]


def files_on_disk(client: MlflowClient, model_id: str) -> dict[str, int]:
    """The logged model's files under its team+file artifact location, with their sizes."""
    location = Path(urlparse(client.get_logged_model(model_id).artifact_location).path)
    assert location.is_dir(), location
    return {str(f.relative_to(location)): f.stat().st_size for f in location.rglob("*") if f.is_file()}


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
    assert "model MB (logged)" in first
    assert re.search(r"Disk: this run added [\d.]+ MB to .* \(5 logged models: [\d.]+ MB\)", first), first[-2000:]
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

    # The table's size is the champion's logged model as stored: its artifact files summed.
    name, _, _, table_mb = PICKED_ROW.search(second).groups()
    assert name == picked.info.run_name
    champion_files = files_on_disk(client, model_id_of(picked))
    assert REGISTRY_FILE in champion_files and "model.pkl" in champion_files
    logged = sum(size for path, size in champion_files.items() if path != REGISTRY_FILE)
    assert float(table_mb) == pytest.approx(sum(champion_files.values()) / 1e6, abs=0.0006)
    assert float(table_mb) == pytest.approx(logged / 1e6, abs=0.0006)
    # Every run's size metric is its own logged model's files, byte for byte, and small.
    for run in runs:
        if "demo.model_uri" in run.data.tags:
            stored = sum(size for path, size in files_on_disk(client, model_id_of(run)).items() if path != REGISTRY_FILE)
            assert run.data.metrics["model_size_mb"] == pytest.approx(stored / 1e6, abs=1e-9), run.info.run_name
            assert stored < 2_000_000, f"{run.info.run_name}: a logged model of {stored:,} bytes"

    # The choice as a picture: a PNG on each tuning run, and its local copy printed.
    printed = Path(re.search(r"^selection plot: (\S+\.png)$", second, re.M).group(1))
    assert printed.read_bytes()[:8] == PNG_SIGNATURE
    for group in by_invocation.values():
        parent = next(r for r in group if r.info.run_name == "xgboost-hyperopt")
        plots = client.list_artifacts(parent.info.run_id, "selection")
        assert [Path(f.path).suffix for f in plots] == [".png"] and plots[0].file_size > 10_000
    downloaded = Path(client.download_artifacts(picked.data.tags["mlflow.parentRunId"], f"selection/{printed.name}",
                                                str(tmp_path)))
    assert downloaded.read_bytes() == printed.read_bytes()

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    import pandas as pd

    predictions = model.predict(pd.DataFrame({"PU_DO": ["74_75", "41_42"], "trip_distance": [1.2, 3.5]}))
    assert len(predictions) == 2 and all(0 < p < 120 for p in predictions)


def test_the_demo_tunes_on_a_local_spark_session(tmp_path, spark):
    """``--spark``: the same workflow, its trials evaluated by SparkTrials in Spark executors (the
    ``spark`` fixture is only the check that Java and pyspark are here: the demo starts its own)."""
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_team.cli", "demo", "--workdir", str(workdir), "--trials", "3", "--rows", "4000",
         "--spark", "--parallelism", "2"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "on a local Spark session, 2 at a time" in result.stdout
    assert f"registered {MODEL} version 1 as @champion" in result.stdout
    assert re.search(r"\(5 logged models: [\d.]+ MB\)", result.stdout), result.stdout[-2000:]
    mlflow.set_tracking_uri(f"team+sqlite:///{workdir / 'mlflow.db'}")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("nyc-taxi/trip-duration").experiment_id])
    parent = next(r for r in runs if r.info.run_name == "xgboost-hyperopt")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in trials) == ["trial-0", "trial-1", "trial-2"]
    for run in trials:  # the objective's own tag, model and metrics, logged in an executor
        assert run.info.status == "FINISHED" and run.data.tags["model"] == "xgboost"
        assert run.data.metrics["rmse"] == run.data.metrics["loss"] and "demo.model_uri" in run.data.tags


def test_the_server_demo_keeps_its_artifacts_and_a_rerun_serves_them_until_ctrl_c(tmp_path):
    """``demo --server`` twice on one folder: first ``--no-wait`` (no URL that dies with it), then
    waiting, which puts the first run's bucket back before its servers start; what the first run
    left is read through the second's servers, and Ctrl-C stops both."""
    import os
    import signal

    import boto3

    from mlflow_team.demo import servers, workflow

    workdir = tmp_path / "demo-server"
    command = [sys.executable, "-m", "mlflow_team.cli", "demo", "--server", "--workdir", str(workdir),
               "--trials", "2", "--rows", "3000"]
    result = subprocess.run([*command, "--no-wait"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    first = result.stdout + result.stderr
    assert result.returncode == 0, first[-3000:]
    assert "in a browser" not in first and "stay up" not in first
    assert first.index("Both servers stopped.") > first.index(f"registered {MODEL} version 1 as @champion")
    saved = int(re.search(r"the bucket's (\d+) objects in (\S+); ", first).group(1))
    assert (workdir / servers.MIRROR / servers.MANIFEST).is_file() and saved > 0
    plot = re.search(r"^selection plot: \S+/(model-selection-\w+\.png)$", first, re.M).group(1)

    demo = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    seen = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "Both servers stay up until Ctrl-C" in line:
                break
        output = "".join(seen)
        assert "Both servers stay up" in output, output[-3000:]
        assert f"S3: {saved} objects of earlier runs put back" in output
        assert f"registered {MODEL} version 2 as @champion" in output
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]
        assert len(pids) == 2
        # Artifacts went through the server's proxy to S3, tagged with the run's values.
        assert re.search(r"S3: \d+ objects in team\+s3://mlflow-demo/artifacts; tags of one: .*team\.author=", output)
        url = re.search(r"Open (http://\S+) in a browser", output).group(1)
        s3_url = re.search(r"moto S3 at (http://\S+) ", output).group(1)

        # What the first run left is usable: its champion, its model and its plot.
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        client = MlflowClient()
        first_champion = client.get_model_version(MODEL, "1")
        picked = client.get_run(first_champion.tags["run_id"])
        size = workflow.logged_model_bytes(model_id_of(picked), client)
        assert picked.data.metrics["model_size_mb"] == pytest.approx(size / 1e6, abs=0.0001)
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
        import pandas as pd

        assert len(model.predict(pd.DataFrame({"PU_DO": ["74_75"], "trip_distance": [1.2]}))) == 1
        tuning = picked.data.tags["mlflow.parentRunId"]
        local = Path(client.download_artifacts(tuning, f"selection/{plot}", str(tmp_path)))
        assert local.read_bytes()[:8] == PNG_SIGNATURE
        assert local.read_bytes() == (workdir / "plots" / plot).read_bytes()
        s3 = boto3.client("s3", endpoint_url=s3_url, **{k.lower(): v for k, v in servers.CREDENTIALS.items()
                                                        if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
        _, tags = servers.tagged_objects(s3)
        assert tags.get("team.project") == "nyc-taxi"  # the objects' tags came back too

        demo.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert "Both servers stopped." in rest
    assert int(re.search(r"the bucket's (\d+) objects in ", rest).group(1)) > saved
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # The demo's output is its progress bar and summary, not a line per run from MLflow.
    for text in (first, output + rest):
        assert "View run" not in text and "View experiment" not in text
        assert "Downloading artifacts" not in text
