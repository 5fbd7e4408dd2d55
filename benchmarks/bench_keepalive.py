"""The keep-alive stall: a request on a reused connection, stock `mlflow server` against the team app.

    python benchmarks/bench_keepalive.py                    # the servers run the installed uvicorn
    python benchmarks/bench_keepalive.py --uvicorn 0.54.0   # ... uvicorn 0.54.0 (the stall)
    python benchmarks/bench_keepalive.py --quick            # fewer repetitions

uvicorn before 0.55 leaves Nagle's algorithm on for the connections of `--workers N` (N > 1,
`mlflow server`'s default is 4): the body of a response, written after its headers, waits for
the client's delayed ACK (40 ms on Linux) on every reused keep-alive connection, and MLflow's
client reuses its connections (see src/mlflow_team/server/keepalive.py). `--uvicorn VERSION`
installs that uvicorn with pip into a temporary folder (`pip install --no-deps --target`) and puts
it first on the servers' PYTHONPATH; the client is untouched.

Three real `mlflow server` processes on 127.0.0.1, each `team+sqlite:///` in a temporary folder of
its own, a clean environment (MLFLOW_TEAM_POLICY unset):

- stock: MLflow's app, default workers (4);
- team: `--app-name team` (the fix: TCP_NODELAY on every connection), default workers;
- stock, `--workers 1`: the reference the stall is measured against.

Figures, all interleaved (the servers' order rotates each repetition), medians:

- per request: `POST runs/log-metric` with `requests`, on one reused keep-alive connection and on a
  fresh connection per request; and on a raw socket (`GET /health` on a reused connection) the
  wait between the response's headers and its body arriving: the stall itself;
- per trial: the course's hand-written hyperopt logging through the fluent API,
  `with mlflow.start_run(): set_tag, log_params (4), log_metric` (five requests: create run, set
  tag, log batch, log metric, update run); per repetition the mean of a block of trials, then the
  median over repetitions.

The script never asserts timings.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.server import DEFAULT_WORKERS, mlflow_server  # noqa: E402  (a benchmark, not a package)

SERVERS = {  # name -> (extra `mlflow server` options, workers)
    "stock": ([], DEFAULT_WORKERS),
    "team": (["--app-name", "team"], DEFAULT_WORKERS),
    "stock, --workers 1": ([], 1),
}
PARAMS = {"max_depth": 6, "learning_rate": 0.1, "min_child_weight": 1.5, "reg_alpha": 0.01}


def quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("MLFLOW_TEAM_POLICY", "MLFLOW_TRACKING_URI"):  # the servers' environment is ours
        os.environ.pop(name, None)
    import mlflow  # noqa: F401  (configures its loggers on import: quiet them afterwards)

    for name in ("mlflow", "mlflow_team", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def uvicorn_folder(version: str, into: Path) -> Path:
    """uvicorn ``version`` installed with pip into ``into`` (for the servers' PYTHONPATH)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(into), f"uvicorn=={version}"],
        check=True,
    )
    return into


def server_uvicorn(env: dict[str, str]) -> str:
    code = "import uvicorn; print(uvicorn.__version__)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


# --- per request -------------------------------------------------------------------------------


def log_metric_times(url: str, run_id: str, n: int, reuse: bool) -> list[float]:
    import requests

    body = {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0, "step": 0}
    endpoint = f"{url}/api/2.0/mlflow/runs/log-metric"
    times = []
    with requests.Session() as session:
        session.post(endpoint, json=body).raise_for_status()  # the connection is open and warm
        for _ in range(n):
            started = time.perf_counter()
            if reuse:
                response = session.post(endpoint, json=body)
            else:
                with requests.Session() as fresh:
                    response = fresh.post(endpoint, json=body)
            times.append(time.perf_counter() - started)
            response.raise_for_status()
    return times


def body_waits(url: str, n: int) -> list[float]:
    """On one reused connection: from the first bytes of each response to its last (its body)."""
    host, port = url.removeprefix("http://").split(":")
    request = f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    waits = []
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as urllib3 does
        for i in range(n + 2):  # the first two warm the connection
            sock.sendall(request)
            data = sock.recv(65536)
            first = time.perf_counter()
            while not _complete(data):
                data += sock.recv(65536)
            if i >= 2:
                waits.append(time.perf_counter() - first)
    return waits


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return len(body) >= length


