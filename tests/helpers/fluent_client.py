"""A client with a fluent run open on a tracking server: it starts the run, prints its id, and
waits, idle, until STOP_FILE appears (then ends the run) or until it is killed.

Run as ``python fluent_client.py TRACKING_URI EXPERIMENT STOP_FILE``. Everything mlflow-team's
plugins do in a user's process happens here as it would there (heartbeats among them, unless
``MLFLOW_TEAM_HEARTBEAT=off``).
"""

import os
import sys
import time

import mlflow

uri, experiment, stop_file = sys.argv[1:4]
mlflow.set_tracking_uri(uri)
mlflow.set_experiment(experiment)
run = mlflow.start_run(tags={"team.project": "reaper"})
print(run.info.run_id, flush=True)
while not os.path.exists(stop_file):
    time.sleep(0.1)
mlflow.end_run()
print("ended", flush=True)
