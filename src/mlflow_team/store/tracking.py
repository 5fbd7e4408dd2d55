"""The tracking store for ``team+<SQLAlchemy URL>``: MLflow's own SQLAlchemy store, plus policy.

Each override translates the call into plain values, asks :mod:`mlflow_team.policy`, and hands the
call to MLflow unchanged. The rules live in the policy; the concurrency work lives in
:mod:`mlflow_team.store.db`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from mlflow.entities import RunTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.tracking.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore

from mlflow_team import policy
from mlflow_team.identity import server as stamping
from mlflow_team.policy import Policy
from mlflow_team.store import compat, db, lean, links, search, uri

_STORE_INIT = "mlflow.store.tracking.sqlalchemy_store:SqlAlchemyStore.__init__"


class TeamTrackingStoreMixin(db.TeamStoreHooks):
    """Policy and hardening on top of a SQLAlchemy tracking store class."""

    def __init__(
        self,
        store_uri: str,
        default_artifact_root: str | None = None,
        read_db_uri: str | None = None,
        *,
        team_policy: Policy | None = None,
        **kwargs: Any,
    ):
        url = self._team_prepare(store_uri, team_policy)
        super().__init__(  # type: ignore[call-arg]
            url,
            default_artifact_root or uri.default_artifact_root(url),
            **db.replica_kwargs(_STORE_INIT, read_db_uri),
        )
        # Workspace-aware stores scope every query by workspace: they keep MLflow's own path.
        self._lean_path = (
            self._team_sessions and self.db_type == "sqlite" and not self.supports_workspaces
            and compat.use("lean")
        )
        self._search_path = (
            self._team_sessions and not self.supports_workspaces and search.available(self.engine, self.team_uri)
        )

    def _atomic(self):
        """One transaction for the block (team sessions), else stock's transactions as they are."""
        return db.atomic(self.ManagedSessionMaker)

    # --- helpers -----------------------------------------------------------------------------

    def _guarded_delete(
        self,
        find: Callable[..., links.Versions],
        check: Callable[[Policy, str, links.Versions], None],
        target: str,
        delete: Callable[[str], Any],
    ) -> Any:
        if not self.policy.protected_deletions:
            return delete(target)
        with self._atomic():
            with self.ManagedSessionMaker() as session:
                check(self.policy, target, find(session, target))
            return delete(target)

    def _decide(self, entity, action, ids, pairs, stamp=None):
        """The policy's decision on a tag write: the tags to write, or a refusal."""
        return policy.decide_tag_write(self.policy, policy.tag_write(entity, action, ids, pairs), stamp)

    @staticmethod
    def _pairs(entities: Sequence[Any] | None) -> list[tuple[str, Any]]:
        return [(entity.key, entity.value) for entity in entities or ()]

    # --- experiments -------------------------------------------------------------------------

    def create_experiment(self, name, artifact_location=None, tags=None):
        policy.check_experiment_name(self.policy, name)
        self._decide(policy.EXPERIMENT, policy.CREATE, (name,), self._pairs(tags))
        return super().create_experiment(name, artifact_location, tags)

    def set_experiment_tag(self, experiment_id, tag):
        self._decide(policy.EXPERIMENT, policy.SET, (experiment_id,), [(tag.key, tag.value)])
        return super().set_experiment_tag(experiment_id, tag)

    def delete_experiment_tag(self, experiment_id, key):
        self._decide(policy.EXPERIMENT, policy.DELETE, (experiment_id,), [(key, None)])
        return super().delete_experiment_tag(experiment_id, key)

    def rename_experiment(self, experiment_id, new_name):
        policy.check_experiment_name(self.policy, new_name)
        return super().rename_experiment(experiment_id, new_name)

    def delete_experiment(self, experiment_id):
        return self._guarded_delete(
            links.versions_of_experiment,
            policy.check_experiment_delete,
            experiment_id,
            super().delete_experiment,
        )

    def _hard_delete_experiment(self, experiment_id):
        return self._guarded_delete(
            links.versions_of_experiment,
            policy.check_experiment_delete,
            experiment_id,
            super()._hard_delete_experiment,
        )

    # --- runs --------------------------------------------------------------------------------

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        pairs = self._pairs(tags)
        stamp = stamping.current_stamp(self.policy, dict(pairs).get("mlflow.user") or user_id)
        if stamp is not None:
            if experiment_id == stamping.PROBE_EXPERIMENT_ID:
                stamping.answer_probe(stamp)
            user_id = stamp.author
        present = self._decide(policy.RUN, policy.CREATE, (experiment_id,), pairs, stamp)
        present.update(policy.fill_required_tags(
            self.policy, experiment_id, present,
            # the refusal names the experiment: looked up only when the run is about to be refused
            self.get_experiment(experiment_id).name if policy.missing_required_tags(self.policy, present) else None,
        ))
        tags = [RunTag(key, value) for key, value in present.items()]
        if self._lean_path:
            return lean.create_run(self, experiment_id, user_id, start_time, tags, run_name)
        return super().create_run(experiment_id, user_id, start_time, tags, run_name)

    def update_run_info(self, run_id, run_status, end_time, run_name):
        if self._lean_path:
            return lean.update_run_info(self, run_id, run_status, end_time, run_name)
        return super().update_run_info(run_id, run_status, end_time, run_name)

    def finish_run(self, run_id, metrics, params, tags, run_status, end_time):
        """``log_batch`` then ``update_run_info`` in one transaction: a run's last values and its
        end status land together or not at all (mlflow-team's own; autologging ends trial runs
        with it when the store is in-process)."""
        with self._atomic():
            if metrics or params or tags:
                self.log_batch(run_id, metrics, params, tags)
            return self.update_run_info(run_id, run_status, end_time, None)

    def delete_run(self, run_id):
        return self._guarded_delete(
            links.versions_of_run, policy.check_run_delete, run_id, super().delete_run
        )

    def _hard_delete_run(self, run_id):
        return self._guarded_delete(
            links.versions_of_run, policy.check_run_delete, run_id, super()._hard_delete_run
        )

    def _get_deleted_runs(self, older_than=0):
        # `mlflow gc` asks for this list before deleting any artifact: refusing here is the only
        # point at which a registered model's files are still intact.
        run_ids = super()._get_deleted_runs(older_than=older_than)
        if self.policy.protected_deletions and run_ids:
            with self.ManagedSessionMaker() as session:
                found = links.protected_deleted_runs(session, run_ids)
            for run_id, versions in found:
                policy.check_run_delete(self.policy, run_id, versions)
        return run_ids

    def _get_deleted_logged_models(self, older_than=0):
        # `mlflow gc` deletes a logged model's files before it calls _hard_delete_logged_model:
        # the guard must speak when the list is asked for.
        model_ids = super()._get_deleted_logged_models(older_than=older_than)
        if self.policy.protected_deletions and model_ids:
            with self.ManagedSessionMaker() as session:
                found = [(m, links.versions_of_logged_model(session, m)) for m in model_ids]
            for model_id, versions in found:
                if versions:
                    policy.check_logged_model_delete(self.policy, model_id, versions)
        return model_ids

    def _search_runs(self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
        if self._search_path:
            found = search.search_runs(
                self, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
            )
            if found is not None:
                return found
        return super()._search_runs(experiment_ids, filter_string, run_view_type, max_results, order_by, page_token)

    # --- logged models -----------------------------------------------------------------------

    def delete_logged_model(self, model_id):
        return self._guarded_delete(
            links.versions_of_logged_model,
            policy.check_logged_model_delete,
            model_id,
            super().delete_logged_model,
        )

    def _hard_delete_logged_model(self, model_id):
        return self._guarded_delete(
            links.versions_of_logged_model,
            policy.check_logged_model_delete,
            model_id,
            super()._hard_delete_logged_model,
        )

    # --- values ------------------------------------------------------------------------------

    def set_tag(self, run_id, tag):
        self._decide(policy.RUN, policy.SET, (run_id,), [(tag.key, tag.value)])
        return super().set_tag(run_id, tag)

    def delete_tag(self, run_id, key):
        self._decide(policy.RUN, policy.DELETE, (run_id,), [(key, None)])
        return super().delete_tag(run_id, key)

    def log_param(self, run_id, param):
        policy.check_params(self.policy, [(param.key, param.value)])
        return super().log_param(run_id, param)

    def log_metric(self, run_id, metric):
        policy.check_metrics(self.policy, [(metric.key, metric.value, metric.timestamp, metric.step)])
        if self._lean_path and metric.model_id is None:
            return lean.log_metric(self, run_id, metric)
        return super().log_metric(run_id, metric)

    def log_batch(self, run_id, metrics, params, tags):
        policy.check_params(self.policy, self._pairs(params))
        self._decide(policy.RUN, policy.SET, (run_id,), self._pairs(tags))
        policy.check_metrics(
            self.policy, [(m.key, m.value, m.timestamp, m.step) for m in metrics or ()]
        )
        if self._lean_path and not any(m.model_id for m in metrics or ()):
            return lean.log_batch(self, run_id, metrics or [], params or [], tags or [])
        # Stock commits params, metrics and tags separately; one transaction makes it all-or-none.
        with self._atomic():
            return super().log_batch(run_id, metrics, params, tags)


@db.retry_public_methods
class TeamSqlAlchemyStore(TeamTrackingStoreMixin, SqlAlchemyStore):
    """MLflow's ``SqlAlchemyStore`` with the team policy and concurrent-writer hardening."""


@db.retry_public_methods
class TeamWorkspaceAwareSqlAlchemyStore(TeamTrackingStoreMixin, WorkspaceAwareSqlAlchemyStore):
    """The same, over MLflow's workspace-aware store (``mlflow server --enable-workspaces``)."""


def build(store_uri: str, artifact_uri: str | None = None, **kwargs: Any):
    """Builder MLflow calls for every ``team+`` tracking URI."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES

    cls = TeamWorkspaceAwareSqlAlchemyStore if MLFLOW_ENABLE_WORKSPACES.get() else TeamSqlAlchemyStore
    return cls(store_uri, artifact_uri, read_db_uri=uri.read_replica_url())
