"""`mlflow server --app-name team` (MLflow's default worker count): the artifact proxy never deletes
more than one run's, logged model's or trace's artifacts, and a search filter's regular expression
cannot stall the server (refused before the search, or cut off within [server] regex-budget-ms)."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from tests.conftest import unique
from tests.helpers.server import DEFAULT_WORKERS, free_port, mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

TEAM_APP = ["--app-name", "team"]
BUCKET = "team-guards"
#: Backtracks catastrophically in Python's re; refused before the search by its shape.
CATASTROPHIC = "(a+)+$"
#: Passes the shape check but costs ~0.3 s per 8000-character value on SQLite (regex) and on
#: PostgreSQL alike: cut off by the budget.
COSTLY = "(?=a*b)(?=a*c)(?=a*d)a*"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _delete(url: str, path: str, api: str = "api") -> requests.Response:
    """A DELETE whose path goes out byte for byte (clients drop '.' segments and re-encode)."""
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request("DELETE", f"/{api}/2.0/mlflow-artifacts/artifacts/{path}")
        answer = connection.getresponse()
        response = requests.Response()
        response.status_code, response._content = answer.status, answer.read()
        return response
    finally:
        connection.close()


def _assert_refused_deletion(response: requests.Response, path: str) -> None:
    assert response.status_code == 403, (path, response.status_code, response.text)
    body = response.json()
    assert body["error_code"] == "PERMISSION_DENIED", body
    assert "through the artifact proxy was refused" in body["message"], body
    assert "Nothing was deleted" in body["message"] and "[rule: artifact-deletions]" in body["message"]


def _log_run(experiment_id: str, text: str) -> mlflow.entities.Run:
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text(text, "notes/a.txt")
        mlflow.log_text(text, "notes/b.txt")
    return run


# --- deletions --------------------------------------------------------------------------------


def _runs_and_a_model(tmp_path: Path, first: str, second: str):
    """A new experiment with two runs (notes/a.txt and b.txt holding each one's text) and a logged model
    with one file of weights: (experiment id, first run, second run, model)."""
    experiment_id = MlflowClient().create_experiment(unique("guards"))
    run, other = _log_run(experiment_id, first), _log_run(experiment_id, second)
    model = MlflowClient().create_logged_model(experiment_id)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.bin").write_bytes(b"\x00" * 64)
    MlflowClient().log_model_artifacts(model.model_id, str(tmp_path / "weights"))
    return experiment_id, run, other, model


@pytest.fixture(scope="module")
def _local_server(tmp_path_factory):
    """The module's team server on SQLite (also the SQLite one of the search tests below)."""
    workdir = tmp_path_factory.mktemp("guards-local")
    with mlflow_server(f"team+sqlite:///{workdir}/mlflow.db", workdir, workers=DEFAULT_WORKERS,
                       extra=TEAM_APP) as url:
        yield url, workdir


@pytest.fixture
def local_server(_local_server):
    """(server url, its artifacts destination: a plain local folder)."""
    url, workdir = _local_server
    mlflow.set_tracking_uri(url)
    return url, workdir / "artifacts"


def test_wide_deletions_through_the_proxy_are_refused_and_delete_nothing(local_server, tmp_path):
    url, root = local_server
    experiment_id, run, other, model = _runs_and_a_model(tmp_path, "kept", "also kept")
    before = _files(root)
    run_root = f"{experiment_id}/{run.info.run_id}"
    assert f"{run_root}/artifacts/notes/a.txt" in before
    assert any(f.startswith(f"{experiment_id}/models/{model.model_id}/artifacts/") for f in before), before

    refused = [
        "%2E", "%252E", "%2E/", experiment_id, f"{experiment_id}/", f"{experiment_id}/%2E",
        run_root,  # the run's folder, not its artifacts
        f"{experiment_id}/models", f"{experiment_id}/traces",
        f"{run_root}/artifacts/%2E%2E/%2E%2E",  # percent-encoded traversal back to the experiment
        f"{run_root}/artifacts/%252E%252E/%252E%252E/{other.info.run_id}/artifacts",
        f"{run_root}/artifacts/..%2F..%2F..",
        f"{run_root}/artifacts/..%5C..%5C..",
        f"%2F{experiment_id}",
    ]
    for path in refused:
        for api in ("api", "ajax-api"):
            _assert_refused_deletion(_delete(url, path, api), path)
    assert _files(root) == before


def test_deleting_inside_one_run_or_model_through_the_proxy_still_works(local_server, tmp_path):
    url, root = local_server
    experiment_id, run, other, model = _runs_and_a_model(tmp_path, "to delete", "kept")

    repository = get_artifact_repository(run.info.artifact_uri)
    repository.delete_artifacts("notes/a.txt")  # one file
    assert [f.path for f in repository.list_artifacts("notes")] == ["notes/b.txt"]
    repository.delete_artifacts()  # the whole run's artifacts, as `mlflow gc` does
    assert not any(f.startswith(f"{experiment_id}/{run.info.run_id}/") for f in _files(root))
    get_artifact_repository(model.artifact_location).delete_artifacts()
    assert not any(f"/{model.model_id}/" in f for f in _files(root))
    assert mlflow.artifacts.load_text(f"runs:/{other.info.run_id}/notes/a.txt") == "kept"


def test_mlflow_gc_deletes_a_deleted_runs_artifacts_through_the_team_app(local_server, tmp_path):
    url, root = local_server
    database = root.parent / "mlflow.db"
    experiment_id = MlflowClient().create_experiment(unique("guards"))
    run = _log_run(experiment_id, "collected")
    other = _log_run(experiment_id, "kept")
    MlflowClient().delete_run(run.info.run_id)
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", f"team+sqlite:///{database}",
         "--run-ids", run.info.run_id],
        env={**os.environ, "MLFLOW_TRACKING_URI": url}, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    left = _files(root)
    assert not any(f"/{run.info.run_id}/" in f for f in left), left
    assert f"{experiment_id}/{other.info.run_id}/artifacts/notes/a.txt" in left


