"""Hyperopt autologging: every ``fmin`` a parent run, every trial a nested run.

    import mlflow_team.hyperopt
    mlflow_team.hyperopt.autolog()

Built on MLflow's autologging framework (``autologging_integration``, ``safe_patch``): the
user's own exceptions pass through untouched, a failure of the integration becomes a warning
(an exception under ``MLFLOW_AUTOLOGGING_TESTING``), ``autolog(disable=True)`` turns it off.
It can be called before or after ``import hyperopt``.

An objective that opens its own run (``with mlflow.start_run():``, as written before autologging)
gets the trial's run, and ``start_run(nested=True)`` a child of it (``runs``).
"""

from __future__ import annotations

from mlflow.utils.autologging_utils import autologging_integration

FLAVOR_NAME = "hyperopt"


@autologging_integration(FLAVOR_NAME)
def autolog(
    disable: bool = False,
    silent: bool = False,
    exclusive: bool = False,
    log_trial_runs: bool = True,
    log_plots: bool = True,
    extra_tags: dict[str, str] | None = None,
) -> None:
    """Log every hyperopt search to MLflow.

    Args:
        disable: turn hyperopt autologging off (and undo its patches).
        silent: no MLflow event logs or warnings from autologging.
        exclusive: do not log into a run the user started (a search inside ``mlflow.start_run()``
            is then left alone).
        log_trial_runs: a nested run per trial (``trial-<tid>``), active while the objective runs.
        log_plots: PNG plots on the parent run (loss by trial, loss against each numeric param).
        extra_tags: tags for every run this creates (a policy's required tags, for example).
            Trial runs also inherit the parent's ``team.name``, ``team.project`` and the
            policy's required tags.
    """
    from mlflow.utils.import_hooks import register_post_import_hook

    from mlflow_team import extras
    from mlflow_team.store import compat

    if not disable and not _installed("hyperopt") and extras.warn_if_missing(
        "hyperopt", "mlflow_team.hyperopt.autolog()", "hyperopt searches are not logged"
    ):
        return
    if not disable and not compat.use("hyperopt"):
        return  # compat logged why, once: a search then runs exactly as without autologging
    register_post_import_hook(_patch, "hyperopt", overwrite=True)


def _installed(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (autolog may come first)."""
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except ValueError:  # in sys.modules as None: its imports are blocked
        return False


def _patch(hyperopt_module) -> None:
    """Runs when hyperopt is imported (or at once if it already is); never fails the import."""
    try:
        from hyperopt.base import Domain
        from hyperopt.fmin import FMinIter
        from mlflow.utils.autologging_utils import safe_patch

        from mlflow_team.hyperopt import runs, scope, search

        safe_patch(FLAVOR_NAME, FMinIter, "exhaust", search.exhaust)
        _patch_trials(Domain)
        _patch_spark()
        runs.install(FLAVOR_NAME)  # an objective's own mlflow.start_run() during a trial
        scope.install(FLAVOR_NAME)  # an autologging session per trial, in its thread
    except Exception as exc:
        import logging

        logging.getLogger(__name__).warning(
            "mlflow-team: hyperopt autologging could not be set up (%s); searches are not logged.", exc
        )


def _patch_spark() -> None:
    """SparkTrials' launch and end of a trial (``hyperopt.spark._SparkFMinState``), where pyspark is
    installed: the driver creates and ends each trial's run, the executor logs into it (``spark``)."""
    import importlib

    from mlflow_team.store import compat

    hyperopt_spark = importlib.import_module("hyperopt.spark")
    if not getattr(hyperopt_spark, "_have_spark", False) or not compat.use("spark"):
        return
    from mlflow_team.hyperopt import spark

    state = hyperopt_spark._SparkFMinState  # its two methods are checked by the "spark" probe
    _patch_method(state, "_run_trial_async", spark.run_trial_async)
    _patch_method(state, "_finish_trial_run", spark.finish_trial_run)
    if compat.use("spark-polling"):  # the polls wake when a trial ends (spark.PromptPolling)
        hyperopt_fmin = importlib.import_module("hyperopt.fmin")  # the module (hyperopt.fmin is also the function)
        _patch_attribute(hyperopt_fmin, "time", spark.PROMPT.fmin_time())
        _patch_attribute(hyperopt_spark, "time", spark.PROMPT.dispatcher_time())
        _patch_method(state, "wait_for_all_threads", spark.wait_for_all_threads)


def _patch_attribute(owner, name: str, value) -> None:
    """``owner.name`` replaced by ``value`` while autologging is on (reverted with the others)."""
    from mlflow.utils.autologging_utils.safety import _store_patch, _wrap_patch

    _store_patch(FLAVOR_NAME, _wrap_patch(owner, name, value))


def _patch_method(owner, name: str, patch) -> None:
    """``owner.name`` replaced by ``patch(original, self, ...)`` while autologging is on; a gorilla
    patch stored with the integration's others (reverted by ``autolog(disable=True)``)."""
    from mlflow.utils import gorilla
    from mlflow.utils.autologging_utils import autologging_is_disabled
    from mlflow.utils.autologging_utils.safety import _store_patch, _wrap_patch, update_wrapper_extended

    original = gorilla.get_original_attribute(owner, name)

    def patched(self, *args, **kwargs):
        if autologging_is_disabled(FLAVOR_NAME):
            return original(self, *args, **kwargs)
        return patch(original, self, *args, **kwargs)

    _store_patch(FLAVOR_NAME, _wrap_patch(owner, name, update_wrapper_extended(patched, original)))


def _patch_trials(domain_class) -> None:
    """``Domain.evaluate``, patched the way ``safe_patch`` patches (reverted with the others), but
    outside MLflow's autologging session: ``safe_patch`` marks the whole session failed when the
    patched call raises, so one trial whose objective raises would switch autologging off for
    every later trial of the search (and for the frameworks they train)."""
    from mlflow.utils import gorilla
    from mlflow.utils.autologging_utils import autologging_is_disabled
    from mlflow.utils.autologging_utils.safety import _store_patch, _wrap_patch, update_wrapper_extended

    from mlflow_team.hyperopt import trial

    original = gorilla.get_original_attribute(domain_class, "evaluate")

    def evaluate(self, *args, **kwargs):
        if autologging_is_disabled(FLAVOR_NAME):
            return original(self, *args, **kwargs)
        return trial.evaluate(original, self, *args, **kwargs)

    _store_patch(FLAVOR_NAME, _wrap_patch(domain_class, "evaluate", update_wrapper_extended(evaluate, original)))
