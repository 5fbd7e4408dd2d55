"""team+s3 on moto (in-process `mock_aws`): checksums, object tags, encryption, clear errors."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import timedelta

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_team import errors
from mlflow_team.artifacts import owner
from mlflow_team.artifacts.s3 import PART_SIZE, TeamS3ArtifactRepository, _client

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

BUCKET = "team-artifacts"


@pytest.fixture
def s3(monkeypatch):
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE", "MLFLOW_S3_UPLOAD_EXTRA_ARGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    owner.clear_cache()
    _client.cache_clear()  # boto3 clients keep the credentials they were built with
    with moto.mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    owner.clear_cache()


@pytest.fixture
def run(s3, tmp_path):
    """A run of a team+sqlite store whose experiment keeps its artifacts in team+s3."""
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment_id = client.create_experiment("finance/fraud", artifact_location=f"team+s3://{BUCKET}/mlflow/1")
    return client.create_run(experiment_id, tags={"team.project": "fraud", "team.name": "risk"})


def _objects(s3, prefix=""):
    """The artifacts' objects (not the manifest records kept beside them)."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    return [k for k in keys if "/.mlflow-team-manifest/" not in k]


def test_a_directory_uploads_with_sha256_and_run_tags_and_round_trips(s3, run, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(12):
        (src / f"f{i}.json").write_text('{"i": %d}' % i)
    big = os.urandom(PART_SIZE + 5_000_000)
    (src / "sub" / "big.bin").write_bytes(big)  # multipart up, ranged down
    client = MlflowClient()
    client.log_artifacts(run.info.run_id, str(src), "data")

    keys = _objects(s3)
    assert len(keys) == 13
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        if key.endswith("big.bin"):  # multipart: S3's composite SHA-256 of the parts' SHA-256s
            parts = [hashlib.sha256(chunk).digest() for chunk in (big[:PART_SIZE], big[PART_SIZE:])]
            composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode()
            assert head["ChecksumSHA256"] in (composite, f"{composite}-2")  # moto's HEAD drops "-2"
            assert head["Metadata"]["sha256-part-size"] == str(PART_SIZE)
        else:
            assert len(head["Metadata"]["sha256"]) == 64
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]}
        assert tags == {
            "team.name": "risk", "team.project": "fraud", "team.author": run.data.tags["team.author"],
            "mlflow.run_id": run.info.run_id, "mlflow.experiment_id": run.info.experiment_id,
        }
    small = next(k for k in keys if k.endswith("f3.json"))
    checked = s3.head_object(Bucket=BUCKET, Key=small, ChecksumMode="ENABLED")
    assert checked.get("ChecksumSHA256")  # S3's own checksum field, checked by S3 on receipt
    assert s3.head_object(Bucket=BUCKET, Key=small)["ContentType"] == "application/json"

    out = tmp_path / "out"
    out.mkdir()
    local = client.download_artifacts(run.info.run_id, "data", str(out))
    assert (out / "data" / "sub" / "big.bin").read_bytes() == (src / "sub" / "big.bin").read_bytes()
    assert (out / "data" / "f7.json").read_text() == '{"i": 7}'
    assert local == str(out / "data")


def test_a_corrupted_object_is_detected_and_nothing_is_written(s3, run, tmp_path, caplog):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"good bytes" * 1000)
    MlflowClient().log_artifact(run.info.run_id, str(path), "model")
    key = next(k for k in _objects(s3) if k.endswith("model/model.pkl"))
    head = s3.head_object(Bucket=BUCKET, Key=key)
    # Overwritten behind MLflow's back, keeping the recorded digest.
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"evil bytes" * 1000, Metadata=head["Metadata"])
    out = tmp_path / "out"
    out.mkdir()
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    with pytest.raises(errors.ChecksumMismatch, match=r"Artifact 'model/model.pkl' failed its integrity check"):
        repo.download_artifacts("model/model.pkl", str(out))
    # Through runs:/ MLflow swallows the repository's error and says only "check the path";
    # the reason is in the log.
    with pytest.raises(mlflow.exceptions.MlflowException, match="Failed to download artifacts"):
        MlflowClient().download_artifacts(run.info.run_id, "model/model.pkl", str(out))
    assert "'model/model.pkl' failed its integrity check" in caplog.text
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_a_corrupted_multipart_object_is_detected_by_its_composite_checksum(s3, run, tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(2 * PART_SIZE + 1000))
    MlflowClient().log_artifact(run.info.run_id, str(path), "model")
    key = next(k for k in _objects(s3) if k.endswith("model/weights.bin"))
    # Bytes of the third part flipped where S3 keeps them (its checksum untouched): disk rot.
    from moto.s3.models import s3_backends

    stored = s3_backends["123456789012"]["global"].buckets[BUCKET].keys[key]
    damaged = bytearray(stored.value)
    damaged[-10] ^= 0xFF
    stored.value = bytes(damaged)
    out = tmp_path / "out"
    out.mkdir()
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    with pytest.raises(errors.ChecksumMismatch, match=r"Artifact 'model/weights.bin' failed its integrity check"):
        repo.download_artifacts("model/weights.bin", str(out))
    assert [p for p in out.rglob("*") if p.is_file()] == []
    # An intact one comes down whole.
    stored.value = path.read_bytes()
    repo.download_artifacts("model/weights.bin", str(out))
    assert (out / "model" / "weights.bin").read_bytes() == path.read_bytes()


