"""Heartbeats of this process's fluent runs, so a team server can tell a live run from a dead one.

The team server app (``mlflow server --app-name team``, :mod:`mlflow_team.server.reaper`) ends a
run FAILED with ``team.end_reason=stale`` once it has heard no heartbeat for it for the policy's
``[server] stale-after-seconds``; a run that never sent one is never ended. This module sends
them, from one daemon thread per process, for every fluent run (``mlflow.start_run``) that is
active against an http(s) tracking server.

How the thread knows a run started and ended:

- **start**: MLflow asks every run context provider (entry point ``mlflow.run_context_provider``)
  for tags in ``start_run``, in the caller's thread, just before it creates the run.
  :class:`HeartbeatRunContext` adds no tags; its ``in_context`` starts the thread (once) and
  notes the tracking URI the run is about to be created on. The run itself is found where
  ``mlflow.active_run()`` looks: MLflow's stack of active runs, one per thread
  (``_active_run_stack``, read for all threads, named in :mod:`mlflow_team.store.compat`). The
  thread looks every second, five times a second for a while after a ``start_run``. A run
  resumed with ``start_run(run_id=...)`` does not ask the providers: it is found once the thread
  runs (any earlier new fluent run in the process), and otherwise never reaped.
- **end**: the run leaves every stack (``end_run``, the ``with`` block's exit, MLflow's own
  ``atexit`` end): its heartbeats stop, and the server stops tracking it when the run's terminal
  status reaches it. A run ended by someone else (``MlflowClient.set_terminated``, the reaper
  after a long network outage) is reported so in the server's answer: heartbeats for it stop,
  and a reaped run is worth one warning.

Polling ``mlflow.active_run()`` from the thread would not work (it answers for the calling thread
only), and patching ``start_run``/``end_run`` would be the kind of patch MLflow's providers exist
to avoid. The first heartbeat goes out when the run is found; then every quarter of the server's
stale-after (1 to 120 seconds). A server without the endpoint (stock MLflow, or ``mlflow server``
without ``--app-name team``) answers 404: this process then sends that server no more, quietly.
Anything else that fails costs one warning per process and never reaches the run: the thread
tries again at the next interval. ``MLFLOW_TEAM_HEARTBEAT=off`` turns it all off.

Standard library only at import: MLflow loads the provider while ``import mlflow`` runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from urllib.parse import urlsplit

_logger = logging.getLogger(__name__)

#: The team server app's endpoint (:data:`mlflow_team.server.reaper.HEARTBEAT_PATH`).
HEARTBEAT_PATH = "/api/2.0/mlflow-team/runs/heartbeat"
_STACKS = "mlflow.tracking.fluent:_active_run_stack.get_all_thread_values"
#: How often the thread looks for runs that started or ended, and for a while after a start.
POLL_S = 1.0
FAST_POLL_S = 0.2
FAST_FOR_S = 30.0
#: Until a server has said its stale-after (or after a failed heartbeat), the next try is this soon.
UNKNOWN_INTERVAL_S = 10.0
MAX_RUN_IDS = 100


def interval(stale_after_s: float) -> float:
    """Seconds between heartbeats for a server whose runs go stale after ``stale_after_s``: four
    chances per window, from 1 to 120 seconds."""
    return min(120.0, max(1.0, stale_after_s / 4))


def _http(uri: str | None) -> bool:
    return bool(uri) and urlsplit(uri).scheme in {"http", "https"}


class HeartbeatRunContext:
    """``mlflow.run_context_provider``: adds no tags; a fluent run is starting, so heartbeat it."""

    def in_context(self) -> bool:
        try:
            watch_this_start()
        except Exception as exc:  # noqa: BLE001 - a run without heartbeats beats a crashed run
            _warn_once(f"mlflow-team: heartbeats off for this process: {exc}")
        return False

    def tags(self) -> dict[str, str]:  # pragma: no cover - in_context is always False
        return {}


def watch_this_start() -> None:
    """Note that the calling thread is starting a fluent run (on the current tracking URI), and
    start the heartbeat thread if it is not running."""
    from mlflow_team import config

    if not config.client_heartbeat_on():
        return
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not _http(uri):
        return
    watcher = _watcher()
    if watcher is not None:
        watcher.expect(threading.get_ident(), uri)


_warned = False


def _warn_once(message: str, *args) -> None:
    """The one warning a process gets for heartbeats that fail (then debug lines)."""
    global _warned
    if _warned:
        _logger.debug(message, *args)
        return
    _warned = True
    _logger.warning(message, *args)


class _Server:
    """What the thread knows of one tracking server."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.stale_after_s: float | None = None
        self.next_due = 0.0  # time.monotonic() of its next heartbeat
        self.without_endpoint = False  # it answered 404: no team server app there

    @property
    def shown(self) -> str:
        """The server for a message: scheme, host and port, never credentials in the URL."""
        parts = urlsplit(self.uri)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


