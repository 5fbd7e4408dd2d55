"""team+s3 fails closed: an upload whose run cannot be read is refused, never stored with the
defaults; a client needs no server secrets; the presigned-upload path is refused.

S3 is moto (`mock_aws`); the tracking stores are a real team+sqlite database and a real
`mlflow server` started late on a port the client already uses.
"""

from __future__ import annotations

import sys

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_team import errors
from mlflow_team.artifacts import owner
from mlflow_team.artifacts.s3 import TeamS3ArtifactRepository, _client
from tests.helpers.server import free_port

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

BUCKET = "team-artifacts"
KMS_POLICY = (
    "[artifacts]\nencryption = 'aws:kms'\nkms-key-id = 'alias/mlflow'\nkms-keys = { 'finance/' = 'alias/finance' }\n"
)


@pytest.fixture
def s3(monkeypatch):
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE", "MLFLOW_S3_UPLOAD_EXTRA_ARGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # MLflow's own HTTP retries would hide how often mlflow-team asks.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    owner.clear_cache()
    _client.cache_clear()
    with moto.mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    owner.clear_cache()


@pytest.fixture
def finance_run(s3, tmp_path, monkeypatch):
    """A run of experiment 'finance/fraud' (kms key alias/finance) in a team+sqlite database."""
    policy = tmp_path / "mlflow-team.toml"
    policy.write_text(KMS_POLICY)
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(policy))
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("finance/fraud", artifact_location=f"team+s3://{BUCKET}/mlflow/1")
    return uri, client.create_run(experiment_id, tags={"team.project": "fraud"})


def _objects(s3):
    """The artifacts' objects (not the manifest records kept beside them)."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return [k for k in keys if "/.mlflow-team-manifest/" not in k]


def _source(tmp_path, name="notes.txt"):
    path = tmp_path / name
    path.write_text("numbers")
    return path


def test_an_unreachable_tracking_store_refuses_the_upload_after_retries_and_stores_nothing(finance_run, s3, tmp_path):
    _, run = finance_run
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    repo = TeamS3ArtifactRepository(run.info.artifact_uri, tracking_uri=url)
    with pytest.raises(errors.OwnerUnknown, match=r"could not read run '[0-9a-f]{32}' .*\(3 attempt\(s\);") as caught:
        repo.log_artifact(str(_source(tmp_path)))
    assert "refused rather than stored with the defaults" in caught.value.message
    assert caught.value.error_code == "TEMPORARILY_UNAVAILABLE"
    with pytest.raises(errors.OwnerUnknown, match="could not read run"):
        repo.log_artifacts(str(tmp_path))  # a directory: refused before its first file
    assert _objects(s3) == []


def test_a_run_the_tracking_store_does_not_know_is_refused_at_once(finance_run, s3, tmp_path):
    uri, run = finance_run
    artifact_uri = run.info.artifact_uri.replace(run.info.run_id, "f" * 32)
    repo = TeamS3ArtifactRepository(artifact_uri, tracking_uri=uri)
    with pytest.raises(errors.OwnerUnknown, match=r"could not read run 'f{32}' .*\(1 attempt\(s\);.*not found"):
        repo.log_artifact(str(_source(tmp_path)))
    assert _objects(s3) == []


def test_a_tracking_uri_password_never_appears_in_the_refusal(finance_run, s3, tmp_path):
    _, run = finance_run
    repo = TeamS3ArtifactRepository(
        run.info.artifact_uri, tracking_uri=f"http://alice:s3cr3t-pw@127.0.0.1:{free_port()}"
    )
    with pytest.raises(errors.OwnerUnknown) as caught:
        repo.log_artifact(str(_source(tmp_path)))
    assert "s3cr3t-pw" not in caught.value.message


@pytest.mark.slow
def test_after_a_failed_lookup_the_next_upload_uses_the_experiments_key(finance_run, s3, tmp_path):
    """The tracking server is down for the first upload and up for the second: the first is
    refused, the second is encrypted with the experiment's key (nothing degraded was kept)."""
    from mlflow_team.demo.servers import process

    uri, run = finance_run
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    repo = TeamS3ArtifactRepository(run.info.artifact_uri, tracking_uri=url)
    with pytest.raises(errors.OwnerUnknown, match="could not read run"):
        repo.log_artifact(str(_source(tmp_path, "first.txt")))
    assert _objects(s3) == []
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with process(command, tmp_path / "server.log", f"{url}/health", None, tmp_path, "mlflow server", timeout=90):
        repo.log_artifact(str(_source(tmp_path, "second.txt")))
        repo.log_artifacts(str(_folder(tmp_path)), "data")
    keys = _objects(s3)
    assert len(keys) == 3
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith("alias/finance"), (key, head["SSEKMSKeyId"])


