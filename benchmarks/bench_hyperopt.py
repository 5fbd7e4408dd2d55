"""Per-trial cost of `mlflow_team.hyperopt.autolog()` against the hand-written logging it replaces.

    python benchmarks/bench_hyperopt.py             # full run (about 5.5 minutes on 2 cores)
    python benchmarks/bench_hyperopt.py --quick     # fewer repetitions and trials
    python benchmarks/bench_hyperopt.py --xgboost   # also a real small xgboost training (~2.5x as long)

The hand-written pattern, from the ML course that autologging replaces:

    def objective(params):
        with mlflow.start_run():
            mlflow.set_tag("model", "xgboost")
            mlflow.log_params(params)
            ...                                   # the work
            mlflow.log_metric("rmse", rmse)
        return {"loss": rmse, "status": STATUS_OK}

Four ways to run the same `fmin` (the course's xgboost search space, `hyperopt.rand.suggest` so
the algorithm's own cost stays flat, `show_progressbar=False`, the same seed for every way within
a repetition, so every way evaluates the same points):

- none: autologging off, bare objective (no MLflow call at all): the baseline;
- hand-written: autologging off, the objective above;
- autolog: `autolog()` with its defaults (plots on), bare objective;
- autolog, no plots: `autolog(log_plots=False)`, bare objective.

Per-trial cost is the slope of search time against the number of trials: each way runs a search of
a small and a large `max_evals` and slope = (T_large - T_small) / (large - small), medians of the
repetitions. Overhead is paired: in each repetition every way evaluates the same points (same
seed), so each repetition's slope minus the baseline's slope at the same sizes cancels what the
points themselves cost (a deep xgboost tree costs more than a shallow one); the overhead is the
median of those differences. The intercept (T_small - small x slope) is
the fixed cost of one search: autologging writes its parent run's summary (trials.csv, the search
space, and with plots on a PNG per numeric parameter) once per search, not per trial.

Objectives:
(a) trivial: returns at once; the worst case, with nothing for autologging's background writes
    (trial runs are finished by a worker thread while the next trial runs) to overlap with;
(b) training: 30 ms of work that releases the GIL as model training does, here `time.sleep(0.03)`
    (a stand-in: real training also uses the CPU the background writes need);
(c) with --xgboost: a real xgboost training, 20 rounds on a 2,000 x 10 random regression
    (DMatrix built once), one thread; its cost varies with the sampled max_depth/min_child_weight
    (every way evaluates the same points, so the baseline still cancels it).

Backends, in the same run: `team+sqlite:///` in-process, and a real local `mlflow server
--backend-store-uri team+sqlite:///` started by this script with the server's default number of
workers (4; `--server-workers N` to change it), a clean environment (MLFLOW_TEAM_POLICY unset)
and a temporary working directory. On this machine such a stock multi-worker `mlflow server`
answers a reused keep-alive connection from Python's `requests` (what MlflowClient uses) in about
50 ms, against about 9 ms for a fresh connection and about 7 ms with `--workers 1`; so every
request through the default server is expensive for every client: absolute figures through the
server are high, the ratios are what to compare.

The script lives in a git checkout, so the hand-written `mlflow.start_run()` resolves the run
context (source, git commit) for every trial, as a course script in a repository would;
autologging resolves it once per search.

Configurations are interleaved (the order rotates each repetition) and each search logs into an
experiment of its own, so no configuration pays for tables another one filled. Medians of 5
repetitions (3 with --quick).

Target: autologging's per-trial overhead at most half the hand-written pattern's
(ratio autolog / hand-written <= 0.5), per objective and backend. The script never asserts
timings; after timing it checks (untimed) that every autologged search stored one parent run and
one child run per trial with a `loss` metric (plots only when on) and every hand-written search
one run per trial, and exits 1 if not.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

TARGET = 0.5
MODES = ("none", "hand", "auto", "auto-noplots")
MODE_LABELS = {
    "none": "none (baseline)",
    "hand": "hand-written",
    "auto": "autolog",
    "auto-noplots": "autolog, no plots",
}
TRAINING_SECONDS = 0.03


def quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run ..." per run
    import mlflow  # noqa: F401  (configures its loggers on import: quiet them afterwards)

    for name in ("mlflow", "mlflow_team", "alembic", "hyperopt", "urllib3", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)


def search_space() -> dict:
    from hyperopt import hp

    return {
        "max_depth": hp.quniform("max_depth", 4, 100, 1),
        "learning_rate": hp.loguniform("learning_rate", -3, 0),
        "reg_alpha": hp.loguniform("reg_alpha", -5, -1),
        "reg_lambda": hp.loguniform("reg_lambda", -6, -1),
        "min_child_weight": hp.loguniform("min_child_weight", -1, 3),
        "objective": "reg:linear",
        "seed": 42,
    }


# --- the work each trial does ------------------------------------------------------------------


def trivial(params: dict) -> float:
    return float(params["learning_rate"])


def training(params: dict) -> float:
    time.sleep(TRAINING_SECONDS)  # releases the GIL, as training in C/C++ does
    return float(params["learning_rate"])


_XGB_DATA: tuple | None = None


def xgboost_training(params: dict) -> float:
    global _XGB_DATA
    import numpy as np
    import xgboost as xgb

    if _XGB_DATA is None:
        rng = np.random.default_rng(0)
        features = rng.normal(size=(2_000, 10))
        target = features @ rng.normal(size=10) + rng.normal(size=2_000)
        _XGB_DATA = (
            xgb.DMatrix(features[:1_500], label=target[:1_500]),
            xgb.DMatrix(features[1_500:], label=target[1_500:]),
            target[1_500:],
        )
    train, valid, truth = _XGB_DATA
    booster = xgb.train(
        # One thread: OpenMP's spinning threads on an oversubscribed machine (2 cores, background
        # writes, a server) make training times erratic; one core for training, one for the rest.
        {**params, "max_depth": int(params["max_depth"]), "verbosity": 0, "nthread": 1},
        train, num_boost_round=20, evals=[(valid, "validation")], verbose_eval=False,
    )
    return float(np.sqrt(np.mean((booster.predict(valid) - truth) ** 2)))


def bare_objective(work: Callable[[dict], float]) -> Callable[[dict], dict]:
    from hyperopt import STATUS_OK

    def objective(params: dict) -> dict:
        return {"loss": work(params), "status": STATUS_OK}

    return objective


def hand_objective(work: Callable[[dict], float]) -> Callable[[dict], dict]:
    import mlflow
    from hyperopt import STATUS_OK

    def objective(params: dict) -> dict:
        with mlflow.start_run():
            mlflow.set_tag("model", "xgboost")
            mlflow.log_params(params)
            rmse = work(params)
            mlflow.log_metric("rmse", rmse)
        return {"loss": rmse, "status": STATUS_OK}

    return objective


# --- the server --------------------------------------------------------------------------------


@contextlib.contextmanager
def mlflow_server(workdir: Path, workers: int | None) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port; stopped by its own PID (its process group)."""
    from mlflow_team.demo.servers import free_port, process

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TEAM_POLICY", "MLFLOW_TRACKING_URI")}
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"team+sqlite:///{workdir / 'server.db'}",
        "--artifacts-destination", str(workdir / "server-artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
        *(["--workers", str(workers)] if workers else []),
    ]
    with process(command, workdir / "server.log", f"{url}/health", env, workdir, "mlflow server", timeout=90):
        yield url


