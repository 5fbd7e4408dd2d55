"""A colleague without mlflow-team uses a team server: stock MLflow's client, nothing else.

The server runs the team store with the built-in policy and proxies artifacts (the default), so
the client sees `mlflow-artifacts:` URIs and never meets a `team+` scheme: the course's workflow
(log, register, alias, load `models:/name@champion`) works as it would on a stock server, and
the server stamps the author the client claims, marked unverified.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from mlflow import MlflowClient

from tests.conftest import stock_env
from tests.helpers.server import mlflow_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

STOCK_CLIENT = r"""
import json, sys
import mlflow, numpy as np
from sklearn.linear_model import LinearRegression

mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("nyc-taxi-experiment")
with mlflow.start_run() as run:
    mlflow.set_tag("developer", "alexa")
    mlflow.log_param("alpha", 0.1)
    mlflow.log_metric("rmse", 6.5)
    with open("notes.txt", "w") as f:
        f.write("preprocessor")
    mlflow.log_artifact("notes.txt", artifact_path="preprocessor")
    model = LinearRegression().fit(np.array([[1.0], [2.0]]), np.array([2.0, 4.0]))
    mlflow.sklearn.log_model(model, name="model", registered_model_name="nyc-taxi-regressor")
client = mlflow.MlflowClient()
client.set_registered_model_alias("nyc-taxi-regressor", "champion", 1)
loaded = mlflow.pyfunc.load_model("models:/nyc-taxi-regressor@champion")
path = client.download_artifacts(run.info.run_id, "preprocessor/notes.txt", ".")
print(json.dumps({
    "run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri,
    "prediction": loaded.predict(np.array([[3.0]])).tolist(), "notes": open(path).read(),
}))
"""


def test_a_client_without_mlflow_team_runs_the_course_workflow_on_a_team_server(stock_python, tmp_path):
    with mlflow_server(f"team+sqlite:///{tmp_path}/mlflow.db", tmp_path) as url:
        script = tmp_path / "stock_client.py"
        script.write_text(STOCK_CLIENT)
        result = subprocess.run([stock_python, str(script), url], capture_output=True, text=True,
                                cwd=tmp_path, env=stock_env(), timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen["artifact_uri"].startswith("mlflow-artifacts:")
        assert seen["prediction"] == pytest.approx([6.0])
        assert seen["notes"] == "preprocessor"
        run = MlflowClient(url).get_run(seen["run_id"])
        assert run.data.tags["developer"] == "alexa"
        assert run.data.tags["team.author"] == run.data.tags["mlflow.user"]  # what the client claimed
        assert run.data.tags["team.author_verified"] == "false"
