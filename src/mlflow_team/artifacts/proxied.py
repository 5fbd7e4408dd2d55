"""Directory uploads through an ``mlflow server``'s artifact proxy (``mlflow-artifacts:/``), marked
while they are incomplete.

Through the proxy, MLflow's client stores a folder file by file, so the server never sees the
folder: a client killed midway leaves some of its files and nothing that says so. With
mlflow-team installed, the client's repository for ``mlflow-artifacts`` is this subclass of
MLflow's: it puts the same marker ``team+file`` and ``team+s3`` write (``incomplete``) into the
target folder before the first file and removes it after the last, so the folder shows as
incomplete in ``list_artifacts`` and the UI, for every client, until an upload completes.
Everything else is MLflow's. A marker that cannot be written costs a warning, never the upload.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile

from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

from mlflow_team.artifacts import incomplete

_logger = logging.getLogger(__name__)


class TeamMlflowArtifactsRepository(MlflowArtifactsRepository):
    def log_artifacts(self, local_dir, artifact_path=None):
        files = _files(local_dir)
        if len(files) < 2:
            return super().log_artifacts(local_dir, artifact_path)
        folder = (artifact_path or "").strip("/")
        marker = self._put_marker(folder, files)
        # MLflow's loop, file by file, in a stable order (stock's follows the directory listing)
        root = os.path.abspath(local_dir)
        for relative in sorted(files):
            target = posixpath.join(folder, posixpath.dirname(relative)).strip("/")
            self.log_artifact(os.path.join(root, *relative.split("/")), target or None)
        try:
            for name in self._finished_markers(folder, set(files), marker):
                self.delete_artifacts(posixpath.join(folder, name) if folder else name)
        except Exception as exc:  # noqa: BLE001 - every file is stored; a marker says more than it should
            _logger.warning("mlflow-team: the upload of %r finished but its marker could not be removed (%s)",
                            folder or "/", exc)

    def _finished_markers(self, folder: str, stored: set[str], own: str | None) -> list[str]:
        """This upload's marker, and any left by an earlier one whose files this upload stored."""
        found = [own] if own else []
        for info in self.list_artifacts(folder or None):
            name = posixpath.basename(info.path)
            if info.is_dir or name == own or not incomplete.is_marker(name):
                continue
            with tempfile.TemporaryDirectory(prefix="mlflow-team-marker-") as scratch:
                local = self.download_artifacts(info.path, scratch)
                with open(local, "rb") as handle:
                    if incomplete.listed(handle.read()) <= stored:
                        found.append(name)
        return found

    def _put_marker(self, folder: str, files: list[str]) -> str | None:
        name = incomplete.new_name()
        try:
            with tempfile.TemporaryDirectory(prefix="mlflow-team-marker-") as scratch:
                path = os.path.join(scratch, name)
                with open(path, "wb") as handle:
                    handle.write(incomplete.text(folder, files))
                self.log_artifact(path, folder or None)
            return name
        except Exception as exc:  # noqa: BLE001 - the upload goes on unmarked, as stock's would
            _logger.warning("mlflow-team: the folder %r is uploaded without its incomplete-upload marker (%s)",
                            folder or "/", exc)
            return None


def _files(local_dir: str) -> list[str]:
    """The files under ``local_dir``, as paths relative to it with ``/``."""
    root = os.path.abspath(local_dir)
    found = []
    for current, _, names in os.walk(root):
        for name in names:
            found.append(os.path.relpath(os.path.join(current, name), root).replace(os.sep, "/"))
    return found
