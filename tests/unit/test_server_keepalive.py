"""The team app sets TCP_NODELAY on its connections, where uvicorn leaves Nagle's algorithm on.

uvicorn before 0.55 hands each worker of ``--workers N`` a listening socket made with
``socket.socket(AF_INET)``: ``proto`` 0, so asyncio never sets TCP_NODELAY on the connections it
accepts, and a response's body waits for the client's delayed ACK on every reused keep-alive
connection; a listener handed over by descriptor (``--fd``) loses it in every uvicorn. These
tests serve on such sockets with the installed uvicorn, in this process, and read the option on
the server's end of the client's connection.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from mlflow_team.server import keepalive
from tests.helpers import sockets

pytestmark = pytest.mark.skipif(sockets.available() is not None, reason=str(sockets.available()))


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"OK"})


@contextmanager
def uvicorn_serving(app, how: str = "worker", http: str = "h11") -> Iterator[int]:
    """uvicorn serving ``app`` on a listener that loses TCP_NODELAY: ``worker``, made as uvicorn
    < 0.55 makes a worker's (proto 0); ``fd``, handed to uvicorn by descriptor (``--fd``), which
    uvicorn rebuilds as AF_UNIX, proto 0, in every version."""
    import uvicorn

    if how == "worker":
        listener = socket.socket(socket.AF_INET)
        assert listener.proto == 0
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    options = dict(http=http, lifespan="off", log_level="warning", access_log=False)
    if how == "worker":
        server, run = uvicorn.Server(uvicorn.Config(app, **options)), {"sockets": [listener]}
    else:
        listener.listen()
        server, run = uvicorn.Server(uvicorn.Config(app, fd=listener.fileno(), **options)), {}
    thread = threading.Thread(target=server.run, kwargs=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def keep_alive_requests(port: int, n: int = 3) -> bool:
    """``n`` requests on one keep-alive connection; TCP_NODELAY on the server's end afterwards."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(n):
            connection.request("GET", "/")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"OK")
        return sockets.server_no_delay(connection.sock)
    finally:
        connection.close()


@pytest.mark.parametrize("how", ["worker", "fd"])
def test_uvicorn_leaves_nagle_on_without_the_fix(how):
    """The condition the fix is for, reproduced: without it the server's end has no TCP_NODELAY."""
    with uvicorn_serving(hello, how) as port:
        assert keep_alive_requests(port) is False


@pytest.mark.parametrize("how, http", [("worker", "h11"), ("worker", "httptools"), ("fd", "h11")])
def test_team_app_wrapper_sets_tcp_nodelay_on_the_connection_the_client_reuses(how, http):
    if http == "httptools":
        pytest.importorskip("httptools", reason="uvicorn's httptools protocol needs httptools")
    with uvicorn_serving(keepalive.no_delay(hello), how, http) as port:
        assert keep_alive_requests(port) is True


def test_no_delay_wraps_asgi_apps_once_and_leaves_wsgi_apps_alone():
    from flask import Flask

    flask_app = Flask(__name__)
    assert keepalive.no_delay(flask_app) is flask_app
    wrapped = keepalive.no_delay(hello)
    assert isinstance(wrapped, keepalive.NoDelayMiddleware)
    assert keepalive.no_delay(wrapped) is wrapped


def test_wrapper_passes_requests_through_when_the_server_is_not_uvicorn():
    """A ``send`` that is not uvicorn's (another ASGI server) reaches no socket: the request is
    answered all the same."""
    import asyncio

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(keepalive.no_delay(hello)({"type": "http"}, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert keepalive.connection_socket(send) is None


def test_set_no_delay_refuses_quietly_what_is_not_a_tcp_socket():
    left, right = socket.socketpair()
    with left, right:
        assert keepalive.set_no_delay(left) is False
    assert keepalive.set_no_delay(object()) is False


def test_create_app_under_uvicorn_returns_the_wrapped_fastapi_app(monkeypatch, tmp_path):
    """``mlflow server --app-name team`` under uvicorn (its default) serves the wrapped app."""
    monkeypatch.setenv("_MLFLOW_SGI_NAME", "uvicorn")
    monkeypatch.delenv("MLFLOW_TEAM_POLICY", raising=False)
    monkeypatch.chdir(tmp_path)
    from mlflow_team.server.app import create_app

    app = create_app()
    assert isinstance(app, keepalive.NoDelayMiddleware)
    assert type(app.app).__name__ == "FastAPI"
