"""One hyperopt trial as a nested MLflow run (the patch of ``hyperopt.base.Domain.evaluate``).

The trial's run is the active run while the objective runs, so the user's own ``mlflow.log_*``
calls and MLflow's framework autologging land in it, as does an objective's own ``mlflow.start_run()``
(``runs``: the trial's run itself, which only the trial ends). Its params and results go in one
``log_batch`` after the objective returns: logged first, they would clash with an autologger
that logs the same names with other spellings (``4`` against hyperopt's ``4.0``), which MLflow
refuses; where such a clash happens anyway, the value already on the run stays.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from mlflow_team.hyperopt import scope, space

_logger = logging.getLogger(__name__)

#: Attribute set on a ``hyperopt.base.Domain`` while its search logs to MLflow: pickled with the
#: domain, so trials evaluated in other threads or processes find their parent run.
PARENT_ATTRIBUTE = "_mlflow_team_search"
#: Per-trial hyperopt attachment that holds the trial's run id (kept in a saved Trials file).
RUN_ID_ATTACHMENT = "mlflow_team.run_id"
TAG_TID = "hyperopt.tid"
#: MLflow's tag for a run that autologging created (``mlflow.utils.mlflow_tags.MLFLOW_AUTOLOGGING``).
TAG_AUTOLOGGING = "mlflow.autologging"
TAG_STATUS = "hyperopt.status"
TAG_ERROR = "hyperopt.error"
_SKIPPED_RESULT_KEYS = {"loss", "status", "attachments"}

#: ``(parent run id, tid) -> (params, numeric params)`` of the trials evaluated in this process,
#: so the search's summary does not resolve each point a second time (taken by ``resolved``).
_RESOLVED: dict[tuple[str, int], tuple[dict[str, str], dict[str, float]]] = {}
#: ``(parent run id, tid) -> run id`` of trials whose Trials object keeps no attachments (SparkTrials).
_RUN_IDS: dict[tuple[str, int], str] = {}
_seen = threading.local()  # the point the objective of this thread's current trial was given


class PointRecorder:
    """Stands in for a search's objective (``Domain.fn``) and notes, before calling it, the point
    hyperopt hands it, as params: what the objective saw, even if it changes the dict, and
    without evaluating the space a second time. Picklable when the objective is, so a domain
    sent to workers carries it."""

    def __init__(self, fn) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs:
            _seen.point = _snapshot(args[0])
        return self.fn(*args, **kwargs)


def _snapshot(point) -> tuple[dict[str, str], dict[str, float]] | None:
    try:
        return space.params_of(point)
    except Exception:
        return None


@dataclass(frozen=True)
class SearchContext:
    """What a trial needs to know about its search (small and picklable)."""

    parent_run_id: str
    experiment_id: str
    #: The search's tracking URI: every trial run goes where its parent is, whatever the thread.
    tracking_uri: str = ""
    registry_uri: str = ""
    log_trial_runs: bool = True
    #: Tags every trial run starts with: the run context (source, user, git commit...) resolved
    #: once per search, ``extra_tags`` and those inherited from the parent.
    tags: tuple[tuple[str, str], ...] = ()
    #: This search among others running at once: its trials' writes go to its own finisher.
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


def evaluate(original, domain, config, ctrl, *args, **kwargs):
    """``Domain.evaluate`` with the trial in its own nested run.

    The objective's exceptions pass through unchanged; a failure of this code is a warning (an
    exception under ``MLFLOW_AUTOLOGGING_TESTING``) and the trial runs as it would without it.
    """
    search: SearchContext | None = getattr(domain, PARENT_ATTRIBUTE, None)
    if search is None:
        return original(domain, config, ctrl, *args, **kwargs)
    if not search.log_trial_runs:  # no trial run: the objective's own runs nest under the parent
        try:
            previous = scope.enter(None, search, _client(search.tracking_uri))
        except Exception as exc:
            _report(exc)
            return original(domain, config, ctrl, *args, **kwargs)
        try:
            return original(domain, config, ctrl, *args, **kwargs)
        finally:
            scope.leave(previous)

    try:
        client = _client(search.tracking_uri)
        run = _start(client, search, ctrl)
        previous = scope.enter(run.info.run_id, search, client)
    except Exception as exc:
        _report(exc)
        return original(domain, config, ctrl, *args, **kwargs)
    _seen.point = None
    started = time.perf_counter()
    try:
        result = original(domain, config, ctrl, *args, **kwargs)
    except BaseException as exc:
        scope.leave(previous)
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        duration, error = time.perf_counter() - started, exc
        _guarded(lambda: _end(client, search, run, domain, config, None, duration, error, status))
        raise
    scope.leave(previous)
    _guarded(lambda: _end(client, search, run, domain, config, result, time.perf_counter() - started, None, "FINISHED"))
    return result


@functools.lru_cache(maxsize=8)
def _client(tracking_uri: str):
    """One client per tracking URI for all trials (building one costs more than a lean write)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri or None)


