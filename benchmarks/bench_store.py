"""Stock `sqlite:///` against `team+sqlite:///` (every policy rule on), side by side in one run.

    python benchmarks/bench_store.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_store.py --quick    # smaller sizes, fewer repetitions

Figures (medians; stock and team repetitions interleaved, because the machine is noisy):

1. per-call `log_metric`: one metric per client call, as a training loop logs it (ms per call);
2. a run's life: `create_run`, one `log_batch` (10 params, 3 metrics, 2 tags), `set_terminated`
   (ms per run), as a short run or a hyperparameter trial writes;
3. `log_batch` of 1,000 metrics (s per batch);
4. `search_runs` with a filter and an order by a metric, 100 results, on an experiment of
   10,000 runs (s per search; both stores search copies of the same database file);
5. eight processes creating runs and logging metrics into one brand-new database file at once:
   errors, and writes lost (acknowledged or attempted, but not in the database afterwards).

Targets: no figure of the team store more than 10% slower than stock; per-call logging at least
3x faster than stock; eight writers: zero errors and zero lost writes with the team store.
The script never asserts timings; it exits 1 only if the team store had errors or lost writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITER = ROOT / "tests" / "helpers" / "writer.py"

POLICY = """\
[experiment-name]
pattern = '^[a-z0-9-]+/[a-z0-9-]+$'
example = "bench/store"
[registered-model-name]
pattern = '^[a-z0-9-]+\\.[a-z0-9-]+$'
example = "bench.store"
[required-tags]
tags = ["team.project"]
defaults = { "team.name" = "bench", "team.project" = "bench" }
[protected-deletions]
[lossless-values]
[reserved-tags]
"""


def quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("mlflow", "alembic", "mlflow_team"):
        logging.getLogger(name).setLevel(logging.ERROR)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def p95_ms(samples: list[float]) -> float:
    return sorted(samples)[int(0.95 * (len(samples) - 1))] * 1000


def per_call(clients: dict, calls: int, rounds: int) -> dict[str, list[float]]:
    from mlflow import MlflowClient  # noqa: F401

    samples: dict[str, list[float]] = {name: [] for name in clients}
    runs = {}
    for name, (client, experiment_id) in clients.items():
        runs[name] = client.create_run(experiment_id).info.run_id
        for step in range(20):  # warm-up: connections, statement caches
            client.log_metric(runs[name], "warmup", 1.0, step=step)
    step = 0
    for _ in range(rounds):
        for name, (client, _) in clients.items():
            for i in range(calls):
                started = time.perf_counter()
                client.log_metric(runs[name], "loss", 1.0 / (step + i + 1), step=step + i)
                samples[name].append(time.perf_counter() - started)
        step += calls
    return samples


def batches(clients: dict, size: int, reps: int) -> dict[str, list[float]]:
    from mlflow.entities import Metric

    samples: dict[str, list[float]] = {name: [] for name in clients}
    for rep in range(reps):
        for name, (client, experiment_id) in clients.items():
            run_id = client.create_run(experiment_id).info.run_id
            metrics = [Metric(f"m{i % 50}", float(i), 1_000 + rep, i) for i in range(size)]
            started = time.perf_counter()
            client.log_batch(run_id, metrics=metrics)
            samples[name].append(time.perf_counter() - started)
    return samples


def run_lives(clients: dict, reps: int) -> dict[str, list[float]]:
    """A run's own writes, as a short run (a hyperopt trial, a quick experiment) makes them:
    create it, one `log_batch` (10 params, 3 metrics, 2 tags), end it (s per run)."""
    from mlflow.entities import Metric, Param, RunTag

    samples: dict[str, list[float]] = {name: [] for name in clients}
    for rep in range(reps):
        for name, (client, experiment_id) in clients.items():
            started = time.perf_counter()
            run_id = client.create_run(experiment_id, tags={"model": "xgboost"}).info.run_id
            client.log_batch(
                run_id,
                metrics=[Metric(k, 0.5, 1_000 + rep, 0) for k in ("rmse", "mae", "r2")],
                params=[Param(f"p{i}", str(i)) for i in range(10)],
                tags=[RunTag("status", "ok"), RunTag("note", "bench")],
            )
            client.set_terminated(run_id, "FINISHED")
            samples[name].append(time.perf_counter() - started)
    return samples


def populate(path: Path, runs: int) -> None:
    """One database with `runs` runs in experiment 'bench/search', built through the team store."""
    from mlflow.entities import Metric, Param, RunTag

    from mlflow_team.store.tracking import TeamSqlAlchemyStore

    store = TeamSqlAlchemyStore(f"team+sqlite:///{path}", str(path.parent / "artifacts"))
    experiment_id = store.create_experiment("bench/search")
    for i in range(runs):
        run = store.create_run(experiment_id, "bench", i, [RunTag("team.project", "bench")], f"r{i}")
        store.log_batch(
            run.info.run_id,
            metrics=[Metric("rmse", (i * 7919 % 1000) / 1000, i, 0), Metric("mae", i % 13, i, 0)],
            params=[Param("model", "xgb" if i % 3 else "lasso"), Param("depth", str(i % 10))],
            tags=[],
        )
    store.engine.dispose()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def searches(clients: dict, reps: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(reps):
        for name, (client, experiment_id) in clients.items():
            started = time.perf_counter()
            found = client.search_runs(
                [experiment_id],
                filter_string="metrics.rmse < 0.5 and params.model = 'xgb'",
                order_by=["metrics.rmse ASC"],
                max_results=100,
            )
            samples[name].append(time.perf_counter() - started)
            assert len(found) == 100, len(found)
    return samples


def eight_writers(uri: str, directory: Path, runs: int, metrics: int) -> dict:
    directory.mkdir(parents=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    processes = [
        subprocess.Popen(
            [sys.executable, str(WRITER), uri, str(w), str(runs), str(metrics), str(directory / f"w{w}.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        for w in range(8)
    ]
    time.sleep(1.0)
    started = time.perf_counter()
    (directory / "go").touch()
    for process in processes:
        process.wait(timeout=900)
    wall = time.perf_counter() - started
    reports = [json.loads((directory / f"w{w}.json").read_text()) for w in range(8)]
    stored_runs = stored_metrics = 0
    try:
        with sqlite3.connect(directory / "mlflow.db") as connection:
            stored_runs = connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            stored_metrics = connection.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    except sqlite3.Error:
        pass
    attempted_metrics = 8 * runs * metrics
    return {
        "errors": sum(len(r["errors"]) for r in reports),
        "runs": f"{stored_runs}/{8 * runs}",
        "metrics": f"{stored_metrics}/{attempted_metrics}",
        "lost": (8 * runs - stored_runs) + (attempted_metrics - stored_metrics),
        "wall": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    args = parser.parse_args()
    quiet()
    sizes = (
        dict(calls=50, rounds=4, run_reps=30, batch_reps=5, search_runs=1_000, search_reps=7, writer_runs=3, writer_metrics=10)
        if args.quick
        else dict(
            calls=100, rounds=6, run_reps=100, batch_reps=15, search_runs=10_000, search_reps=15, writer_runs=5, writer_metrics=20
        )
    )
    work = Path(tempfile.mkdtemp(prefix="mlflow-team-bench-"))
    (work / "policy.toml").write_text(POLICY)
    os.environ["MLFLOW_TEAM_POLICY"] = str(work / "policy.toml")

    import mlflow
    from mlflow import MlflowClient

    print(
        f"mlflow {mlflow.__version__} | SQLite {sqlite3.sqlite_version} | "
        f"Python {platform.python_version()} | {os.cpu_count()} CPUs"
    )
    print(f"work dir {work}{' (--quick)' if args.quick else ''}\n")

    def pair(stock_db: Path, team_db: Path, experiment: str | None) -> dict:
        clients = {}
        for name, uri in (("stock", f"sqlite:///{stock_db}"), ("team", f"team+sqlite:///{team_db}")):
            client = MlflowClient(tracking_uri=uri)
            if experiment is None:
                experiment_id = client.create_experiment("bench/store")
            else:
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
            clients[name] = (client, experiment_id)
        return clients

    rows = []
    clients = pair(work / "stock.db", work / "team.db", None)
    calls = per_call(clients, sizes["calls"], sizes["rounds"])
    stock_ms, team_ms = median_ms(calls["stock"]), median_ms(calls["team"])
    rows.append(
        (
            "log_metric per call, median ms", f"{stock_ms:.2f}", f"{team_ms:.2f}",
            f"{stock_ms / team_ms:.1f}x faster", ">= 3x faster",
        )
    )
    stock_p95, team_p95 = p95_ms(calls["stock"]), p95_ms(calls["team"])
    rows.append(("log_metric per call, p95 ms", f"{stock_p95:.2f}", f"{team_p95:.2f}", f"{stock_p95 / team_p95:.1f}x faster", ""))

    lives = run_lives(clients, sizes["run_reps"])
    stock_ms, team_ms = median_ms(lives["stock"]), median_ms(lives["team"])
    rows.append(
        (
            "a run's life (create, log_batch, end), median ms", f"{stock_ms:.2f}", f"{team_ms:.2f}",
            f"{stock_ms / team_ms:.1f}x faster", "",
        )
    )

    batch = batches(clients, 1_000, sizes["batch_reps"])
    stock_s, team_s = statistics.median(batch["stock"]), statistics.median(batch["team"])
    rows.append(("log_batch of 1,000 metrics, median s", f"{stock_s:.3f}", f"{team_s:.3f}", f"{team_s / stock_s:.2f}", "<= 1.10"))

    search_dir = work / "search"
    search_dir.mkdir()
    started = time.perf_counter()
    populate(search_dir / "team.db", sizes["search_runs"])
    shutil.copy(search_dir / "team.db", search_dir / "stock.db")
    with sqlite3.connect(search_dir / "stock.db") as connection:
        connection.execute("PRAGMA journal_mode=DELETE")  # stock's default journal
    print(f"(populated {sizes['search_runs']:,} runs in {time.perf_counter() - started:.0f} s)")
    found = searches(pair(search_dir / "stock.db", search_dir / "team.db", "bench/search"), sizes["search_reps"])
    stock_s, team_s = statistics.median(found["stock"]), statistics.median(found["team"])
    rows.append(
        (
            f"search_runs, {sizes['search_runs']:,} runs, median s", f"{stock_s:.3f}", f"{team_s:.3f}",
            f"{team_s / stock_s:.2f}", "<= 1.10",
        )
    )

    writers = {
        name: eight_writers(
            uri_prefix + f"{work / name / 'mlflow.db'}", work / name, sizes["writer_runs"], sizes["writer_metrics"]
        )
        for name, uri_prefix in (("writers-stock", "sqlite:///"), ("writers-team", "team+sqlite:///"))
    }
    stock_w, team_w = writers["writers-stock"], writers["writers-team"]
    rows.append(("8 writers, new file: errors", str(stock_w["errors"]), str(team_w["errors"]), "", "team: 0"))
    rows.append(("8 writers: runs stored/attempted", stock_w["runs"], team_w["runs"], "", "team: all"))
    rows.append(("8 writers: metrics stored/attempted", stock_w["metrics"], team_w["metrics"], "", "team: all"))
    rows.append(("8 writers: lost writes", str(stock_w["lost"]), str(team_w["lost"]), "", "team: 0"))
    rows.append(("8 writers: wall s", f"{stock_w['wall']:.1f}", f"{team_w['wall']:.1f}", "", ""))

    widths = [max(len(str(row[i])) for row in rows + [("figure", "stock", "team", "ratio", "target")]) for i in range(5)]
    header = ("figure", "stock", "team", "ratio", "target")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    shutil.rmtree(work, ignore_errors=True)
    return 1 if team_w["errors"] or team_w["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
