"""Trials evaluated in Spark executors (``hyperopt.SparkTrials``), logged like any other trial.

SparkTrials runs each trial as a one-task Spark job: the objective is pickled and called in an
executor's Python, which has no autologging and knows nothing of the search. So the work is split.

- **The driver owns each trial's run.** It creates ``trial-<tid>`` (nested under the search's
  parent) when SparkTrials launches the trial (the patch of ``_SparkFMinState._run_trial_async``)
  and ends it when the trial's outcome comes back (``_finish_trial_run``): params, loss, results,
  duration and status (FAILED for an exception or ``STATUS_FAIL``, KILLED with the reason for a
  trial SparkTrials cancelled on its ``timeout``). SparkTrials waits for every trial's thread
  before ``fmin`` returns, so no run of the search is left RUNNING, even when an executor died.
- **What the executor needs travels with the task.** The objective is wrapped
  (:class:`ExecutorObjective`, pickled with it) with the search's tracking and registry URIs,
  experiment, parent run, the driver's autologging settings (hyperopt's and each framework's), the
  author and the identity and credential variables of the driver's environment; the trial's run
  travels with its task as a Spark local property (``mlflow_team.trial``). In the executor, that
  run is the active run while the objective runs: its ``mlflow.*`` calls, its own
  ``with mlflow.start_run()`` and framework autologging land in it, as with ``Trials``.
- **An executor that cannot reach the store** (a path that only the driver has, a server behind a
  firewall) lets the objective log to a scratch store of its own; the params, metrics and tags it
  logged come back with the trial's result and the driver writes them to the trial run (artifacts
  and models stay on the executor). The driver says once why.

Executors need mlflow-team installed, like any other package the objective imports.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field

from mlflow_team.hyperopt import space, trial

_logger = logging.getLogger(__name__)

#: Spark local property carrying a trial's run to its task (JSON).
TRIAL_PROPERTY = "mlflow_team.trial"
#: Key of the executor's report in a trial's result dict (removed on the driver before hyperopt
#: sees the result), or attribute of the exception the objective raised.
REPORT_KEY = "_mlflow_team_trial"
#: ``_SparkFMinState`` attribute: ``tid -> _Launched`` for trials in flight.
_LAUNCHED_ATTRIBUTE = "_mlflow_team_launched"

#: Variables the executor takes from the driver's environment where its own lacks them: how to
#: reach and authenticate to the tracking server and artifact store, and mlflow-team's settings.
#: The author (``MLFLOW_TEAM_AUTHOR``) is always the driver's; the URIs travel as the search's own.
CARRIED_ENV_PREFIXES = ("MLFLOW_TEAM_", "MLFLOW_TRACKING_", "MLFLOW_S3_", "AWS_")
_NOT_CARRIED = frozenset({"MLFLOW_TEAM_AUTHOR", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"})

NO_JAVA = (
    "mlflow-team: Spark needs a Java runtime (17 or newer) and none was found (no `java` on PATH, no JAVA_HOME). "
    "Install one (Debian/Ubuntu: `apt-get install default-jre-headless`; macOS: `brew install openjdk@17`) "
    "or set JAVA_HOME, then run again."
)
NOT_CAPTURED = (
    "mlflow-team: the Spark executors could not reach the tracking store {uri} ({why}). Each trial run is "
    "still written by the driver: its params, loss, results and status, and the params, metrics and tags the "
    "objective logged; its artifacts and models stayed on the executor. Give the executors a tracking URI they "
    "can reach (an `mlflow server` URL, a database host rather than a local file) to capture everything."
)


@dataclass(frozen=True)
class ExecutorContext:
    """What an executor needs to log into a search's trial runs (small and picklable)."""

    tracking_uri: str
    registry_uri: str
    experiment_id: str
    parent_run_id: str
    log_trial_runs: bool
    hyperopt_config: dict = field(default_factory=dict)  # mlflow_team.hyperopt.autolog's settings
    frameworks: dict = field(default_factory=dict)  # flavor -> its autolog() settings on the driver
    author: str = ""
    env: dict = field(default_factory=dict)


