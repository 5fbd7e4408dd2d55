"""Runs whose client died: heartbeats in, stale runs ended FAILED (``team.end_reason=stale``).

:func:`install` adds three things to MLflow's Flask app:

- ``POST`` :data:`HEARTBEAT_PATH` with ``{"run_id": ...}`` or ``{"run_ids": [...]}``: records a
  heartbeat for each run that is RUNNING (:mod:`mlflow_team.server.heartbeats`) and answers
  ``{"stale_after_seconds": N, "runs": {run_id: {"status": ...}}}``; the client picks its interval
  from ``N`` and stops for a run reported ended. A server without the app answers 404 (the
  client then stays quiet for that server).
- an after-request hook: a run set to a terminal status (``runs/update``) or deleted stops being
  tracked at once, so that a later resume of it by a client without heartbeats is never reaped.
- a :class:`Reaper` thread in each worker (daemon: it never holds a worker's shutdown up). Every
  ``stale-after / 4`` seconds (1 to 30) it asks for the database lease; the one worker of all
  the server processes on the database that holds it ends the runs that are RUNNING, have sent
  heartbeats, and have sent none for ``[server] stale-after-seconds``: tag
  ``team.end_reason=stale``, status FAILED, ``end_time`` the last heartbeat. Each run is claimed
  in the database first, so it is ended once even if two reapers overlap. Database errors are
  logged and the next sweep tries again.

The reaper writes through the tracking store the server's handlers use (MLflow's
``_get_tracking_store``, named in :mod:`mlflow_team.store.compat`), in one transaction on a team
store. The end-reason tag is the server's own record, not a client's write: on a team store it
goes past the policy's tag rules (a ``[reserved-tags]`` list naming it binds clients only).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Any, Callable

from mlflow_team import errors
from mlflow_team.server import heartbeats
from mlflow_team.store import compat

_logger = logging.getLogger(__name__)

HEARTBEAT_PATH = "/api/2.0/mlflow-team/runs/heartbeat"
END_REASON_TAG = "team.end_reason"
STALE = "stale"
#: Run ids one heartbeat may carry (a process's nested fluent runs go in one request).
MAX_RUN_IDS = 100
_GET_STORE = "mlflow.server.handlers:_get_tracking_store"
_TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})


def install(app: Any, team_policy: Any) -> None:
    """The heartbeat endpoint, the hook that stops tracking ended runs, and this worker's reaper."""
    if not compat.use("reaper"):
        return
    stale_s = team_policy.server.stale_after_s

    def heartbeat():
        return _heartbeat(stale_s)

    app.add_url_rule(HEARTBEAT_PATH, endpoint="mlflow_team_heartbeat", view_func=heartbeat, methods=["POST"])
    app.after_request(_forget_ended_runs)
    if _in_server():
        start(stale_s)
        # gunicorn --preload builds the app before it forks its workers: each needs its own thread.
        os.register_at_fork(after_in_child=lambda: _after_fork(stale_s))


def _in_server() -> bool:
    """Whether this process serves ``mlflow server`` (it names the backend store in the
    environment); a Flask app built in a test or a script gets the endpoint but no reaper."""
    from mlflow.server.constants import BACKEND_STORE_URI_ENV_VAR

    return bool(os.environ.get(BACKEND_STORE_URI_ENV_VAR))


def server_store() -> Any:
    """The tracking store MLflow's handlers use in this process."""
    return compat.get(_GET_STORE)()


_tables_ready: set[int] = set()
_tables_lock = threading.Lock()


def engine_of(store: Any):
    """The SQLAlchemy engine of ``store`` with the heartbeat tables in its database, or None for
    a store that is no database."""
    from mlflow_team.store import db

    engine = getattr(store, "engine", None)
    if engine is None:
        return None
    if id(engine) not in _tables_ready:
        with _tables_lock:
            if id(engine) not in _tables_ready:
                db.retrying_call(heartbeats.create_tables, engine)
                _tables_ready.add(id(engine))
    return engine


def _store_name(store: Any) -> str:
    return type(store).__name__


# --- the endpoint ----------------------------------------------------------------------------


def _json_error(code: str, message: str, status: int):
    import flask

    return flask.jsonify({"error_code": code, "message": message}), status


def _run_ids(body: Any) -> list[str] | None:
    if not isinstance(body, dict):
        return None
    if "run_ids" in body:
        ids = body["run_ids"]
    elif "run_id" in body:
        ids = [body["run_id"]]
    else:
        return None
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_RUN_IDS:
        return None
    if not all(isinstance(i, str) and 0 < len(i) <= 256 for i in ids):
        return None
    return list(dict.fromkeys(ids))


