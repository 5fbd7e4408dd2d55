"""team+s3 error messages: real IAM denials from moto, and an S3 endpoint that refuses connections.

moto enforces no IAM by default; ``moto.core.enable_iam_authentication()`` makes every request
after it signed and checked against the caller's IAM policies, so the denials here are moto's own
``AccessDenied`` answers, not mocks. The unreachable endpoint is a closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_team import errors
from mlflow_team.artifacts import owner
from mlflow_team.artifacts.s3 import PART_SIZE, SCHEME, TeamS3ArtifactRepository, _client

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")
from botocore.exceptions import ClientError, EndpointConnectionError  # noqa: E402
from moto.core import enable_iam_authentication  # noqa: E402

BUCKET = "team-artifacts"


def _expect(template: str, **values) -> tuple[str, str]:
    """The text of ``template`` before and after ``{detail}`` (S3's own words vary)."""
    prefix, _, suffix = template.format(detail="\0", **values).partition("\0")
    return prefix, suffix


def _aws_env(monkeypatch, endpoint: str | None = None) -> None:
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "MLFLOW_S3_UPLOAD_EXTRA_ARGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if endpoint:
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)


def _fresh_clients() -> None:
    owner.clear_cache()
    _client.cache_clear()  # boto3 clients keep the credentials (and endpoint) they were built with
    boto3.setup_default_session()  # and boto3's default session keeps the first ones it found


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One team+sqlite store with a run whose artifacts live in team+s3 (built once: it is slow)."""
    uri = f"team+sqlite:///{tmp_path_factory.mktemp('tracking')}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("finance/fraud", artifact_location=f"team+s3://{BUCKET}/mlflow/1")
    run = client.create_run(experiment_id, tags={"team.project": "fraud"})
    assert run.info.artifact_uri == f"team+s3://{BUCKET}/mlflow/1/{run.info.run_id}/artifacts"
    return SimpleNamespace(uri=uri, artifact_uri=run.info.artifact_uri)


def _statement(effect: str, *actions: str) -> dict:
    resources = [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]
    return {"Effect": effect, "Action": list(actions), "Resource": resources}


USERS = {
    "admin": [_statement("Allow", "s3:*")],
    # No statement allows PutObject (which also covers CreateMultipartUpload and UploadPart).
    "read-only": [_statement("Allow", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetObject")],
    "put-denied": [_statement("Allow", "s3:*"), _statement("Deny", "s3:PutObject")],
    "get-denied": [_statement("Allow", "s3:*"), _statement("Deny", "s3:GetObject")],
}


@pytest.fixture
def iam(monkeypatch, tracking):
    """moto with IAM enforced: IAM users with the policies in ``USERS``, and a full-rights client."""
    _aws_env(monkeypatch)
    _fresh_clients()
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        iam_client = boto3.client("iam")
        keys = {}
        for name, statements in USERS.items():
            iam_client.create_user(UserName=name)
            iam_client.put_user_policy(
                UserName=name, PolicyName="s3",
                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
            )
            key = iam_client.create_access_key(UserName=name)["AccessKey"]
            keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])

        def repo(user: str) -> TeamS3ArtifactRepository:
            access_key_id, secret_access_key = keys[user]
            return TeamS3ArtifactRepository(
                tracking.artifact_uri, access_key_id=access_key_id,
                secret_access_key=secret_access_key, tracking_uri=tracking.uri,
            )

        with enable_iam_authentication():  # from here on, every request is signed and checked
            admin = boto3.client("s3", aws_access_key_id=keys["admin"][0], aws_secret_access_key=keys["admin"][1])
            yield SimpleNamespace(admin=admin, repo=repo, keys=keys, tracking_uri=tracking.uri)
    _fresh_clients()


@pytest.fixture
def unreachable(monkeypatch, tracking):
    """MLFLOW_S3_ENDPOINT_URL on a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _aws_env(monkeypatch, endpoint=f"http://127.0.0.1:{port}")
    _fresh_clients()
    yield TeamS3ArtifactRepository(tracking.artifact_uri, tracking_uri=tracking.uri)
    _fresh_clients()


