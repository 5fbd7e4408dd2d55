"""A replacement that drops mlflow-team's own digest is still caught: the manifest beside a run's
artifacts records what was written (team+s3 on moto's `mock_aws`, team+file on disk)."""

from __future__ import annotations

import os

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from mlflow_team import errors
from mlflow_team.artifacts import integrity, owner
from mlflow_team.artifacts.s3 import PART_SIZE, TeamS3ArtifactRepository, _client

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

BUCKET = "team-artifacts"
RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def s3(monkeypatch):
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE", "MLFLOW_S3_UPLOAD_EXTRA_ARGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    owner.clear_cache()
    _client.cache_clear()
    with moto.mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    owner.clear_cache()


@pytest.fixture
def run(s3, tmp_path):
    mlflow.set_tracking_uri(f"team+sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    experiment_id = client.create_experiment("vision/resnet", artifact_location=f"team+s3://{BUCKET}/mlflow/1")
    return client.create_run(experiment_id)


def _key(s3, suffix):
    return next(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"] if o["Key"].endswith(suffix))


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(12):
        (src / f"f{i}.json").write_text('{"i": %d}' % i)
    return src


def test_an_object_overwritten_without_our_metadata_fails_its_download(s3, run, tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"good bytes" * 1000)
    MlflowClient().log_artifact(run.info.run_id, str(path), "model")
    key = _key(s3, "model/model.pkl")
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"other bytes" * 1000)  # as `aws s3 cp` would: no metadata
    assert "sha256" not in s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    out = tmp_path / "out"
    out.mkdir()
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    with pytest.raises(errors.ChecksumMismatch, match=r"Artifact 'model/model.pkl' failed its integrity check"):
        repo.download_artifacts("model/model.pkl", str(out))
    # A repository rooted higher up (as `mlflow server --artifacts-destination` is) sees it too.
    root = TeamS3ArtifactRepository(f"team+s3://{BUCKET}/mlflow")
    with pytest.raises(errors.ChecksumMismatch, match="failed its integrity check"):
        root.download_artifacts(f"1/{run.info.run_id}/artifacts/model/model.pkl", str(out))
    assert _files(out) == []
    # The same bytes put back (without metadata) are the artifact as logged.
    s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    assert open(repo.download_artifacts("model/model.pkl", str(out)), "rb").read() == path.read_bytes()


def test_one_replaced_file_fails_the_download_of_its_directory(s3, run, tmp_path):
    src = _tree(tmp_path)
    MlflowClient().log_artifacts(run.info.run_id, str(src), "data")
    s3.put_object(Bucket=BUCKET, Key=_key(s3, "data/f7.json"), Body=b'{"i": 70}')
    out = tmp_path / "out"
    out.mkdir()
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    with pytest.raises(errors.ChecksumMismatch, match=r"'data/f7.json' failed its integrity check"):
        repo.download_artifacts("data", str(out))
    assert "data/f7.json" not in _files(out)


def test_a_large_object_replaced_without_our_metadata_is_caught(s3, run, tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(PART_SIZE + 1000))  # multipart: S3 keeps a composite checksum
    MlflowClient().log_artifact(run.info.run_id, str(path), "model")
    key = _key(s3, "model/weights.bin")
    damaged = bytearray(path.read_bytes())
    damaged[5] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=key, Body=bytes(damaged))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(errors.ChecksumMismatch, match="'model/weights.bin' failed its integrity check"):
        TeamS3ArtifactRepository(run.info.artifact_uri).download_artifacts("model/weights.bin", str(out))
    assert _files(out) == []


def test_files_mlflow_team_never_wrote_are_not_questioned_and_the_manifest_stays_out_of_sight(s3, run, tmp_path):
    client = MlflowClient()
    client.log_text(run.info.run_id, "ours", "notes/ours.txt")
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    key = _key(s3, "notes/ours.txt")
    s3.put_object(Bucket=BUCKET, Key=key.replace("ours.txt", "theirs.txt"), Body=b"stock wrote me")
    out = tmp_path / "out"
    out.mkdir()
    repo.download_artifacts("notes", str(out))
    assert _files(out) == ["notes/ours.txt", "notes/theirs.txt"]
    root = TeamS3ArtifactRepository(f"team+s3://{BUCKET}/mlflow")
    assert [i.path for i in root.list_artifacts(f"1/{run.info.run_id}")] == [f"1/{run.info.run_id}/artifacts"]
    records = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"] if "/.mlflow-team-manifest/" in o["Key"]]
    assert len(records) == 1
    repo.delete_artifacts()  # what `mlflow gc` does: the run's artifacts and their record go together
    assert s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) == []


# --- team+file ---------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path):
    root = tmp_path / "mlruns" / "1" / RUN / "artifacts"
    return get_artifact_repository("team+" + root.as_uri())