@pytest.fixture(scope="module")
def moto_endpoint():
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_an_experiment_folder_on_a_plain_s3_destination_is_not_deleted(moto_endpoint, tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    env = {"MLFLOW_S3_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    with mlflow_server(f"team+sqlite:///{tmp_path}/mlflow.db", tmp_path, env=env, workers=DEFAULT_WORKERS,
                       extra=[*TEAM_APP, "--artifacts-destination", f"s3://{BUCKET}/proxied"]) as url:
        mlflow.set_tracking_uri(url)
        experiment_id = MlflowClient().create_experiment(unique("guards-s3"))
        run = _log_run(experiment_id, "kept on s3")

        def keys():
            return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="proxied/").get("Contents", []))

        before = keys()
        assert f"proxied/{experiment_id}/{run.info.run_id}/artifacts/notes/a.txt" in before
        for path in (experiment_id, "%2E", f"{experiment_id}/{run.info.run_id}/artifacts/%2E%2E/%2E%2E"):
            _assert_refused_deletion(_delete(url, path), path)
        assert keys() == before


# --- search regular expressions ------------------------------------------------------------


def _traces(experiment_id: str, tags: list[dict[str, str]], monkeypatch) -> list[str]:
    """One trace per tag set, logged through the server synchronously."""
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    mlflow.set_experiment(experiment_id=experiment_id)
    ids = []
    for tag_set in tags:
        with mlflow.start_span(name="predict") as span:
            span.set_inputs({"x": 1})
        ids.append(span.trace_id)
        for key, value in tag_set.items():
            MlflowClient().set_trace_tag(span.trace_id, key, value)
    return ids


def _search(url: str, experiment_id: str, filter_string: str) -> requests.Response:
    return requests.post(f"{url}/api/3.0/mlflow/traces/search", timeout=120, json={
        "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
        "filter": filter_string, "max_results": 100,
    })


def _stock_ids(stock_uri: str, experiment_id: str, filter_string: str) -> set[str]:
    """The same search through a stock SqlAlchemyStore on the same database, in this process."""
    found = MlflowClient(tracking_uri=stock_uri).search_traces(
        locations=[experiment_id], filter_string=filter_string, max_results=100)
    return {t.info.trace_id for t in found}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def _search_server(request, tmp_path_factory):
    if request.param == "sqlite":
        url, workdir = request.getfixturevalue("_local_server")
        yield url, f"sqlite:///{workdir}/mlflow.db"
        return
    workdir = tmp_path_factory.mktemp(f"guards-{request.param}")
    plain = request.getfixturevalue("postgresql_url")
    with mlflow_server(f"team+{plain}", workdir, workers=DEFAULT_WORKERS, extra=TEAM_APP) as url:
        yield url, plain


