"""The examples run top to bottom, so they cannot rot."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart_example_runs_and_shows_the_policy_at_work(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "01_team_store_quickstart.py"), str(tmp_path / "qs")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "team.name=mlops-zoomcamp" in result.stdout
    assert "champion predicts" in result.stdout
    assert "rejected: Experiment name 'My Experiment' was rejected" in result.stdout
    assert "cannot be deleted: it backs the registered model version(s) 'taxi.duration' v1" in result.stdout