def _folder(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.csv").write_text("1,2")
    (folder / "b.csv").write_text("3,4")
    return folder


def test_a_client_without_the_servers_keyring_uploads_with_the_artifacts_settings(s3, tmp_path, monkeypatch):
    """The team's policy file names the server's keyring; a client has the file, not the keyring."""
    policy = tmp_path / "mlflow-team.toml"
    policy.write_text("[identity]\nkeyring = 'keyring.toml'\nallow-unsigned = false\n\n" + KMS_POLICY)
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(policy))
    assert not (tmp_path / "keyring.toml").exists()
    # A tracking store that does not read the policy: stock MLflow's, as behind a team server.
    uri = f"sqlite:///{tmp_path}/stock.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment_id = client.create_experiment("finance/fraud", artifact_location=f"team+s3://{BUCKET}/mlflow/1")
    run = client.create_run(experiment_id)
    client.log_artifact(run.info.run_id, str(_source(tmp_path)))
    client.log_artifacts(run.info.run_id, str(_folder(tmp_path)), "data")
    keys = _objects(s3)
    assert len(keys) == 3
    for key in keys:
        assert s3.head_object(Bucket=BUCKET, Key=key)["SSEKMSKeyId"].endswith("alias/finance")
    # A broken [artifacts] table is still reported, naming the file and the key.
    policy.write_text("[identity]\nkeyring = 'keyring.toml'\n\n[artifacts]\nencryption = 'rot13'\n")
    with pytest.raises(errors.PolicyFileError, match=r"\[artifacts\] encryption = 'rot13' was rejected"):
        TeamS3ArtifactRepository(run.info.artifact_uri)


def test_a_presigned_upload_url_is_refused_with_what_to_use_instead(finance_run, s3):
    _, run = finance_run
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    with pytest.raises(MlflowException, match=r"A presigned upload URL for 'model/model.pkl' was refused: .*S3 checks") as caught:
        repo.create_presigned_upload_url("model/model.pkl")
    assert "MlflowClient().log_artifact(run_id, 'model.pkl')" in caught.value.message
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert _objects(s3) == []


def test_the_messages_of_failing_closed_word_for_word():
    assert errors.ARTIFACT_OWNER_UNKNOWN.format(
        artifact="team+s3://b/1/r/artifacts/a.txt", what="run", id="r", tracking="http://127.0.0.1:5000",
        attempts=3, reason="ConnectionError: refused",
    ) == (
        "Artifact 'team+s3://b/1/r/artifacts/a.txt' was not uploaded: mlflow-team could not read run 'r' from the "
        "tracking store http://127.0.0.1:5000 (3 attempt(s); ConnectionError: refused). The run's experiment decides "
        "the object's encryption key and tags, so the upload is refused rather than stored with the defaults. Check "
        "that the tracking store answers (mlflow-team doctor --tracking-uri URL) and that the run exists, then log "
        "the artifact again."
    )
    assert errors.PRESIGNED_UPLOAD_REFUSED.format(path="m.pkl", scheme="team+s3") == (
        "A presigned upload URL for 'm.pkl' was refused: a file sent straight to S3 through it would skip what "
        "team+s3 gives every object (the SHA-256 that S3 checks on receipt and that downloads are checked against, "
        "the run's object tags, the policy's encryption). Upload through MLflow instead, for example "
        "MlflowClient().log_artifact(run_id, 'model.pkl'), or MLflow's multipart upload "
        "(MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true) through a server with --artifacts-destination team+s3://..., "
        "which records all three."
    )


def test_a_presigned_download_url_that_would_skip_the_check_is_refused(finance_run, s3):
    _, run = finance_run
    repo = TeamS3ArtifactRepository(run.info.artifact_uri)
    with pytest.raises(MlflowException, match=r"A presigned download URL for 'model/model.pkl' was refused") as caught:
        repo.get_download_presigned_url("model/model.pkl")
    assert errors.PRESIGNED_DOWNLOAD_REFUSED.format(path="m.pkl", scheme="team+s3") == (
        "A presigned download URL for 'm.pkl' was refused: a file fetched straight from S3 through it would skip the "
        "SHA-256 check that team+s3 makes before a download is written, so a damaged or replaced artifact would be "
        "returned as good. Download through MLflow instead, for example "
        "mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path='m.pkl')."
    )
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
