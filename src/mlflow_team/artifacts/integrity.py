"""What both repositories share: SHA-256 digests, artifact paths that stay inside their root,
and the one rule for deletions (never wider than one run's, model's or trace's artifacts).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Callable
from urllib.parse import unquote

from mlflow_team import errors

_logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
#: Extended attribute that holds a team+file artifact's SHA-256 (hex), set before the rename.
XATTR = "user.mlflow_team.sha256"
#: Where the digest goes when the file system has no extended attributes (macOS, some mounts).
SIDECAR_SUFFIX = ".mlflow-team-sha256"

# The folder of one run's, logged model's or trace's artifacts: `<id>/artifacts`.
_OWNER_ROOT = re.compile(r"(?:^|/)(?:[0-9a-f]{32}|m-[0-9a-f]{32}|tr-[0-9a-f]{32})/artifacts(?:/|$)")


def sha256_of_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_hashing(source: BinaryIO, target: BinaryIO, on_chunk: Callable[[int], None] | None = None) -> str:
    """Copy ``source`` to ``target`` in chunks; return the SHA-256 (hex) of what was copied."""
    digest = hashlib.sha256()
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        target.write(chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
    return digest.hexdigest()


def safe_relative_path(path: str | None, what: str = "artifact path") -> str:
    """``path`` as a clean relative POSIX path, or an error if it could leave the root.

    Rejects absolute paths, ``..`` segments, and the same hidden behind percent-encoding or
    backslashes. ``None`` and ``""`` mean the root itself.
    """
    if not path:
        return ""
    decoded = path
    for _ in range(3):  # %252e%252e -> %2e%2e -> ..
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    candidate = decoded.replace("\\", "/")
    parts = candidate.split("/")
    if (
        candidate.startswith("/")
        or re.match(r"^[A-Za-z]:", candidate)
        or ".." in parts
        or "\x00" in candidate
    ):
        raise errors.ArtifactPathRejected(errors.ARTIFACT_PATH_REJECTED.format(path=path, what=what))
    normalized = posixpath.normpath(path)
    return "" if normalized == "." else normalized


def check_deletion_scope(full_path: str, shown: str) -> None:
    """Refuse to delete anything but one run's, logged model's or trace's artifacts (or inside)."""
    if not _OWNER_ROOT.search(full_path.strip("/")):
        raise errors.ArtifactDeletionRefused(errors.ARTIFACT_DELETE_REFUSED.format(path=shown))


def mismatch(artifact: str, actual: str, expected: str, destination: str) -> errors.ChecksumMismatch:
    """The error for a damaged artifact, also logged: MLflow's ``runs:/`` downloads swallow the
    repository's exception and say only "please ensure that the path is correct"."""
    message = errors.CHECKSUM_MISMATCH.format(
        artifact=artifact, actual=actual, expected=expected, destination=destination
    )
    _logger.error("mlflow-team: %s", message)
    return errors.ChecksumMismatch(message)


def download_checked(download, *args):
    """Run MLflow's ``download_artifacts``, keeping a checksum failure's type.

    MLflow gathers per-file failures into one plain ``MlflowException``; a caller should still be
    able to catch ``ChecksumMismatch``.
    """
    from mlflow.exceptions import MlflowException

    try:
        return download(*args)
    except errors.ChecksumMismatch:
        raise
    except MlflowException as exc:
        if exc.error_code == "DATA_LOSS":
            raise errors.ChecksumMismatch(exc.message) from exc
        raise


# --- digests beside team+file artifacts ---------------------------------------------------


def _sidecar(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, "." + tail + SIDECAR_SUFFIX)


def is_sidecar(name: str) -> bool:
    return name.startswith(".") and name.endswith(SIDECAR_SUFFIX)


def store_digest(temp_path: str, final_path: str, digest: str) -> None:
    """Attach ``digest`` to ``temp_path`` (about to be renamed to ``final_path``).

    An extended attribute travels with the file through the rename, so the file and its digest
    appear together; without extended attributes a hidden sidecar is written first.
    """
    if hasattr(os, "setxattr"):
        try:
            os.setxattr(temp_path, XATTR, digest.encode())
            _remove_quietly(_sidecar(final_path))
            return
        except OSError:
            pass
    sidecar_tmp = _sidecar(temp_path)
    with open(sidecar_tmp, "w") as handle:
        handle.write(digest)
    os.replace(sidecar_tmp, _sidecar(final_path))


def stored_digest(path: str) -> str | None:
    """The digest recorded for ``path``, or None for a file written without one (stock MLflow)."""
    if hasattr(os, "getxattr"):
        try:
            return os.getxattr(path, XATTR).decode()
        except OSError:
            pass
    try:
        with open(_sidecar(path)) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def drop_digest(path: str) -> None:
    _remove_quietly(_sidecar(path))


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def run_all(function, items, workers: int) -> None:
    """Run ``function`` over ``items`` on a bounded pool; raise the first failure after all end."""
    if not items:
        return
    if len(items) == 1 or workers <= 1:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="mlflow-team") as pool:
        futures = [pool.submit(function, item) for item in items]
        failure = None
        for future in futures:
            try:
                future.result()
            except BaseException as exc:  # keep the first, let the others finish
                failure = failure or exc
        if failure is not None:
            raise failure


def require_download_checks(scheme: str, uri: str) -> None:
    """Refuse to build a team repository where MLflow would bypass its download checks."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from mlflow_team.store import compat

    reason = compat.require("s3" if scheme == "team+s3" else "artifacts")
    if reason is None:
        return
    lo, hi = compat.TESTED_MINORS[0], compat.TESTED_MINORS[-1]
    raise MlflowException(
        errors.ARTIFACT_GUARD_UNAVAILABLE.format(
            scheme=scheme, uri=uri, version="%d.%d" % compat.probe().version, reason=reason,
            tested=f"{lo[0]}.{lo[1]} to {hi[0]}.{hi[1]}", plain=scheme.removeprefix("team+"),
        ),
        INVALID_PARAMETER_VALUE,
    )