# --- per trial ---------------------------------------------------------------------------------


def trial_time(url: str, experiment_id: str, trials: int) -> float:
    """Mean seconds per trial of the course's hand-written logging, through the fluent API."""
    import mlflow

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment(experiment_id=experiment_id)
    started = time.perf_counter()
    for trial in range(trials):
        with mlflow.start_run():
            mlflow.set_tag("model", "xgboost")
            mlflow.log_params(PARAMS)
            mlflow.log_metric("rmse", 1.0 / (trial + 1))
    return (time.perf_counter() - started) / trials


# --- the run -----------------------------------------------------------------------------------


def measure(urls: dict[str, str], reps: int, requests_per_block: int, trials: int) -> dict[str, dict[str, list[float]]]:
    from mlflow import MlflowClient

    figures = {name: {"reused": [], "fresh": [], "body": [], "trial": []} for name in urls}
    runs, experiments = {}, {}
    for name, url in urls.items():
        client = MlflowClient(url)
        experiments[name] = client.create_experiment(f"bench-keepalive/{int(time.time() * 1000)}")
        runs[name] = client.create_run(experiments[name]).info.run_id
        trial_time(url, experiments[name], 2)  # warm-up: the server's first runs, the client's imports
    names = list(urls)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            url, got = urls[name], figures[name]
            got["reused"] += log_metric_times(url, runs[name], requests_per_block, reuse=True)
            got["fresh"] += log_metric_times(url, runs[name], requests_per_block, reuse=False)
            got["body"] += body_waits(url, requests_per_block // 2)
            got["trial"].append(trial_time(url, experiments[name], trials))
    return figures


def report(figures: dict[str, dict[str, list[float]]]) -> None:
    med = {name: {k: statistics.median(v) * 1000 for k, v in got.items()} for name, got in figures.items()}
    print("per request, POST runs/log-metric with requests (ms, medians):")
    print(f"{'server':<22}{'reused':>9}{'fresh':>9}{'reused/fresh':>14}{'body wait':>11}")
    for name, m in med.items():
        print(f"{name:<22}{m['reused']:>9.2f}{m['fresh']:>9.2f}{m['reused'] / m['fresh']:>14.2f}{m['body']:>11.2f}")
    print("\nper trial, start_run + set_tag + log_params + log_metric + end_run, fluent API (ms, median):")
    for name, m in med.items():
        print(f"{name:<22}{m['trial']:>9.1f}")
    stock, team, one = med["stock"], med["team"], med["stock, --workers 1"]
    print(f"\nteam / stock: reused request {team['reused'] / stock['reused']:.2f}, "
          f"per trial {team['trial'] / stock['trial']:.2f}")
    print(f"team / stock --workers 1: reused request {team['reused'] / one['reused']:.2f}, "
          f"per trial {team['trial'] / one['trial']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--uvicorn", metavar="VERSION",
                        help="run the servers on this uvicorn (pip-installed into a temporary folder)")
    args = parser.parse_args()
    quiet()
    reps, per_block, trials = (3, 10, 6) if args.quick else (5, 20, 12)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        env = {}
        if args.uvicorn:
            folder = uvicorn_folder(args.uvicorn, Path(tmp, "uvicorn"))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
        urls = {}
        for index, (name, (extra, workers)) in enumerate(SERVERS.items()):
            workdir = Path(tmp, f"server{index}")
            workdir.mkdir()
            urls[name] = stack.enter_context(mlflow_server(
                f"team+sqlite:///{workdir}/mlflow.db", workdir, env=env, extra=extra, workers=workers))
        print(f"# bench_keepalive  python {platform.python_version()}  {os.cpu_count()} cores  "
              f"servers' uvicorn {server_uvicorn(env)}  reps={reps}  requests/block={per_block}  "
              f"trials/block={trials}", flush=True)
        figures = measure(urls, reps, per_block, trials)
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
