"""team+s3 through the three ways a team runs MLflow, against moto's S3 server on 127.0.0.1:
no server, a server whose clients write to S3 themselves, and a server that proxies artifacts."""

from __future__ import annotations

import os

import mlflow
import pytest
from mlflow import MlflowClient

from tests.helpers.server import DEFAULT_WORKERS, free_port, mlflow_server

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

pytestmark = [pytest.mark.server, pytest.mark.slow]
BUCKET = "team-bucket"


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _s3_env(moto_endpoint: str) -> dict[str, str]:
    return {
        "MLFLOW_S3_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _bucket(moto_endpoint: str):
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    env = _s3_env(moto_endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return _bucket(moto_endpoint), env


@pytest.fixture(scope="module")
def proxy(moto_endpoint, tmp_path_factory):
    """One artifact-proxying server for the module, as a team runs it (MLflow's default worker
    count: whichever worker answers): ``--artifacts-destination team+s3://<bucket>/proxied``, with
    a policy asking for server-side encryption. Each test works in an experiment of its own."""
    workdir = tmp_path_factory.mktemp("proxy")
    _bucket(moto_endpoint)
    policy = workdir / "server-policy.toml"
    policy.write_text("[artifacts]\nencryption = 'AES256'\n")
    with mlflow_server(
        f"team+sqlite:///{workdir}/mlflow.db", workdir,
        env={**_s3_env(moto_endpoint), "MLFLOW_TEAM_POLICY": str(policy)},
        extra=["--artifacts-destination", f"team+s3://{BUCKET}/proxied"], workers=DEFAULT_WORKERS,
    ) as url:
        yield url


def _experiment_keys(s3_client, experiment_id: str) -> list[str]:
    """What the proxy stored for one experiment (its runs' and models' objects, no manifests)."""
    found = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"proxied/{experiment_id}/").get("Contents", [])
    return sorted(o["Key"] for o in found if "/.mlflow-team-manifest/" not in o["Key"])


def _fit():
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])


def _log_register_load(name: str):
    with mlflow.start_run(tags={"team.project": "taxi"}) as run:
        mlflow.log_metric("rmse", 5.2)
        mlflow.sklearn.log_model(_fit(), name="model", registered_model_name=name)
    MlflowClient().set_registered_model_alias(name, "champion", "1")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict([[3.0]])[0] == pytest.approx(7.0)
    return run


def _assert_verified_and_tagged(s3_client, prefix: str, run) -> list[str]:
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    keys = [k for k in keys if "/.mlflow-team-manifest/" not in k]  # the records kept beside the artifacts
    assert any(k.endswith("MLmodel") for k in keys), keys
    for key in keys:
        assert len(s3_client.head_object(Bucket=BUCKET, Key=key)["Metadata"].get("sha256", "")) == 64, key
        tags = {t["Key"]: t["Value"] for t in s3_client.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]}
        assert tags.get("mlflow.experiment_id") == run.info.experiment_id, (key, tags)
        assert tags.get("team.project") == "taxi", (key, tags)
    return keys


def test_no_server_team_store_with_team_s3_artifacts(s3, tmp_path):
    client, _ = s3
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(experiment_id=MlflowClient().create_experiment(
        "taxi-direct", artifact_location=f"team+s3://{BUCKET}/no-server"))
    run = _log_register_load("taxi-direct")
    _assert_verified_and_tagged(client, "no-server/", run)


def test_clients_write_to_s3_themselves_behind_a_server(s3, tmp_path):
    client, env = s3
    with mlflow_server(
        f"team+sqlite:///{tmp_path}/mlflow.db", tmp_path, env=env,
        extra=["--default-artifact-root", f"team+s3://{BUCKET}/client-direct", "--no-serve-artifacts"],
    ) as url:
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        mlflow.set_experiment("taxi-client-direct")
        run = _log_register_load("taxi-client-direct")
        assert run.info.artifact_uri.startswith(f"team+s3://{BUCKET}/client-direct/")
        keys = _assert_verified_and_tagged(client, "client-direct/", run)

        # The server would hand out a URL for an unchecked, untagged, unencrypted PUT: refused.
        import requests

        response = requests.post(
            f"{url}/api/2.0/mlflow/artifacts/presigned-upload-url",
            json={"run_id": run.info.run_id, "path": "model/extra.pkl"}, timeout=30,
        )
        assert response.status_code == 400, response.text
        assert "A presigned upload URL for 'model/extra.pkl' was refused" in response.json()["message"]
        after = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="client-direct/").get("Contents", [])
                 if "/.mlflow-team-manifest/" not in o["Key"]]
        assert sorted(after) == sorted(keys)


