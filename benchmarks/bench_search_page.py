"""The stock UI's runs page of a 100,000-run experiment, served by `mlflow server` on the team store
against the same server on stock MLflow: time to the first rendered rows in headless Chromium.

    python benchmarks/bench_search_page.py            # 100,000 runs, 7 page loads per server
    python benchmarks/bench_search_page.py --quick    # 10,000 runs, 3 page loads per server
    python benchmarks/bench_search_page.py --runs 30000 --repeat 11

Needs selenium and Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``). The experiment ``nyc-taxi/duration`` of ``benchmarks/search_data.py``
(searches of 50 hyperopt trials nested under a parent run, ``mlflow.parentRunId`` tags) is written
once into ``<workdir>/stock-runs-<n>.db`` (about 1.5 minutes for 100,000 runs; ``--workdir``,
default ``/tmp/mlflow-team-search-bench``; bench_search.py's ``runs-<n>.db`` there carries the
team indexes, so it is not shared) and reused by later runs. Each run of the benchmark copies that
file twice: one copy as it is for stock, and one on which ``mlflow-team db upgrade`` adds the
team store's search indexes, so both servers read the same rows.

Two `mlflow server` processes on free loopback ports, with their default worker count:
``--backend-store-uri sqlite:///stock.db`` and ``--backend-store-uri team+sqlite:///team.db``
(both with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: the team store has no job backend, and
stock's seven job-queue processes would otherwise load one machine more than the other). After
one discarded load per server, page loads alternate between the servers (the order flips each
repetition, because the machine is noisy), each in a fresh browser profile (nothing cached), on
``/#/experiments/<id>/runs``, the route the experiment's "Training runs" tab has in MLflow 3.

Measured, from the start of the navigation (``performance.now()`` in the page):

- **first rows**: when the runs table first holds a row whose run-name link reads ``search-<i>``
  or ``trial-<i>`` (``.ag-row a[href*="/runs/"]``, watched by a MutationObserver installed
  before the page's own scripts; WebDriver only waits for its stamp); also counted from the
  app's first API request, which leaves out the download and start-up of the UI's scripts;
- **app script**: when the UI's ``main.*.js`` finished downloading (the same files on both);
- every API request the page sent before its first rows (resource timing: median start, end and
  duration). The page's two ``POST runs/search`` (told apart by their bodies) are both
  ``attributes.start_time DESC``, no filter: ``max_results`` 50 (the UI sorting the experiment's
  runs into training and evaluation runs), then, only once it answered, 100 for the table, which
  shows the parents among the newest 100 runs with their trials folded under them and fetches a
  parent outside the page by ``runs/get``. Both searches are on the path to the first rows;
- the same two searches alone, replayed through the REST API without a browser (in the page they
  share the cores with the browser running the UI's scripts, which makes them slower and noisy).

Printed: the medians per server and the ratios stock/team of the first rows (above 1: the team
server's page shows its rows sooner), also as the median of each repetition's own ratio (its two
loads ran seconds apart, under the same load of the machine), and the two searches' summed time.
No target is stated for the page beyond "against stock".
Reading the figures: the UI's own work (about 3 s on two busy cores, the same code on both) is
most of the page; the difference between the servers is the two searches in a row, so compare
the ratio with the searches' durations. The first load after start-up is shown apart (each
worker's first search opens its engine). The script checks the team server's log for the warning
a team store logs when it falls back to MLflow's own search path, never asserts timings, and
exits 1 only if a page fails to show rows.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SEARCH_PATH = "/ajax-api/2.0/mlflow/runs/search"
#: The team store's warning when a database lacks its indexes (errors.SEARCH_INDEX_MISSING).
FALLBACK_WARNING = "uses MLflow's own search path"
PAGE_TIMEOUT = 180
#: The bodies of the page's two searches (MLflow 3.17's UI), replayed without a browser.
UI_SEARCHES = (
    {"order_by": ["attributes.start_time DESC"], "run_view_type": "ACTIVE_ONLY", "filter": "", "max_results": 50},
    {"run_view_type": "ACTIVE_ONLY", "max_results": 100, "order_by": ["attributes.start_time DESC"]},
)

#: Installed before the page's own scripts: stamps the first moment the runs table holds a run row.
FIRST_ROWS_WATCH = r"""
(() => {
  const found = () => {
    for (const a of document.querySelectorAll('.ag-row a[href*="/runs/"]')) {
      if (/^(search|trial)-\d+$/.test(a.textContent.trim())) return true;
    }
    return false;
  };
  const observer = new MutationObserver(() => {
    if (window.__firstRows === undefined && found()) {
      window.__firstRows = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(document, {childList: true, subtree: true, characterData: true});
  // The page's searches, by body, to tell its two runs/search requests apart in resource timing.
  const calls = window.__searchCalls = [];
  const fetch0 = window.fetch;
  window.fetch = function (input, init) {
    try {
      const url = typeof input === 'string' ? input : input.url;
      if (url.includes('/runs/search') && init && typeof init.body === 'string') {
        calls.push({at: performance.now(), max: JSON.parse(init.body).max_results});
      }
    } catch (e) {}
    return fetch0.apply(this, arguments);
  };
})();
"""

#: After the first rows: the page's timings (ms from the navigation start).
TIMINGS = """
const rows = window.__firstRows;
const entries = performance.getEntriesByType('resource');
const app = entries.find(e => /\\/static\\/js\\/main\\.[^/]*\\.js$/.test(e.name));
const seen = {};
const api = entries
  .filter(e => /\\/(ajax-api|graphql)/.test(e.name) && e.startTime < rows)
  .sort((a, b) => a.startTime - b.startTime)
  .map(e => {
    let path = new URL(e.name).pathname.replace(/^\\/ajax-api\\/[0-9.]+\\/mlflow\\//, '');
    const call = (window.__searchCalls || [])
      .filter(c => path === 'runs/search' && Math.abs(c.at - e.startTime) < 50)
      .sort((a, b) => Math.abs(a.at - e.startTime) - Math.abs(b.at - e.startTime))[0];
    if (call) path = `runs/search (max_results ${call.max})`;
    seen[path] = (seen[path] || 0) + 1;
    return {name: seen[path] > 1 ? `${path} #${seen[path]}` : path, start: e.startTime, end: e.responseEnd};
  });
return {rows: rows, app: app ? app.responseEnd : null, api: api};
"""


def dataset(workdir: Path, n: int) -> tuple[Path, str]:
    """The populated database for ``n`` runs (written once) and the big experiment's id."""
    from search_data import EXPERIMENT, populate

    path = workdir / f"stock-runs-{n}.db"
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        partial.unlink(missing_ok=True)
        print(f"writing {n:,} runs into {path} (once; later runs reuse it) ...", flush=True)
        started = time.monotonic()
        populate(f"sqlite:///{partial}", n)
        partial.rename(path)
        print(f"  written in {time.monotonic() - started:.0f} s", flush=True)
    with sqlite3.connect(path) as conn:
        (experiment_id,) = conn.execute(
            "SELECT experiment_id FROM experiments WHERE name = ?", (EXPERIMENT,)).fetchone()
    return path, str(experiment_id)


def team_cli() -> list[str]:
    """The `mlflow-team` console script beside this interpreter, or the module."""
    script = Path(sys.executable).with_name("mlflow-team")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow_team.cli"]


def team_indexes(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'team\\_%' ESCAPE '\\' "
            "ORDER BY name")]


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FIRST_ROWS_WATCH})
    return driver


def load_page(url: str, profile: Path) -> dict | None:
    """Open ``url`` in a fresh profile; the page's timings, or None if no run rows showed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser(profile)
    try:
        driver.get(url)
        try:
            WebDriverWait(driver, PAGE_TIMEOUT, poll_frequency=0.02).until(
                lambda d: d.execute_script("return window.__firstRows !== undefined"))
        except TimeoutException:
            return None
        figures = driver.execute_script(TIMINGS)
        figures["browser"] = driver.capabilities.get("browserVersion", "?")
        return figures
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def replay(url: str, experiment_id: str, body: dict) -> float:
    """One of the page's searches, alone, through the REST API (ms)."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{url}{SEARCH_PATH}", data=json.dumps({"experiment_ids": [experiment_id], **body}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=PAGE_TIMEOUT) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the experiment (default 100,000)")
    parser.add_argument("--repeat", type=int, default=7, help="page loads per server (default 7)")
    parser.add_argument("--quick", action="store_true", help="10,000 runs, 3 page loads per server")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlflow-team-search-bench"),
                        help="where the populated database is kept between runs")
    args = parser.parse_args()
    runs = 10_000 if args.quick else args.runs
    repeat = 3 if args.quick else args.repeat
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import mlflow

    from tests.helpers.server import DEFAULT_WORKERS, mlflow_server

    args.workdir.mkdir(parents=True, exist_ok=True)
    source, experiment_id = dataset(args.workdir, runs)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    stock_db, team_db = folder / "stock.db", folder / "team.db"
    atexit.register(lambda: [copy.unlink() for copy in (*folder.glob("stock.db*"), *folder.glob("team.db*"))])
    shutil.copyfile(source, stock_db)
    shutil.copyfile(source, team_db)
    upgrade = subprocess.run([*team_cli(), "db", "upgrade", f"sqlite:///{team_db}"],
                             capture_output=True, text=True)
    if upgrade.returncode != 0:
        print(f"mlflow-team db upgrade failed:\n{upgrade.stdout}{upgrade.stderr}", file=sys.stderr)
        return 1
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    team_module = subprocess.run(
        [sys.executable, "-c", "import mlflow_team; print(mlflow_team.__file__)"],
        capture_output=True, text=True, env={**os.environ, **env}).stdout.strip()
    for name in ("stock", "team"):
        (folder / name).mkdir()

    figures: dict[str, list[dict]] = {"stock": [], "team": []}
    first: dict[str, dict | None] = {}
    failures: list[str] = []
    browser_version = "?"
    with ExitStack() as stack:
        urls = {
            "stock": stack.enter_context(mlflow_server(
                f"sqlite:///{stock_db}", folder / "stock", env=env, workers=DEFAULT_WORKERS)),
            "team": stack.enter_context(mlflow_server(
                f"team+sqlite:///{team_db}", folder / "team", env=env, workers=DEFAULT_WORKERS)),
        }
        page = {name: f"{url}/#/experiments/{experiment_id}/runs" for name, url in urls.items()}
        loads = 0
        for name in ("stock", "team"):  # the first load after start-up: reported, not counted
            loads += 1
            first[name] = load_page(page[name], folder / f"profile-{loads}")
            if first[name] is None:
                failures.append(f"{name}: no run rows within {PAGE_TIMEOUT} s on its first load ({page[name]})")
        for rep in range(repeat):
            for name in (("stock", "team") if rep % 2 == 0 else ("team", "stock")):
                loads += 1
                result = load_page(page[name], folder / f"profile-{loads}")
                if result is None:
                    failures.append(f"{name}: no run rows within {PAGE_TIMEOUT} s ({page[name]})")
                    continue
                browser_version = result["browser"]
                figures[name].append(result)
                searches = [f"{a['name'][len('runs/search '):]} {a['end'] - a['start']:.0f} ms"
                            for a in result["api"] if a["name"].startswith("runs/search")]
                print(f"  {rep + 1}/{repeat} {name:<5}  first rows {result['rows']:6.0f} ms   searches: "
                      + ", ".join(searches), flush=True)
        alone: dict[tuple[str, int], list[float]] = {}
        for rep in range(repeat):  # the page's searches alone, same interleaving
            for name in (("stock", "team") if rep % 2 == 0 else ("team", "stock")):
                for i, body in enumerate(UI_SEARCHES):
                    alone.setdefault((name, i), []).append(replay(urls[name], experiment_id, body))
    logs = {name: "".join(p.read_text(errors="replace") for p in (folder / name).glob("server-*.log"))
            for name in ("stock", "team")}
    indexes = {"stock": team_indexes(stock_db), "team": team_indexes(team_db)}
    with sqlite3.connect(stock_db) as conn:
        (in_experiment,) = conn.execute("SELECT count(*) FROM runs WHERE experiment_id = ?", (experiment_id,)).fetchone()

    print()
    print(f"MLflow {mlflow.__version__}, mlflow_team from {team_module}; Chromium {browser_version}; "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
          f"{platform.platform()}, {os.cpu_count()} CPUs")
    print(f"experiment nyc-taxi/duration (id {experiment_id}): {in_experiment:,} runs, searches of 50 trials "
          f"nested under a parent; {stock_db.stat().st_size / 1e6:.0f} MB database; mlflow-team's indexes: "
          f"stock copy {', '.join(indexes['stock']) or 'none'}, team copy {', '.join(indexes['team']) or 'none'}")
    if FALLBACK_WARNING in logs["team"]:
        print(f"WARNING: the team server fell back to MLflow's own search path (see {folder / 'team'})")
    else:
        print("team server log: no fallback warning (the accelerator served its searches)")
    print(f"runs page (/#/experiments/{experiment_id}/runs), fresh browser profile per load, "
          f"median of {repeat} loads per server, ms from navigation start; below each, the API "
          f"requests sent before the first rows (median start -> end):")
    rows: dict[str, float] = {}
    booted: dict[str, float] = {}
    for name in ("stock", "team"):
        results = figures[name]
        rows[name] = median([r["rows"] for r in results])
        booted[name] = median([r["rows"] - r["api"][0]["start"] for r in results if r["api"]])
        cold = first.get(name)
        print(f"  {name:<5}  first rows {rows[name]:6.0f}   after the app's first request {booted[name]:6.0f}   "
              f"(app script loaded at "
              f"{median([r['app'] for r in results if r['app'] is not None]):.0f}; first load after start-up: "
              f"{cold['rows'] if cold else float('nan'):.0f})")
        spans_of: dict[str, list[dict]] = {}
        for r in results:
            for a in r["api"]:
                spans_of.setdefault(a["name"], []).append(a)
        for label, spans in sorted(spans_of.items(), key=lambda item: median([a["start"] for a in item[1]])):
            print(f"           {label:<32} {median([a['start'] for a in spans]):6.0f} -> "
                  f"{median([a['end'] for a in spans]):6.0f}   took {median([a['end'] - a['start'] for a in spans]):5.0f}"
                  + ("" if len(spans) == len(results) else f"   (in {len(spans)} of {len(results)} loads)"))
        print("           the page's searches alone (REST, no browser): "
              + ", ".join(f"{median(alone[(name, i)]):.0f}" for i in range(len(UI_SEARCHES))))
    if figures["stock"] and figures["team"]:
        paired = median([s["rows"] / t["rows"] for s, t in zip(figures["stock"], figures["team"])])
        on_path = {name: median([sum(a["end"] - a["start"] for a in r["api"] if a["name"].startswith("runs/search"))
                                 for r in figures[name]]) for name in ("stock", "team")}
        print(f"  first rows stock/team {rows['stock'] / rows['team']:.2f} (median of the repetitions' own ratios "
              f"{paired:.2f}); after the app's first request {booted['stock'] / booted['team']:.2f} "
              f"(above 1: the team page shows its rows sooner)")
        print(f"  the page's two searches, one after the other on the path to the rows: stock {on_path['stock']:.0f} ms, "
              f"team {on_path['team']:.0f} ms (saved: {on_path['stock'] - on_path['team']:.0f} ms)")
    print(f"server logs: {folder}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
