"""The demo's xgboost search on SparkTrials against Trials, and autologging's cost under SparkTrials.

    python benchmarks/bench_hyperopt_spark.py            # 20 trials, 3 repetitions (about 15 minutes on 2 cores)
    python benchmarks/bench_hyperopt_spark.py --quick    # 1 repetition

The search is the demo's tuning step (``mlflow-team demo``): an xgboost regressor (one thread,
``n_jobs=1``) in the demo's DictVectorizer pipeline, on the demo's generated NYC taxi trips, the
demo's search space, ``tpe.suggest``, the same seed everywhere, with as many training trips as the course's
January 2021 file (``--rows``), on ``team+sqlite`` in a temporary
folder. Four ways, interleaved (the order rotates each repetition), medians:

- serial: ``Trials()``, autologging on;

(SparkTrials searches run with ``max_queue_len=2``, as many suggestions queued as trials run at once,
and their objective reads the trips from a Spark broadcast, as the demo's does with ``--spark``:
each executor's Python loads them once instead of unpickling them with every trial's task.)
- spark: ``SparkTrials(parallelism=2)`` on ``local[2]`` (``mlflow_team.hyperopt.spark.local_session``),
  autologging on (which also wakes hyperopt's one-second polls when a trial ends,
  ``mlflow_team.hyperopt.spark.PromptPolling``, and runs each trial in a Python worker that earlier
  trials warmed up, ``mlflow_team.hyperopt.spark._reuse_workers``);
- spark, logging only: the same with hyperopt's own polls and a new Python worker for every trial,
  as hyperopt has them (both taken out by hand), so that autologging's own cost is measured against
  the baselines below, which run as hyperopt does;
- spark, none: ``SparkTrials(parallelism=2)``, autologging off, the objective logs nothing: the baseline;
- spark, hand-written: ``SparkTrials(parallelism=2)``, autologging off, the objective logs as the
  course writes it (its own tracking URI and experiment, ``with mlflow.start_run()``,
  ``log_params``, ``set_tag``, ``log_metric``).

And a ceiling, with no Spark, hyperopt or MLflow: the points the serial search evaluated, trained
again one after the other and then two at a time in two forked processes (``multiprocessing``):
what two cores give these trainings on this machine.

Printed: the speed-up of SparkTrials over serial (target: at least 1.6x on two cores; 2x is the
limit), and the per-trial overhead of autologging and of hand-written logging over the baseline
under SparkTrials, and their ratio (target: at most 0.5), twice: from the searches' wall times
(which hyperopt's one-second polls make noisy) and from each trial's own latency
(:func:`trial_latencies`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPACE_SEED = 42
#: Trips in the course's training file (green taxi, January 2021, 1 to 60 minutes): the course's trial size.
ROWS = 73_908


class Objective:
    """The demo's objective (picklable: Spark ships it to the executors with its data)."""

    def __init__(self, frames, hand_written: str | None = None) -> None:
        # (train, valid), or under SparkTrials a broadcast of them: each executor's Python reads
        # the data once, not with every trial's task (Spark's way to share a data set; the
        # frames pickled into every task cost seconds per trial)
        self.frames = frames
        self.hand_written = hand_written  # "tracking URI|experiment id" where the objective logs itself

    def train(self, params) -> float:
        from mlflow_team.demo.workflow import _fit, _pipeline, xgb_regressor

        train_frame, valid_frame = self.frames.value if hasattr(self.frames, "value") else self.frames
        rmse, _ = _fit(_pipeline(xgb_regressor(params, SPACE_SEED, n_jobs=1)), train_frame, valid_frame)
        return rmse

    def timed_train(self, params) -> tuple[float, float]:
        started = time.perf_counter()
        rmse = self.train(params)
        return rmse, time.perf_counter() - started

    def __call__(self, params):
        from hyperopt import STATUS_OK

        # "train_seconds": the training alone, for the per-trial latency (see trial_latencies)
        if self.hand_written is None:
            rmse, seconds = self.timed_train(params)
            return {"loss": rmse, "status": STATUS_OK, "train_seconds": seconds}
        import mlflow

        uri, experiment_id = self.hand_written.split("|")
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(experiment_id=experiment_id):
            mlflow.set_tag("model", "xgboost")
            mlflow.log_params(params)
            rmse, seconds = self.timed_train(params)
            mlflow.log_metric("rmse", rmse)
        return {"loss": rmse, "status": STATUS_OK, "train_seconds": seconds}