def _heartbeat(stale_s: int):
    import flask
    from mlflow.exceptions import MlflowException

    body = flask.request.get_json(force=True, silent=True)
    run_ids = _run_ids(body)
    if run_ids is None:
        got = errors.preview(flask.request.get_data(as_text=True) or "an empty body")
        return _json_error(
            "INVALID_PARAMETER_VALUE", errors.HEARTBEAT_BAD_REQUEST.format(limit=MAX_RUN_IDS, got=got), 400
        )
    store = server_store()
    try:
        engine = engine_of(store)
        if engine is None:
            return _json_error(
                "ENDPOINT_NOT_FOUND", errors.HEARTBEAT_NO_DATABASE.format(store=_store_name(store)), 404
            )
        runs = {}
        for run_id in run_ids:
            runs[run_id] = _beat(store, engine, run_id)
    except MlflowException as exc:
        if _is_database_error(exc):
            return _not_recorded(run_ids, exc, stale_s)
        return _json_error(exc.error_code, exc.message, exc.get_http_status_code())
    except Exception as exc:  # noqa: BLE001 - a database error: the client tries again
        return _not_recorded(run_ids, exc, stale_s)
    return flask.jsonify({"stale_after_seconds": stale_s, "runs": runs})


def _beat(store: Any, engine: Any, run_id: str) -> dict[str, str]:
    """Record one run's heartbeat if it is RUNNING; its status either way."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    from mlflow_team.store import db

    try:
        run = store.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return {"status": "NOT_FOUND"}
        raise
    if run.info.status == "RUNNING" and run.info.lifecycle_stage == "active":
        db.retrying_call(heartbeats.record, engine, run_id)
        return {"status": "RUNNING"}
    db.retrying_call(heartbeats.forget, engine, [run_id])
    answer = {"status": run.info.status if run.info.lifecycle_stage == "active" else "DELETED"}
    reason = run.data.tags.get(END_REASON_TAG)
    if reason:
        answer["end_reason"] = reason
    return answer


def _is_database_error(exc: BaseException) -> bool:
    import sqlalchemy

    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        if isinstance(current, sqlalchemy.exc.SQLAlchemyError):
            return True
        current = current.__cause__ or current.__context__
    return False


def _not_recorded(run_ids: list[str], exc: BaseException, stale_s: int):
    original = getattr(exc, "orig", None) or exc
    # The exception's type only: the driver's text may quote the statement and its values.
    _logger.warning("mlflow-team: heartbeat not recorded (%s)", type(original).__name__, exc_info=True)
    return _json_error(
        "TEMPORARILY_UNAVAILABLE",
        errors.HEARTBEAT_NOT_RECORDED.format(run_ids=run_ids, reason=type(original).__name__, stale=stale_s),
        503,
    )


# --- ended runs stop being tracked -----------------------------------------------------------


def _forget_ended_runs(response):
    """After a successful ``runs/update`` to a terminal status, or ``runs/delete``: drop the
    run's heartbeat row. Never fails the request it follows."""
    import flask

    request = flask.request
    if response.status_code != 200 or request.method != "POST":
        return response
    path = request.path
    if not (path.endswith("/mlflow/runs/update") or path.endswith("/mlflow/runs/delete")):
        return response
    try:
        body = request.get_json(force=True, silent=True) or {}
        run_id = body.get("run_id") or body.get("run_uuid")
        if not isinstance(run_id, str) or (path.endswith("/update") and body.get("status") not in _TERMINAL):
            return response
        engine = engine_of(server_store())
        if engine is not None:
            heartbeats.forget(engine, [run_id])
    except Exception:  # noqa: BLE001 - the reaper looks at the row again and finds the run ended
        _logger.debug("mlflow-team: could not drop the heartbeat row of an ended run", exc_info=True)
    return response


# --- the reaper ------------------------------------------------------------------------------


def sweep_interval(stale_s: int) -> float:
    """How often a worker asks for the lease and, holding it, sweeps: a quarter of stale-after,
    from 1 to 30 seconds."""
    return min(30.0, max(1.0, stale_s / 4))