def _objects(s3, prefix=""):
    """The artifacts' objects (not the manifest records kept beside them)."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    return [k for k in keys if "/.mlflow-team-manifest/" not in k]


def _pending_uploads(s3):
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _uri(repo, *parts):
    bucket, key = repo._key(*parts)
    return f"{SCHEME}://{bucket}/{key}"


def _source(tmp_path, name="a.txt", data=b"x" * 100):
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


# --- S3_ACCESS_DENIED --------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["read-only", "put-denied"])
def test_an_upload_without_put_rights_is_denied_and_stores_nothing(iam, tmp_path, user):
    repo = iam.repo(user)
    path = _source(tmp_path)
    with pytest.raises(MlflowException) as caught:
        repo.log_artifact(str(path), "model")
    prefix, suffix = _expect(errors.S3_ACCESS_DENIED, uri=_uri(repo, "model", "a.txt"), operation="upload")
    assert caught.value.message.startswith(prefix) and caught.value.message.endswith(suffix)
    assert "was denied by S3 (upload: " in caught.value.message
    assert caught.value.error_code == "PERMISSION_DENIED"
    assert isinstance(caught.value, errors.ArtifactStorageError)
    cause = caught.value.__cause__
    assert isinstance(cause, ClientError) and cause.response["Error"]["Code"] == "AccessDenied"
    assert _objects(iam.admin) == []
    assert _files(tmp_path / "src") == ["a.txt"]
    iam.repo("admin").log_artifact(str(path), "model")  # the same upload with the rights goes through
    assert _objects(iam.admin) == [repo._key("model", "a.txt")[1]]


def test_a_large_upload_without_put_rights_leaves_no_object_and_no_unfinished_upload(iam, tmp_path):
    repo = iam.repo("read-only")
    path = _source(tmp_path, "big.bin", os.urandom(PART_SIZE + 1))  # goes up in parts
    with pytest.raises(errors.ArtifactStorageError) as caught:
        repo.log_artifact(str(path))
    assert f"{_uri(repo, 'big.bin')!r}" in caught.value.message
    assert "AccessDenied" in str(caught.value.__cause__)
    assert _objects(iam.admin) == []
    assert _pending_uploads(iam.admin) == []


def test_a_large_upload_without_put_rights_says_access_denied(iam, tmp_path):
    repo = iam.repo("read-only")
    path = _source(tmp_path, "big.bin", os.urandom(PART_SIZE + 1))
    with pytest.raises(errors.ArtifactStorageError) as caught:
        repo.log_artifact(str(path))
    prefix, suffix = _expect(errors.S3_ACCESS_DENIED, uri=_uri(repo, "big.bin"), operation="upload")
    assert caught.value.message.startswith(prefix) and caught.value.message.endswith(suffix)
    assert caught.value.error_code == "PERMISSION_DENIED"


def test_a_download_without_get_rights_is_denied_and_writes_nothing(iam, tmp_path):
    repo = iam.repo("get-denied")
    iam.admin.put_object(Bucket=BUCKET, Key=repo._key("model", "weights.bin")[1], Body=b"w" * 100)
    out = tmp_path / "out"
    out.mkdir()
    # Listing is allowed, so MLflow gets as far as the file and gathers its failure.
    with pytest.raises(MlflowException) as caught:
        repo.download_artifacts("model/weights.bin", str(out))
    prefix, suffix = _expect(errors.S3_ACCESS_DENIED, uri=_uri(repo, "model", "weights.bin"), operation="download")
    assert prefix in caught.value.message and suffix in caught.value.message
    assert caught.value.error_code == "PERMISSION_DENIED"
    assert _files(out) == []  # neither the file nor a partial temporary one
    assert iam.repo("admin").download_artifacts("model/weights.bin", str(out)) == str(out / "model" / "weights.bin")


# --- S3_REQUEST_FAILED -------------------------------------------------------------------------


def test_an_unreachable_endpoint_fails_an_upload_with_the_request_failed_message(unreachable, tmp_path):
    path = _source(tmp_path)
    with pytest.raises(errors.ArtifactStorageError) as caught:
        unreachable.log_artifact(str(path), "model")
    uri = _uri(unreachable, "model", "a.txt")
    prefix, suffix = _expect(errors.S3_REQUEST_FAILED, uri=uri, operation="upload")
    assert prefix == f"S3 upload on {uri!r} failed: " and suffix == ""
    assert caught.value.message.startswith(prefix)
    assert "Could not connect to the endpoint URL" in caught.value.message
    assert isinstance(caught.value.__cause__, EndpointConnectionError)
    assert caught.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert _files(tmp_path / "src") == ["a.txt"]


def test_an_unreachable_endpoint_fails_a_file_download_and_leaves_no_file(unreachable, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(errors.ArtifactStorageError) as caught:
        unreachable._download_file("model/weights.bin", str(out / "weights.bin"))  # MLflow's per-file hook
    prefix, _ = _expect(errors.S3_REQUEST_FAILED, uri=_uri(unreachable, "model", "weights.bin"), operation="download")
    assert caught.value.message.startswith(prefix)
    assert isinstance(caught.value.__cause__, EndpointConnectionError)
    assert _files(out) == []  # no destination file, no temporary file


def test_an_unreachable_endpoint_fails_download_artifacts_with_the_request_failed_message(unreachable, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    try:
        with pytest.raises(MlflowException) as caught:
            unreachable.download_artifacts("model/weights.bin", str(out))
    finally:
        assert _files(out) == []
    prefix, _ = _expect(errors.S3_REQUEST_FAILED, uri=_uri(unreachable, "model", "weights.bin"), operation="list")
    assert caught.value.message.startswith(prefix)
    assert caught.value.error_code == "TEMPORARILY_UNAVAILABLE"  # a client may retry it


def test_an_s3_error_without_a_message_of_its_own_falls_back_to_request_failed(iam, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_S3_UPLOAD_EXTRA_ARGS", json.dumps({"StorageClass": "NO_SUCH_CLASS"}))
    repo = iam.repo("admin")
    path = _source(tmp_path)
    with pytest.raises(errors.ArtifactStorageError) as caught:
        repo.log_artifact(str(path))
    prefix, _ = _expect(errors.S3_REQUEST_FAILED, uri=_uri(repo, "a.txt"), operation="upload")
    assert caught.value.message.startswith(prefix)
    assert "InvalidStorageClass" in caught.value.message
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert _objects(iam.admin) == []


# --- S3_BAD_CREDENTIALS -----------------------------------------------------------------------


def test_a_wrong_secret_says_the_credentials_were_not_accepted(iam, tmp_path):
    keys = iam.keys["admin"]
    repo = TeamS3ArtifactRepository(
        iam.repo("admin").artifact_uri, access_key_id=keys[0], secret_access_key="not-the-secret",
        tracking_uri=iam.tracking_uri,
    )
    with pytest.raises(errors.ArtifactStorageError) as caught:
        repo.log_artifact(str(_source(tmp_path)))
    prefix, suffix = _expect(errors.S3_BAD_CREDENTIALS, uri=_uri(repo, "a.txt"), operation="upload")
    assert caught.value.message.startswith(prefix) and caught.value.message.endswith(suffix)
    assert caught.value.error_code == "UNAUTHENTICATED"
    assert _objects(iam.admin) == []
