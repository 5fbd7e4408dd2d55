"""Fixtures of the hyperopt autologging tests (both modules search on the same kind of store)."""

from __future__ import annotations

import sys

import mlflow
import pytest


@pytest.fixture(scope="module")
def database(tmp_path_factory, request):
    """One team+sqlite database per module: it is slow to create."""
    return f"team+sqlite:///{tmp_path_factory.mktemp(request.module.__name__.rsplit('.', 1)[-1])}/mlflow.db"


def disable_framework_autologging():
    """``mlflow.autolog(disable=True)`` leaves alone an integration turned on by its own call
    (``mlflow.xgboost.autolog()``): without this, a test's xgboost autologging (models included)
    would go on in every later test. Only those (an integration's own call, even to disable it,
    keeps a later ``mlflow.autolog()`` from configuring it)."""
    from mlflow.utils.autologging_utils import autologging_is_disabled

    for flavor in ("xgboost", "sklearn"):
        if flavor in sys.modules and not autologging_is_disabled(flavor):
            getattr(mlflow, flavor).autolog(disable=True)


@pytest.fixture
def experiment(database, request, monkeypatch):
    """An experiment of its own per test, hyperopt autologging on; everything off afterwards.

    Under MLFLOW_AUTOLOGGING_TESTING, as MLflow tests its own integrations: an error of the
    integration's own code fails the test instead of becoming a warning (the tests of that warning
    turn it off themselves)."""
    import mlflow_team.hyperopt as team_hyperopt

    monkeypatch.setenv("MLFLOW_AUTOLOGGING_TESTING", "true")

    mlflow.set_tracking_uri(database)
    experiment = mlflow.set_experiment(f"{request.module.EXPERIMENT_PREFIX}/{request.node.name}")
    team_hyperopt.autolog()
    yield experiment.experiment_id
    team_hyperopt.autolog(disable=True)
    mlflow.autolog(disable=True)
    disable_framework_autologging()
    while mlflow.active_run():  # a failed test leaves no run behind for the next
        mlflow.end_run()