class ExecutorObjective:
    """The search's objective as SparkTrials ships it: in a Spark task of an autologged search, it
    runs the objective inside the trial's run (``executor``); anywhere else it is the objective."""

    def __init__(self, fn, context: ExecutorContext) -> None:
        self.fn = fn
        self.context = context
        import functools

        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args, **kwargs):
        launched = _task_trial()
        if launched is None:
            return self.fn(*args, **kwargs)
        return _Executor(self.context, launched).run(self.fn, args, kwargs)


# --- driver -------------------------------------------------------------------------------


@dataclass
class _Launched:
    run: object  # the trial's mlflow Run
    search: trial.SearchContext
    started: float  # perf_counter() on the driver when SparkTrials launched it


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    _logger.warning(message)


def run_trial_async(original, state, hyperopt_trial):
    """``_SparkFMinState._run_trial_async``: the trial's run first, then SparkTrials' launch."""
    search = getattr(state.trials, trial.PARENT_ATTRIBUTE, None)
    if search is None:
        return original(state, hyperopt_trial)
    context = None
    try:
        _wrap_objective(state, search)
        trial._guarded(lambda: _reuse_workers(state))  # without it, a new worker per trial (hyperopt's way)
        payload = {}  # log_trial_runs=False: no trial run; the objective's own runs nest under the parent
        if search.log_trial_runs:
            tid = hyperopt_trial["tid"]
            run = trial.create_run(trial._client(search.tracking_uri), search, search.parent_run_id, tid)
            _launched(state)[tid] = _Launched(run, search, time.perf_counter())
            trial._RUN_IDS[(search.parent_run_id, tid)] = run.info.run_id
            payload = _payload(run)
        context = state.spark.sparkContext
        context.setLocalProperty(TRIAL_PROPERTY, json.dumps(payload))
    except Exception as exc:
        trial._report(exc)
    try:
        # The task's thread inherits this thread's local properties (pinned threads, Spark >= 3.2).
        return original(state, hyperopt_trial)
    finally:
        if context is not None:
            trial._guarded(lambda: context.setLocalProperty(TRIAL_PROPERTY, None))


def finish_trial_run(original, state, *args, **kwargs):
    """``_SparkFMinState._finish_trial_run(is_success, is_cancelled, trial, data)`` (hyperopt passes
    them by name): end the trial's run, then let SparkTrials record the outcome."""
    import inspect

    try:
        given = inspect.signature(original).bind(state, *args, **kwargs).arguments
        is_success, is_cancelled, hyperopt_trial, data = (given[k] for k in ("is_success", "is_cancelled", "trial", "data"))
    except Exception as exc:  # noqa: BLE001
        trial._report(exc)
        return original(state, *args, **kwargs)
    report = _take_report(data)
    launched = _launched(state).pop(hyperopt_trial.get("tid"), None)
    if launched is not None:
        trial._guarded(lambda: _end(state, launched, hyperopt_trial, is_success, is_cancelled, data, report))
    try:
        return original(state, *args, **kwargs)
    finally:
        PROMPT.trial_ended()


