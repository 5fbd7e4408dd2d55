"""Targets of this package's MLflow entry points.

MLflow loads them while ``import mlflow`` is still running, so this module imports nothing from
MLflow (or from the heavy parts of mlflow_team) until a store is actually built. Builders take
``**kwargs``: MLflow passes more keywords as it grows.
"""

from __future__ import annotations

from typing import Any


def tracking_store(store_uri: str, artifact_uri: str | None = None, **kwargs: Any):
    from mlflow_team.store.tracking import build

    return build(store_uri, artifact_uri, **kwargs)


def registry_store(store_uri: str, **kwargs: Any):
    from mlflow_team.store.registry import build

    return build(store_uri, **kwargs)


def file_artifact_repository(artifact_uri: str, **kwargs: Any):
    from mlflow_team.artifacts.local import TeamLocalArtifactRepository

    return TeamLocalArtifactRepository(artifact_uri, **kwargs)


def s3_artifact_repository(artifact_uri: str, **kwargs: Any):
    from mlflow_team import extras, redact

    # At construction, not at the first upload: a missing boto3 names the extra that installs it.
    extras.require("boto3", f"The artifact repository for {redact.mask_url(artifact_uri)!r}")
    from mlflow_team.artifacts.s3 import TeamS3ArtifactRepository

    return TeamS3ArtifactRepository(artifact_uri, **kwargs)


def proxied_artifact_repository(artifact_uri: str, **kwargs: Any):
    from mlflow_team.artifacts.proxied import TeamMlflowArtifactsRepository

    return TeamMlflowArtifactsRepository(artifact_uri, **kwargs)
