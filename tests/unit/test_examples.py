"""The example notebooks run top to bottom (small sizes), so they cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def execute(notebook: Path, workdir: Path, monkeypatch) -> dict:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("EXAMPLES_SMALL", "1")
    monkeypatch.setenv("EXAMPLES_WORKDIR", str(workdir))
    book = nbformat.read(notebook, as_version=4)
    nbclient.NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return book


def outputs(book) -> str:
    texts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") or "".join(str(v) for v in output.get("data", {}).values()))
    return "\n".join(texts)


def test_there_are_four_numbered_notebooks():
    assert [n.name[:3] for n in NOTEBOOKS] == ["01_", "02_", "03_", "04_"]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_the_notebook_runs_top_to_bottom(notebook, tmp_path, monkeypatch):
    book = execute(notebook, tmp_path, monkeypatch)
    shown = outputs(book)
    expected = {
        "01_quickstart": ["team.author (stamped by the store):", "rejected: Experiment name 'My Experiment' was rejected",
                          "cannot be deleted"],
        "02_hyperopt_xgboost": ["stop reason: max_evals", "hyperopt/trials.csv"],
        "03_model_selection_registry": ["registered nyc-taxi.trip-duration version 1 as @champion", "'champion': 2"],
        "04_team_server_s3_identity": ["stamped by the server:", "sha256:", "PERMISSION_DENIED", "servers stopped"],
    }[notebook.stem]
    for text in expected:
        assert text in shown, f"{notebook.name} did not show {text!r}:\n{shown[-3000:]}"
