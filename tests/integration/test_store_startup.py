"""Starting a store on a database that is not there yet, or not at all.

`mlflow server` is often started beside its PostgreSQL (compose files, Kubernetes pods): the store
waits for the database as stock does, and when it never answers the message says so without
showing the URL's password.
"""

from __future__ import annotations

import logging
import socket
import threading

import mlflow.store.db.utils
import pytest

from mlflow_team import errors
from mlflow_team.policy import Policy
from mlflow_team.store.tracking import TeamSqlAlchemyStore

pytestmark = pytest.mark.postgres


class Forwarder:
    """A TCP port that forwards to PostgreSQL once opened: a database server coming up late."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()  # type: ignore[union-attr]
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for s in self._sockets:
            s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Seen(logging.Handler):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_store_started_before_its_database_waits_for_it(postgresql_url):
    database = postgresql_url.rsplit("/", 1)[1]
    port = _free_port()
    url = f"team+postgresql://root:s3cret-pw@127.0.0.1:{port}/{database}"
    seen = _Seen("SQLAlchemy engine could not be created")
    logging.getLogger("mlflow.store.db.utils").addHandler(seen)
    outcome: dict[str, object] = {}

    def start() -> None:
        try:
            outcome["store"] = TeamSqlAlchemyStore(url, team_policy=Policy())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    forwarder = Forwarder(port, ("127.0.0.1", 5432))
    starter = threading.Thread(target=start)
    try:
        starter.start()
        assert seen.event.wait(60), "the store never tried (and failed) to reach the database"
        forwarder.open()  # the database comes up
        starter.join(120)
        assert "error" not in outcome, outcome.get("error")
        store = outcome["store"]
        assert store.get_experiment("0").name == "Default"  # type: ignore[attr-defined]
    finally:
        logging.getLogger("mlflow.store.db.utils").removeHandler(seen)
        from mlflow_team.store import db

        engine = db._engines.pop(url.removeprefix("team+"), None)
        if engine is not None:
            engine.dispose()
        forwarder.close()


def test_a_database_that_never_answers_is_named_without_its_password(monkeypatch):
    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 2)  # 0.1 s of waiting, not 100
    url = "team+postgresql://root:s3cret-pw@127.0.0.1:5432/no_such_database_here"
    with pytest.raises(errors.TeamStoreConfigError, match=r"did not answer after MLflow's retries") as raised:
        TeamSqlAlchemyStore(url, team_policy=Policy())
    message = raised.value.message
    assert "s3cret-pw" not in message
    assert "root:***@127.0.0.1:5432/no_such_database_here" in message
    assert "no_such_database_here" in message.split("(", 1)[1]  # the driver's reason is kept


def test_database_unreachable_message_says_how_to_check():
    text = errors.DATABASE_UNREACHABLE.format(uri="team+postgresql://u:***@h/db", reason="refused")
    assert "mlflow-team doctor --tracking-uri" in text and "did not answer" in text
