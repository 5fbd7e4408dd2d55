"""The demo's model selection: the pick, the table and the plot, on MLflow's own run entities."""

from __future__ import annotations

import struct

import pytest
from mlflow.entities import Metric, Run, RunData, RunInfo

from mlflow_team.demo import selection

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(name: str, rmse: float, seconds: float, size_mb: float, run_id: str | None = None) -> Run:
    info = RunInfo(run_id=run_id or f"id-{name}", experiment_id="1", user_id="", status="FINISHED",
                   start_time=0, end_time=1, lifecycle_stage="active", run_name=name)
    metrics = [Metric(selection.RMSE, rmse, 0, 0), Metric(selection.TRAINING_TIME, seconds, 0, 0),
               Metric(selection.MODEL_SIZE, size_mb, 0, 0)]
    return Run(info, RunData(metrics=metrics))


RUNS = [
    run("too-slow", 2.60, 12.0, 0.3),           # the best RMSE, over the time budget
    run("too-big", 2.65, 1.0, 6.0),             # next, over the size budget
    run("trial-3", 2.70, 0.9, 0.30),            # the best within both: the pick
    run("trial-1", 2.75, 0.5, 0.28),
    run("baseline-lasso", 2.82, 0.2, 0.27),
]


def test_the_pick_is_the_lowest_rmse_within_both_budgets():
    candidates = selection.select(RUNS, 10.0, 5.0)
    assert [c.name for c in candidates] == ["too-slow", "too-big", "trial-3", "trial-1", "baseline-lasso"]
    assert [c.name for c in candidates if c.picked] == ["trial-3"]
    within = [c for c in candidates if c.training_time_s <= 10.0 and c.model_size_mb <= 5.0]
    assert next(c for c in candidates if c.picked).rmse == min(c.rmse for c in within)
    reasons = {c.name: c.reason for c in candidates}
    assert reasons["too-slow"] == "trains in 12.00 s > 10 s budget"
    assert reasons["too-big"] == "6.00 MB > 5 MB budget"
    assert reasons["trial-1"] == "RMSE +0.0500 against the pick"


def test_nothing_is_picked_when_no_run_fits_both_budgets():
    candidates = selection.select(RUNS, 0.1, 5.0)
    assert not any(c.picked for c in candidates)
    assert all("budget" in c.reason for c in candidates)


def test_runs_without_the_three_metrics_are_not_candidates():
    partial = Run(RunInfo(run_id="id-x", experiment_id="1", user_id="", status="FINISHED", start_time=0, end_time=1,
                          lifecycle_stage="active", run_name="x"), RunData(metrics=[Metric(selection.RMSE, 1.0, 0, 0)]))
    assert [c.name for c in selection.select([partial, *RUNS], 10.0, 5.0)][:1] == ["too-slow"]


def test_the_table_says_the_size_is_the_logged_models_and_marks_the_pick():
    text = selection.table(selection.select(RUNS, 10.0, 5.0))
    header, *rows = text.splitlines()
    assert header.split() == ["run", "RMSE", "train", "s", "model", "MB", "(logged)", "why"]
    picked = [r for r in rows if r.startswith("*")]
    assert len(picked) == 1 and "trial-3" in picked[0] and "0.300" in picked[0]
    assert "lowest RMSE within both budgets" in picked[0]


def test_the_table_shows_the_pick_even_beyond_its_row_limit():
    text = selection.table(selection.select(RUNS, 10.0, 5.0), limit=1)
    assert [line.lstrip("* ").split()[0] for line in text.splitlines()[1:3]] == ["too-slow", "trial-3"]
    assert text.splitlines()[-1] == "... and 3 more"


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_the_plot_is_a_png_of_the_choice(tmp_path):
    path = tmp_path / "selection.png"
    returned = selection.plot(selection.select(RUNS, 10.0, 5.0), 10.0, 5.0, path)
    assert returned == str(path) and path.exists()
    width, height = png_size(path)
    assert width > height > 400  # two panels side by side, readable at 110 dpi


@pytest.mark.parametrize("budgets", [(0.1, 5.0), (10.0, 0.01)], ids=["nothing-fits-time", "nothing-fits-size"])
def test_the_plot_is_drawn_without_a_pick(tmp_path, budgets):
    path = tmp_path / "none.png"
    selection.plot(selection.select(RUNS, *budgets), *budgets, path)
    png_size(path)


def test_the_plot_is_drawn_for_no_candidates(tmp_path):
    path = tmp_path / "empty.png"
    selection.plot([], 10.0, 5.0, path)
    png_size(path)


def test_the_plot_leaves_pyplot_alone(tmp_path):
    import sys

    selection.plot(selection.select(RUNS, 10.0, 5.0), 10.0, 5.0, tmp_path / "p.png")
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