# --- measuring ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, backends: dict[str, tuple[str, Path | None]], works: dict[str, Callable]) -> None:
        import mlflow_team.hyperopt  # noqa: F401  (patches hyperopt when autolog() is called)

        self.backends = backends  # name -> (tracking URI, artifact root or None for the server's)
        self.works = works
        self.space = search_space()
        self.experiments: list[tuple[str, str, str, int, str]] = []  # backend, work, mode, n, id
        self._count = 0

    def set_mode(self, mode: str) -> None:
        import mlflow_team.hyperopt as team_hyperopt

        if mode in ("none", "hand"):
            team_hyperopt.autolog(disable=True)
        elif mode == "auto":
            team_hyperopt.autolog()
        else:
            team_hyperopt.autolog(log_plots=False)

    def use_experiment(self, backend: str, work: str, mode: str, n: int, record: bool) -> None:
        import mlflow
        from mlflow import MlflowClient

        uri, artifact_root = self.backends[backend]
        mlflow.set_tracking_uri(uri)
        self._count += 1
        name = f"bench-hyperopt/{work}-{mode}-{n}-{self._count}"
        location = None if artifact_root is None else (artifact_root / name.replace("/", "_")).as_uri()
        experiment_id = MlflowClient(uri).create_experiment(name, artifact_location=location)
        mlflow.set_experiment(experiment_id=experiment_id)
        if record:
            self.experiments.append((backend, work, mode, n, experiment_id))

    def search(self, backend: str | None, work: str, mode: str, n: int, seed: int, record: bool = True) -> float:
        """One `fmin` of `n` trials; its wall time in seconds (set-up untimed)."""
        import numpy as np
        from hyperopt import Trials, fmin, rand

        self.set_mode(mode)
        if backend is not None:
            self.use_experiment(backend, work, mode, n, record)
        make = hand_objective if mode == "hand" else bare_objective
        objective = make(self.works[work])
        trials = Trials()
        rstate = np.random.default_rng(seed)
        gc.collect()  # untimed: a collection left over from the previous search is not this one's
        started = time.perf_counter()
        fmin(objective, self.space, algo=rand.suggest, max_evals=n, trials=trials, rstate=rstate,
             show_progressbar=False)
        elapsed = time.perf_counter() - started
        if len(trials.trials) != n:
            raise RuntimeError(f"{work}/{mode}: {len(trials.trials)} trials instead of {n}")
        return elapsed