class PromptPolling:
    """SparkTrials learns that a trial ended when it ends, not up to two seconds later.

    Two loops poll a SparkTrials search once a second: ``fmin``'s (``FMinIter.run``: is a trial
    done, so that a new point can be suggested?) and SparkTrials' dispatcher (is a point queued
    and a slot free, so that a trial can be launched?). With trials of a few seconds that is a
    large share of the search's wall time. While autologging is on, the ``time`` module those two
    loops sleep with (``hyperopt.fmin.time``, ``hyperopt.spark.time``) is replaced by a stand-in
    whose ``sleep`` returns early: ``fmin``'s when a trial ends, the dispatcher's when a trial
    ends, when ``fmin`` has just queued new points (it sleeps right after queueing) and when the
    search is over (``wait_for_all_threads`` joins the dispatcher). An event that comes while its
    loop is not asleep makes the loop's next sleep return at once, so none is lost. Nothing else
    changes: each loop still checks what it checked and sleeps at most as long as before, and every
    other use of ``time`` goes to the real module.
    """

    def __init__(self) -> None:
        self.fmin = _Wake()
        self.dispatcher = _Wake()

    def trial_ended(self) -> None:
        self.fmin.set()
        self.dispatcher.set()

    def fmin_time(self) -> "_WakeableTime":
        return _WakeableTime(self.fmin, before_sleep=self.dispatcher.set)

    def dispatcher_time(self) -> "_WakeableTime":
        return _WakeableTime(self.dispatcher)


class _Wake:
    """A sleep that an event ends early; an event while nobody sleeps ends the next sleep."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._pending = False

    def set(self) -> None:
        with self._condition:
            self._pending = True
            self._condition.notify_all()

    def sleep(self, seconds: float) -> None:
        with self._condition:
            if not self._pending:
                self._condition.wait(seconds)
            self._pending = False


class _WakeableTime:
    """The ``time`` module, with a ``sleep`` that a :class:`PromptPolling` event ends early."""

    def __init__(self, wake: _Wake, before_sleep=None) -> None:
        self._wake = wake
        self._before_sleep = before_sleep

    def sleep(self, seconds: float) -> None:
        if self._before_sleep is not None:
            self._before_sleep()
        self._wake.sleep(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


def wait_for_all_threads(original, state, *args, **kwargs):
    """``_SparkFMinState.wait_for_all_threads``: the search is over; the dispatcher need not
    finish its second of sleep before SparkTrials' ``fmin`` returns."""
    state._fmin_done = True
    PROMPT.dispatcher.set()
    return original(state, *args, **kwargs)


PROMPT = PromptPolling()


def _launched(state) -> dict:
    launched = getattr(state, _LAUNCHED_ATTRIBUTE, None)
    if launched is None:
        launched = {}
        setattr(state, _LAUNCHED_ATTRIBUTE, launched)
    return launched


def _reuse_workers(state) -> None:
    """Let each trial's task run in a Python worker that earlier trials warmed up (once per search).

    PySpark reuses an executor's Python worker for the next task only when the task read all of
    its input: otherwise the worker exits and the next task forks a new one
    (``pyspark.worker.main``: "tell JVM to not reuse this worker"). SparkTrials' task function
    (``run_task_on_executor(_)``) never reads its one-element input, so every trial paid for a new
    worker: its start (0.3 to 0.6 s here: PySpark re-reads the directory of ``pyspark.zip`` for
    each package imported from it, https://github.com/python/cpython/issues/103200 on Python
    3.11), the broadcast data loaded again, and MLflow's client and autologging set up again.
    SparkTrials' trial threads reach Spark through ``state.spark``; behind this stand-in, the
    task function they build reads its input first (:class:`_InputRead`), and nothing else
    changes."""
    if not isinstance(state.spark, _ReusableWorkers):
        state.spark = _ReusableWorkers(state.spark)


class _ReusableWorkers:
    """A SparkSession whose ``sparkContext.parallelize(...)`` RDDs read their input in ``mapPartitions``."""

    def __init__(self, spark) -> None:
        self._spark = spark

    @property
    def sparkContext(self):  # noqa: N802 - PySpark's name
        return _Context(self._spark.sparkContext)

    def __getattr__(self, name: str):
        return getattr(self._spark, name)


class _Context:
    def __init__(self, context) -> None:
        self._context = context

    def parallelize(self, *args, **kwargs):
        return _Rdd(self._context.parallelize(*args, **kwargs))

    def __getattr__(self, name: str):
        return getattr(self._context, name)


