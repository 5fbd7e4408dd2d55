"""What a thread evaluating a trial of an autologged search works in: the trial, for the objective's
own runs (``runs``), and an autologging session of the trial's own.

MLflow keeps one autologging session for the whole process (``_AutologgingSessionManager``), shared
by every thread. A framework autologger that fails inside a trial marks that session failed, which
turns autologging off for every patched call made under it: one trial's failure would switch the
frameworks off in every trial running in other threads at the time, in this search and in any
other search of the process; and a trial that set the state back when it ended would switch them
on again for another trial whose own autologging had just failed. So each trial has a session of
its own, in its thread, for as long as it runs: MLflow's session manager is patched (gorilla,
stored with the integration's other patches, reverted by ``autolog(disable=True)``) to give a
thread that evaluates a trial its trial's session; every other thread sees MLflow's as before.
A failure inside one trial ends with that trial; the next starts afresh, as a separate run would.
(``astart_session``, for async patched calls, is left to MLflow.)
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass, field

_local = threading.local()  # .trial: the Trial this thread is evaluating, if any


def _new_session():
    from mlflow.utils.autologging_utils.safety import AutologgingSession

    from mlflow_team.hyperopt import FLAVOR_NAME

    return AutologgingSession(FLAVOR_NAME, uuid.uuid4().hex)


@dataclass(frozen=True)
class Trial:
    """The trial this thread is evaluating."""

    run_id: str | None  # None with log_trial_runs=False
    parent_run_id: str
    experiment_id: str
    client: object  # the MlflowClient of the search's tracking URI
    session: object = field(default_factory=_new_session)  # MLflow's AutologgingSession


def current() -> Trial | None:
    return getattr(_local, "trial", None)


def enter(run_id: str | None, search, client):
    """This thread now evaluates a trial of ``search``; returns what ``leave`` restores (a trial of
    a search run inside an objective returns to the outer trial)."""
    previous = current()
    _local.trial = Trial(run_id, search.parent_run_id, search.experiment_id, client)
    return previous


def leave(previous) -> None:
    _local.trial = previous


def install(flavor: str) -> None:
    """Patch ``_AutologgingSessionManager.start_session``/``active_session``; stored with ``flavor``'s
    patches."""
    from mlflow.utils import gorilla
    from mlflow.utils.autologging_utils.safety import _AutologgingSessionManager, _store_patch, _wrap_patch

    manager = _AutologgingSessionManager
    original_start = gorilla.get_original_attribute(manager, "start_session")
    original_active = gorilla.get_original_attribute(manager, "active_session")

    @contextlib.contextmanager
    def start_session(cls, integration):
        trial = current()
        if trial is None:
            with original_start(integration) as session:
                yield session
        else:
            yield trial.session  # the trial's: opened and closed by the trial, not by this call

    def active_session(cls):
        trial = current()
        return original_active() if trial is None else trial.session

    for name, patch in (("start_session", start_session), ("active_session", active_session)):
        _store_patch(flavor, _wrap_patch(manager, name, classmethod(patch)))