def test_a_team_file_artifact_replaced_by_a_rename_fails_its_download(local, tmp_path):
    src = _tree(tmp_path)
    local.log_artifacts(str(src), "data")
    stored = os.path.join(local.artifact_dir, "data", "f3.json")
    replacement = stored + ".new"
    with open(replacement, "w") as handle:  # another tool: write a new file, rename it over the old
        handle.write('{"i": 30}')
    os.replace(replacement, stored)
    assert integrity.stored_digest(stored) is None  # the new file carries no digest of its own
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(errors.ChecksumMismatch, match=r"'data/f3.json' failed its integrity check"):
        local.download_artifacts("data/f3.json", str(out))
    with pytest.raises(errors.ChecksumMismatch, match=r"'data/f3.json' failed its integrity check"):
        local.download_artifacts("data")  # handed back in place: checked first
    assert _files(out) == []
    # A file put there by stock MLflow (never recorded) still comes down.
    (tmp_path / "mlruns" / "1" / RUN / "artifacts" / "data" / "stock.txt").write_text("stock")
    assert open(local.download_artifacts("data/stock.txt", str(out))).read() == "stock"
    assert ".mlflow-team-manifest" not in [i.path for i in local.list_artifacts()]


def test_the_message_of_a_replaced_artifact_names_it_and_what_to_do():
    assert errors.CHECKSUM_MISMATCH.format(artifact="m.pkl", actual="ab", expected="cd", destination="/tmp/x") == (
        "Artifact 'm.pkl' failed its integrity check: its SHA-256 is ab but cd was recorded when it was logged, so the "
        "stored copy is damaged or was changed outside MLflow. Nothing was written to '/tmp/x'. Log the artifact "
        "again from its source, or restore the object from a backup or an earlier S3 version."
    )


def test_the_message_of_an_incomplete_folder_names_it_and_how_to_repair_it():
    assert errors.ARTIFACT_UPLOAD_INCOMPLETE.format(path="", folder="data", marker="UPLOAD-INCOMPLETE-1a2b3c4d.txt") == (
        "Downloading '' was refused: the upload into 'data' has not finished (it left the marker "
        "'UPLOAD-INCOMPLETE-1a2b3c4d.txt', which lists its files), so some of the files may be missing or older "
        "copies. Nothing was written. If that upload was stopped, log the folder again, for example "
        "mlflow.log_artifacts(local_dir, 'data'); it removes the marker. Single files of the folder can still be "
        "downloaded: each is stored whole."
    )


def test_a_leftover_s3_marker_refuses_the_folders_it_covers_until_the_folder_is_logged_again(s3, run, tmp_path):
    from mlflow_team.artifacts import incomplete

    src = _tree(tmp_path)
    (src / "sub" / "w.bin").write_bytes(b"w")
    client = MlflowClient()
    client.log_artifacts(run.info.run_id, str(src), "data")
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    assert not any(incomplete.is_marker(info.path) for info in repo.list_artifacts("data"))
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    marker = f"{_key(s3, 'data/f0.json').rsplit('/', 1)[0]}/{incomplete.new_name()}"  # as a killed upload leaves it
    s3.put_object(Bucket=BUCKET, Key=marker, Body=incomplete.text("data", files))
    out = tmp_path / "out"
    out.mkdir()
    for folder in ("data", "data/sub", ""):
        with pytest.raises(errors.ArtifactIncomplete, match=f"Downloading '{folder}' was refused: the upload into 'data'"):
            repo.download_artifacts(folder, str(out))
    assert _files(out) == []
    repo.download_artifacts("data/sub/w.bin", str(out))  # one file is whole
    client.log_artifacts(run.info.run_id, str(src), "data")
    assert not any(incomplete.is_marker(info.path) for info in repo.list_artifacts("data"))
    repo.download_artifacts("data", str(out))


def test_a_marker_that_appears_while_an_upload_runs_stays_for_the_upload_that_left_it(s3, run, tmp_path):
    """The leftover markers a folder upload removes are those it found as it began: a marker
    written later belongs to an upload still running."""
    import threading

    from mlflow_team.artifacts import incomplete

    src = _tree(tmp_path)
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    folder = repo._key("data")[1]
    listed, lock, late = threading.Event(), threading.Lock(), []

    def after_listing(**kwargs):
        listed.set()

    def before_put(params, **kwargs):
        if incomplete.is_marker(params["Key"]):
            return
        assert listed.wait(timeout=30), "the upload did not list the folder's markers before its files were stored"
        with lock:
            if not late:  # another upload into the folder starts now
                late.append(f"{folder}/{incomplete.new_name()}")
                s3.put_object(Bucket=BUCKET, Key=late[0], Body=incomplete.text("data", files))

    client = repo._get_s3_client()
    client.meta.events.register("after-call.s3.ListObjectsV2", after_listing, unique_id="test-late-list")
    client.meta.events.register("before-parameter-build.s3.PutObject", before_put, unique_id="test-late-put")
    try:
        repo.log_artifacts(str(src), "data")
    finally:
        client.meta.events.unregister("after-call.s3.ListObjectsV2", unique_id="test-late-list")
        client.meta.events.unregister("before-parameter-build.s3.PutObject", unique_id="test-late-put")
    markers = [info.path for info in repo.list_artifacts("data") if incomplete.is_marker(info.path)]
    assert markers == [f"data/{late[0].rsplit('/', 1)[-1]}"]
    with pytest.raises(errors.ArtifactIncomplete, match="Downloading 'data' was refused: the upload into 'data'"):
        repo.download_artifacts("data", str(tmp_path / "out"))
