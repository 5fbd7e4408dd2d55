"""One ``fmin`` as a parent MLflow run (the patch of ``hyperopt.fmin.FMinIter.exhaust``).

``FMinIter.exhaust`` is where every ``fmin`` (``hyperopt.fmin``, ``Trials.fmin``, a resumed
``trials_save_file``) runs its search, so patching it catches calls made through a reference
taken before autologging was turned on (``from hyperopt import fmin``).

The parent run is the active run, or one this creates and ends. It gets the search's settings as
params when the search starts, and when it ends: the best point as ``best.*`` params, counts,
best loss and time as metrics, why it stopped as a tag, and artifacts (the search space as JSON,
``trials.csv``, plots).
"""

from __future__ import annotations

import logging
import math
import time

from mlflow_team.hyperopt import report, trial

_logger = logging.getLogger(__name__)

TAG_STOP_REASON = "hyperopt.stop_reason"
TAG_BEST_TID = "hyperopt.best_tid"
TAG_BEST_RUN_ID = "hyperopt.best_run_id"
#: hyperopt attachment of a Trials object: the parent run of the last search that used it.
PARENT_ATTACHMENT = "mlflow_team.parent_run_id"
TAG_RESUMED_FROM = "hyperopt.resumed_from"


def exhaust(original, fmin_iter, *args, **kwargs):
    """``FMinIter.exhaust`` inside a parent run, with a summary when the search ends."""
    import mlflow

    from mlflow_team.hyperopt import FLAVOR_NAME
    from mlflow.utils.autologging_utils import get_autologging_config

    domain, trials = fmin_iter.domain, fmin_iter.trials
    if getattr(domain, trial.PARENT_ATTRIBUTE, None) is not None:  # a search inside a search
        return original(fmin_iter, *args, **kwargs)

    own_run = mlflow.active_run() is None
    previous_parent = _attachment(trials, PARENT_ATTACHMENT)
    tags = {TAG_RESUMED_FROM: previous_parent} if previous_parent else {}
    extra_tags = {str(k): str(v) for k, v in (get_autologging_config(FLAVOR_NAME, "extra_tags") or {}).items()}
    if own_run:
        run = mlflow.start_run(
            run_name=f"hyperopt-{report.algo_name(fmin_iter.algo)}",
            tags={**extra_tags, **tags, trial.TAG_AUTOLOGGING: FLAVOR_NAME},
        )
    else:
        run = mlflow.active_run()
    run_id = run.info.run_id
    before = {t["tid"] for t in trials._dynamic_trials}
    objective = domain.fn
    try:
        search = trial.SearchContext(
            parent_run_id=run_id,
            experiment_id=run.info.experiment_id,
            tracking_uri=mlflow.get_tracking_uri(),
            registry_uri=mlflow.get_registry_uri(),
            log_trial_runs=bool(get_autologging_config(FLAVOR_NAME, "log_trial_runs", True)),
            tags=tuple({**_context_tags(), **_inherited_tags(run_id), **extra_tags}.items()),
        )
        _start(fmin_iter, run_id, tags if not own_run else {}, before)
        stop = _StopRecorder(fmin_iter)
        domain.fn = trial.PointRecorder(objective)
        setattr(domain, trial.PARENT_ATTRIBUTE, search)
        setattr(trials, trial.PARENT_ATTRIBUTE, search)  # SparkTrials launches trials from its own domain
        _republish_domain(fmin_iter)
        if trials.attachments is not None:
            trials.attachments[PARENT_ATTACHMENT] = run_id.encode()
    except Exception:
        _leave(domain, trials, objective)
        if own_run:
            mlflow.end_run("FAILED")
        raise  # safe_patch reports it as a warning and runs the search without autologging

    started = time.perf_counter()
    try:
        result = original(fmin_iter, *args, **kwargs)
    except BaseException as exc:
        trial._guarded(lambda: _leave(domain, trials, objective))
        trial._guarded(lambda: _flush_trials(search.key))
        reason = _reason_of(exc)
        trial._guarded(lambda: _summarise(fmin_iter, run_id, time.perf_counter() - started, reason, before))
        if own_run:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            trial._guarded(lambda: mlflow.end_run(status))
        raise
    try:
        _leave(domain, trials, objective)
        trial._guarded(lambda: _flush_trials(search.key))
        _summarise(fmin_iter, run_id, time.perf_counter() - started, stop.reason(started), before)
    finally:
        if own_run:
            mlflow.end_run("FINISHED")
    return result


def _leave(domain, trials, objective) -> None:
    """The domain as it was before the search: its own objective, no parent run."""
    domain.fn = objective
    delattr(domain, trial.PARENT_ATTRIBUTE)


def _start(fmin_iter, run_id: str, tags: dict, before: set) -> None:
    """The search's settings, as params, in one batch."""
    from mlflow.entities import Param, RunTag

    queued = sum(1 for t in fmin_iter.trials._dynamic_trials if t["state"] == 0)  # JOB_STATE_NEW
    settings = {
        "algo": report.algo_name(fmin_iter.algo),
        "max_evals": fmin_iter.max_evals,
        "timeout": fmin_iter.timeout,
        "loss_threshold": fmin_iter.loss_threshold,
        "seed": report.seed_of(fmin_iter.rstate),
        "early_stop_fn": report.callable_name(fmin_iter.early_stop_fn),
        "max_queue_len": fmin_iter.max_queue_len,
        "points_to_evaluate": queued or None,
        "trials_before": (len(before) - queued) or None,
    }
    trial.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in settings.items() if v is not None],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


