"""The objective's own runs during a trial (the patches of ``mlflow.start_run`` and ``mlflow.end_run``).

Objectives written before autologging open their own run (the course's ``with mlflow.start_run():``).
Under autologging the trial's run is already active there, and MLflow would refuse a second
top-level run ("Run with UUID ... is already active"). So, while a trial of an autologged search
runs in this thread, and only then:

- ``mlflow.start_run()`` (not nested; with or without ``run_name``, ``tags``, ``description``) is
  the trial's run itself: the tags land on it (the run keeps its name ``trial-<tid>``), nothing is
  created. Leaving it (its ``with`` block, ``mlflow.end_run()``) leaves it active: the trial ends
  it, with its loss, duration and status. ``mlflow.end_run()`` never ends the trial's run.
- ``mlflow.start_run(nested=True)`` is MLflow's own: a child of the trial's run.
- a run the objective asks for by another ``run_id``, ``experiment_id`` or ``parent_run_id`` is
  MLflow's own too, made nested (under the trial's run) instead of refused.
- with ``log_trial_runs=False`` there is no trial run: the objective's runs are children of the
  search's parent run, in the search's thread and in any other.

Anywhere else both functions are MLflow's, called as they were. MLflow's ``start_run`` raises
for a non-nested run while any run is active, whatever its ``run_id`` (3.12 to 3.17); resuming the
trial's run through it (``run_id=..., nested=True``) would also write its status twice and end it
when the objective's block exits, so the trial's run is handed back without a call.

The patches are gorilla patches stored with the integration's others (reverted by
``autolog(disable=True)``), plain ones rather than ``safe_patch``: a ``start_run`` is no training
call to open an autologging session for. A failure of this code is a warning (raised under
``MLFLOW_AUTOLOGGING_TESTING``) and the call goes to MLflow unchanged; MLflow's own errors, and
the store's refusal of the tags the objective asked for, reach the objective as they would.
"""

from __future__ import annotations

import inspect

from mlflow.entities import RunTag
from mlflow.tracking.fluent import ActiveRun, _active_run_stack

from mlflow_team.hyperopt import scope
from mlflow_team.hyperopt.scope import Trial

_NOTE_TAG = "mlflow.note.content"  # where MLflow keeps a run's description


class _ObjectiveRun(ActiveRun):
    """The trial's run as the objective's ``start_run()`` returns it: leaving it ends nothing."""

    def __exit__(self, exc_type, exc_val, exc_tb):
        return exc_type is None  # as MLflow's: an exception goes on to the trial, which ends FAILED


def install(flavor: str) -> None:
    """Patch ``mlflow.start_run`` and ``mlflow.end_run``; stored with ``flavor``'s patches."""
    import mlflow
    from mlflow.utils import gorilla
    from mlflow.utils.autologging_utils.safety import _store_patch, _wrap_patch, update_wrapper_extended

    for name, patch in (("start_run", start_run), ("end_run", end_run)):
        original = gorilla.get_original_attribute(mlflow, name)
        _store_patch(flavor, _wrap_patch(mlflow, name, update_wrapper_extended(_bound(patch, original), original)))


def _bound(patch, original):
    def patched(*args, **kwargs):
        return patch(original, *args, **kwargs)

    return patched


def start_run(original, *args, **kwargs):
    trial = scope.current()
    if trial is None:
        return original(*args, **kwargs)
    try:
        plan, arguments = _plan(original, trial, args, kwargs)
        if plan is _ADOPT:
            run, tags = _ObjectiveRun(_active_run_stack.get()[-1]), _tags_of(arguments)
    except Exception as exc:
        _report(exc)
        plan = None
    if plan is None:
        return original(*args, **kwargs)
    if plan is _ADOPT:
        if tags:  # the objective's own write: a refusal reaches it, as from MLflow's start_run
            trial.client.log_batch(trial.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return run
    return original(**arguments)


def end_run(original, *args, **kwargs):
    trial = scope.current()
    if trial is not None and trial.run_id is not None:
        try:
            if _top() == trial.run_id:
                return None  # the trial's run: the trial ends it
        except Exception as exc:
            _report(exc)
    return original(*args, **kwargs)


_ADOPT, _CALL = object(), object()


def _plan(original, trial: Trial, args, kwargs) -> tuple[object, dict]:
    """``(_ADOPT, arguments)``: the trial's run is the objective's; ``(_CALL, arguments)``: MLflow's
    call with these arguments instead; ``(None, ...)``: MLflow's call as it was."""
    try:
        arguments = dict(inspect.signature(original).bind(*args, **kwargs).arguments)
    except TypeError:
        return None, {}  # MLflow says what is wrong with the call
    run_id, parent_run_id = arguments.get("run_id"), arguments.get("parent_run_id")
    experiment_id = arguments.get("experiment_id")
    experiment_id = None if experiment_id is None else str(experiment_id)
    nested = bool(arguments.get("nested"))
    top = _top()
    if trial.run_id is not None:
        if top != trial.run_id:
            return None, arguments  # a run of the objective's own is active: MLflow decides
        if run_id == trial.run_id or (
            not nested and run_id is None and parent_run_id in (None, trial.parent_run_id)
            and experiment_id in (None, trial.experiment_id)
        ):
            return _ADOPT, arguments
        return (None, arguments) if nested else (_CALL, {**arguments, "nested": True})
    # log_trial_runs=False: the objective's runs are children of the search's parent run
    if top is None:
        if run_id is not None or parent_run_id is not None:
            return None, arguments
        return _CALL, {**arguments, "parent_run_id": trial.parent_run_id,
                       "experiment_id": experiment_id or trial.experiment_id}
    if top != trial.parent_run_id or nested:
        return None, arguments
    return _CALL, {**arguments, "nested": True}


def _tags_of(arguments: dict) -> dict[str, str]:
    """The tags (and description) the objective's ``start_run`` asked for."""
    tags = {str(k): str(v) for k, v in (arguments.get("tags") or {}).items()}
    if arguments.get("description"):
        tags[_NOTE_TAG] = str(arguments["description"])
    return tags


def _top() -> str | None:
    stack = _active_run_stack.get()
    return stack[-1].info.run_id if stack else None


def _report(exc: Exception) -> None:
    from mlflow_team.hyperopt import trial

    trial._report(exc)  # a warning; raised under MLFLOW_AUTOLOGGING_TESTING
