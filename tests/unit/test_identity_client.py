"""Where the client plugins send the author: to every server a client was asked to talk to,
however its URL was given, and to no other host.

The servers here are bystanders that record the headers they are sent (no MLflow behind them);
tests/integration/test_identity_server.py does the same against real team servers.
"""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from mlflow_team.identity import signing

KEY = "a1" * 32


@contextmanager
def header_recorder():
    """An HTTP server on 127.0.0.1 that answers ``{}`` and records the headers it is sent."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def team_headers(seen: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in headers.items() if k.lower().startswith("x-mlflow-team")} for headers in seen]


@pytest.fixture
def signing_client(monkeypatch):
    """A client with a signing key, and no tracking or registry URI set globally."""
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alice@example.com")
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "team")
    assert not mlflow.get_tracking_uri().startswith("http")


def test_a_client_given_a_tracking_url_sends_it_the_signed_author(signing_client):
    with header_recorder() as (url, seen):
        MlflowClient(tracking_uri=url).search_experiments()
    assert seen and all(
        h[signing.AUTHOR_HEADER] == "alice@example.com" and signing.SIGNATURE_HEADER in h for h in seen
    ), team_headers(seen)


def test_a_client_given_a_registry_url_sends_it_the_signed_author(signing_client, tmp_path):
    with header_recorder() as (url, seen):
        client = MlflowClient(tracking_uri=f"team+sqlite:///{tmp_path}/local.db", registry_uri=url)
        client.search_registered_models()
    assert seen and all(
        h[signing.AUTHOR_HEADER] == "alice@example.com" and signing.SIGNATURE_HEADER in h for h in seen
    ), team_headers(seen)


def test_the_global_tracking_url_still_gets_the_author(signing_client):
    with header_recorder() as (url, seen):
        mlflow.set_tracking_uri(url)
        mlflow.search_experiments()
    assert seen and all(signing.SIGNATURE_HEADER in h for h in seen), team_headers(seen)


def test_hosts_no_client_was_asked_to_talk_to_get_nothing(signing_client):
    """A URL MLflow calls on someone else's word (an http artifact location a server handed out,
    a deployments or judge endpoint) gets neither the author nor a signature a receiver could
    replay against the team server."""
    with header_recorder() as (server, server_seen), header_recorder() as (other, seen):
        MlflowClient(tracking_uri=server).search_experiments()  # a client talks to `server` ...
        http_request(get_default_host_creds(other), "/api/2.0/mlflow/experiments/search", "GET")
        get_artifact_repository(f"{other}/api/2.0/mlflow-artifacts/artifacts/1/abc").list_artifacts()
        assert server_seen and signing.SIGNATURE_HEADER in server_seen[-1]
    assert len(seen) == 2 and team_headers(seen) == [{}, {}]


def test_author_hosts_names_exactly_the_hosts_that_get_the_author(signing_client, monkeypatch):
    with header_recorder() as (server, server_seen), header_recorder() as (other, seen):
        monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_HOSTS", other.removeprefix("http://"))
        MlflowClient(tracking_uri=server).search_experiments()
        http_request(get_default_host_creds(other), "/api/2.0/mlflow/experiments/search", "GET")
    assert team_headers(server_seen) == [{}]
    assert seen[-1][signing.AUTHOR_HEADER] == "alice@example.com" and signing.SIGNATURE_HEADER in seen[-1]


def test_identity_off_sends_nothing_to_a_client_given_url(signing_client, monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_IDENTITY", "off")
    with header_recorder() as (url, seen):
        MlflowClient(tracking_uri=url).search_experiments()
    assert seen and team_headers(seen) == [{}] * len(seen)
