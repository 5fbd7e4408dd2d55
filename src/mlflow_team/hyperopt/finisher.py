"""Trial runs logged through a server are finished in the background, in order, while the next
trial runs.

A trial's last two requests (its params and results in one ``log_batch``, then its end status)
need nothing from the trial that follows, so they go to one worker thread instead of holding up
the search: the next objective starts at once. The search waits for them (``flush``) before it
writes its own summary, so when ``fmin`` returns every trial run is complete, as with
synchronous logging. A write that fails is reported as a warning (raised under
``MLFLOW_AUTOLOGGING_TESTING``) when the search flushes, naming the trial run.

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

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures: list[str] = []

    def submit(self, label: str, action) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="mlflow-team-trials", daemon=True)
                self._thread.start()
        self._queue.put((label, action))

    def flush(self) -> list[str]:
        """Wait for everything submitted; return (and forget) what failed."""
        self._queue.join()
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    def _work(self) -> None:
        while True:
            label, action = self._queue.get()
            try:
                action()
            except Exception as exc:
                with self._lock:
                    self._failures.append(f"{label}: {exc}")
            finally:
                self._queue.task_done()


FINISHER = Finisher()


@atexit.register
def _flush_at_exit() -> None:
    for failure in FINISHER.flush():
        _logger.warning("mlflow-team hyperopt autologging: %s", failure)