class _Rdd:
    def __init__(self, rdd) -> None:
        self._rdd = rdd

    def withResources(self, profile):  # noqa: N802 - PySpark's name
        return _Rdd(self._rdd.withResources(profile))

    def mapPartitions(self, fn, *args, **kwargs):  # noqa: N802 - PySpark's name
        return self._rdd.mapPartitions(_InputRead(fn), *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._rdd, name)


class _InputRead:
    """A ``mapPartitions`` function that reads its partition before ``fn`` runs (picklable)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, iterator):
        return self.fn(iter(list(iterator)))


def _wrap_objective(state, search: trial.SearchContext) -> None:
    """Ship the objective with what the executor needs (once per search)."""
    if isinstance(state.eval_function, ExecutorObjective):
        return
    state.eval_function = ExecutorObjective(state.eval_function, _executor_context(search))


def _executor_context(search: trial.SearchContext) -> ExecutorContext:
    from mlflow.utils.autologging_utils import AUTOLOGGING_INTEGRATIONS, autologging_is_disabled

    from mlflow_team import identity
    from mlflow_team.hyperopt import FLAVOR_NAME

    frameworks = {
        flavor: dict(settings)
        for flavor, settings in AUTOLOGGING_INTEGRATIONS.items()
        if flavor not in (FLAVOR_NAME, "mlflow") and settings and not autologging_is_disabled(flavor)
    }
    env = {k: v for k, v in os.environ.items() if k.startswith(CARRIED_ENV_PREFIXES) and k not in _NOT_CARRIED}
    return ExecutorContext(
        tracking_uri=_absolute(search.tracking_uri),
        registry_uri=_absolute(search.registry_uri or search.tracking_uri),
        experiment_id=search.experiment_id,
        parent_run_id=search.parent_run_id,
        log_trial_runs=search.log_trial_runs,
        hyperopt_config=dict(AUTOLOGGING_INTEGRATIONS.get(FLAVOR_NAME) or {}),
        frameworks=frameworks,
        author=identity.author().name,
        env=env,
    )


def _absolute(uri: str) -> str:
    """A SQLite URI with a relative path, made absolute: an executor's working directory is its own."""
    scheme, sep, rest = uri.partition(":///")
    if sep and scheme.split("+")[-1] == "sqlite" and rest and not rest.startswith("/") and rest != ":memory:":
        return f"{scheme}:///{os.path.abspath(rest)}"
    return uri


def _payload(run) -> dict:
    info = run.info
    return {
        "run_id": info.run_id, "run_name": info.run_name, "experiment_id": info.experiment_id,
        "user_id": info.user_id, "start_time": info.start_time, "artifact_uri": info.artifact_uri,
        "tags": dict(run.data.tags),
    }


def _take_report(data) -> dict:
    """The executor's report, removed from what hyperopt records (a result dict or an exception)."""
    try:
        if isinstance(data, dict):
            return data.pop(REPORT_KEY, None) or {}
        if isinstance(data, BaseException):
            return data.__dict__.pop(REPORT_KEY, None) or {}
    except Exception:  # noqa: BLE001 - an odd exception type: no report, the driver's view stands
        pass
    return {}


