"""`search_runs` at 1,000, 10,000 and 100,000 runs: stock MLflow against the team store, same database.

    python benchmarks/bench_search.py                       # SQLite and PostgreSQL, 1k/10k/100k
    python benchmarks/bench_search.py --quick               # 1k and 10k, SQLite and PostgreSQL
    python benchmarks/bench_search.py --dbs mysql --sizes 10000

Each database is populated once with `benchmarks/search_data.py` (a hyperopt team's experiment:
searches of 50 trials nested under their parent, xgboost params, rmse/training_time/model_size_mb,
NaN losses, failures, deleted runs, a second experiment beside it) and kept for later runs
(SQLite files under `--workdir`, PostgreSQL/MariaDB databases `mlflow_team_bench_<n>`), then given
mlflow-team's search indexes with `mlflow-team db upgrade`. Stock (`MlflowClient("<url>")`, MLflow's
own `SqlAlchemyStore`) and team (`MlflowClient("team+<url>")`) then search that same database, their
repetitions interleaved in a rotating order because the machine is noisy; the figures are medians,
and each search's answers are compared (runs, order, token) before it is timed.

The shapes (the common ones of issue 17; `max_results` 100 and 1,000, and the second page):

- course:  `params.objective = 'reg:linear' and tags.model = 'xgboost' and metrics.rmse < 7`,
           ordered by `metrics.rmse ASC` (the course's "best run" query);
- runs page: no filter, `attributes.start_time DESC` (what the UI's runs page asks first);
- trials:  `tags.mlflow.parentRunId = '<a parent>'` (what the UI asks to expand a parent run);
- like:    `tags.developer LIKE 'A%' and attributes.status = 'FINISHED'`, by `params.learning_rate DESC`;
- metrics: `attributes.status != 'FAILED' and metrics.training_time > 3`, by `metrics.model_size_mb`;
- small:   the like search on the small experiment beside the big one (1,000 runs in the same tables).

Stock takes minutes for some of these at 100,000 runs on SQLite; every statement of both stores is
cut off after `--cap-seconds` (default 120; 0 waits), and a cut-off stock search is shown as more
than the cap (its ratio is then a lower bound, and its answers are not compared; run with
`--cap-seconds 0` to compare them too).

Targets: team at least 3x faster than stock at 10,000 runs and 5x at 100,000 (SQLite and
PostgreSQL); on MariaDB no slower than stock. The script never asserts timings; it exits 1 only if
the two stores' answers differ.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import search_data  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432"
MYSQL = "mysql+pymysql://root@127.0.0.1:3306"
#: A search that takes longer than this stops repeating after its first three timings.
BUDGET_S = 20.0


def quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a cut-off search logs its traceback


def database(kind: str, n: int, workdir: Path) -> str:
    """The URL of a populated database of n runs with mlflow-team's indexes (made once)."""
    if kind == "sqlite":
        path = workdir / f"runs-{n}.db"
        url = f"sqlite:///{path}"
        if not (workdir / f"runs-{n}.done").exists():
            path.unlink(missing_ok=True)
            _populate(url, n)
            (workdir / f"runs-{n}.done").touch()
    else:
        name = f"mlflow_team_bench_{n}"
        server = PG if kind == "postgresql" else MYSQL
        url = f"{server}/{name}"
        if not _has_runs(url, n):
            _recreate(kind, server, name)
            _populate(url, n)
            _analyze(kind, url)  # what autovacuum (or a DBA) would have done to a table this size
    upgrade = subprocess.run([sys.executable, "-m", "mlflow_team.cli", "db", "upgrade", url],
                             capture_output=True, text=True)
    if upgrade.returncode != 0:
        sys.exit(f"mlflow-team db upgrade {url} failed:\n{upgrade.stderr[-2000:]}")
    return url


def _populate(url: str, n: int) -> None:
    started = time.perf_counter()
    print(f"  populating {url} with {n:,} runs ...", flush=True)
    search_data.populate(url, n)
    print(f"  ... {time.perf_counter() - started:.0f} s", flush=True)


