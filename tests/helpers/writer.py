"""One of N concurrent writers: creates runs and logs metrics into a tracking URI.

Run as ``python writer.py URI WORKER RUNS METRICS OUT``. Says it is ready (``OUT.ready``), then
waits for a start file so all writers hit a brand-new database at the same moment, then writes a
JSON report to OUT: how many runs and metric writes succeeded and the errors seen. Used by the concurrency test and the benchmark.
"""

import json
import os
import sys
import time


def main() -> None:
    uri, worker, runs, metrics, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    start_file = os.path.dirname(out) + "/go"  # the parent creates it to start every writer at once
    from mlflow import MlflowClient

    open(out + ".ready", "w").close()  # imported: the parent waits for every writer's before "go"
    while not os.path.exists(start_file):
        time.sleep(0.005)
    report = {"worker": worker, "runs": [], "metric_writes": 0, "errors": []}
    t0 = time.perf_counter()
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment_id = "0"
    except Exception as exc:  # the store could not even be built
        report["errors"].append(f"store: {type(exc).__name__}: {str(exc)[:200]}")
        runs = 0
    for i in range(runs):
        try:
            run = client.create_run(experiment_id, run_name=f"w{worker}-r{i}")
        except Exception as exc:
            report["errors"].append(f"create_run: {str(exc)[:200]}")
            continue
        report["runs"].append(run.info.run_id)
        for step in range(metrics):
            try:
                client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
                report["metric_writes"] += 1
            except Exception as exc:
                report["errors"].append(f"log_metric: {str(exc)[:200]}")
    report["seconds"] = time.perf_counter() - t0
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