def _end(state, launched: _Launched, hyperopt_trial, is_success, is_cancelled, data, report) -> None:
    from mlflow.entities import Metric, Param, RunTag

    from mlflow_team import redact

    search, run = launched.search, launched.run
    end_time = int(time.time() * 1000)
    duration = report.get("duration")
    if duration is None:
        duration = time.perf_counter() - launched.started
    if report.get("unreachable"):
        _warn_once("unreachable", NOT_CAPTURED.format(uri=redact.mask_url(search.tracking_uri), why=report["unreachable"]))
    seen = report.get("params")
    if seen is None:
        seen = space.params_of(space.resolve(_expr(state), space.assignment_of(hyperopt_trial)))
    trial._RESOLVED[(search.parent_run_id, hyperopt_trial["tid"])] = tuple(seen)
    if is_cancelled:
        reason = getattr(state.trials, "fmin_cancelled_reason", None) or "cancelled"
        outcome = trial.Outcome.of(None, None, cancelled=True, reason=f"cancelled by SparkTrials: {reason}")
    elif is_success:
        outcome = trial.Outcome.of(data, None)
    else:
        outcome = trial.Outcome.of(None, data if isinstance(data, BaseException) else RuntimeError(str(data)))
    captured = report.get("captured") or {}
    own_params = captured.get("params") or {}
    # A param the objective logged is kept as it logged it; hyperopt's point fills in the rest.
    batch = outcome.batch({k: v for k, v in seen[0].items() if k not in own_params}, duration)
    batch["params"] += [Param(k, v) for k, v in own_params.items()]
    batch["metrics"] += [Metric(*m) for m in captured.get("metrics") or ()]
    batch["tags"] += [RunTag(k, v) for k, v in (captured.get("tags") or {}).items()]
    client = trial._client(search.tracking_uri)
    trial.write_end(client, search, run, batch, outcome.status, end_time, background=False)


def _expr(state):
    expr = getattr(state, "_mlflow_team_expr", None)
    if expr is None:
        from hyperopt.pyll import as_apply

        expr = state._mlflow_team_expr = as_apply(state.space)
    return expr


# --- executor -----------------------------------------------------------------------------


def _task_trial() -> dict | None:
    """The trial this Spark task evaluates, from its local property; None outside such a task."""
    try:
        from pyspark import TaskContext

        task = TaskContext.get()
        value = task.getLocalProperty(TRIAL_PROPERTY) if task is not None else None
        return json.loads(value) if value is not None else None
    except Exception as exc:  # noqa: BLE001 - no trial: the objective runs as it would without us
        _logger.warning("mlflow-team hyperopt autologging: this Spark task's trial is unknown (%s)", exc)
        return None


#: ``tracking URI -> why it cannot be reached ("" when it can)``, per executor process.
_REACHABLE: dict[str, str] = {}
_APPLIED_AUTOLOG: list[str] = []  # the autologging settings this executor process last applied