def _has_runs(url: str, n: int) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT COUNT(*) FROM runs")).scalar()
        return found == n + 1_000
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def _analyze(kind: str, url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if kind == "postgresql":
            conn.execute(sa.text("VACUUM ANALYZE"))
        else:
            conn.execute(sa.text("ANALYZE TABLE runs, params, tags, latest_metrics"))
    engine.dispose()


def _recreate(kind: str, server: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(f"{server}/{'test'}", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if kind == "postgresql":
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        else:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()


def shapes(client, experiment_id: str) -> dict[str, tuple[str, list[str] | None, str]]:
    """(filter, order, experiment searched) by shape name."""
    parent = client.search_runs([experiment_id], "attributes.run_name = 'search-10'")[0].info.run_id
    other = client.get_experiment_by_name(search_data.OTHER).experiment_id
    like = ("tags.developer LIKE 'A%' and attributes.status = 'FINISHED'", ["params.learning_rate DESC"])
    return {
        "course": ("params.objective = 'reg:linear' and tags.model = 'xgboost' and metrics.rmse < 7",
                   ["metrics.rmse ASC"], experiment_id),
        "runs page": ("", ["attributes.start_time DESC"], experiment_id),
        "trials": (f"tags.mlflow.parentRunId = '{parent}'", None, experiment_id),
        "like": (*like, experiment_id),
        "metrics": ("attributes.status != 'FAILED' and metrics.training_time > 3", ["metrics.model_size_mb"],
                    experiment_id),
        "small": (*like, other),
    }


def _answer(runs) -> list:
    return [(r.info.run_id, sorted(r.data.params.items()), sorted(r.data.tags.items()),
             sorted((m.key, repr(m.value)) for m in r.data._metric_objs)) for r in runs] + [runs.token]


_DEADLINE = [float("inf")]


def cap_statements(seconds: float) -> None:
    """Cut off any statement that runs past ``seconds`` (stock takes minutes at 100,000 runs on
    some shapes): SQLite through a progress handler, PostgreSQL and MariaDB by their own settings.
    Both stores get the same cap; a cut-off search is reported as such, never as a time."""
    import sqlalchemy as sa

    if seconds <= 0:
        return

    @sa.event.listens_for(sa.engine.Engine, "connect")
    def _on_connect(dbapi_connection, _record):
        name = type(dbapi_connection).__module__
        if name.startswith("sqlite3"):
            dbapi_connection.set_progress_handler(lambda: int(time.perf_counter() > _DEADLINE[0]), 10_000)
        elif "psycopg" in name:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = {int(seconds * 1000)}")
        elif "pymysql" in name:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET SESSION max_statement_time = {seconds}")  # MariaDB

    _DEADLINE.append(seconds)


def _search(client, experiment_id, filter_string, order_by, max_results, token):
    """(seconds, runs), or (None, None) when the statement was cut off."""
    cap = _DEADLINE[1] if len(_DEADLINE) > 1 else 0
    started = time.perf_counter()
    _DEADLINE[0] = started + cap if cap else float("inf")
    try:
        runs = client.search_runs([experiment_id], filter_string, max_results=max_results, order_by=order_by,
                                  page_token=token)
    except Exception as exc:  # the cap's interruption, as each driver words it
        if cap and time.perf_counter() - started >= cap * 0.99:
            return None, None
        raise RuntimeError(f"search {filter_string!r} failed: {exc}") from exc
    finally:
        _DEADLINE[0] = float("inf")
    return time.perf_counter() - started, runs


def measure(clients: dict, experiment_id: str, filter_string: str, order_by, max_results: int, page: int,
            repeat: int) -> tuple[dict[str, float | None] | None, bool | None]:
    """Median seconds per search for each client (None: cut off by the cap), and whether their
    answers agree (None: not compared, stock was cut off); None for a second page the search
    does not have."""
    tokens = {}
    answers = {}
    times: dict[str, list[float]] = {name: [] for name in clients}
    cut: set[str] = set()
    for name, client in clients.items():
        token = None
        if page == 2:
            _, first = _search(client, experiment_id, filter_string, order_by, max_results, None)
            if first is None:
                cut.add(name)
                continue
            if first.token is None:
                return None, True  # one page only
            token = first.token
        tokens[name] = token
        seconds, runs = _search(client, experiment_id, filter_string, order_by, max_results, token)
        if runs is None:
            cut.add(name)
            continue
        times[name].append(seconds)  # the first timing counts: at 100,000 runs stock may get one
        answers[name] = _answer(runs)
    same = answers["stock"] == answers["team"] if len(answers) == 2 else None
    order = list(clients)
    for i in range(1, repeat):
        for name in order[i % 2:] + order[:i % 2]:
            if name in cut or (i >= 3 and sum(times[name]) > BUDGET_S) or (sum(times[name]) > 3 * BUDGET_S):
                continue
            seconds, _ = _search(clients[name], experiment_id, filter_string, order_by, max_results, tokens[name])
            if seconds is None:
                cut.add(name)
            else:
                times[name].append(seconds)
    return {name: None if name in cut else statistics.median(values) for name, values in times.items()}, same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dbs", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql, mysql")
    parser.add_argument("--sizes", default=None, help="comma-separated run counts (default 1000,10000,100000)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 runs, 3 repetitions")
    parser.add_argument("--workdir", default="/tmp/mlflow-team-search-bench/search")
    parser.add_argument("--cap-seconds", type=float, default=120.0,
                        help="cut off a search after this long (0: wait for it); a cut-off stock search is "
                             "reported as more than the cap, and its answers are not compared")
    args = parser.parse_args()
    quiet()
    cap_statements(args.cap_seconds)
    from mlflow import MlflowClient
    import mlflow

    quiet()  # again: importing MLflow sets its loggers' levels

    sizes = [int(s) for s in (args.sizes or ("1000,10000" if args.quick else "1000,10000,100000")).split(",")]
    repeat = 3 if args.quick else args.repeat
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"MLflow {mlflow.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} cores; medians of {repeat} interleaved repetitions")
    differ = False
    ratios: dict[tuple[str, int], list[float]] = {}
    for kind in args.dbs.split(","):
        for n in sizes:
            url = database(kind, n, workdir)
            clients = {"stock": MlflowClient(url), "team": MlflowClient(f"team+{url}")}
            store = clients["team"]._tracking_client.store
            if not store._search_path:
                sys.exit(f"the team store did not take the accelerated search on {url}")
            experiment_id = clients["stock"].get_experiment_by_name(search_data.EXPERIMENT).experiment_id
            print(f"\n{kind}, {n:,} runs")
            print(f"  {'shape':<10} {'max':>5} {'page':>4} {'stock ms':>10} {'team ms':>9} {'stock/team':>10}")
            for shape, (filter_string, order_by, searched) in shapes(clients["stock"], experiment_id).items():
                for max_results in (100, 1000):
                    for page in (1, 2):
                        medians, same = measure(clients, searched, filter_string, order_by, max_results, page, repeat)
                        if medians is None:
                            continue
                        differ |= same is False
                        note = {True: "", False: "  ANSWERS DIFFER", None: "  (stock cut off: not compared)"}[same]
                        if medians["team"] is None:
                            print(f"  {shape:<10} {max_results:>5} {page:>4}  team cut off at {args.cap_seconds} s{note}")
                            continue
                        if medians["stock"] is None:  # at least the cap: the ratio is a lower bound
                            stock_ms, ratio = f"> {args.cap_seconds * 1000:.0f}", args.cap_seconds / medians["team"]
                            shown = f">{ratio:.0f}x"
                        else:
                            stock_ms, ratio = f"{medians['stock'] * 1000:.1f}", medians["stock"] / medians["team"]
                            shown = f"{ratio:.1f}x"
                        ratios.setdefault((kind, n, shape == "small"), []).append(ratio)
                        print(f"  {shape:<10} {max_results:>5} {page:>4} {stock_ms:>10} "
                              f"{medians['team'] * 1000:>9.1f} {shown:>10}{note}", flush=True)
    print("\nsummary (stock/team, over every shape, size of page and page; a cut-off stock search counts as the cap;"
          "\nthe small experiment apart: its 1,000 runs have no target of their own, only no slower than stock):")
    for (kind, n, small), values in ratios.items():
        geo = statistics.geometric_mean(values)
        searched = f"1,000 beside {n:,}" if small else f"{n:,} runs"
        print(f"  {kind:<10} {searched:>20}: lowest {min(values):5.1f}x  geometric mean {geo:5.1f}x")
    if differ:
        print("the two stores' answers differed: see ANSWERS DIFFER above")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
