"""What author identity costs a client: a `log_batch` round trip with identity off and on.

    python benchmarks/bench_identity.py            # full run
    python benchmarks/bench_identity.py --quick    # fewer repetitions

Starts two real `mlflow server` processes on 127.0.0.1: stock (`sqlite:///`) and team
(`team+sqlite:///` with a keyring, signatures required), then times MLflow's own client:

- `log_batch` of 100 metrics and 10 tags, per round trip, against
  stock server / team server with identity off / team server with signed identity;
- `create_run`, where the team server checks the signature and stamps the author.

The three clients run interleaved in the same process (one call each in turn, so machine noise
hits all of them alike); figures are medians. Target: identity on costs under 5% of a `log_batch`
round trip (ratio on/off below 1.05). The script never asserts timings.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.server import mlflow_server  # noqa: E402  (a benchmark, not a package)

KEY = "be" * 32
AUTHOR = "bench@example.com"
IDENTITY_OFF = {"MLFLOW_TEAM_IDENTITY": "off"}
IDENTITY_ON = {
    "MLFLOW_TEAM_AUTHOR": AUTHOR,
    "MLFLOW_TEAM_AUTHOR_KEY": KEY,
    "MLFLOW_TRACKING_AUTH": "team",
}
CLAIM = {"mlflow.user": AUTHOR}  # what a stock client claims; the signed author wins over it
CLIENT_ENV = sorted({*IDENTITY_OFF, *IDENTITY_ON})


def quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("mlflow", "mlflow_team", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def set_client_env(values: dict[str, str]) -> None:
    for name in CLIENT_ENV:
        os.environ.pop(name, None)
    os.environ.update(values)


def measure(configs: dict, reps: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    batch_times: dict[str, list[float]] = {name: [] for name in configs}
    create_times: dict[str, list[float]] = {name: [] for name in configs}
    clients, runs = {}, {}
    for name, (url, env) in configs.items():
        set_client_env(env)
        mlflow.set_tracking_uri(url)
        clients[name] = MlflowClient(url)
        runs[name] = clients[name].create_run("0", tags=CLAIM).info.run_id
    now = int(time.time() * 1000)
    for rep in range(-3, reps):  # three warm-up rounds
        for name, (url, env) in configs.items():
            set_client_env(env)
            mlflow.set_tracking_uri(url)
            client = clients[name]
            metrics = [Metric(f"m{i}", float(rep), now, rep + 3) for i in range(100)]
            tags = [RunTag(f"t{i}", str(rep)) for i in range(10)]
            started = time.perf_counter()
            client.log_batch(runs[name], metrics=metrics, tags=tags)
            batch = time.perf_counter() - started
            started = time.perf_counter()
            client.create_run("0", tags=CLAIM)
            create = time.perf_counter() - started
            if rep >= 0:
                batch_times[name].append(batch)
                create_times[name].append(create)
    return batch_times, create_times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    quiet()
    reps = 60 if args.quick else 400
    with tempfile.TemporaryDirectory() as tmp:
        stock_dir, team_dir = Path(tmp, "stock"), Path(tmp, "team")
        stock_dir.mkdir()
        team_dir.mkdir()
        (team_dir / "keyring.toml").write_text(f'[keys]\n"{AUTHOR}" = "{KEY}"\n')
        # One team server serves both team clients (a second server would add noise of its own),
        # so it accepts unsigned runs: the "identity off" client names its author in mlflow.user.
        (team_dir / "mlflow-team.toml").write_text(
            '[identity]\nkeyring = "keyring.toml"\nallow-unsigned = true\n'
        )
        with mlflow_server(f"sqlite:///{stock_dir}/mlflow.db", stock_dir) as stock, mlflow_server(
            f"team+sqlite:///{team_dir}/mlflow.db", team_dir
        ) as team:
            configs = {
                "stock server": (stock, IDENTITY_OFF),
                "team, identity off": (team, IDENTITY_OFF),
                "team, signed identity": (team, IDENTITY_ON),
            }
            batch, create = measure(configs, reps)
            signed_run = _last_run_author(team)
    print(f"# bench_identity  python {platform.python_version()}  {os.cpu_count()} cores  reps={reps}")
    print(f"signed runs stamped as: {signed_run}")
    print(f"{'client':<24}{'log_batch ms':>14}{'create_run ms':>15}")
    for name in batch:
        print(f"{name:<24}{statistics.median(batch[name]) * 1000:>14.2f}"
              f"{statistics.median(create[name]) * 1000:>15.2f}")
    on, off = statistics.median(batch["team, signed identity"]), statistics.median(batch["team, identity off"])
    stock = statistics.median(batch["stock server"])
    c_on, c_off = statistics.median(create["team, signed identity"]), statistics.median(create["team, identity off"])
    print(f"log_batch round trip, identity on / off: {on / off:.3f}  (target < 1.05)")
    print(f"log_batch round trip, team signed / stock server: {on / stock:.3f}")
    print(f"create_run (signature checked, author stamped) on / off: {c_on / c_off:.3f}")
    return 0


def _last_run_author(url: str) -> str:
    from mlflow import MlflowClient

    run = MlflowClient(url).search_runs(["0"], filter_string="tags.`team.author_verified` = 'true'", max_results=1)
    return f"{run[0].data.tags['team.author']} (verified)" if run else "none verified"


if __name__ == "__main__":
    sys.exit(main())
