"""``team+file:///path``: local artifacts that are atomic and verified (the embedded default).

Every file is written to a hidden temporary file in its destination folder, fsynced, given its
SHA-256 and only then renamed into place, so a crash never leaves a half-written artifact under
its final name. Reads check the digest; a damaged file raises ``ChecksumMismatch`` and nothing is
written to the destination. Directories are copied by a bounded thread pool.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import shutil
import tempfile
from typing import BinaryIO, Callable

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from mlflow_team import config, errors
from mlflow_team.artifacts import incomplete, integrity, manifest

_logger = logging.getLogger(__name__)

SCHEME = "team+file"
_TEMP_PREFIX = ".artifact.uploading."  # MLflow's own staging prefix: its listings skip it too


def to_file_uri(uri: str) -> str:
    """``team+file:///x`` -> ``file:///x`` (what MLflow's local repository understands)."""
    return uri[len("team+") :] if uri.startswith(SCHEME + ":") else uri


class TeamLocalArtifactRepository(LocalArtifactRepository):
    """Atomic, checksummed local artifacts; MLflow's ``LocalArtifactRepository`` otherwise."""

    def __init__(
        self,
        artifact_uri: str,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        **kwargs,
    ) -> None:
        integrity.require_download_checks(SCHEME, artifact_uri)
        super().__init__(to_file_uri(artifact_uri), tracking_uri=tracking_uri, registry_uri=registry_uri)
        # Keep the team+ scheme in the URI MLflow derives child URIs from.
        self.artifact_uri = artifact_uri
        self._manifests = manifest.Cache()

    @property
    def max_workers(self) -> int:
        return config.artifact_workers()

    # --- writing -------------------------------------------------------------------------

    def _write_atomically(self, source: BinaryIO, destination: str) -> str:
        """Write ``source`` to ``destination`` through a hidden temporary file; return its SHA-256.

        The temporary file is created with mode 0o666 and the process umask applied by the
        kernel, as ``open()`` would: the umask is never read by setting it (``os.umask`` changes
        it for every thread of the process, and a folder another thread created meanwhile would
        get mode 0o777).
        """
        fd, temp_path = _create_temp(os.path.dirname(destination))
        try:
            with os.fdopen(fd, "wb") as temp:
                digest = integrity.copy_hashing(source, temp)
                temp.flush()
                os.fsync(temp.fileno())
            integrity.store_digest(temp_path, destination, digest)
            os.replace(temp_path, destination)
            return digest
        except BaseException:
            integrity.drop_digest(temp_path)
            try:
                os.remove(temp_path)
            except OSError:
                pass
            raise

    def _folder(self, artifact_path: str | None) -> str:
        """The folder for ``artifact_path`` under the root, created (public names only: the
        helpers MLflow's repository has for this are private and differ between minors)."""
        artifact_path = integrity.safe_relative_path(artifact_path) or None
        folder = os.path.join(self.artifact_dir, artifact_path) if artifact_path else self.artifact_dir
        os.makedirs(folder, exist_ok=True)
        return folder

    def _destination(self, file_name: str, artifact_path: str | None) -> str:
        name = os.path.basename(file_name)
        integrity.safe_relative_path(name, "artifact file name")
        return os.path.join(self._folder(artifact_path), name)

    def log_artifact(self, local_file, artifact_path=None):
        destination = self._destination(local_file, artifact_path)
        try:
            if os.path.samefile(local_file, destination):
                return
        except FileNotFoundError:
            pass
        with open(local_file, "rb") as source:
            self._record({destination: self._write_atomically(source, destination)})

    def log_artifact_from_stream(self, stream, artifact_file_name, artifact_path=None):
        destination = self._destination(artifact_file_name, artifact_path)
        self._record({destination: self._write_atomically(stream, destination)})

    async def log_artifact_from_async_stream(self, chunks, artifact_file_name, artifact_path=None):
        import asyncio

        destination = self._destination(artifact_file_name, artifact_path)
        spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
        try:
            async for chunk in chunks:
                await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            digest = await asyncio.to_thread(self._write_atomically, spool, destination)
            await asyncio.to_thread(self._record, {destination: digest})
        finally:
            spool.close()

    def log_artifacts(self, local_dir, artifact_path=None):
        root = self._folder(artifact_path)
        local_dir = os.path.abspath(local_dir)
        jobs = []
        for folder, _, files in os.walk(local_dir):
            relative = os.path.relpath(folder, local_dir)
            target_dir = root if relative == "." else os.path.join(root, relative)
            os.makedirs(target_dir, exist_ok=True)
            jobs.extend((os.path.join(folder, f), os.path.join(target_dir, f)) for f in files)

        names = {os.path.relpath(target, root).replace(os.sep, "/") for _, target in jobs}
        marker = None
        if len(jobs) > 1:  # one file is written whole or not at all; a folder needs a marker
            marker = os.path.join(root, incomplete.new_name())
            text = incomplete.text(integrity.safe_relative_path(artifact_path), sorted(names))
            self._write_atomically(io.BytesIO(text), marker)
        digests: dict[str, str] = {}

        def copy(job: tuple[str, str]) -> None:
            with open(job[0], "rb") as source:
                digests[job[1]] = self._write_atomically(source, job[1])

        try:
            integrity.run_all(copy, jobs, self.max_workers)
        except BaseException:
            try:  # what did go up is recorded, even on a failure, which stays the error raised
                self._record(digests)
            except Exception as exc:
                _logger.warning("mlflow-team: the manifest record of a failed upload was not written: %s", exc)
            raise
        self._record(digests)
        if marker is not None:
            self._finish_folder(root, marker, names)

    def _finish_folder(self, root: str, marker: str, names: set[str]) -> None:
        """Remove this upload's marker, and leftover ones whose files this upload all wrote."""
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if path == marker or not incomplete.is_marker(name):
                continue
            try:
                with open(path, "rb") as handle:
                    covered = incomplete.listed(handle.read()) <= names
                if covered:
                    os.remove(path)
            except OSError:
                continue
        try:
            os.remove(marker)
        except FileNotFoundError:  # a concurrent upload of the same files finished first and took it
            pass

    def _refuse_incomplete(self, artifact_path: str | None) -> None:
        """Raise ``ArtifactIncomplete`` for a folder an unfinished directory upload writes to."""
        path = integrity.safe_relative_path(artifact_path)
        target = os.path.join(self.artifact_dir, path) if path else self.artifact_dir
        if incomplete.is_marker(path) or not os.path.isdir(target):
            return  # one file (or the marker itself): each file is written whole

        def refuse(folder: str, name: str) -> errors.ArtifactIncomplete:
            return errors.ArtifactIncomplete(
                errors.ARTIFACT_UPLOAD_INCOMPLETE.format(path=artifact_path or "", folder=folder, marker=name)
            )

        for folder, _, files in os.walk(target):
            for name in files:
                if incomplete.is_marker(name):
                    relative = os.path.relpath(folder, self.artifact_dir).replace(os.sep, "/")
                    raise refuse("" if relative == "." else relative, name)
        for folder in incomplete.ancestors(path):
            where = os.path.join(self.artifact_dir, folder) if folder else self.artifact_dir
            for name in os.listdir(where):
                if not incomplete.is_marker(name):
                    continue
                with open(os.path.join(where, name), "rb") as handle:
                    if incomplete.affects(folder, incomplete.listed(handle.read()), path):
                        raise refuse(folder, name)

    def _record(self, digests: dict[str, str]) -> None:
        """One manifest record per owner for ``{file path: SHA-256}`` just written."""
        records = {path.replace(os.sep, "/"): manifest.sha256_record(d) for path, d in digests.items()}
        for owner_folder, files in manifest.by_owner(records).items():
            folder = manifest.folder_of(owner_folder).replace("/", os.sep)
            os.makedirs(folder, exist_ok=True)
            fd, temp_path = _create_temp(folder)
            try:
                with os.fdopen(fd, "wb") as temp:
                    temp.write(manifest.encode(files))
                os.replace(temp_path, os.path.join(folder, manifest.new_name()))
            except BaseException:
                try:
                    os.remove(temp_path)
                except OSError:
                    pass
                raise

    def _read_manifest(self, owner_folder: str) -> list[tuple[str, dict[str, str]]]:
        folder = manifest.folder_of(owner_folder).replace("/", os.sep)
        try:
            names = [n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(_TEMP_PREFIX)]
        except OSError:
            return []
        found = []
        for name in names:
            try:
                with open(os.path.join(folder, name), "rb") as handle:
                    found.append((name, manifest.decode(handle.read(), name)))
            except OSError:
                continue
        return found

    def _check(self, path: str, digest: Callable[[], str], artifact: str, shown: str) -> None:
        """Raise ``ChecksumMismatch`` unless ``digest()`` is what mlflow-team recorded for ``path``:
        its own digest, or (a file that lost it, or never had one) the owner's manifest. A file
        with neither is not hashed."""
        expected = integrity.stored_digest(path)
        if expected is not None:
            actual = digest()
            if actual != expected:
                raise integrity.mismatch(artifact, actual, expected, shown)
            return
        found = manifest.split(os.path.abspath(path).replace(os.sep, "/"))
        if found is None or not found[1]:
            return
        records = self._manifests.recorded(found[0], found[1], self._read_manifest)
        if not records:
            return
        actual = digest()
        if manifest.sha256_record(actual) not in records:
            self._manifests.forget(found[0])  # read again before calling it damage
            records = self._manifests.recorded(found[0], found[1], self._read_manifest)
            if records and manifest.sha256_record(actual) not in records:
                raise integrity.mismatch(artifact, actual, records[-1].partition(":")[2], shown)

    # --- reading -------------------------------------------------------------------------

    def list_artifacts(self, path=None):
        if path:
            integrity.safe_relative_path(path)
        infos = super().list_artifacts(path)
        return [
            info for info in infos
            if not integrity.is_sidecar(os.path.basename(info.path)) and os.path.basename(info.path) != manifest.FOLDER
        ]

    def _source_file(self, artifact_path: str) -> str:
        relative = integrity.safe_relative_path(artifact_path)
        source = os.path.join(self.artifact_dir, os.path.normpath(relative))
        if not os.path.isfile(source):
            raise MlflowException(
                f"No such artifact: {artifact_path!r} in {self.artifact_uri}",
                error_code=RESOURCE_DOES_NOT_EXIST,
            )
        return source

    def _download_file(self, remote_file_path, local_path):
        source = self._source_file(remote_file_path)
        folder = os.path.dirname(os.path.abspath(local_path))
        fd, temp_path = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as temp, open(source, "rb") as handle:
                actual = integrity.copy_hashing(handle, temp)
            self._check(source, lambda: actual, remote_file_path, local_path)
            shutil.copystat(source, temp_path)
            os.replace(temp_path, local_path)
        except BaseException:
            try:
                os.remove(temp_path)
            except OSError:
                pass
            raise

    def _verify_in_place(self, local_path: str, shown: str) -> None:
        paths = [local_path] if os.path.isfile(local_path) else [
            os.path.join(folder, name)
            for folder, _, names in os.walk(local_path)
            for name in names
            if not name.startswith(_TEMP_PREFIX) and not integrity.is_sidecar(name)
        ]

        def verify(path: str) -> None:
            artifact = os.path.relpath(path, self.artifact_dir).replace(os.sep, "/")
            self._check(path, lambda: integrity.sha256_of_file(path), artifact, shown)

        integrity.run_all(verify, paths, self.max_workers)

    def get_local_path(self, artifact_path):
        self._refuse_incomplete(artifact_path)
        local_path = super().get_local_path(artifact_path)
        self._verify_in_place(local_path, "(served in place)")
        return local_path

    def download_artifacts(self, artifact_path, dst_path=None):
        self._refuse_incomplete(artifact_path)
        if dst_path:
            return integrity.download_checked(super().download_artifacts, artifact_path, dst_path)
        # Stock hands back the stored files themselves; check them before anyone loads them.
        local_path = super().download_artifacts(artifact_path, None)
        self._verify_in_place(local_path, "(returned in place)")
        return local_path

    # --- deleting ------------------------------------------------------------------------

    def delete_artifacts(self, artifact_path=None):
        relative = integrity.safe_relative_path(artifact_path)
        target = os.path.join(self.artifact_dir, os.path.normpath(relative)) if relative else self.artifact_dir
        integrity.check_deletion_scope(target.replace(os.sep, "/"), artifact_path or self.artifact_uri)
        if os.path.isfile(target):
            os.remove(target)
            integrity.drop_digest(target)
        elif os.path.isdir(target):
            shutil.rmtree(target)
            found = manifest.split(os.path.abspath(target).replace(os.sep, "/"))
            if found is not None and not found[1]:  # all of one run's artifacts: their record too
                shutil.rmtree(manifest.folder_of(found[0]).replace("/", os.sep), ignore_errors=True)
                self._manifests.forget(found[0])


def _create_temp(folder: str) -> tuple[int, str]:
    """A new hidden file in ``folder``, opened for writing, with the mode ``open()`` gives."""
    while True:
        path = os.path.join(folder, _TEMP_PREFIX + secrets.token_hex(8))
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), path
        except FileExistsError:
            continue
