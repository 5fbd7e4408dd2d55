"""Every command and snippet of the README runs as written.

Each fenced ``bash``, ``python`` or ``toml`` block carries a marker on the line above it:

* ``<!-- runnable -->``: run in a new empty folder;
* ``<!-- runnable in folder NAME -->``: blocks naming the same folder share it, in README order
  (the eject example runs on the database the first example made);
* ``, writes FILE`` (a toml block): the block is written to FILE, and a policy file is then
  checked with ``mlflow-team policy check``;
* ``<!-- not run: REASON -->``: starts a server, needs a bucket, or is a fragment; the reason
  names the test that covers it where there is one.

A block without a marker fails the test, so a new example cannot slip past it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"<!-- (runnable(?: in folder (?P<folder>[\w-]+))?(?:, writes (?P<file>[\w.-]+))?|not run[^>]*) -->")
LANGUAGES = ("bash", "sh", "python", "toml")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    text: str
    marker: str | None
    folder: str | None
    file: str | None

    @property
    def runnable(self) -> bool:
        return bool(self.marker and self.marker.startswith("runnable"))


def blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = MARKER.fullmatch(above.strip())
        found.append(Block(
            line=index + 1, language=fence.group(1), text="\n".join(lines[index + 1:end]) + "\n",
            marker=marker.group(1) if marker else None,
            folder=marker.group("folder") if marker else None, file=marker.group("file") if marker else None,
        ))
        index = end + 1
    return [b for b in found if b.language in LANGUAGES]


def test_every_code_block_of_the_readme_says_whether_it_runs():
    unmarked = [f"README.md:{b.line} ({b.language})" for b in blocks() if b.marker is None]
    assert unmarked == [], "put <!-- runnable ... --> or <!-- not run: why --> on the line above"


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "_MLFLOW_"))}
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        HOME=str(home),  # a fresh user: no git identity, no keys, no config
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        MLFLOW_TEAM_AUTHOR_KEY_FILE=str(home / "no-key"),
    )
    return env


def test_the_readme_examples_run_as_written(tmp_path):
    runnable = [b for b in blocks() if b.runnable]
    assert len(runnable) >= 6  # the test would pass vacuously if the markers were lost
    folders: dict[str, Path] = {}
    home = tmp_path / "home"
    home.mkdir()
    env = _environment(home)
    for number, block in enumerate(runnable):
        name = block.folder or f"block-{number}"
        folder = folders.setdefault(name, tmp_path / name)
        folder.mkdir(exist_ok=True)
        where = f"README.md:{block.line}"
        if block.file:
            (folder / block.file).write_text(block.text)
            if block.file == "mlflow-team.toml":
                command = ["bash", "-c", f"mlflow-team policy check {block.file}"]
            else:
                continue
        elif block.language == "python":
            command = [sys.executable, "-c", block.text]
        elif block.language in ("bash", "sh"):
            command = ["bash", "-e", "-o", "pipefail", "-c", block.text]
        else:
            pytest.fail(f"{where}: a {block.language} block can only be marked 'writes FILE'")
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{where} failed:\n{block.text}\n{result.stdout}\n{result.stderr}"