def trial_latencies(trials) -> list[float]:
    """Per trial, the seconds from SparkTrials taking it (hyperopt's ``book_time``) to its result
    written back (``refresh_time``, after autologging ended the trial's run), less its training:
    what launching, logging and returning a trial cost, without the trainings' own variance."""
    return [(t["refresh_time"] - t["book_time"]).total_seconds() - t["result"]["train_seconds"]
            for t in trials.trials if "train_seconds" in (t.get("result") or {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=ROWS,
                        help="generated training trips (default: as many as the course's January 2021 green taxi file)")
    parser.add_argument("--quick", action="store_true", help="one repetition")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats

    import logging

    import mlflow
    import numpy as np
    from hyperopt import SparkTrials, Trials, fmin, tpe

    import mlflow_team.hyperopt as team_hyperopt
    from mlflow_team.demo import data
    from mlflow_team.demo.workflow import search_space
    from mlflow_team.hyperopt import spark as team_spark
    from mlflow_team.hyperopt.spark import local_session

    reuse_workers = team_spark._reuse_workers

    logging.getLogger("hyperopt-spark").setLevel(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="bench-hyperopt-spark-"))
    train_frame = data.read_dataframe(data.generate(folder / "train.parquet", rows=args.rows, seed=0))
    valid_frame = data.read_dataframe(data.generate(folder / "valid.parquet", month=2, rows=args.rows // 2, seed=1))
    uri = f"team+sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    session = local_session(2, imports=("pandas", "sklearn", "xgboost", "mlflow_team.demo.workflow"))
    shared = session.sparkContext.broadcast((train_frame, valid_frame))

    def search(way: str, repetition: int) -> float:
        experiment_id = mlflow.set_experiment(f"{way}-{repetition}").experiment_id
        hand = way == "spark, hand-written"
        frames = (train_frame, valid_frame) if way == "serial" else shared
        objective = Objective(frames, f"{uri}|{experiment_id}" if hand else None)
        if way in ("serial", "spark", "spark, logging only"):
            team_hyperopt.autolog(log_plots=False)
            if way == "spark, logging only":
                import importlib

                import hyperopt.spark

                importlib.import_module("hyperopt.fmin").time = time  # reverted to these by disable
                hyperopt.spark.time = time
                team_spark._reuse_workers = lambda state: None
        else:
            team_hyperopt.autolog(disable=True)
        trials = Trials() if way == "serial" else SparkTrials(parallelism=2)
        started = time.perf_counter()
        # SparkTrials: two trials queued, so a free slot never waits for the next suggestion
        fmin(objective, search_space(), algo=tpe.suggest, max_evals=args.trials, trials=trials,
             max_queue_len=1 if way == "serial" else 2, rstate=np.random.default_rng(SPACE_SEED),
             show_progressbar=False)
        seconds = time.perf_counter() - started
        team_hyperopt.autolog(disable=True)
        team_spark._reuse_workers = reuse_workers
        if way != "serial":
            latencies[way] += trial_latencies(trials)
        print(f"  {way:<26} {seconds:7.2f} s", flush=True)
        return seconds

    # Untimed: the JVM's JIT, the executors' Python workers and their copy of the broadcast warm up
    # here, not in whichever way happens to come first (with --quick, always "spark").
    team_hyperopt.autolog(disable=True)
    fmin(Objective(shared), search_space(), algo=tpe.suggest, max_evals=4, trials=SparkTrials(parallelism=2),
         max_queue_len=2, rstate=np.random.default_rng(SPACE_SEED), show_progressbar=False)

    ways = ["serial", "spark", "spark, logging only", "spark, none", "spark, hand-written"]
    times: dict[str, list[float]] = {way: [] for way in ways}
    latencies: dict[str, list[float]] = {way: [] for way in ways}
    print(f"{args.trials} trials of the demo's xgboost search ({args.rows:,} trips, n_jobs=1), {repeats} repetition(s)")
    for repetition in range(repeats):
        order = ways[repetition % len(ways):] + ways[:repetition % len(ways)]
        print(f"repetition {repetition + 1}:")
        for way in order:
            times[way].append(search(way, repetition))
    ceiling = _ceiling(train_frame, valid_frame, uri, "serial-0")
    median = {way: statistics.median(values) for way, values in times.items()}
    speedup = median["serial"] / median["spark"]
    auto_prompt = (median["spark"] - median["spark, none"]) / args.trials
    auto = (median["spark, logging only"] - median["spark, none"]) / args.trials
    hand = (median["spark, hand-written"] - median["spark, none"]) / args.trials
    print("\nmedians:", ", ".join(f"{way} {seconds:.1f} s" for way, seconds in median.items()))
    print(f"SparkTrials(parallelism=2) against Trials, autologging on: {speedup:.2f}x faster (target >= 1.6x)")
    print(f"ceiling on this machine: the same trainings in two processes are {ceiling:.2f}x faster than one after "
          "the other (no Spark, hyperopt or MLflow)")
    print(f"per-trial overhead under SparkTrials, against the same search logging nothing: autologging "
          f"{auto * 1000:+.0f} ms with hyperopt's polls and workers ({auto_prompt * 1000:+.0f} ms with its prompt "
          f"polling and warm workers), "
          f"hand-written {hand * 1000:+.0f} ms")
    if hand > 0:
        print(f"autologging / hand-written overhead: {auto / hand:.2f} (target <= 0.5)")
    else:
        print("hand-written logging cost nothing measurable in wall time here: no ratio")
    # The same per trial, from each trial's own latency (medians over every trial of every repetition).
    latency = {way: statistics.median(values) for way, values in latencies.items() if values}
    print("per-trial latency (taken to result written back, less the training), medians: "
          + ", ".join(f"{way} {seconds * 1000:.0f} ms" for way, seconds in latency.items()))
    auto_latency = latency["spark, logging only"] - latency["spark, none"]
    hand_latency = latency["spark, hand-written"] - latency["spark, none"]
    print(f"logging's per-trial latency: autologging {auto_latency * 1000:+.0f} ms, hand-written "
          f"{hand_latency * 1000:+.0f} ms" + (f", ratio {auto_latency / hand_latency:.2f} (target <= 0.5)"
                                              if hand_latency > 0 else ""))


_FRAMES: tuple = ()


def _train_one(params) -> float:
    return Objective(_FRAMES).train(params)


def _set_frames(train_frame, valid_frame) -> None:
    global _FRAMES
    _FRAMES = (train_frame, valid_frame)


def _ceiling(train_frame, valid_frame, uri: str, experiment: str) -> float:
    """Serial time over two-process time for the points the serial search evaluated."""
    import multiprocessing

    from mlflow import MlflowClient

    global _FRAMES
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    points = [{k: float(v) for k, v in r.data.params.items()} for r in runs if r.info.run_name.startswith("trial-")]
    _FRAMES = (train_frame, valid_frame)
    started = time.perf_counter()
    for point in points:
        _train_one(point)
    one = time.perf_counter() - started
    # spawned, not forked: a fork of a process whose OpenMP (xgboost's) has started hangs
    with multiprocessing.get_context("spawn").Pool(2, initializer=_set_frames, initargs=_FRAMES) as pool:
        pool.map(_train_one, points[:2])  # both processes warm, as the serial loop is
        started = time.perf_counter()
        pool.map(_train_one, points, chunksize=1)
        two = time.perf_counter() - started
    print(f"  ceiling: {len(points)} trainings one after the other {one:.1f} s, two at a time {two:.1f} s", flush=True)
    return one / two


if __name__ == "__main__":
    main()
