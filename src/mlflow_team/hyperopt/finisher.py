"""Trial runs logged through a server are finished in the background, in order, while the next
trial runs.

A trial's last two requests (its params and results in one ``log_batch``, then its end status)
need nothing from the trial that follows, so they go to a worker thread instead of holding up
the search: the next objective starts at once. The search waits for them (``flush``) before it
writes its own summary, so when ``fmin`` returns every trial run is complete, as with
synchronous logging. A write that fails is reported as a warning (raised under
``MLFLOW_AUTOLOGGING_TESTING``) when the search flushes, naming the trial run.

Each search has a finisher of its own (``submit``/``flush`` by the search's key): two searches
running at once in two threads neither wait on nor report each other's trials. A search's
finisher (and its thread) is dropped when the search flushes it; a trial that ends after that
(an asynchronous backend's straggler) gets a new one, flushed when the process exits.

With the team store in the same process, the two writes are one lean transaction instead,
cheaper than handing them to a thread (``trial._end``).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading

_logger = logging.getLogger(__name__)


class Finisher:
    """One ordered worker thread; ``submit`` returns at once, ``flush`` waits for all."""

    def __init__(self, name: str = "mlflow-team-trials") -> None:
        self._name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures: list[str] = []

    def submit(self, label: str, action) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((label, action))

    def flush(self) -> list[str]:
        """Wait for everything submitted; return (and forget) what failed."""
        self._queue.join()
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    def close(self) -> None:
        """Let the worker thread end once the queue is done (a later ``submit`` starts another)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
            self._thread = None

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                label, action = item
                try:
                    action()
                except Exception as exc:
                    with self._lock:
                        self._failures.append(f"{label}: {exc}")
            finally:
                self._queue.task_done()


_FINISHERS: dict[str, Finisher] = {}  # search key -> its finisher
_LOCK = threading.Lock()


def submit(key: str, label: str, action) -> None:
    """Hand one of search ``key``'s trial writes to that search's finisher."""
    with _LOCK:  # with flush's pop: nothing is put on a finisher after its search flushed it
        finisher = _FINISHERS.get(key)
        if finisher is None:
            finisher = _FINISHERS[key] = Finisher(f"mlflow-team-trials-{key[:8]}")
        finisher.submit(label, action)


def flush(key: str) -> list[str]:
    """Wait for search ``key``'s trial writes (only its own); return what failed. Drops its finisher."""
    with _LOCK:
        finisher = _FINISHERS.pop(key, None)
    if finisher is None:
        return []
    try:
        return finisher.flush()
    finally:
        finisher.close()


@atexit.register
def _flush_at_exit() -> None:
    for key in list(_FINISHERS):
        for failure in flush(key):
            _logger.warning("mlflow-team hyperopt autologging: %s", failure)