class Watcher:
    """The heartbeat thread's state: the runs it follows, the servers they live on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._expected: dict[int, str] = {}  # thread id -> tracking URI of its latest start_run
        self._runs: dict[str, str | None] = {}  # run id -> its server's URI (None: not http)
        self._ended: set[str] = set()  # runs the server reported ended while still active here
        self._servers: dict[str, _Server] = {}

    def expect(self, thread_id: int, uri: str) -> None:
        with self._lock:
            self._expected[thread_id] = uri
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run_forever(self) -> None:
        fast_until = 0.0
        while not self._stop.is_set():
            if self._wake.wait(FAST_POLL_S if time.monotonic() < fast_until else POLL_S):
                self._wake.clear()
                fast_until = time.monotonic() + FAST_FOR_S
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one failure
                _warn_once("mlflow-team: heartbeats failed (%s); trying again", exc)

    def step(self) -> None:
        """Follow the runs that started and ended; send the heartbeats that are due."""
        active = _active_runs()
        for run_id in [r for r in self._runs if r not in active]:
            del self._runs[run_id]  # ended here: no more heartbeats
            self._ended.discard(run_id)
        fresh: set[str] = set()
        for run_id, thread_id in active.items():
            if run_id in self._runs:
                continue
            with self._lock:
                uri = self._expected.pop(thread_id, None)
            if uri is None:
                import mlflow

                uri = mlflow.get_tracking_uri()
            self._runs[run_id] = uri if _http(uri) else None
            if _http(uri):
                fresh.add(uri)
        by_server: dict[str, list[str]] = {}
        for run_id, uri in self._runs.items():
            if uri is not None and run_id not in self._ended:
                by_server.setdefault(uri, []).append(run_id)
        now = time.monotonic()
        for uri, run_ids in by_server.items():
            server = self._servers.setdefault(uri, _Server(uri))
            if server.without_endpoint or (uri not in fresh and now < server.next_due):
                continue
            for start in range(0, len(run_ids), MAX_RUN_IDS):
                self._beat(server, run_ids[start : start + MAX_RUN_IDS])

    def _beat(self, server: _Server, run_ids: list[str]) -> None:
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        from mlflow_team import errors

        wait = interval(server.stale_after_s) if server.stale_after_s else UNKNOWN_INTERVAL_S
        server.next_due = time.monotonic() + wait
        stale = f"{server.stale_after_s:g} s" if server.stale_after_s else "its stale-after-seconds"
        try:
            response = http_request(
                get_default_host_creds(server.uri), HEARTBEAT_PATH, "POST", json={"run_ids": run_ids},
                max_retries=0, timeout=min(10.0, wait), raise_on_status=False,
            )
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: next interval
            _warn_once(errors.HEARTBEAT_CLIENT_FAILED.format(
                run_ids=run_ids, server=server.shown, reason=_first_line(exc), stale=stale))
            return
        if response.status_code == 404:
            server.without_endpoint = True  # a stock server, or no team app: quietly none
            _logger.debug("mlflow-team: %s has no heartbeat endpoint; sending it none", server.shown)
            return
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            reason = f"HTTP {response.status_code}: {_first_line(response.text)}"
            _warn_once(errors.HEARTBEAT_CLIENT_FAILED.format(
                run_ids=run_ids, server=server.shown, reason=reason, stale=stale))
            return
        stale_after = body.get("stale_after_seconds")
        if isinstance(stale_after, (int, float)) and stale_after > 0:
            server.stale_after_s = float(stale_after)
            server.next_due = time.monotonic() + interval(stale_after)
        runs = body.get("runs") if isinstance(body.get("runs"), dict) else {}
        for run_id in run_ids:
            answer = runs.get(run_id) if isinstance(runs.get(run_id), dict) else {}
            status = answer.get("status", "RUNNING")
            if status != "RUNNING":
                self._report_ended(server, run_id, status, answer.get("end_reason"))

    def _report_ended(self, server: _Server, run_id: str, status: str, reason: str | None) -> None:
        """The server has ``run_id`` ended: no more heartbeats for it. A warning if this process
        still has it active (it did not end it itself a moment ago)."""
        from mlflow_team import errors

        self._ended.add(run_id)
        if run_id not in _active_runs():
            return  # ended here between our look at the stacks and the answer
        _logger.warning(errors.HEARTBEAT_RUN_ENDED.format(
            server=server.shown, run_id=run_id, status=status,
            reason=f" (team.end_reason={reason})" if reason else "",
            stale=f"{server.stale_after_s:g}" if server.stale_after_s else "stale-after-seconds",
        ))


def _first_line(value: object, limit: int = 200) -> str:
    lines = str(value).strip().splitlines()
    text = lines[0] if lines else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _active_runs() -> dict[str, int]:
    """run id -> thread id, for every fluent run active in any thread of this process."""
    from mlflow_team.store import compat

    stacks = compat.get(_STACKS)()
    found: dict[str, int] = {}
    for thread_id, stack in stacks.items():
        for active in list(stack or ()):
            found[active.info.run_id] = thread_id
    return found


_the_watcher: Watcher | None = None
_watcher_lock = threading.Lock()


def _watcher() -> Watcher | None:
    """This process's watcher, its thread started on first use; None where MLflow lacks what it
    needs (one warning, from the compat probe)."""
    global _the_watcher
    if _the_watcher is not None:
        return _the_watcher
    from mlflow_team.store import compat

    if not compat.use("heartbeat"):
        return None
    with _watcher_lock:
        if _the_watcher is None:
            watcher = Watcher()
            threading.Thread(target=watcher.run_forever, name="mlflow-team-heartbeat", daemon=True).start()
            _the_watcher = watcher
    return _the_watcher


def _after_fork_in_child() -> None:
    # The parent's thread is not in the child; the child starts its own with its first run.
    global _the_watcher, _watcher_lock
    _the_watcher, _watcher_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
