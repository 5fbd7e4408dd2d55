"""A record of what mlflow-team wrote, kept outside the artifacts themselves.

An artifact carries its own SHA-256 (S3 metadata, an extended attribute), and a copy that lost
it (``aws s3 cp`` over the key, a file written elsewhere and renamed over the old one) would
look like a file stock MLflow wrote: "not ours, not checked". So every upload also records its
digests in the owner's manifest, a folder beside the owner's ``artifacts`` folder::

    <experiment>/<run id>/artifacts/model/model.pkl           the artifact
    <experiment>/<run id>/.mlflow-team-manifest/<n>.json      {"files": {"model/model.pkl": "sha256:..."}}

One record per upload call (a directory is one record), named so that records never collide:
writers never read or rewrite each other's records. A download of an artifact that carries no
digest of its own looks it up here; an artifact recorded here must match one of its recorded
digests (an earlier upload of the same path counts: a later one may be in progress).

Keys outside MLflow's layout (``<id>/artifacts/...`` of a run, logged model or trace) have no
owner and no manifest; their own digest is all there is.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time

_logger = logging.getLogger(__name__)

FOLDER = ".mlflow-team-manifest"
_OWNER = re.compile(r"^(?P<owner>(?:.*?/)?(?:[0-9a-f]{32}|m-[0-9a-f]{32}|tr-[0-9a-f]{32}))/artifacts(?:/(?P<rest>.*))?$")
#: How long a manifest read is trusted to say "nothing recorded" (a recorded digest is always
#: trusted: records are only ever added).
MISS_TTL_S = 5.0


def split(key: str) -> tuple[str, str] | None:
    """``(owner folder, path inside its artifacts)`` of a key or path in MLflow's layout."""
    match = _OWNER.match(key.rstrip("/"))
    if match is None:
        return None
    return match["owner"], (match["rest"] or "").strip("/")


def folder_of(owner: str) -> str:
    return f"{owner}/{FOLDER}"


def new_name() -> str:
    """A record's file name: ordered by time, unique without coordination."""
    return f"{time.time_ns():020d}-{secrets.token_hex(6)}.json"


def sha256_record(hex_digest: str) -> str:
    return f"sha256:{hex_digest}"


def parts_record(part_size: int, composite: str) -> str:
    """S3's composite checksum (``<base64>-<parts>``) of a multipart object of ``part_size`` parts."""
    return f"parts:{part_size}:{composite}"


def encode(files: dict[str, str]) -> bytes:
    return json.dumps({"version": 1, "files": files}, sort_keys=True).encode()


def decode(data: bytes, name: str) -> dict[str, str]:
    try:
        files = json.loads(data)["files"]
        if isinstance(files, dict):
            return {str(k): str(v) for k, v in files.items()}
    except (ValueError, KeyError, TypeError):
        pass
    _logger.warning("mlflow-team: the artifact manifest record %s is unreadable and was skipped.", name)
    return {}


def by_owner(records: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{key: record}`` grouped as ``{owner: {path inside artifacts: record}}`` (keys outside
    MLflow's layout are left out)."""
    grouped: dict[str, dict[str, str]] = {}
    for key, record in records.items():
        found = split(key)
        if found is not None and found[1] and record:
            grouped.setdefault(found[0], {})[found[1]] = record
    return grouped


class Cache:
    """The records read per owner: ``{path: [records in write order]}``, read again when an
    owner's answer is "nothing recorded" and older than ``MISS_TTL_S``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, tuple[float, dict[str, list[str]]]] = {}

    def recorded(self, owner: str, path: str, load) -> list[str]:
        """The records of ``path``; ``load(owner)`` returns ``[(name, {path: record})]``."""
        with self._lock:
            cached = self._owners.get(owner)
        if cached is not None:
            loaded_at, paths = cached
            if path in paths or time.monotonic() - loaded_at < MISS_TTL_S:
                return paths.get(path, [])
        paths: dict[str, list[str]] = {}
        for _, files in sorted(load(owner)):
            for name, record in files.items():
                paths.setdefault(name, []).append(record)
        with self._lock:
            if len(self._owners) > 256:
                self._owners.clear()
            self._owners[owner] = (time.monotonic(), paths)
        return paths.get(path, [])

    def forget(self, owner: str) -> None:
        with self._lock:
            self._owners.pop(owner, None)
