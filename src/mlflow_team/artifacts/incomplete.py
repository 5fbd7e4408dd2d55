"""Markers of directory uploads that have not finished.

``log_artifacts`` of a directory stores its files one by one, so a process killed midway leaves
some of them. Before the first file, both repositories put a marker file into the target folder,
``UPLOAD-INCOMPLETE-<id>.txt``, and remove it after the last: a marker that stays says, where
``list_artifacts`` and the UI list the folder (for stock clients too), that the folder is
incomplete and which files the upload meant to store. mlflow-team refuses to download a folder
holding one (a single file is always whole: each is stored atomically).

A later upload into the same folder that stores every file a leftover marker lists removes it.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import socket
import time

PREFIX = "UPLOAD-INCOMPLETE-"
SUFFIX = ".txt"
_FILES_HEADER = "files:"


def new_name() -> str:
    return f"{PREFIX}{secrets.token_hex(4)}{SUFFIX}"


def is_marker(path: str) -> bool:
    name = posixpath.basename(path.replace(os.sep, "/"))
    return name.startswith(PREFIX) and name.endswith(SUFFIX)


def text(folder: str, files: list[str]) -> bytes:
    """What a marker says (``files`` relative to ``folder``, the folder as the run shows it)."""
    shown = folder or "(the run's artifact root)"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    lines = [
        f"This folder's upload has not finished: mlflow-team began storing the {len(files)} files listed",
        f"below into {shown!r} at {started} (host {socket.gethostname()}, process {os.getpid()}), and removes",
        "this file once every one of them is stored. While this file is here, some of them may be missing",
        "or older copies, and mlflow-team refuses to download the folder. If the upload was stopped, log",
        f"the folder again, for example mlflow.log_artifacts(local_dir, {folder or None!r}): that upload",
        "removes this file.",
        "",
        _FILES_HEADER,
        *sorted(files),
    ]
    return ("\n".join(lines) + "\n").encode()


def listed(data: bytes) -> set[str]:
    """The files a marker lists (relative to its folder)."""
    body = data.decode("utf-8", errors="replace")
    _, found, rest = body.partition("\n" + _FILES_HEADER + "\n")
    return {line for line in rest.splitlines() if line} if found else set()


def affects(marker_folder: str, marker_files: set[str], requested: str) -> bool:
    """Whether a marker in ``marker_folder`` makes a download of the folder ``requested``
    incomplete (paths relative to one root, ``""`` for the root itself)."""
    if not requested or marker_folder == requested or marker_folder.startswith(requested + "/"):
        return True  # the marker lies inside what is asked for
    if marker_folder and not requested.startswith(marker_folder + "/"):
        return False  # elsewhere
    inside = requested[len(marker_folder) + 1:] if marker_folder else requested
    return any(f.startswith(inside + "/") for f in marker_files)


def ancestors(path: str) -> list[str]:
    """The folders above ``path`` up to the root (``""``), nearest first."""
    found, current = [], path
    while current:
        current = posixpath.dirname(current)
        found.append(current)
    return found
