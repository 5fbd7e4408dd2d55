"""Quickstart: stock MLflow code, team conventions applied by the store.

Run it from any directory:  python examples/01_team_store_quickstart.py [WORKDIR]
It writes a policy file and a `team+sqlite` database into WORKDIR (default: ./quickstart),
logs a run with the stock fluent API, registers a model with an alias, loads it back through
`models:/name@alias`, and shows two rejections the policy makes.
"""

import os
import sys
from pathlib import Path

workdir = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart").resolve()
workdir.mkdir(parents=True, exist_ok=True)
policy = workdir / "mlflow-team.toml"
policy.write_text(
    """
[experiment-name]
pattern = '^[a-z0-9-]+/[a-z0-9-]+$'
example = "taxi/duration"

[registered-model-name]
pattern = '^[a-z0-9-]+\\.[a-z0-9-]+$'
example = "taxi.duration"

[required-tags]
defaults = { "team.name" = "mlops-zoomcamp" }

[protected-deletions]
[lossless-values]
"""
)
os.environ["MLFLOW_TEAM_POLICY"] = str(policy)

import mlflow  # noqa: E402  (after the policy is in place: the store reads it when built)
import numpy as np  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from sklearn.linear_model import Lasso  # noqa: E402

uri = f"team+sqlite:///{workdir}/mlflow.db"
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
mlflow.set_experiment("taxi/duration")

rng = np.random.default_rng(42)
X = rng.uniform(0, 20, size=(200, 1))  # trip distance in miles
y = 3.0 * X[:, 0] + rng.normal(0, 2, 200)  # duration in minutes

with mlflow.start_run() as run:
    model = Lasso(alpha=0.01).fit(X, y)
    rmse = float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))
    mlflow.log_param("alpha", 0.01)
    mlflow.log_metric("rmse", rmse)
    mlflow.sklearn.log_model(model, name="model", registered_model_name="taxi.duration")

client = MlflowClient()
version = client.get_latest_versions("taxi.duration")[0].version
client.set_registered_model_alias("taxi.duration", "champion", version)
champion = mlflow.pyfunc.load_model("models:/taxi.duration@champion")
print(f"run {run.info.run_id}: rmse={rmse:.2f}, team.name={client.get_run(run.info.run_id).data.tags['team.name']}")
print(f"champion predicts {champion.predict(np.array([[5.0]]))[0]:.1f} min for a 5-mile trip")

for attempt in (
    lambda: mlflow.set_experiment("My Experiment"),
    lambda: client.delete_run(run.info.run_id),
):
    try:
        attempt()
    except MlflowException as exc:
        print("rejected:", exc.message)

print(f"see it all: mlflow ui --backend-store-uri {uri}")
