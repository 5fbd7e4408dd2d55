"""``create_app``: MLflow's server app with the team's hooks, composed with MLflow's basic-auth.

``--app-name`` takes one app, so the team app runs MLflow's ``basic-auth`` itself where the
policy says ``[server] auth = "basic"``. Under uvicorn (MLflow's default server) the Flask app is
wrapped in MLflow's FastAPI app, as ``mlflow server`` without ``--app-name`` does, and every
connection gets ``TCP_NODELAY`` (:mod:`mlflow_team.server.keepalive`: no 40 ms keep-alive stall).
"""

from __future__ import annotations

import os
from typing import Any

from mlflow_team import config
from mlflow_team.server.keepalive import no_delay


#: The hooks, in the order Flask runs their before-request functions.
_INSTALLERS: tuple[str, ...] = (
    "mlflow_team.server.requests:install",
    "mlflow_team.server.reaper:install",
    "mlflow_team.server.health:install",
    "mlflow_team.server.guards:install",
)


def create_app(app: Any = None) -> Any:
    """The WSGI (gunicorn, waitress) or ASGI (uvicorn) app ``mlflow server --app-name team`` serves."""
    import importlib

    from mlflow.server import app as flask_app

    app = flask_app if app is None else app
    team_policy = config.load_policy()
    for spec in _INSTALLERS:
        module, name = spec.split(":")
        getattr(importlib.import_module(module), name)(app, team_policy)
    if team_policy.server.auth == "basic":
        from mlflow.server.auth import create_app as basic_auth

        return no_delay(basic_auth(app))  # wraps in FastAPI itself under uvicorn
    if os.environ.get("_MLFLOW_SGI_NAME") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return no_delay(create_fastapi_app(app))
    return app