def test_encryption_follows_the_policy_per_experiment_prefix(s3, tmp_path, monkeypatch):
    policy = tmp_path / "mlflow-team.toml"
    policy.write_text(
        "[artifacts]\nencryption = 'aws:kms'\nkms-key-id = 'alias/mlflow'\n"
        "kms-keys = { 'finance/' = 'alias/finance' }\nobject-tags = ['team.project']\n"
    )
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(policy))
    mlflow.set_tracking_uri(f"team+sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    seen = {}
    for name in ("finance/fraud", "vision/resnet"):
        experiment_id = client.create_experiment(name, artifact_location=f"team+s3://{BUCKET}/{name}")
        run = client.create_run(experiment_id, tags={"team.project": name.split("/")[1]})
        client.log_text(run.info.run_id, "x", "notes.txt")
        key = _objects(s3, name)[0]
        head = s3.head_object(Bucket=BUCKET, Key=key)
        tags = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
        seen[name] = (head["ServerSideEncryption"], head.get("SSEKMSKeyId", ""), tags)
    assert seen["finance/fraud"][0] == "aws:kms" and seen["finance/fraud"][1].endswith("alias/finance")
    assert seen["vision/resnet"][0] == "aws:kms" and seen["vision/resnet"][1].endswith("alias/mlflow")
    assert seen["vision/resnet"][2] == [{"Key": "team.project", "Value": "resnet"}]


def test_aes256_encryption(s3, run, tmp_path, monkeypatch):
    policy = tmp_path / "p.toml"
    policy.write_text("[artifacts]\nencryption = 'AES256'\n")
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(policy))
    MlflowClient().log_text(run.info.run_id, "x", "a.txt")
    assert s3.head_object(Bucket=BUCKET, Key=_objects(s3)[0])["ServerSideEncryption"] == "AES256"


def _run_in(tmp_path, artifact_location: str):
    """A run of a team+sqlite store whose experiment keeps its artifacts at ``artifact_location``."""
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    return client.create_run(client.create_experiment("elsewhere", artifact_location=artifact_location))


def test_a_missing_bucket_says_which_and_how_to_fix(s3, tmp_path):
    repo = TeamS3ArtifactRepository(_run_in(tmp_path, "team+s3://no-such-bucket/mlflow/1").info.artifact_uri)
    path = tmp_path / "a.txt"
    path.write_text("x")
    with pytest.raises(errors.ArtifactStorageError, match=r"bucket 'no-such-bucket' .* does not exist.*aws s3 mb"):
        repo.log_artifact(str(path))


