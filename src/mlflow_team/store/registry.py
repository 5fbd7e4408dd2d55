"""The model-registry store for ``team+<SQLAlchemy URL>``: same shape as the tracking store."""

from __future__ import annotations

from typing import Any

from mlflow.entities.model_registry import ModelVersionTag
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.model_registry.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore

from mlflow_team import policy
from mlflow_team.identity import server as stamping
from mlflow_team.policy import Policy
from mlflow_team.store import db, links, uri

_REGISTRY_INIT = "mlflow.store.model_registry.sqlalchemy_store:SqlAlchemyStore.__init__"


class TeamRegistryStoreMixin(db.TeamStoreHooks):
    """Policy and hardening on top of a SQLAlchemy model-registry store class."""

    def __init__(
        self,
        store_uri: str,
        read_db_uri: str | None = None,
        *,
        team_policy: Policy | None = None,
        **kwargs: Any,
    ):
        url = self._team_prepare(store_uri, team_policy)
        super().__init__(url, **db.replica_kwargs(_REGISTRY_INIT, read_db_uri))  # type: ignore[call-arg]

    def _decide(self, entity, action, ids, pairs, stamp=None):
        """The policy's decision on a tag write: the tags to write, or a refusal."""
        return policy.decide_tag_write(self.policy, policy.tag_write(entity, action, ids, pairs), stamp)

    def create_registered_model(self, name, tags=None, *args, **kwargs):
        policy.check_registered_model_name(self.policy, name)
        self._decide(policy.REGISTERED_MODEL, policy.CREATE, (name,), [(t.key, t.value) for t in tags or ()])
        return super().create_registered_model(name, tags, *args, **kwargs)

    def set_registered_model_tag(self, name, tag):
        self._decide(policy.REGISTERED_MODEL, policy.SET, (name,), [(tag.key, tag.value)])
        return super().set_registered_model_tag(name, tag)

    def delete_registered_model_tag(self, name, key):
        self._decide(policy.REGISTERED_MODEL, policy.DELETE, (name,), [(key, None)])
        return super().delete_registered_model_tag(name, key)

    def rename_registered_model(self, name, new_name):
        policy.check_registered_model_name(self.policy, new_name)
        return super().rename_registered_model(name, new_name)

    def delete_registered_model(self, name):
        if not self.policy.protected_deletions:
            return super().delete_registered_model(name)
        with db.atomic(self.ManagedSessionMaker):
            with self.ManagedSessionMaker() as session:
                aliases = links.aliases_of_model(session, name)
            policy.check_registered_model_delete(self.policy, name, aliases)
            return super().delete_registered_model(name)

    def delete_model_version(self, name, version):
        if not self.policy.protected_deletions:
            return super().delete_model_version(name, version)
        with db.atomic(self.ManagedSessionMaker):
            with self.ManagedSessionMaker() as session:
                aliases = links.aliases_of_version(session, name, version)
            policy.check_model_version_delete(self.policy, name, version, aliases)
            return super().delete_model_version(name, version)

    def create_model_version(
        self, name, source, run_id=None, tags=None, run_link=None, description=None,
        local_model_path=None, model_id=None,
    ):
        if run_id and self.policy.protected_deletions:
            with self.ManagedSessionMaker() as session:
                deleted = links.run_is_deleted(session, run_id)
            policy.check_version_source_run(self.policy, name, run_id, deleted)
        stamp = stamping.current_stamp(self.policy, claimed=None)
        present = self._decide(policy.MODEL_VERSION, policy.CREATE, (name,), [(t.key, t.value) for t in tags or ()], stamp)
        if stamp is None:
            return super().create_model_version(
                name, source, run_id, tags, run_link, description, local_model_path, model_id
            )
        tags = [ModelVersionTag(key, value) for key, value in present.items()]
        with db.atomic(self.ManagedSessionMaker):
            created = super().create_model_version(
                name, source, run_id, tags, run_link, description, local_model_path, model_id
            )
            # The version's own user_id is what the UI shows as "Created by"; stock leaves it empty.
            with db.write_session(self.ManagedSessionMaker) as session:
                links.set_version_user(session, name, created.version, stamp.author)
        return self.get_model_version(name, created.version)

    def set_model_version_tag(self, name, version, tag):
        self._decide(policy.MODEL_VERSION, policy.SET, (name, version), [(tag.key, tag.value)])
        return super().set_model_version_tag(name, version, tag)

    def delete_model_version_tag(self, name, version, key):
        self._decide(policy.MODEL_VERSION, policy.DELETE, (name, version), [(key, None)])
        return super().delete_model_version_tag(name, version, key)


def _numeric_versions(cls: type) -> type:
    """A version given as a string of digits reaches MLflow as an int, as MLflow 3.13+ converts
    it itself: on older minors, PostgreSQL through psycopg 3 (SQLAlchemy 2.1's default driver)
    refuses to compare the integer column with a string ("operator does not exist: integer =
    character varying"), so ``set_registered_model_alias(name, "champion", "1")`` and
    ``models:/name/1`` fail there with stock MLflow too."""
    import functools
    import inspect

    def coerce(method):
        position = list(inspect.signature(method).parameters).index("version")

        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            if "version" in kwargs:
                kwargs["version"] = _as_int(kwargs["version"])
            elif len(args) > position:
                args = (*args[:position], _as_int(args[position]), *args[position + 1:])
            return method(*args, **kwargs)

        return wrapper

    for name in dir(cls):
        attr = getattr(cls, name)
        if not name.startswith("_") and inspect.isfunction(attr):
            if "version" in inspect.signature(attr).parameters:
                setattr(cls, name, coerce(attr))
    return cls


def _as_int(version):
    return int(version) if isinstance(version, str) and version.strip().isdigit() else version


@db.retry_public_methods
@_numeric_versions
class TeamModelRegistrySqlAlchemyStore(TeamRegistryStoreMixin, SqlAlchemyStore):
    """MLflow's registry ``SqlAlchemyStore`` with the team policy and hardening."""


@db.retry_public_methods
@_numeric_versions
class TeamWorkspaceAwareModelRegistrySqlAlchemyStore(
    TeamRegistryStoreMixin, WorkspaceAwareSqlAlchemyStore
):
    """The same, over MLflow's workspace-aware registry store."""


def build(store_uri: str, **kwargs: Any):
    """Builder MLflow calls for every ``team+`` registry URI."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    cls = (
        TeamWorkspaceAwareModelRegistrySqlAlchemyStore
        if MLFLOW_ENABLE_WORKSPACES.get()
        else TeamModelRegistrySqlAlchemyStore
    )
    return cls(store_uri, read_db_uri=uri.read_replica_url())