def cells(backends: list[str], works: list[str], sizes: dict[str, tuple[int, ...]]) -> list[tuple]:
    """Every timed search of one repetition: (backend or None, work, mode, n)."""
    out = []
    for work in works:
        for n in sizes["none"]:
            out.append((None, work, "none", n))
        for backend in backends:
            for mode in MODES[1:]:
                for n in sizes[backend]:
                    out.append((backend, work, mode, n))
    return out


def slope_and_intercept(times: dict[int, list[float]], sizes: tuple[int, int]) -> tuple[float, float, list[float]]:
    """ms per trial and ms per search from medians; and the slope of each repetition (ms)."""
    small, large = sizes
    median_small, median_large = statistics.median(times[small]), statistics.median(times[large])
    slope = (median_large - median_small) / (large - small)
    intercept = median_small - small * slope
    per_rep = [(b - a) / (large - small) * 1000 for a, b in zip(times[small], times[large])]
    return slope * 1000, intercept * 1000, per_rep


# --- the functional check ----------------------------------------------------------------------


def check(bench: Bench) -> list[str]:
    """Every search stored what it should; the problems found (untimed)."""
    from mlflow import MlflowClient

    problems = []
    for backend, work, mode, n, experiment_id in bench.experiments:
        uri, _ = bench.backends[backend]
        client = MlflowClient(uri)
        runs = client.search_runs([experiment_id], max_results=1000)
        where = f"{backend} {work} {mode} n={n}"
        if mode == "hand":
            good = [r for r in runs if "rmse" in r.data.metrics and r.info.status == "FINISHED"]
            if len(runs) != n or len(good) != n:
                problems.append(f"{where}: {len(runs)} runs ({len(good)} finished with rmse), expected {n}")
            continue
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        if len(parents) != 1:
            problems.append(f"{where}: {len(parents)} parent runs, expected 1")
            continue
        parent = parents[0]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        good = [r for r in children if "loss" in r.data.metrics and r.info.status == "FINISHED"]
        if len(children) != n or len(good) != n or len(runs) != n + 1:
            problems.append(f"{where}: {len(children)} child runs ({len(good)} finished with loss) "
                            f"of {len(runs)} runs, expected {n} children")
        if parent.data.metrics.get("trials_total") != n:
            problems.append(f"{where}: parent trials_total {parent.data.metrics.get('trials_total')}")
        pngs = [f.path for f in client.list_artifacts(parent.info.run_id, "hyperopt") if f.path.endswith(".png")]
        if (mode == "auto") != bool(pngs):
            problems.append(f"{where}: {len(pngs)} plots on the parent run")
    return problems


