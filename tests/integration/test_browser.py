"""The stock `mlflow ui` on the demo's store, opened in headless Chromium: proof that the UI
works unchanged on the plugins (experiment, trial runs with their author, model and alias)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from mlflow_team.demo.servers import free_port, process
from tests.conftest import in_ci

pytestmark = [pytest.mark.server, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser_or_skip():
    if CHROMIUM and CHROMEDRIVER:
        return
    message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    if in_ci():
        pytest.fail(message + " under CI=true")
    pytest.skip(message)


@pytest.fixture(scope="module")
def demo_ui(tmp_path_factory):
    _browser_or_skip()
    pytest.importorskip("selenium")
    workdir = tmp_path_factory.mktemp("browser") / "demo"
    # Module fixtures start before the per-test clean-up: leave out what other tests may have set.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TEAM_POLICY")}
    done = subprocess.run(
        [sys.executable, "-m", "mlflow_team.cli", "demo", "--workdir", str(workdir), "--trials", "2", "--rows", "3000"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    store = f"team+sqlite:///{workdir / 'mlflow.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
    with process(command, workdir / "ui.log", f"{url}/health", env, workdir, "mlflow ui", timeout=90):
        yield url, MlflowClient(tracking_uri=store)


@pytest.fixture(scope="module")
def browser():
    _browser_or_skip()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _page_shows(browser, url: str, *texts: str, timeout: float = 60) -> str:
    """Open ``url`` and wait until the rendered page's text contains every one of ``texts``."""
    browser.get("about:blank")  # a new page load: a change of the #fragment alone may not route
    browser.get(url)
    deadline = time.monotonic() + timeout
    reload_at = time.monotonic() + 15
    body = ""
    while time.monotonic() < deadline:
        body = browser.execute_script("return document.body ? document.body.innerText : ''") or ""
        if all(text in body for text in texts):
            return body
        if time.monotonic() > reload_at:  # a slow first render on a loaded machine: load again
            browser.get("about:blank")
            browser.get(url)
            reload_at = time.monotonic() + 15
        time.sleep(0.5)
    missing = [text for text in texts if text not in body]
    pytest.fail(f"{url} never showed {missing}; it showed: {body[:1500]!r}")


def test_the_stock_ui_shows_the_experiment_the_trial_runs_with_their_author_and_the_champion(demo_ui, browser):
    url, client = demo_ui
    experiment = client.get_experiment_by_name("nyc-taxi/trip-duration")
    runs = client.search_runs([experiment.experiment_id])
    trial = next(r for r in runs if r.info.run_name == "trial-1")
    author = trial.data.tags["team.author"]

    _page_shows(
        browser, f"{url}/#/experiments/{experiment.experiment_id}/runs", "trip-duration", "xgboost-hyperopt", "baseline-lasso"
    )
    _page_shows(browser, f"{url}/#/experiments/{experiment.experiment_id}/runs/{trial.info.run_id}", "trial-1", author)
    _page_shows(browser, f"{url}/#/models/nyc-taxi.trip-duration", "nyc-taxi.trip-duration", "champion")