def resolved(parent_run_id: str, tid) -> tuple[dict[str, str], dict[str, float]] | None:
    """The params (all, numeric) a trial of this search logged in this process (then forgotten)."""
    return _RESOLVED.pop((parent_run_id, tid), None)


def run_id_of(parent_run_id: str, tid) -> str | None:
    """The run of a trial whose ``Trials`` keeps no attachments (SparkTrials), if this process made it."""
    return _RUN_IDS.pop((parent_run_id, tid), None)


def _start(client, search: SearchContext, ctrl):
    """Create the trial's run and make it this thread's active run (one write)."""
    from mlflow.tracking.fluent import ActiveRun, _active_run_stack

    trial = getattr(ctrl, "current_trial", None) or {}
    tid = trial.get("tid")
    stack = _active_run_stack.get()
    # Same thread as the search: the active run is the parent. Another thread or process: the
    # search's parent, named explicitly.
    parent = stack[-1].info.run_id if stack else search.parent_run_id
    run = create_run(client, search, parent, tid)
    stack.append(ActiveRun(run))
    if ctrl is not None and tid is not None:
        _guarded(lambda: ctrl.attachments.__setitem__(RUN_ID_ATTACHMENT, run.info.run_id.encode()))
    return run


def create_run(client, search: SearchContext, parent_run_id: str, tid):
    """A trial's run, nested under ``parent_run_id``, named ``trial-<tid>`` (one write)."""
    name = f"trial-{tid}" if tid is not None else "trial"
    tags = {
        **dict(search.tags), TAG_AUTOLOGGING: "hyperopt", "mlflow.parentRunId": parent_run_id,
        "mlflow.runName": name,
    }
    if tid is not None:
        tags[TAG_TID] = str(tid)
    return client.create_run(search.experiment_id, tags=tags, run_name=name)


def _end(client, search: SearchContext, run, domain, config, result, duration: float,
         error: BaseException | None, status: str) -> None:
    """Leave the trial's run (at once) and write its params, results and end status."""
    from mlflow.tracking.fluent import _active_run_stack

    run_id = run.info.run_id
    end_time = int(time.time() * 1000)
    stack = _active_run_stack.get()
    if any(active.info.run_id == run_id for active in stack):
        while stack and stack[-1].info.run_id != run_id:
            import mlflow

            mlflow.end_run()  # a run the objective started and left open
        stack.pop()
    try:
        seen, _seen.point = getattr(_seen, "point", None), None
        if seen is None:  # an objective that takes (expr, memo, ctrl), or an error before the call
            seen = space.params_of(space.resolve(domain.expr, config))
        tid = run.data.tags.get(TAG_TID)
        if tid is not None:
            _RESOLVED[(search.parent_run_id, int(tid))] = seen
        outcome = Outcome.of(result, error, cancelled=status == "KILLED")
        batch = outcome.batch(seen[0], duration)
        status = outcome.status
    except Exception as exc:  # still end the run; say what could not be logged
        _report(exc)
        batch = {}
    write_end(client, search, run, batch, status, end_time)