class _Executor:
    """One trial in an executor: the objective inside the trial's run."""

    def __init__(self, context: ExecutorContext, launched: dict) -> None:
        self.context = context
        self.launched = launched
        self.report: dict = {}

    def run(self, fn, args, kwargs):
        seen = None
        if len(args) == 1 and not kwargs:
            try:
                seen = space.params_of(args[0])
            except Exception:  # noqa: BLE001 - the driver resolves the point itself
                seen = None
        entered = None
        try:
            entered = self._enter()
        except Exception as exc:  # noqa: BLE001 - the objective still runs; the driver logs the trial
            trial._report(exc)
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._leave(entered, failed=True)
            self._finish(seen, time.perf_counter() - started)
            try:
                exc.__dict__[REPORT_KEY] = self.report
            except Exception:  # noqa: BLE001 - an exception without a __dict__ carries no report
                pass
            raise
        self._leave(entered, failed=False)
        self._finish(seen, time.perf_counter() - started)
        return _with_report(result, self.report)

    def _finish(self, seen, duration: float) -> None:
        self.report["duration"] = duration
        if seen is not None:
            self.report["params"] = seen

    def _enter(self):
        context = self.context
        previous_env = _set_env(context)
        try:
            return self._enter_with(context, previous_env)
        except BaseException:
            _restore_env(previous_env)
            raise

    def _enter_with(self, context: ExecutorContext, previous_env: dict):
        import mlflow
        from mlflow.entities import Run, RunData, RunInfo, RunStatus, RunTag
        from mlflow.tracking.fluent import _active_run_stack

        from mlflow_team.hyperopt import scope

        why = _unreachable(context)
        own_run = bool(self.launched.get("run_id")) or bool(why)  # log_trial_runs=False: no trial run
        if why:
            self.report["unreachable"] = why
            uri, client = _scratch()
            run = client.create_run(_scratch_experiment(client), run_name=self.launched.get("run_name"))
        elif not own_run:
            uri, client, run = context.tracking_uri, _LazyClient(context.tracking_uri), None
        else:
            # built on first use: an objective that logs nothing never opens the store here
            uri, client = context.tracking_uri, _LazyClient(context.tracking_uri)
            launched = self.launched
            run = Run(
                RunInfo(
                    run_id=launched["run_id"], experiment_id=launched["experiment_id"], user_id=launched["user_id"],
                    status=RunStatus.to_string(RunStatus.RUNNING), start_time=launched["start_time"], end_time=None,
                    lifecycle_stage="active", artifact_uri=launched["artifact_uri"], run_name=launched["run_name"],
                ),
                RunData(tags=[RunTag(k, v) for k, v in (launched.get("tags") or {}).items()]),
            )
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(context.registry_uri if not why else uri)
        experiment_id = run.info.experiment_id if run is not None else context.experiment_id
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
        _autolog(context)
        if run is not None:
            _active_run_stack.get().append(mlflow.ActiveRun(run))
        search = trial.SearchContext(parent_run_id=context.parent_run_id, experiment_id=experiment_id, tracking_uri=uri)
        previous_trial = scope.enter(run.info.run_id if own_run else None, search, client)
        return run, client, bool(why), previous_env, previous_trial

    def _leave(self, entered, failed: bool) -> None:
        if entered is None:
            return
        run, client, scratch, previous_env, previous_trial = entered
        try:
            import mlflow
            from mlflow.tracking.fluent import _active_run_stack

            from mlflow_team.hyperopt import scope

            scope.leave(previous_trial)
            if run is None:
                return
            stack = _active_run_stack.get()
            run_id = run.info.run_id
            if any(active.info.run_id == run_id for active in stack):
                while stack and stack[-1].info.run_id != run_id:
                    mlflow.end_run("FAILED" if failed else "FINISHED")  # a run the objective left open
                stack.pop()
            if scratch:
                self.report["captured"] = _captured(client, run_id)
                client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        except Exception as exc:  # noqa: BLE001
            trial._report(exc)
        finally:
            _restore_env(previous_env)


class _LazyClient:
    """The search's ``MlflowClient`` in an executor, built when first used (building it opens the store)."""

    def __init__(self, uri: str) -> None:
        self._uri = uri

    def __getattr__(self, name: str):
        return getattr(trial._client(self._uri), name)


def _with_report(result, report: dict):
    """The objective's result with the executor's report for the driver (a bare loss as hyperopt reads it)."""
    if isinstance(result, dict):
        return {**result, REPORT_KEY: report}
    try:
        import numpy as np

        if isinstance(result, (float, int, np.number)):
            return {"loss": float(result), "status": "ok", REPORT_KEY: report}
    except Exception:  # noqa: BLE001
        pass
    return result  # hyperopt says what is wrong with it


def _set_env(context: ExecutorContext) -> dict:
    """The driver's author always, the rest of its carried variables where this executor lacks them."""
    from mlflow_team import config

    wanted = {k: v for k, v in context.env.items() if k not in os.environ}
    if context.author:
        wanted[config.AUTHOR_ENV] = context.author
    previous = {k: os.environ.get(k) for k in wanted}
    previous["MLFLOW_EXPERIMENT_ID"] = os.environ.get("MLFLOW_EXPERIMENT_ID")
    os.environ.update(wanted)
    return previous


def _restore_env(previous: dict) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _unreachable(context: ExecutorContext) -> str:
    """Why this executor cannot reach the search's tracking store ("" if it can); asked once per process."""
    uri = context.tracking_uri
    if uri not in _REACHABLE:
        _REACHABLE[uri] = _probe(uri, context.experiment_id)
    return _REACHABLE[uri]


