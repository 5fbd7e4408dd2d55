"""What still depends on a run, experiment, logged model or model version.

Plain queries over MLflow's own tables, run inside the caller's session so that a check and the
deletion it guards see the same data. The policy decides what a link means.
"""

from __future__ import annotations

from sqlalchemy import or_
from sqlalchemy.orm import Session

Versions = list[tuple[str, str]]


def _live_versions(session: Session, *conditions) -> Versions:
    from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion

    rows = (
        session
        .query(SqlModelVersion.name, SqlModelVersion.version)
        .filter(SqlModelVersion.current_stage != STAGE_DELETED_INTERNAL, or_(*conditions))
        .order_by(SqlModelVersion.name, SqlModelVersion.version)
        .all()
    )
    return [(name, str(version)) for name, version in rows]


def _model_sources(session: Session, *conditions) -> list[str]:
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel

    ids = session.query(SqlLoggedModel.model_id).filter(*conditions).all()
    return [f"models:/{model_id}" for (model_id,) in ids]


def versions_of_run(session: Session, run_id: str) -> Versions:
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel

    sources = _model_sources(session, SqlLoggedModel.source_run_id == run_id)
    return _live_versions(
        session, SqlModelVersion.run_id == run_id, SqlModelVersion.source.in_(sources)
    )


def versions_of_experiment(session: Session, experiment_id: str) -> Versions:
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel, SqlRun

    run_ids = session.query(SqlRun.run_uuid).filter(SqlRun.experiment_id == int(experiment_id))
    sources = _model_sources(session, SqlLoggedModel.experiment_id == int(experiment_id))
    return _live_versions(
        session, SqlModelVersion.run_id.in_(run_ids.scalar_subquery()), SqlModelVersion.source.in_(sources)
    )


def versions_of_logged_model(session: Session, model_id: str) -> Versions:
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion

    return _live_versions(session, SqlModelVersion.source == f"models:/{model_id}")


def protected_deleted_runs(session: Session, run_ids: list[str]) -> list[tuple[str, Versions]]:
    """Of these (deleted) runs, the ones a live model version still depends on."""
    found = []
    for run_id in run_ids:
        versions = versions_of_run(session, run_id)
        if versions:
            found.append((run_id, versions))
    return found


def aliases_of_version(session: Session, name: str, version: str) -> list[str]:
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelAlias

    rows = (
        session
        .query(SqlRegisteredModelAlias.alias)
        .filter(
            SqlRegisteredModelAlias.name == name,
            SqlRegisteredModelAlias.version == int(version),
        )
        .order_by(SqlRegisteredModelAlias.alias)
        .all()
    )
    return [alias for (alias,) in rows]


def aliases_of_model(session: Session, name: str) -> list[str]:
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelAlias

    rows = (
        session
        .query(SqlRegisteredModelAlias.alias)
        .filter(SqlRegisteredModelAlias.name == name)
        .order_by(SqlRegisteredModelAlias.alias)
        .all()
    )
    return [alias for (alias,) in rows]


def run_is_deleted(session: Session, run_id: str) -> bool:
    from mlflow.entities import LifecycleStage
    from mlflow.store.tracking.dbmodels.models import SqlRun

    stage = session.query(SqlRun.lifecycle_stage).filter(SqlRun.run_uuid == run_id).scalar()
    return stage == LifecycleStage.DELETED


def set_version_user(session: Session, name: str, version, user_id: str) -> None:
    """Record who created a model version in its own ``user_id`` column."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion

    session.query(SqlModelVersion).filter(
        SqlModelVersion.name == name, SqlModelVersion.version == int(version)
    ).update({SqlModelVersion.user_id: user_id}, synchronize_session=False)
