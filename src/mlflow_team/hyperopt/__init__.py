"""Hyperopt autologging: every ``fmin`` a parent run, every trial a nested run.

    import mlflow_team.hyperopt
    mlflow_team.hyperopt.autolog()

Built on MLflow's autologging framework (``autologging_integration``, ``safe_patch``): the
user's own exceptions pass through untouched, a failure of the integration becomes a warning
(an exception under ``MLFLOW_AUTOLOGGING_TESTING``), ``autolog(disable=True)`` turns it off.
It can be called before or after ``import hyperopt``.
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
) -> None:
    """Log every hyperopt search to MLflow.

    Args:
        disable: turn hyperopt autologging off (and undo its patches).
        silent: no MLflow event logs or warnings from autologging.
        exclusive: do not log into a run the user started (a search inside ``mlflow.start_run()``
            is then left alone).
        log_trial_runs: a nested run per trial (``trial-<tid>``), active while the objective runs.
        log_plots: PNG plots on the parent run (loss by trial, loss against each numeric param).
    """
    from mlflow.utils.import_hooks import register_post_import_hook

    register_post_import_hook(_patch, "hyperopt", overwrite=True)


def _patch(hyperopt_module) -> None:
    """Runs when hyperopt is imported (or at once if it already is); never fails the import."""
    try:
        from hyperopt.base import Domain
        from hyperopt.fmin import FMinIter
        from mlflow.utils.autologging_utils import safe_patch

        from mlflow_team.hyperopt import search, trial

        safe_patch(FLAVOR_NAME, FMinIter, "exhaust", search.exhaust)
        safe_patch(FLAVOR_NAME, Domain, "evaluate", trial.evaluate)
    except Exception as exc:
        import logging

        logging.getLogger(__name__).warning(
            "mlflow-team: hyperopt autologging could not be set up (%s); searches are not logged.", exc
        )
