"""The contract holds twice: with mlflow-team's accelerators, and on MLflow's own paths.

``mlflow-paths`` switches every accelerator group off exactly as a failed start-up probe would
(:mod:`mlflow_team.store.compat`), so the suite shows that the fallback a new MLflow minor
would get is as right as the fast path, and that the policy holds on it.
"""

from __future__ import annotations

import pytest

from mlflow_team.store import compat

ACCELERATORS = "engine,sessions,schema,lean,search"


@pytest.fixture(autouse=True, params=["accelerated", "mlflow-paths"])
def accelerators(request, monkeypatch):
    if request.param == "mlflow-paths":
        monkeypatch.setenv(compat.DISABLE_ENV, ACCELERATORS)
    compat.reset()
    yield request.param
    monkeypatch.delenv(compat.DISABLE_ENV, raising=False)
    compat.reset()