def test_a_proxying_server_stores_verified_tagged_objects_and_refuses_wide_deletes(proxy, moto_endpoint):
    import requests

    # The client has no S3 settings at all (the autouse fixture cleared MLflow's; no AWS
    # variables are set here): everything goes through the server.
    client = _bucket(moto_endpoint)
    mlflow.set_tracking_uri(proxy)
    mlflow.set_registry_uri(proxy)
    mlflow.set_experiment("taxi-proxied")
    run = _log_register_load("taxi-proxied")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    keys = _assert_verified_and_tagged(client, f"proxied/{run.info.experiment_id}/", run)

    # Stock turns a DELETE of an experiment folder into deleting all of its runs' files.
    experiment_folder = f"{run.info.experiment_id}"
    response = requests.delete(f"{proxy}/api/2.0/mlflow-artifacts/artifacts/{experiment_folder}", timeout=30)
    assert response.status_code == 403, response.text
    assert "nothing wider" in response.json()["message"]
    assert _experiment_keys(client, run.info.experiment_id) == sorted(keys)


def test_proxied_multipart_upload_ends_verified_tagged_and_encrypted(proxy, moto_endpoint, tmp_path, monkeypatch):
    client = _bucket(moto_endpoint)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)  # and no credentials: the server presigns
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(5 * 1024 * 1024))
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 * 1024 * 1024))
    mlflow.set_tracking_uri(proxy)
    mlflow.set_experiment("taxi-multipart")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    with mlflow.start_run(tags={"team.project": "taxi"}) as run:
        mlflow.log_artifact(str(big))
    key = next(k for k in _experiment_keys(client, run.info.experiment_id) if k.endswith("big.bin"))
    head = client.head_object(Bucket=BUCKET, Key=key)
    import hashlib

    # Parts go from the client straight to S3; the server records the digest on completion.
    assert head["Metadata"]["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    tags = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]}
    assert tags["mlflow.run_id"] == run.info.run_id
    assert head["ServerSideEncryption"] == "AES256"
    out = tmp_path / "out"
    out.mkdir()
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="big.bin", dst_path=str(out))
    assert open(local, "rb").read() == big.read_bytes()


@pytest.fixture
def no_client_retries(monkeypatch):
    """The server answers a damaged artifact with DATA_LOSS (HTTP 500), which MLflow's client
    retries for minutes; a test needs the first answer only."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def _download_fails_and_writes_nothing(run_id: str, path: str, out) -> None:
    out.mkdir()
    with pytest.raises(mlflow.exceptions.MlflowException):
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(out))
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_an_object_replaced_without_our_metadata_is_caught_through_the_proxy(proxy, moto_endpoint, tmp_path,
                                                                             no_client_retries):
    import requests

    client = _bucket(moto_endpoint)
    mlflow.set_tracking_uri(proxy)
    mlflow.set_experiment("replaced-s3")
    with mlflow.start_run() as run:
        mlflow.log_text("the real notes", "notes/a.txt")
        mlflow.log_text("untouched", "notes/b.txt")
    key = next(k for k in _experiment_keys(client, run.info.experiment_id) if k.endswith("notes/a.txt"))
    client.put_object(Bucket=BUCKET, Key=key, Body=b"written by another tool")  # no metadata
    for attempt in range(4):  # whichever worker answers
        _download_fails_and_writes_nothing(run.info.run_id, "notes/a.txt", tmp_path / f"out{attempt}")
    # What the UI fetches for the file.
    response = requests.get(f"{proxy}/get-artifact", params={"path": "notes/a.txt", "run_uuid": run.info.run_id},
                            timeout=30)
    assert response.status_code >= 400 and b"written by another tool" not in response.content
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/b.txt") == "untouched"


def test_a_team_file_artifact_replaced_by_a_rename_is_caught_through_the_proxy(tmp_path, no_client_retries):
    store = tmp_path / "store"
    with mlflow_server(
        f"team+sqlite:///{tmp_path}/mlflow.db", tmp_path,
        extra=["--artifacts-destination", "team+" + store.as_uri()], workers=DEFAULT_WORKERS,
    ) as url:
        mlflow.set_tracking_uri(url)
        mlflow.set_experiment("replaced-file")
        with mlflow.start_run() as run:
            mlflow.log_text("the real notes", "notes/a.txt")
        stored = next(store.rglob("a.txt"))
        replacement = stored.with_name("a.txt.tmp")
        replacement.write_text("written by another tool")
        os.replace(replacement, stored)
        for attempt in range(4):
            _download_fails_and_writes_nothing(run.info.run_id, "notes/a.txt", tmp_path / f"out{attempt}")