def _probe(uri: str, experiment_id: str) -> str:
    """As cheap as the store allows: a SQLite file is there or not; a server answers ``/health``
    (any HTTP answer will do); a database is asked for the search's experiment."""
    from mlflow_team import redact

    scheme, _, rest = uri.partition(":///")
    if scheme.split("+")[-1] == "sqlite":
        path = rest.split("?")[0]
        # opening a missing file would create an empty database here
        return "" if os.path.exists(path) else f"the database file {path} is not on this executor"
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
            requests.get(uri.rstrip("/") + "/health", timeout=10, verify=not insecure)
            return ""
        except Exception as exc:  # noqa: BLE001 - any failure means: not reachable from here
            return redact.mask_secrets(f"{type(exc).__name__}: {exc}", uri)[:500]
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    try:
        trial._client(uri).get_experiment(experiment_id)
        return ""
    except Exception as exc:  # noqa: BLE001 - any failure means: not reachable from here
        return redact.mask_secrets(f"{type(exc).__name__}: {exc}", uri)[:500]
    finally:
        _restore_env(saved)


_scratch_lock = threading.Lock()
_SCRATCH: list[str] = []


def _scratch():
    """A store of this executor's own for an objective that cannot reach the search's."""
    with _scratch_lock:
        if not _SCRATCH:
            folder = tempfile.mkdtemp(prefix="mlflow-team-scratch-")
            _SCRATCH.append(f"sqlite:///{folder}/mlflow.db")
    return _SCRATCH[0], trial._client(_SCRATCH[0])


def _scratch_experiment(client) -> str:
    experiment = client.get_experiment_by_name("hyperopt-trials")
    return experiment.experiment_id if experiment else client.create_experiment("hyperopt-trials")


def _captured(client, run_id: str) -> dict:
    """What the objective logged to the scratch store: params, metric histories, its own tags."""
    data = client.get_run(run_id).data
    metrics = []
    for key in data.metrics:
        metrics += [(m.key, m.value, m.timestamp, m.step) for m in client.get_metric_history(run_id, key)]
    tags = {k: v for k, v in data.tags.items() if not k.startswith("mlflow.")}
    return {"params": dict(data.params), "metrics": metrics, "tags": tags}


def _autolog(context: ExecutorContext) -> None:
    """The driver's autologging settings, applied in this executor process (again only when they change)."""
    key = repr((sorted(context.hyperopt_config.items()), sorted((k, sorted(v.items())) for k, v in context.frameworks.items())))
    if _APPLIED_AUTOLOG and _APPLIED_AUTOLOG[0] == key:
        return
    import importlib

    import mlflow_team.hyperopt as team_hyperopt

    settings = {k: v for k, v in context.hyperopt_config.items() if k != "disable"}
    team_hyperopt.autolog(**settings)  # the objective's own start_run() becomes the trial's run here too
    for flavor, config in context.frameworks.items():
        try:
            importlib.import_module(f"mlflow.{flavor}").autolog(**config)
        except Exception as exc:  # noqa: BLE001 - the trial runs; that framework is not autologged here
            _logger.warning("mlflow-team: %s autologging could not be turned on in a Spark executor (%s)", flavor, exc)
    _APPLIED_AUTOLOG[:] = [key]


def local_session(cores: int = 2, conf: dict | None = None, imports: tuple[str, ...] = ()):
    """A Spark session on this machine (``local[cores]``) whose executors run this Python (and so
    find the packages of its environment), forked with MLflow and ``imports`` (the objective's
    libraries, e.g. ``("xgboost", "sklearn")``) already imported (``daemon``), without the web UI,
    bound to the loopback interface."""
    import shutil
    import sys

    from pyspark.sql import SparkSession

    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise RuntimeError(NO_JAVA)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # read by pyspark itself, not from the conf
    builder = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("mlflow-team")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        # workers forked with MLflow already imported: a trial's task does not import it again
        .config("spark.python.daemon.module", "mlflow_team.hyperopt.daemon")
    )
    if imports:
        builder = builder.config("spark.executorEnv.MLFLOW_TEAM_SPARK_IMPORTS", ",".join(imports))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
