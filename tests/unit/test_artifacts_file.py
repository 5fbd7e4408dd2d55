"""team+file: the embedded default writes atomically, records SHA-256 and refuses what escapes."""

from __future__ import annotations

import io
import os
import threading

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from mlflow_team import errors
from mlflow_team.artifacts import integrity
from mlflow_team.artifacts.local import TeamLocalArtifactRepository

RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "mlruns" / "1" / RUN / "artifacts"
    return get_artifact_repository("team+" + root.as_uri())


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(20):
        (src / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    (src / "sub" / "weights.bin").write_bytes(os.urandom(300_000))
    (src / "empty").mkdir()
    return src


def test_mlflow_builds_the_team_repository_for_team_file_uris(repo):
    assert isinstance(repo, TeamLocalArtifactRepository)
    assert repo.artifact_uri.startswith("team+file://")


def test_a_directory_round_trips_and_every_file_has_its_sha256(repo, tree, tmp_path):
    repo.log_artifacts(str(tree), "data")
    stored = os.path.join(repo.artifact_dir, "data", "sub", "weights.bin")
    assert integrity.stored_digest(stored) == integrity.sha256_of_file(str(tree / "sub" / "weights.bin"))
    assert os.path.isdir(os.path.join(repo.artifact_dir, "data", "empty"))
    out = tmp_path / "out"
    out.mkdir()
    local = repo.download_artifacts("data", str(out))
    for path in tree.rglob("*"):
        if path.is_file():
            assert (out / "data" / path.relative_to(tree)).read_bytes() == path.read_bytes()
    assert local == str(out / "data")
    names = {info.path for info in repo.list_artifacts("data")}
    assert "data/sub" in names and not any(".mlflow-team" in n or ".artifact." in n for n in names)


def test_a_corrupted_file_fails_its_download_and_leaves_nothing(repo, tree, tmp_path):
    repo.log_artifacts(str(tree))
    stored = os.path.join(repo.artifact_dir, "sub", "weights.bin")
    with open(stored, "r+b") as handle:  # bit rot, or an edit outside MLflow
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(errors.ChecksumMismatch, match=r"Artifact 'sub/weights.bin' failed its integrity check"):
        repo.download_artifacts("sub/weights.bin", str(out))
    assert list(out.rglob("*.bin")) == [] and list(out.rglob(".artifact*")) == []
    # Handed back in place (no destination), the file is checked before anyone loads it.
    with pytest.raises(errors.ChecksumMismatch, match="weights.bin"):
        repo.download_artifacts("sub")


def test_a_write_that_dies_midway_leaves_no_artifact_under_its_name(repo):
    class Dies(io.RawIOBase):
        def __init__(self):
            self.sent = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            if self.sent > 3 * 1024 * 1024:
                raise ConnectionResetError("client went away")
            buffer[:] = b"x" * len(buffer)
            self.sent += len(buffer)
            return len(buffer)

    with pytest.raises(ConnectionResetError):
        repo.log_artifact_from_stream(io.BufferedReader(Dies()), "model.pkl", "model")
    folder = os.path.join(repo.artifact_dir, "model")
    assert os.listdir(folder) == []  # no model.pkl, and no staging file left behind


@pytest.mark.parametrize(
    "artifact_path", ["../escape", "a/../../escape", "%2e%2e/escape", "%252e%252e/escape", "/etc", "a\\..\\..\\b"]
)
def test_paths_that_leave_the_root_are_rejected(repo, tree, tmp_path, artifact_path):
    with pytest.raises(errors.ArtifactPathRejected, match=r"must stay inside the artifact root"):
        repo.log_artifact(str(tree / "f1.txt"), artifact_path)
    with pytest.raises(errors.ArtifactPathRejected, match=r"must stay inside the artifact root"):
        repo.log_artifacts(str(tree), artifact_path)
    assert not (tmp_path / "mlruns" / "1" / RUN / "escape").exists()
    assert not (tmp_path / "mlruns" / "1" / "escape").exists()


def test_deleting_the_root_or_an_experiment_is_refused(tmp_path, tree):
    root = get_artifact_repository("team+" + (tmp_path / "mlruns").as_uri())
    run = get_artifact_repository("team+" + (tmp_path / "mlruns" / "1" / RUN / "artifacts").as_uri())
    run.log_artifacts(str(tree))
    for target in (None, "1", "1/" + RUN):
        with pytest.raises(errors.ArtifactDeletionRefused, match=r"one run's, logged model's or trace's"):
            root.delete_artifacts(target)
    assert (tmp_path / "mlruns" / "1" / RUN / "artifacts" / "f1.txt").exists()
    root.delete_artifacts(f"1/{RUN}/artifacts/sub")  # inside one run: fine
    assert not (tmp_path / "mlruns" / "1" / RUN / "artifacts" / "sub").exists()
    run.delete_artifacts()  # what `mlflow gc` does for a run
    assert not (tmp_path / "mlruns" / "1" / RUN / "artifacts").exists()


def test_without_extended_attributes_a_hidden_sidecar_holds_the_digest(repo, tree, tmp_path, monkeypatch):
    monkeypatch.delattr(os, "setxattr")
    monkeypatch.delattr(os, "getxattr")
    repo.log_artifact(str(tree / "f3.txt"))
    stored = os.path.join(repo.artifact_dir, "f3.txt")
    assert os.path.exists(os.path.join(repo.artifact_dir, ".f3.txt" + integrity.SIDECAR_SUFFIX))
    assert [info.path for info in repo.list_artifacts()] == ["f3.txt"]
    with open(stored, "a") as handle:
        handle.write("tampered")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(errors.ChecksumMismatch, match="f3.txt"):
        repo.download_artifacts("f3.txt", str(out))


def test_the_team_store_puts_artifacts_in_a_team_file_folder_beside_the_database(tmp_path):
    from sklearn.linear_model import LinearRegression

    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("taxi")
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.sklearn.log_model(
            LinearRegression().fit([[0], [1]], [0, 1]), name="model", registered_model_name="taxi-model"
        )
    assert run.info.artifact_uri.startswith("team+file:")
    MlflowClient().set_registered_model_alias("taxi-model", "champion", "1")
    model = mlflow.sklearn.load_model("models:/taxi-model@champion")
    assert model.predict([[2]])[0] == pytest.approx(2)
    stored = tmp_path / "mlruns"
    hello = next(stored.rglob("hello.txt"))
    assert integrity.stored_digest(str(hello)) == integrity.sha256_of_file(str(hello))
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/hello.txt") == "hello"


def test_uploads_never_touch_the_process_umask_and_what_they_create_follows_it(repo, tree, tmp_path, monkeypatch):
    """Setting the umask (even for an instant) changes it for every thread: a folder another
    thread creates meanwhile would be world-writable."""
    real_umask = os.umask
    calls = []

    def watched_umask(mask):
        calls.append(mask)
        return real_umask(mask)

    previous = real_umask(0o027)
    monkeypatch.setattr(os, "umask", watched_umask)
    stop = threading.Event()
    made = []

    def make_folders():  # another thread of the same process, creating folders all along
        while not stop.is_set():
            folder = tmp_path / "other" / str(len(made))
            folder.mkdir(parents=True)
            made.append(folder)

    other = threading.Thread(target=make_folders)
    other.start()
    try:
        repo.log_artifacts(str(tree), "data")
        repo.log_artifact(str(tree / "f1.txt"), "one")
        repo.log_artifact_from_stream(io.BytesIO(b"x" * 10), "stream.bin", "stream")
    finally:
        stop.set()
        other.join()
        real_umask(previous)
    assert calls == []
    assert made and {oct(folder.stat().st_mode & 0o777) for folder in made} == {oct(0o750)}
    root = repo.artifact_dir
    assert oct(os.stat(os.path.join(root, "data", "sub")).st_mode & 0o777) == oct(0o750)
    for relative in ("data/f1.txt", "data/sub/weights.bin", "one/f1.txt", "stream/stream.bin"):
        assert oct(os.stat(os.path.join(root, relative)).st_mode & 0o777) == oct(0o640), relative


def test_a_folder_upload_leaves_no_marker_and_one_that_finds_a_leftover_marker_of_its_files_removes_it(repo, tree):
    from mlflow_team.artifacts import incomplete

    repo.log_artifacts(str(tree), "data")
    assert not any(incomplete.is_marker(info.path) for info in repo.list_artifacts("data"))
    # What a killed upload of the same folder left behind.
    files = sorted(str(p.relative_to(tree).as_posix()) for p in tree.rglob("*") if p.is_file())
    leftover = os.path.join(repo.artifact_dir, "data", incomplete.new_name())
    with open(leftover, "wb") as handle:
        handle.write(incomplete.text("data", files))
    with pytest.raises(errors.ArtifactIncomplete, match=r"the upload into 'data' has not finished"):
        repo.download_artifacts("data")
    with pytest.raises(errors.ArtifactIncomplete, match=r"Downloading 'data/sub' was refused"):
        repo.download_artifacts("data/sub")  # a folder the leftover marker's files reach into
    repo.log_artifacts(str(tree), "data")
    assert not os.path.exists(leftover)
    assert repo.download_artifacts("data").endswith("data")