# --- the report --------------------------------------------------------------------------------


def report(times: dict, backends: list[str], works: list[str], sizes: dict) -> tuple[list[tuple], list[str]]:
    rows, verdicts = [], []
    for work in works:
        widest = (min(sizes["none"]), max(sizes["none"]))
        base_slope, base_fixed, base_reps = slope_and_intercept(times[(None, work, "none")], widest)
        rows.append((work, "-", MODE_LABELS["none"], f"{base_slope:.2f}",
                     f"{min(base_reps):.1f}..{max(base_reps):.1f}", "-", f"{base_fixed:.0f}", "", ""))
        for backend in backends:
            # The baseline at this backend's sizes: the same trials (same seeds, same points).
            _, _, base = slope_and_intercept(times[(None, work, "none")], sizes[backend])
            figures = {}
            for mode in MODES[1:]:
                slope, fixed, per_rep = slope_and_intercept(times[(backend, work, mode)], sizes[backend])
                # Paired: each repetition's slope minus the baseline's of the same repetition.
                overhead = statistics.median(s - b for s, b in zip(per_rep, base))
                figures[mode] = (slope, fixed, min(per_rep), max(per_rep), overhead)
            hand_overhead = figures["hand"][4]
            for mode in MODES[1:]:
                slope, fixed, lo, hi, overhead = figures[mode]
                ratio = verdict = ""
                if mode != "hand":
                    value = overhead / hand_overhead if hand_overhead > 0 else float("nan")
                    ratio = f"{value:.2f}"
                    verdict = "met" if value <= TARGET else "MISSED"
                    verdicts.append(verdict)
                rows.append((work, backend, MODE_LABELS[mode], f"{slope:.2f}", f"{lo:.1f}..{hi:.1f}",
                             f"{overhead:.2f}", f"{fixed:.0f}", ratio, verdict))
    return rows, verdicts


