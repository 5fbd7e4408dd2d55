"""A process killed during `log_artifacts` of a directory leaves a folder that says it is
incomplete: the marker shows in `list_artifacts` (and so in the UI), and mlflow-team refuses to
download the folder until a complete upload replaces the marker.

The uploader is a real subprocess, killed with SIGKILL. It blocks for good on one of its files,
a named pipe nobody writes to, so the kill lands after every other file is stored: the test waits
for those objects to appear, never on a timer. S3 is moto's server on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_team import errors
from mlflow_team.artifacts import incomplete, owner
from mlflow_team.artifacts.s3 import _client
from tests.helpers.server import free_port

pytestmark = [pytest.mark.slow]
BUCKET = "half-bucket"
FILES = 12

UPLOADER = """
import sys
from mlflow import MlflowClient
MlflowClient(tracking_uri=sys.argv[1]).log_artifacts(sys.argv[2], sys.argv[3], "data")
"""


def _source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(FILES):
        (src / f"f{i:02d}.json").write_text('{"i": %d}' % i)
    os.mkfifo(src / "zz-weights.bin")  # opening it for reading blocks until someone writes: never
    return src


def _wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the uploader exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _kill_midway(tmp_path, uri: str, run_id: str, src, stored_count, env: dict) -> None:
    uploader = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, uri, run_id, str(src)],
        env={**os.environ, **env, "MLFLOW_TEAM_ARTIFACT_WORKERS": "4"}, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_for(lambda: stored_count() >= FILES, f"{FILES} stored files", uploader)
    finally:
        os.killpg(uploader.pid, signal.SIGKILL)
        uploader.wait()


def _check_marked_then_repaired(client: MlflowClient, run_id: str, src, tmp_path) -> None:
    listed = [info.path for info in client.list_artifacts(run_id, "data")]
    markers = [path for path in listed if incomplete.is_marker(path)]
    assert len(markers) == 1, listed
    assert len(listed) == FILES + 1  # the twelve files that made it, and the marker
    marker_text = open(client.download_artifacts(run_id, markers[0], str(tmp_path / "marker")), "rb").read()
    assert incomplete.listed(marker_text) == {f"f{i:02d}.json" for i in range(FILES)} | {"zz-weights.bin"}
    assert b"has not finished" in marker_text

    out = tmp_path / "out"
    out.mkdir()
    repo = mlflow.store.artifact.artifact_repository_registry.get_artifact_repository(
        client.get_run(run_id).info.artifact_uri
    )
    with pytest.raises(errors.ArtifactIncomplete, match=r"Downloading 'data' was refused: the upload into 'data' has not"):
        repo.download_artifacts("data", str(out))
    with pytest.raises(errors.ArtifactIncomplete, match=r"Downloading '' was refused: the upload into 'data'"):
        repo.download_artifacts("", str(out))
    assert [p for p in out.rglob("*") if p.is_file()] == []
    assert open(repo.download_artifacts("data/f03.json", str(out))).read() == '{"i": 3}'  # one file is whole

    # The same folder logged again, complete this time: the marker goes.
    os.remove(src / "zz-weights.bin")
    (src / "zz-weights.bin").write_bytes(b"weights")
    client.log_artifacts(run_id, str(src), "data")
    listed = [info.path for info in client.list_artifacts(run_id, "data")]
    assert not any(incomplete.is_marker(path) for path in listed) and len(listed) == FILES + 1
    (tmp_path / "whole").mkdir()
    repo.download_artifacts("data", str(tmp_path / "whole"))
    assert (tmp_path / "whole" / "data" / "zz-weights.bin").read_bytes() == b"weights"


def test_a_killed_team_file_folder_upload_is_marked_and_refused_until_logged_again(tmp_path):
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("half/file"))
    src = _source(tmp_path)
    folder = tmp_path / "mlruns"

    def stored() -> int:
        return len([p for p in folder.rglob("f*.json") if p.is_file()])

    _kill_midway(tmp_path, uri, run.info.run_id, src, stored, {})
    _check_marked_then_repaired(client, run.info.run_id, src, tmp_path)


@pytest.fixture
def moto_endpoint(monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "MLFLOW_S3_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    owner.clear_cache()
    _client.cache_clear()
    s3 = boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"])
    s3.create_bucket(Bucket=BUCKET)
    yield s3, env
    server.stop()
    _client.cache_clear()


def test_a_killed_team_s3_folder_upload_is_marked_and_refused_until_logged_again(tmp_path, moto_endpoint):
    s3, env = moto_endpoint
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("half/s3", artifact_location=f"team+s3://{BUCKET}/mlflow"))
    src = _source(tmp_path)

    def stored() -> int:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/").get("Contents", [])]
        return len([k for k in keys if k.rsplit("/", 1)[-1].startswith("f")])

    _kill_midway(tmp_path, uri, run.info.run_id, src, stored, env)
    _check_marked_then_repaired(client, run.info.run_id, src, tmp_path)


@pytest.mark.server
def test_a_killed_folder_upload_through_the_artifact_proxy_is_marked_until_logged_again(tmp_path):
    """A client with mlflow-team uploading through `mlflow server`'s proxy (default workers): the
    folder carries the marker where list_artifacts (and the UI) show it, until an upload completes."""
    from tests.helpers.server import DEFAULT_WORKERS, mlflow_server

    with mlflow_server(f"team+sqlite:///{tmp_path}/server.db", tmp_path, workers=DEFAULT_WORKERS) as url:
        client = MlflowClient(tracking_uri=url)
        run = client.create_run(client.create_experiment("half/proxied"))
        run_id = run.info.run_id
        src = _source(tmp_path)
        stored_dir = tmp_path / "artifacts"

        def stored() -> int:
            return len([p for p in stored_dir.rglob("f*.json") if p.is_file()])

        _kill_midway(tmp_path, url, run_id, src, stored, {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        listed = [info.path for info in client.list_artifacts(run_id, "data")]
        markers = [path for path in listed if incomplete.is_marker(path)]
        assert len(markers) == 1 and len(listed) == FILES + 1, listed
        marker_text = open(client.download_artifacts(run_id, markers[0], str(tmp_path / "marker")), "rb").read()
        assert incomplete.listed(marker_text) == {f"f{i:02d}.json" for i in range(FILES)} | {"zz-weights.bin"}

        os.remove(src / "zz-weights.bin")
        (src / "zz-weights.bin").write_bytes(b"weights")
        client.log_artifacts(run_id, str(src), "data")
        listed = [info.path for info in client.list_artifacts(run_id, "data")]
        assert not any(incomplete.is_marker(path) for path in listed) and len(listed) == FILES + 1
