"""The team server app's cost: round trips through `mlflow server --app-name team` against the same
server without it.

    python benchmarks/bench_team_app.py            # 7 rounds of 200 calls per server (about 3 minutes)
    python benchmarks/bench_team_app.py --quick    # 3 rounds

Two `mlflow server` processes with their default worker count, on one `team+sqlite` database in a
temporary folder: the stock app (what `mlflow server` serves without `--app-name`) and the team
app. MLflow's own client (`MlflowClient`, reused connections, as a training script's) times:

- `create_run` in experiment 0;
- `log_batch` of 10 metrics, 5 params and 2 tags (the shape of an autologged step).

Rounds alternate between the servers (the order flips each round) because the machine is noisy;
each round's figure is the median call, and the printed figure the median of the rounds. Target:
the team app adds under 5%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from tests.helpers.server import DEFAULT_WORKERS, mlflow_server

    folder = Path(tempfile.mkdtemp(prefix="bench-team-app-"))
    backend = f"team+sqlite:///{folder}/mlflow.db"
    (folder / "stock").mkdir()
    (folder / "team").mkdir()
    with mlflow_server(backend, folder / "stock", workers=DEFAULT_WORKERS) as stock_url, \
            mlflow_server(backend, folder / "team", workers=DEFAULT_WORKERS, extra=["--app-name", "team"]) as team_url:
        clients = {"stock app": MlflowClient(stock_url), "team app": MlflowClient(team_url)}
        run_ids = {name: client.create_run("0").info.run_id for name, client in clients.items()}

        def create_run(name: str) -> float:
            started = time.perf_counter()
            clients[name].create_run("0")
            return time.perf_counter() - started

        step = [0]

        def log_batch(name: str) -> float:
            step[0] += 1
            now = int(time.time() * 1000)
            metrics = [Metric(f"m{i}", float(i) * step[0], now, step[0]) for i in range(10)]
            params = [Param(f"p{i}-{step[0]}", str(i)) for i in range(5)]
            tags = [RunTag(f"t{i}", str(step[0])) for i in range(2)]
            started = time.perf_counter()
            clients[name].log_batch(run_ids[name], metrics=metrics, params=params, tags=tags)
            return time.perf_counter() - started

        figures: dict[tuple[str, str], list[float]] = {}
        for call in (create_run, log_batch):
            for name in clients:  # warm every worker's connections and caches
                for _ in range(20):
                    call(name)
            for round_ in range(rounds):
                order = list(clients) if round_ % 2 == 0 else list(reversed(clients))
                for name in order:
                    figures.setdefault((call.__name__, name), []).append(
                        statistics.median(call(name) for _ in range(args.calls)))
    print(f"round trips through a default-worker mlflow server on team+sqlite, median of {rounds} rounds "
          f"of {args.calls} calls (MlflowClient, reused connections):")
    for call in ("create_run", "log_batch"):
        stock = statistics.median(figures[(call, "stock app")]) * 1000
        team = statistics.median(figures[(call, "team app")]) * 1000
        print(f"  {call:<10}  stock app {stock:6.2f} ms   team app {team:6.2f} ms   "
              f"team/stock {team / stock:.3f} (target < 1.05)")


if __name__ == "__main__":
    main()