def print_table(rows: list[tuple]) -> None:
    header = ("objective", "backend", "logging", "ms/trial", "per-rep range", "overhead ms/trial",
              "ms/search", "overhead / hand", f"<= {TARGET}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    right = {3, 4, 5, 6, 7}
    print("  ".join(h.rjust(w) if i in right else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            print()
        previous = row[0]
        print("  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())


HOW_TO_READ = """\
How to read: ms/trial is the slope of search time against max_evals (median times of the small
and the large search); per-rep range is that slope's spread over the repetitions. Overhead is the
median over repetitions of (that repetition's slope - the baseline's slope in the same repetition,
at the same sizes): the baseline does no MLflow call at all. ms/search is the intercept, the fixed cost of one
search: autologging's parent run and its summary (trials.csv, search space, plots when on) land
here, not in the per-trial figure. "overhead / hand" below the target means autologging costs each
trial less than half of what the course's hand-written start_run/set_tag/log_params/log_metric
costs. Through the server every request is slow for every client (see the module docstring):
compare ratios, not absolute figures, across backends."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and trials")
    parser.add_argument("--xgboost", action="store_true", help="also a real small xgboost training (longer)")
    parser.add_argument("--server-workers", type=int, default=None,
                        help="`mlflow server --workers N` (default: the server's own default, 4)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5, 3 with --quick)")
    args = parser.parse_args()
    quiet()
    os.environ.pop("MLFLOW_TEAM_POLICY", None)
    run_started = time.perf_counter()
    reps = args.reps or (3 if args.quick else 5)
    # (small, large) max_evals per backend; the server is ~10x slower per request, so fewer trials.
    sizes = (
        {"none": (3, 11, 15), "team+sqlite": (3, 15), "server": (3, 11)}
        if args.quick
        else {"none": (5, 25, 45), "team+sqlite": (5, 45), "server": (5, 25)}
    )
    works = {"trivial": trivial, "training": training}
    if args.xgboost:
        works["xgboost"] = xgboost_training

    import hyperopt
    import mlflow

    print(f"# bench_hyperopt  mlflow {mlflow.__version__} | hyperopt {hyperopt.__version__} | "
          f"Python {platform.python_version()} | {os.cpu_count()} CPUs | reps={reps}"
          f"{' (--quick)' if args.quick else ''}")
    print("# max_evals (small, large): " + ", ".join(f"{k} {v}" for k, v in sizes.items())
          + f"; training = sleep {TRAINING_SECONDS * 1000:.0f} ms; server --workers "
          + (str(args.server_workers) if args.server_workers else "default (4)"))

    with tempfile.TemporaryDirectory(prefix="mlflow-team-bench-hyperopt-") as tmp:
        work_dir = Path(tmp)
        server_dir = work_dir / "server"
        server_dir.mkdir()
        with mlflow_server(server_dir, args.server_workers) as url:
            backends = {
                "team+sqlite": (f"team+sqlite:///{work_dir / 'bench.db'}", work_dir / "artifacts"),
                "server": (url, None),
            }
            bench = Bench(backends, works)
            names = list(backends)
            # Warm-up, untimed: imports (matplotlib), connections, statement caches, first plots.
            for backend in names:
                for mode in MODES[1:]:
                    bench.search(backend, "trivial", mode, 3, seed=999, record=False)
            bench.search(None, "trivial", "none", 3, seed=999, record=False)
            if args.xgboost:
                xgboost_training(dict(search_space(), max_depth=4, learning_rate=0.1, reg_alpha=0.1,
                                      reg_lambda=0.1, min_child_weight=1.0))

            order = cells(names, list(works), sizes)
            times: dict = {}
            step = max(1, len(order) // reps)
            for rep in range(reps):
                rotated = order[rep * step % len(order):] + order[:rep * step % len(order)]
                for backend, work, mode, n in rotated:
                    elapsed = bench.search(backend, work, mode, n, seed=rep)
                    times.setdefault((backend, work, mode), {}).setdefault(n, []).append(elapsed)
                print(f"# repetition {rep + 1}/{reps} done at {time.perf_counter() - run_started:.0f} s",
                      file=sys.stderr)
            bench.set_mode("none")  # autologging off again
            checked = time.perf_counter()
            problems = check(bench)
            check_seconds = time.perf_counter() - checked

    rows, verdicts = report(times, names, list(works), sizes)
    print()
    print_table(rows)
    print()
    print(HOW_TO_READ)
    print()
    print(f"Target (autolog overhead / hand-written overhead <= {TARGET}): "
          f"{verdicts.count('met')} met, {verdicts.count('MISSED')} MISSED.")
    print(f"Functional check ({len(bench.experiments)} searches, {check_seconds:.0f} s, untimed): "
          + ("ok" if not problems else f"{len(problems)} PROBLEMS"))
    for problem in problems:
        print(f"  - {problem}")
    print(f"Total run time {time.perf_counter() - run_started:.0f} s.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