class Reaper:
    """One worker's reaper: :meth:`sweep` ends the stale runs if this worker holds the lease."""

    def __init__(
        self, stale_s: int, get_store: Callable[[], Any] = server_store, holder: str | None = None,
        lease: str = heartbeats.REAPER,
    ):
        self.stale_s = stale_s
        self.lease = lease
        self.interval_s = sweep_interval(stale_s)
        # Renewed every sweep; a dead holder's lease lapses after about three missed sweeps.
        self.ttl_ms = int((3 * self.interval_s + 5) * 1000)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._get_store = get_store
        self._failing = False
        self._warned_runs: set[str] = set()
        self._warned_no_database = False
        self._stop = threading.Event()

    def sweep(self) -> list[str]:
        """Take or renew the lease; holding it, end the stale runs. The run ids ended."""
        store = self._get_store()
        engine = engine_of(store)
        if engine is None:
            if not self._warned_no_database:
                self._warned_no_database = True
                _logger.warning(errors.HEARTBEAT_NO_DATABASE.format(store=_store_name(store)))
            return []
        started = time.monotonic()
        if not heartbeats.acquire(engine, self.holder, self.ttl_ms, self.lease):
            return []
        # Stop well before the lease could lapse (slow database, clocks a little apart): what is
        # left is the next sweep's, after a renewal.
        until = started + self.ttl_ms / 2000
        cutoff = heartbeats.now_ms() - self.stale_s * 1000
        ended = []
        for run_id, seen in heartbeats.stale(engine, cutoff):
            if time.monotonic() > until:
                break
            if not heartbeats.claim(engine, run_id, seen):
                continue  # a heartbeat came in, or the run ended meanwhile
            try:
                if end_stale_run(store, run_id, seen):
                    ended.append(run_id)
                    _logger.warning(errors.RUN_ENDED_STALE.format(
                        run_id=run_id, silent=(heartbeats.now_ms() - seen) // 1000, stale=self.stale_s
                    ))
            except Exception as exc:  # noqa: BLE001 - the row goes back; the next sweep retries
                heartbeats.restore(engine, run_id, seen)
                log = _logger.debug if run_id in self._warned_runs else _logger.warning
                self._warned_runs.add(run_id)
                log("mlflow-team: could not end stale run %s (%s); the next sweep tries again",
                    run_id, type(exc).__name__, exc_info=True)
        return ended

    def run_forever(self) -> None:
        """Sweep every interval until :meth:`stop`; errors are logged, never raised."""
        # Workers started together spread their first requests over one interval.
        if self._stop.wait(self.interval_s * random.uniform(0.2, 1.0)):
            return
        while True:
            try:
                self.sweep()
                if self._failing:
                    self._failing = False
                    _logger.warning("mlflow-team: the stale-run reaper of this worker works again")
            except Exception as exc:  # noqa: BLE001 - never let the thread die: retry next interval
                original = getattr(exc, "orig", None) or exc
                log = _logger.debug if self._failing else _logger.warning
                self._failing = True
                log(errors.REAPER_FAILED.format(reason=type(original).__name__, interval=self.interval_s),
                    exc_info=True)
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()


def end_stale_run(store: Any, run_id: str, last_seen_ms: int) -> bool:
    """End ``run_id`` FAILED with ``team.end_reason=stale`` if it is still RUNNING; whether it did.

    One transaction on a team store (the status read and the writes together); retried on a
    lock error. ``end_time`` is the last heartbeat (when the client was last heard of), never
    before the run's start.
    """
    from mlflow_team.store import db

    return db.retrying_call(_end_stale_run, store, run_id, last_seen_ms)


def _end_stale_run(store: Any, run_id: str, last_seen_ms: int) -> bool:
    from contextlib import nullcontext

    from mlflow.entities import RunStatus, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    atomic = getattr(store, "_atomic", None)
    with atomic() if atomic is not None else nullcontext():
        try:
            run = store.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return False
            raise
        if run.info.status != "RUNNING" or run.info.lifecycle_stage != "active":
            return False
        _set_server_tag(store, run_id, RunTag(END_REASON_TAG, STALE))
        end_time = max(int(last_seen_ms), int(run.info.start_time or 0))
        store.update_run_info(run_id, RunStatus.FAILED, end_time, None)
    return True


def _set_server_tag(store: Any, run_id: str, tag: Any) -> None:
    """Set a tag the server itself writes: on a team store, past the policy's tag rules (they
    judge what clients write); on any other store, its own ``set_tag``."""
    from mlflow_team.store.tracking import TeamTrackingStoreMixin

    if isinstance(store, TeamTrackingStoreMixin):
        super(TeamTrackingStoreMixin, store).set_tag(run_id, tag)
    else:
        store.set_tag(run_id, tag)


# --- this worker's thread --------------------------------------------------------------------

_reaper: Reaper | None = None
_thread: threading.Thread | None = None
_start_lock = threading.Lock()


def start(stale_s: int) -> Reaper:
    """Start this process's reaper thread (once)."""
    global _reaper, _thread
    with _start_lock:
        if _thread is not None and _thread.is_alive():
            assert _reaper is not None
            return _reaper
        _reaper = Reaper(stale_s)
        _thread = threading.Thread(target=_reaper.run_forever, name="mlflow-team-reaper", daemon=True)
        _thread.start()
        return _reaper


def _after_fork(stale_s: int) -> None:
    """In a forked child: the parent's thread is not there (nor, maybe, its lock's owner)."""
    global _start_lock, _thread, _reaper
    _start_lock, _thread, _reaper = threading.Lock(), None, None
    try:
        start(stale_s)
    except Exception:  # noqa: BLE001 - a child without a reaper still serves; others reap
        _logger.warning("mlflow-team: no stale-run reaper in forked process %d", os.getpid(), exc_info=True)