def _summarise(fmin_iter, run_id: str, seconds: float, reason: str, before: set) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from mlflow_team.hyperopt import FLAVOR_NAME
    from mlflow.utils.autologging_utils import get_autologging_config

    trials, domain = fmin_iter.trials, fmin_iter.domain
    table = report.TrialTable(
        domain.expr, trials, known=lambda tid: trial.resolved(run_id, tid), run_of=lambda tid: trial.run_id_of(run_id, tid)
    )
    now = int(time.time() * 1000)
    metrics = {f"trials_{status}": count for status, count in table.counts().items()}
    metrics["trials_evaluated"] = sum(1 for row in table.rows if row["tid"] not in before)
    metrics["total_time_s"] = seconds
    tags = {TAG_STOP_REASON: reason}
    params = {}
    best = table.best()
    if best is not None:
        if best["loss"] is not None and math.isfinite(best["loss"]):
            metrics["best_loss"] = best["loss"]
        tags[TAG_BEST_TID] = str(best["tid"])
        if best["run_id"]:
            tags[TAG_BEST_RUN_ID] = best["run_id"]
        params = {f"best.{k}": v for k, v in best["params"].items()}
    trial.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client = MlflowClient()
    client.log_text(run_id, report.space_json(domain.expr), "hyperopt/search_space.json")
    client.log_text(run_id, table.csv(), "hyperopt/trials.csv")
    if get_autologging_config(FLAVOR_NAME, "log_plots", True) and table.rows and not _without_matplotlib():
        for name, figure in report.plots(table):
            client.log_figure(run_id, figure, f"hyperopt/{name}.png")


def _without_matplotlib() -> bool:
    """The plots need matplotlib (the hyperopt extra): without it, say so and log the rest."""
    from mlflow_team import extras

    return extras.warn_if_missing("matplotlib", "the plots of hyperopt autologging", "the search is logged without plots")


class _StopRecorder:
    """Wraps the search's ``early_stop_fn`` to learn whether it is what ended the search."""

    def __init__(self, fmin_iter) -> None:
        self.fmin_iter = fmin_iter
        self.early_stopped = False
        user_fn = fmin_iter.early_stop_fn
        if user_fn is not None:
            def early_stop_fn(*args, **kwargs):
                stop, more = user_fn(*args, **kwargs)
                if stop:
                    self.early_stopped = True
                return stop, more

            fmin_iter.early_stop_fn = early_stop_fn

    def reason(self, started: float) -> str:
        it = self.fmin_iter
        if self.early_stopped:
            return "early_stop_fn"
        if getattr(it, "is_cancelled", False):
            # SparkTrials cancels for its timeout and early_stop_fn itself, and says which
            why = str(getattr(it.trials, "fmin_cancelled_reason", None) or "")
            return {"fmin run timeout": "timeout", "early stopping condition": "early_stop_fn"}.get(why, "cancelled")
        losses = [loss for loss in it.trials.losses() if loss is not None and not math.isnan(loss)]
        if it.loss_threshold is not None and losses and min(losses) < it.loss_threshold:
            return "loss_threshold"
        if it.timeout is not None and time.perf_counter() - started >= it.timeout:
            return "timeout"
        if len(it.trials) >= it.max_evals:
            return "max_evals"
        return "search_space_exhausted"


def _flush_trials(key: str) -> None:
    """Wait for this search's trial runs' last writes (not another search's); report any that failed."""
    from mlflow_team.hyperopt import finisher

    failures = finisher.flush(key)
    if failures:
        raise RuntimeError("could not complete " + "; ".join(failures))


def _context_tags() -> dict[str, str]:
    """The run context MLflow gives every new run (source, user, git commit, author), once per
    search instead of once per trial."""
    from mlflow.tracking.context import registry

    return {k: str(v) for k, v in registry.resolve_tags({}).items()}


def _inherited_tags(run_id: str) -> dict[str, str]:
    """The parent's tags a trial run carries too: the team's conventional keys and the local
    policy's required tags (a trial run under a required-tags policy needs them as well)."""
    from mlflow import MlflowClient

    from mlflow_team import config, policy

    # Stamped tags (team.author) only the server writes: a client that copied them is refused.
    keys = {"team.name", "team.project", *config.load_policy().required_tags} - set(policy.STAMPED_TAGS)
    tags = MlflowClient().get_run(run_id).data.tags
    return {key: tags[key] for key in sorted(keys) if key in tags}


def _reason_of(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"error: {type(exc).__name__}: {exc}"[:5000]


def _republish_domain(fmin_iter) -> None:
    """Asynchronous Trials hand workers a pickled domain made in ``FMinIter.__init__``; publish
    it again so workers in other processes see the parent run."""
    trials = fmin_iter.trials
    if fmin_iter.asynchronous and "FMinIter_Domain" in (trials.attachments or {}):
        from hyperopt.utils import pickler

        trials.attachments["FMinIter_Domain"] = pickler.dumps(fmin_iter.domain)


def _attachment(trials, key: str) -> str | None:
    try:
        value = (trials.attachments or {}).get(key)
    except Exception:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    return value or None