@pytest.fixture
def search_server(_search_server):
    """(server url, the same database's plain SQLAlchemy URL, for a stock store in this process)."""
    mlflow.set_tracking_uri(_search_server[0])
    return _search_server


def test_ordinary_rlike_filters_give_the_same_traces_as_stock(search_server, monkeypatch):
    url, plain = search_server
    experiment_id = MlflowClient().create_experiment(unique("rlike"))
    values = ["xgb-1", "xgb-2.0", "lgbm", "XGB-upper", "my-xgb"]
    ids = dict(zip(_traces(experiment_id, [{"model": v} for v in values], monkeypatch), values))
    for filter_string in ("tags.model RLIKE '^xgb'", "tags.model RLIKE 'xgb-[0-9.]+$'",
                          "tags.model RLIKE '(lgbm|my)'", "trace.name RLIKE '^pred'"):
        response = _search(url, experiment_id, filter_string)
        assert response.status_code == 200, response.text
        found = {t["trace_id"] for t in response.json().get("traces", [])}
        assert found == _stock_ids(plain, experiment_id, filter_string), filter_string
        if filter_string.startswith("tags.model"):
            pattern = filter_string.split("'")[1]
            assert found == {i for i, v in ids.items() if re.search(pattern, v)}, filter_string


@pytest.mark.parametrize("pattern, rule", [
    (CATASTROPHIC, "it repeats a group that itself contains a repetition ('(a+)+')"),
    (r"^(\w+\s?)*$", "it repeats a group that itself contains a repetition ('(\\\\w+\\\\s?)*')"),
    (r"(a*)b\1", "it uses a backreference ('\\\\1')"),
], ids=["nested", "nested-optional", "backreference"])
def test_a_catastrophic_pattern_is_refused_before_the_search_runs(search_server, monkeypatch, pattern, rule):
    url, _ = search_server
    experiment_id = MlflowClient().create_experiment(unique("rlike"))
    _traces(experiment_id, [{"payload": "a" * 30 + "!"}], monkeypatch)
    filter_string = f"tags.payload RLIKE '{pattern}'"
    responses = [
        requests.post(f"{url}/{endpoint}/3.0/mlflow/traces/search", timeout=120, json={
            "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
            "filter": filter_string})
        for endpoint in ("api", "ajax-api")
    ]
    # MLflow 2's trace search, with the filter in the query string.
    responses.append(requests.get(f"{url}/api/2.0/mlflow/traces", timeout=120,
                                  params={"experiment_ids": experiment_id, "filter": filter_string}))
    for response in responses:
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert body["message"].startswith(f"The regular expression {pattern!r} in the search filter was refused: "
                                          f"{rule}"), body["message"]
        assert body["message"].endswith("[rule: search-regex]")
    with pytest.raises(MlflowException, match=r"was refused: .*\[rule: search-regex\]"):
        MlflowClient().search_traces(locations=[experiment_id], filter_string=f"tags.payload RLIKE '{pattern}'")


def test_a_costly_search_is_cut_off_while_a_writer_carries_on(search_server, monkeypatch):
    url, _ = search_server
    experiment_id = MlflowClient().create_experiment(unique("rlike"))
    _traces(experiment_id, [{"payload": "a" * 8000} for _ in range(6)], monkeypatch)
    answers: list[requests.Response] = []

    def hostile():
        for filter_string in (f"tags.payload RLIKE '{COSTLY}'", f"tags.payload RLIKE '{CATASTROPHIC}'") * 3:
            answers.append(_search(url, experiment_id, filter_string))

    searcher = threading.Thread(target=hostile)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        searcher.start()
        for step in range(20):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        searcher.join(timeout=600)
    assert not searcher.is_alive()
    history = MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(20))
    assert [a.status_code for a in answers] == [400] * 6, [a.text[:300] for a in answers]
    cut_off = [a.json()["message"] for a in answers[::2]]
    for message in cut_off:
        assert message.startswith(f"The search was stopped: matching its regular expression {COSTLY!r} took "
                                  "longer than this server's budget of 100 ms"), message
    assert all("traces" not in json.loads(a.text) for a in answers)
    # An ordinary search on the same server afterwards is answered as usual.
    response = _search(url, experiment_id, "tags.payload RLIKE '^a{10}'")
    assert response.status_code == 200 and len(response.json()["traces"]) == 6, response.text