def test_no_credentials_says_where_credentials_come_from(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # never leaves loopback
    _client.cache_clear()  # boto3 clients keep the credentials they were built with,
    boto3.setup_default_session()  # and boto3's default session keeps the first ones it found
    repo = TeamS3ArtifactRepository(_run_in(tmp_path, f"team+s3://{BUCKET}/x/1").info.artifact_uri)
    path = tmp_path / "a.txt"
    path.write_text("x")
    with pytest.raises(errors.ArtifactStorageError, match=r"No AWS credentials were found .*AWS_ACCESS_KEY_ID"):
        repo.log_artifact(str(path))


@pytest.mark.parametrize("artifact_path", ["../other-run", "%2e%2e/x", "/abs", "a/../../b"])
def test_paths_that_leave_the_root_are_rejected(s3, run, tmp_path, artifact_path):
    path = tmp_path / "a.txt"
    path.write_text("x")
    with pytest.raises(errors.ArtifactPathRejected, match="must stay inside the artifact root"):
        MlflowClient().log_artifact(run.info.run_id, str(path), artifact_path)
    assert _objects(s3) == []


def test_deleting_the_root_is_refused_and_one_runs_artifacts_is_allowed(s3, run, tmp_path):
    MlflowClient().log_text(run.info.run_id, "x", "a/b.txt")
    root = TeamS3ArtifactRepository(f"team+s3://{BUCKET}/mlflow")
    for target in (None, "1", f"1/{run.info.run_id}"):
        with pytest.raises(errors.ArtifactDeletionRefused, match="nothing wider"):
            root.delete_artifacts(target)
    assert len(_objects(s3)) == 1
    root.delete_artifacts(f"1/{run.info.run_id}/artifacts/a")
    assert _objects(s3) == []


def test_a_killed_multipart_upload_is_aborted_by_the_next_upload_and_by_clean_up(s3, run, tmp_path):
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    key = repo._key("big.bin")[1]
    s3.create_multipart_upload(Bucket=BUCKET, Key=key)  # a process killed after its first part
    other = repo._key("other.bin")[1]
    s3.create_multipart_upload(Bucket=BUCKET, Key=other)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(PART_SIZE + 1))
    repo.log_artifact(str(big))
    pending = [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    assert pending == [other]
    assert repo.clean_up(older_than=timedelta(0)) == 1
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_small_files_go_up_without_waiting_for_100_continue_and_larger_ones_still_wait(s3, run, tmp_path):
    from mlflow_team.artifacts.s3 import CONTINUE_THRESHOLD

    src = tmp_path / "src"
    src.mkdir()
    (src / "small.json").write_text("{}")
    (src / "medium.bin").write_bytes(os.urandom(CONTINUE_THRESHOLD + 1))  # one request, over the threshold
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    sent = {}

    def seen(request, **kwargs):
        if request.method == "PUT":
            sent[request.url.rsplit("/", 1)[-1]] = request.headers.get("Expect")

    client = repo._get_s3_client()
    client.meta.events.register_first("before-send.s3", seen, unique_id="test-expect")  # before moto answers
    try:
        repo.log_artifacts(str(src))
    finally:
        client.meta.events.unregister("before-send.s3", unique_id="test-expect")
    assert sent["small.json"] is None
    assert sent["medium.bin"] == b"100-continue"
    assert sorted(k.rsplit("/", 1)[-1] for k in _objects(s3)) == ["medium.bin", "small.json"]


def test_object_tag_settings_are_validated(tmp_path, monkeypatch):
    from mlflow_team.config import load_policy_file

    bad = tmp_path / "p.toml"
    bad.write_text("[artifacts]\nencryption = 'rot13'\n")
    with pytest.raises(errors.PolicyFileError, match=r"\[artifacts\] encryption = 'rot13' was rejected: it must be one of"):
        load_policy_file(bad)
    bad.write_text("[artifacts]\nkms-key-id = 'alias/x'\n")
    with pytest.raises(errors.PolicyFileError, match=r"only with encryption = 'aws:kms'"):
        load_policy_file(bad)
    bad.write_text("[artifacts]\nobject-tags = [%s]\n" % ", ".join(f"'t{i}'" for i in range(10)))
    with pytest.raises(errors.PolicyFileError, match=r"at most 10 tags per object"):
        load_policy_file(bad)


def test_clean_up_command_aborts_unfinished_uploads(s3):
    from click.testing import CliRunner

    from mlflow_team.cli import cli

    s3.create_multipart_upload(Bucket=BUCKET, Key="mlflow/1/" + "c" * 32 + "/artifacts/big.bin")
    s3.create_multipart_upload(Bucket=BUCKET, Key="elsewhere/big.bin")
    result = CliRunner().invoke(cli, ["artifacts", "clean-up", f"team+s3://{BUCKET}/mlflow", "--older-than-hours", "0"])
    assert result.exit_code == 0, result.output
    assert "aborted 1 unfinished multipart upload(s)" in result.output
    left = [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    assert left == ["elsewhere/big.bin"]
    result = CliRunner().invoke(cli, ["artifacts", "clean-up", "s3://x/y"])
    assert result.exit_code == 2 and "is not a team+s3:// URI" in result.output