def write_end(client, search: SearchContext, run, batch: dict, status: str, end_time: int,
              background: bool = True) -> None:
    """Write a trial run's last batch and end it: one lean transaction with the team store in this
    process; through a server, in the search's finisher (``background``) or here."""
    run_id = run.info.run_id
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    finish_run = getattr(store, "finish_run", None)
    if finish_run is not None:
        # In-process team store: one lean transaction, cheaper than a hand-over to a thread.
        from mlflow.entities import RunStatus

        def write(metrics, params, tags):
            finish_run(run_id, metrics, params, tags, RunStatus.from_string(status), end_time)

        _without_param_conflicts(client, run_id, batch, write)
        return

    from mlflow_team.hyperopt import finisher

    def finish() -> None:
        if batch:
            log_batch(run_id, client=client, **batch)
        client.set_terminated(run_id, status, end_time)

    if not background:
        finish()
        return
    # A server: the two requests go to the search's worker thread while the next trial runs.
    finisher.submit(search.key, f"trial run {run_id} ({run.info.run_name})", finish)


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as its run shows it: MLflow status, ``hyperopt.*`` tags, metrics."""

    status: str  # FINISHED, FAILED (an exception, or the objective's STATUS_FAIL), KILLED
    tags: dict
    metrics: dict

    @classmethod
    def of(cls, result, error: BaseException | None, cancelled: bool = False, reason: str = "") -> "Outcome":
        if cancelled:
            why = reason or (f"{type(error).__name__}: {error}" if error is not None else "cancelled")
            return cls("KILLED", {TAG_STATUS: "cancelled", TAG_ERROR: why[:5000]}, {})
        if error is not None:
            return cls("FAILED", {TAG_STATUS: "error", TAG_ERROR: f"{type(error).__name__}: {error}"[:5000]}, {})
        if not isinstance(result, dict):  # a bare loss, as hyperopt reads it
            result = {"loss": result, "status": "ok"}
        status = str(result.get("status", ""))
        metrics = {}
        if result.get("loss") is not None:
            metrics["loss"] = float(result["loss"])
        metrics.update(space.numbers({k: v for k, v in result.items() if k not in _SKIPPED_RESULT_KEYS}))
        return cls("FAILED" if status == "fail" else "FINISHED", {TAG_STATUS: status}, metrics)

    def batch(self, params: dict[str, str], duration: float | None) -> dict:
        """The trial's params, results and status tags, as one ``log_batch``."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metrics = dict(self.metrics)
        if duration is not None:
            metrics["trial_duration_s"] = duration
        return {
            "metrics": [Metric(k, v, now, 0) for k, v in metrics.items()],
            "params": [Param(k, v) for k, v in params.items()],
            "tags": [RunTag(k, v) for k, v in self.tags.items()],
        }


def log_batch(run_id: str, metrics=(), params=(), tags=(), client=None) -> None:
    """``MlflowClient.log_batch``, keeping a value already logged under a param's name."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    batch = {"metrics": metrics, "params": params, "tags": tags}
    _without_param_conflicts(client, run_id, batch, lambda **b: client.log_batch(run_id, **b))


def _without_param_conflicts(client, run_id: str, batch: dict, write) -> None:
    """``write(metrics=, params=, tags=)``; if MLflow refuses a param that is already on the run
    with another value, write again without the params the run already has.

    MLflow refuses to change a param; an autologger inside the objective may have logged the
    same name first (``max_depth=4`` against hyperopt's ``4.0``). Then ours is left out.
    """
    from mlflow.exceptions import MlflowException

    batch = {"metrics": list(batch.get("metrics", ())), "params": list(batch.get("params", ())),
             "tags": list(batch.get("tags", ()))}
    try:
        write(**batch)
    except MlflowException as exc:
        if not batch["params"] or "param" not in str(exc).lower():
            raise
        existing = client.get_run(run_id).data.params
        write(**{**batch, "params": [p for p in batch["params"] if p.key not in existing]})


def _guarded(action) -> None:
    """Run one of our steps; a failure is reported, never raised over the user's own code."""
    try:
        action()
    except Exception as exc:
        _report(exc)


def _report(exc: Exception) -> None:
    from mlflow.utils.autologging_utils.safety import is_testing

    if is_testing():
        raise exc
    _logger.warning("mlflow-team hyperopt autologging: %s", exc)
