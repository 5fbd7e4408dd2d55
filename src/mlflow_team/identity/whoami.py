"""Who is the author of this process's runs, and which key signs for them (client side).

Imports only the standard library at import time (:mod:`mlflow_team.config` is imported when
called): MLflow loads the providers that call this while it imports.

The author is, in order: ``MLFLOW_TEAM_AUTHOR``; the git ``user.email`` of the working directory's
repository (or the global one); ``MLFLOW_TRACKING_USERNAME``; ``user@host`` from the OS.
"""

from __future__ import annotations

import functools
import getpass
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Author:
    name: str
    source: str  # where the name came from, for `mlflow-team identity` and warnings


def author() -> Author:
    """The author of this process's runs. Cached per environment and directory; never raises."""
    try:
        from mlflow_team import config

        return _author(
            os.environ.get(config.AUTHOR_ENV, ""),
            os.environ.get("MLFLOW_TRACKING_USERNAME", ""),
            os.getcwd(),
        )
    except Exception:  # noqa: BLE001 - identity must never break a user's run
        return Author(_os_user(), "the operating system")


@functools.lru_cache(maxsize=32)
def _author(explicit: str, tracking_username: str, cwd: str) -> Author:
    from mlflow_team import config

    if explicit.strip():
        return Author(explicit.strip(), config.AUTHOR_ENV)
    email = _git_email(cwd)
    if email:
        return Author(email, "git config user.email")
    if tracking_username.strip():
        return Author(tracking_username.strip(), "MLFLOW_TRACKING_USERNAME")
    return Author(_os_user(), "the operating system")


def _git_email(cwd: str) -> str:
    git = shutil.which("git")
    if git is None:
        return ""
    try:
        # `git config` resolves repository, global and included files exactly as git does.
        result = subprocess.run(
            [git, "config", "--get", "user.email"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=3,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _os_user() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    try:
        host = socket.gethostname() or "localhost"
    except OSError:
        host = "localhost"
    return f"{user}@{host}"


@dataclass(frozen=True)
class Key:
    secret: bytes
    source: str

    def __repr__(self) -> str:  # a key never shows up in logs or tracebacks
        return f"Key(source={self.source!r})"


def signing_key() -> Key | None:
    """The author's personal key: ``MLFLOW_TEAM_AUTHOR_KEY``, else the key file, else none."""
    from mlflow_team import config

    value = os.environ.get(config.AUTHOR_KEY_ENV, "").strip()
    if value:
        return Key(value.encode(), config.AUTHOR_KEY_ENV)
    path = config.author_key_file()
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Key(text.encode(), str(path)) if text else None


def clear_cache() -> None:
    _author.cache_clear()
