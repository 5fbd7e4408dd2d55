"""Every MLflow internal mlflow-team touches, in one list, and the start-up probe that checks them.

MLflow's private names are a debt: nothing promises they survive a minor release. The rules
(policy, identity, artifacts) ride on MLflow's public store and repository methods; what still
needs an internal is named here, grouped by what it buys:

* **accelerators** (``engine``, ``sessions``, ``schema``, ``lean``, ``search``, ``entities``): speed and hardening. When a
  probe fails, the store runs MLflow's own path for that part and logs one line saying so:
  slower, never wrong, never a crash.
* **guards** (``gc``): an internal that *enforces a rule*. ``mlflow gc`` deletes through private
  store methods; if MLflow stopped calling the ones the store overrides, the override would
  silently never run. A failed guard probe refuses to start a store whose policy protects
  deletions, with a message that says what to do.
* **client** (``hyperopt``, ``cli``, ``heartbeat``): autologging, doctor and heartbeat internals,
  probed where they are used; a failure degrades that feature with a warning.
* **server** (``reaper``): what a hook of the team server app (``--app-name team``) needs, probed
  when the app starts; a failure leaves that hook out, with a warning.

``MLFLOW_TEAM_COMPAT_DISABLE`` (comma-separated group names, or ``all``) switches groups off as if
their probe had failed: the way to rule an accelerator out, and how the tests force the
fallbacks. The probe runs once per process (:func:`probe`); :func:`report` describes it for
``mlflow-team doctor``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

_logger = logging.getLogger(__name__)

#: MLflow minors the test suite runs against (CI: the oldest and the newest installable).
TESTED_MINORS = ((3, 12), (3, 17))
DISABLE_ENV = "MLFLOW_TEAM_COMPAT_DISABLE"


@dataclass(frozen=True)
class Group:
    name: str
    kind: str  # "accelerator" | "guard" | "client" | "server"
    buys: str  # what the group gives when its probe passes
    fallback: str  # what happens when it fails


GROUPS = {
    g.name: g
    for g in (
        Group("engine", "accelerator", "hardened SQLite engines (WAL, BEGIN IMMEDIATE, busy timeout)",
              "MLflow's own engine"),
        Group("sessions", "accelerator",
              "one transaction per store call (atomic log_batch, checks and deletions together)",
              "MLflow's own sessions (stock's transactions)"),
        Group("schema", "accelerator", "new databases created once under a file lock",
              "MLflow creates the tables itself"),
        Group("lean", "accelerator", "plain-SQL run writes on SQLite (create_run, log_batch, metrics)",
              "MLflow's ORM paths"),
        Group("search", "accelerator",
              "search_runs by EXISTS on primary keys and plain-SQL pages (with the team_runs_search index)",
              "MLflow's own search_runs"),
        Group("entities", "accelerator", "search pages' RunData set field by field from the rows' dicts",
              "RunData's constructor"),
        Group("gc", "guard", "`mlflow gc` stops before deleting what a registered model needs",
              "the store refuses to start while protected-deletions is on"),
        Group("artifacts", "guard", "artifact downloads checked against their SHA-256 (team+file, team+s3)",
              "the team artifact repositories refuse to start"),
        Group("s3", "guard", "team+s3 uploads carry their checksums, tags and encryption",
              "team+s3 refuses to start"),
        Group("hyperopt", "client", "hyperopt autologging patches", "autologging off, with a warning"),
        Group("spark", "client", "SparkTrials: trial runs created and ended by the driver, logged into by executors",
              "a SparkTrials search logs its parent run only, with a warning"),
        Group("spark-polling", "accelerator", "SparkTrials' poll loops wake when a trial ends",
              "hyperopt's one-second polls"),
        Group("cli", "client", "`mlflow-team doctor` lists MLflow's plugin registries",
              "doctor skips the plugin list"),
        Group("heartbeat", "client", "heartbeats for this process's fluent runs to the team server",
              "no heartbeats: the team server never ends this process's runs as stale"),
        Group("reaper", "server",
              "the team server ends runs whose client stopped sending heartbeats (FAILED, team.end_reason=stale)",
              "no heartbeat endpoint and no reaper: a killed client's run stays RUNNING"),
    )
}


@dataclass(frozen=True)
class Internal:
    """One MLflow internal: ``module:attr.attr``, the group that needs it, and what must hold."""

    path: str
    group: str
    params: tuple[str, ...] = ()  # parameter names it must accept
    optional: bool = False  # a missing optional internal is not a failure (see ``get``)


_STORE = "mlflow.store.tracking.sqlalchemy_store"
_REGISTRY = "mlflow.store.model_registry.sqlalchemy_store"
_DB = "mlflow.store.db.utils"

INTERNALS: tuple[Internal, ...] = (
    # engine: the store builds its own engine and hands it to MLflow through this hook
    Internal(f"{_STORE}:SqlAlchemyStore._get_or_create_engine", "engine", ("db_uri",)),
    Internal(f"{_REGISTRY}:SqlAlchemyStore._get_or_create_engine", "engine", ("db_uri",)),
    Internal(f"{_DB}:create_sqlalchemy_engine", "engine", ("db_uri",)),
    Internal(f"{_DB}:_make_parent_dirs_if_sqlite", "engine", ("db_uri",)),
    Internal(f"{_DB}:_get_managed_session_maker", "sessions", ("SessionMaker", "db_type")),
    # sessions: installed before MLflow's state initialisation, replacing ManagedSessionMaker
    Internal(f"{_STORE}:SqlAlchemyStore._initialize_store_state", "sessions"),
    Internal(f"{_REGISTRY}:SqlAlchemyStore._initialize_store_state", "sessions"),
    # schema: creation under a lock, and the out-of-date check with the command that fixes it
    Internal(f"{_DB}:_all_tables_exist", "schema", ("engine",)),
    Internal(f"{_DB}:_initialize_tables", "schema", ("engine",)),
    Internal(f"{_DB}:_get_latest_schema_revision", "schema"),
    Internal(f"{_DB}:_get_schema_version", "schema", ("engine",)),
    Internal(f"{_DB}:_upgrade_db", "schema", ("engine",)),
    Internal(f"{_DB}:_is_empty_database", "schema", ("engine",), optional=True),  # 3.13+
    Internal(f"{_DB}:_get_alembic_config", "schema", ("db_url",)),
    Internal(f"{_DB}:create_sqlalchemy_engine_with_retry", "schema", ("db_uri",), optional=True),
    # lean: stock's own validators and helpers, so the plain-SQL paths say what stock says
    Internal("mlflow.utils.validation:_validate_metric", "lean", ("key", "value", "timestamp", "step", "path")),
    Internal(f"{_STORE}:_validate_batch_log_data", "lean", ("metrics", "params", "tags")),
    Internal(f"{_STORE}:_validate_batch_log_limits", "lean", ("metrics", "params", "tags")),
    Internal(f"{_STORE}:_validate_param_keys_unique", "lean", ("params",)),
    Internal(f"{_STORE}:_validate_run_id", "lean", ("run_id",)),
    Internal(f"{_STORE}:SqlAlchemyStore._log_metrics", "lean", ("run_id", "metrics")),
    Internal(f"{_STORE}:SqlAlchemyStore.sanitize_metric_value", "lean", ("metric_value",)),
    Internal("mlflow.utils.mlflow_tags:_get_run_name_from_tags", "lean", ("tags",)),
    Internal("mlflow.utils.name_utils:_generate_random_name", "lean"),
    Internal("mlflow.utils.validation:_parse_experiment_id", "lean", optional=True),  # 3.13+
    # search: stock's own clause builders and bulk helpers, re-arranged into a query that scales
    Internal(f"{_STORE}:_get_orderby_clauses", "search", ("order_by_list", "session")),
    Internal(f"{_STORE}:_get_sqlalchemy_filter_clauses", "search", ("parsed", "session", "dialect")),
    Internal(f"{_STORE}:SqlAlchemyStore._validate_max_results_param", "search", ("max_results", "allow_null")),
    Internal(f"{_STORE}:SqlAlchemyStore._filter_experiment_ids", "search", ("session", "experiment_ids")),
    Internal(f"{_STORE}:SqlAlchemyStore._get_dialect", "search"),
    Internal(f"{_STORE}:SqlAlchemyStore._get_run_inputs", "search", ("session", "run_uuids")),
    Internal(f"{_STORE}:SqlAlchemyStore._get_model_outputs_bulk", "search", ("run_ids", "session")),
    Internal(f"{_STORE}:_parse_experiment_ids", "search", optional=True),  # 3.17+
    Internal("mlflow.store.tracking.dbmodels.models:SqlRun", "search"),
    # gc: the private methods `mlflow gc` deletes through (checked against gc's own source too)
    Internal(f"{_STORE}:SqlAlchemyStore._get_deleted_runs", "gc", ("older_than",)),
    Internal(f"{_STORE}:SqlAlchemyStore._get_deleted_logged_models", "gc", ("older_than",)),
    Internal(f"{_STORE}:SqlAlchemyStore._hard_delete_run", "gc", ("run_id",)),
    Internal(f"{_STORE}:SqlAlchemyStore._hard_delete_experiment", "gc", ("experiment_id",)),
    Internal(f"{_STORE}:SqlAlchemyStore._hard_delete_logged_model", "gc", ("model_id",)),
    # artifacts: the hooks the team repositories override; every download passes _download_file
    Internal("mlflow.store.artifact.artifact_repo:ArtifactRepository._download_file", "artifacts",
             ("remote_file_path", "local_path")),
    Internal("mlflow.store.artifact.s3_artifact_repo:S3ArtifactRepository._get_s3_client", "s3"),
    Internal("mlflow.store.artifact.s3_artifact_repo:S3ArtifactRepository._upload_file", "s3",
             ("s3_client", "local_file", "bucket", "key")),
    Internal("mlflow.store.artifact.s3_artifact_repo:S3ArtifactRepository.parse_s3_compliant_uri", "s3",
             ("uri",)),
    # hyperopt: MLflow's autologging machinery, used the way its own integrations use it
    Internal("mlflow.utils.autologging_utils.safety:_store_patch", "hyperopt", ("autologging_integration", "patch")),
    Internal("mlflow.utils.autologging_utils.safety:_wrap_patch", "hyperopt", ("destination", "name", "patch_obj")),
    Internal("mlflow.utils.autologging_utils.safety:update_wrapper_extended", "hyperopt", ("wrapper", "wrapped")),
    Internal("mlflow.utils.autologging_utils.safety:_AutologgingSessionManager.active_session", "hyperopt"),
    Internal("mlflow.utils.autologging_utils.safety:_AutologgingSessionManager.start_session", "hyperopt", ("integration",)),
    Internal("mlflow.utils.autologging_utils.safety:is_testing", "hyperopt"),
    Internal("mlflow.tracking.fluent:_active_run_stack", "hyperopt"),
    Internal("mlflow.utils.gorilla:get_original_attribute", "hyperopt"),
    # spark: hyperopt's own internals where SparkTrials launches and ends a trial (not MLflow's)
    Internal("hyperopt.spark:_SparkFMinState._run_trial_async", "spark", ("trial",)),
    Internal("hyperopt.spark:_SparkFMinState._finish_trial_run", "spark", ("is_success", "is_cancelled", "trial", "data")),
    Internal("mlflow.utils.autologging_utils:AUTOLOGGING_INTEGRATIONS", "spark"),
    # spark-polling: the `time` module hyperopt's two poll loops sleep with (woken when a trial ends)
    Internal("hyperopt.fmin:time", "spark-polling"),
    Internal("hyperopt.spark:time", "spark-polling"),
    Internal("hyperopt.spark:_SparkFMinState.wait_for_all_threads", "spark-polling"),
    # cli: MLflow's plugin registries, for `mlflow-team doctor`
    Internal("mlflow.tracking._tracking_service.utils:_tracking_store_registry", "cli"),
    Internal("mlflow.tracking._tracking_service.utils:_get_store", "cli"),
    Internal("mlflow.tracking._model_registry.utils:_get_store_registry", "cli"),
    Internal("mlflow.store.artifact.artifact_repository_registry:_artifact_repository_registry", "cli"),
    Internal("mlflow.tracking.context.registry:_run_context_provider_registry", "cli"),
    Internal("mlflow.tracking.request_auth.registry:_request_auth_provider_registry", "cli"),
    Internal("mlflow.tracking.request_header.registry:_request_header_provider_registry", "cli"),
    # heartbeat: the fluent runs active in any thread of this process (what mlflow.active_run()
    # answers in each); the client's heartbeats follow them
    Internal("mlflow.tracking.fluent:_active_run_stack.get_all_thread_values", "heartbeat"),
    # reaper: the tracking store the server's handlers use (the reaper ends runs through it)
    Internal("mlflow.server.handlers:_get_tracking_store", "reaper"),
    # features: public constructors whose keywords grew over the minors (detected, not required)
    Internal(f"{_STORE}:SqlAlchemyStore.__init__", "features", optional=True),
    Internal(f"{_REGISTRY}:SqlAlchemyStore.__init__", "features", optional=True),
    # identity: the user MLflow's basic-auth app let in, where its app does not put it in flask.g
    Internal("mlflow.server.auth:_before_request", "features", optional=True),
    # artifacts: where a trace's archived spans go (3.15+; older MLflow has no archival)
    Internal("mlflow.tracing.otel.otel_archival:TRACE_ARCHIVAL_FILENAME", "features", optional=True),
)

#: Tables the lean paths write with plain SQL, and exactly the columns they expect. A column
#: MLflow adds (a workspace, a new NOT NULL field) turns the lean paths off until checked.
LEAN_COLUMNS = {
    ("mlflow.store.tracking.dbmodels.models", "SqlRun"): {
        "run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
        "start_time", "end_time", "deleted_time", "source_version", "lifecycle_stage",
        "artifact_uri", "experiment_id",
    },
    ("mlflow.store.tracking.dbmodels.models", "SqlTag"): {"key", "value", "run_uuid"},
    ("mlflow.store.tracking.dbmodels.models", "SqlParam"): {"key", "value", "run_uuid"},
    ("mlflow.store.tracking.dbmodels.models", "SqlMetric"): {
        "key", "value", "timestamp", "step", "is_nan", "run_uuid",
    },
    ("mlflow.store.tracking.dbmodels.models", "SqlLatestMetric"): {
        "key", "value", "timestamp", "step", "is_nan", "run_uuid",
    },
}
#: Columns the links queries (protected deletions) read; a subset is enough.
LINK_COLUMNS = {
    ("mlflow.store.model_registry.dbmodels.models", "SqlModelVersion"): {
        "name", "version", "current_stage", "run_id", "source", "user_id",
    },
    ("mlflow.store.model_registry.dbmodels.models", "SqlRegisteredModelAlias"): {"name", "alias", "version"},
    ("mlflow.store.tracking.dbmodels.models", "SqlLoggedModel"): {"model_id", "source_run_id", "experiment_id"},
    ("mlflow.store.tracking.dbmodels.models", "SqlRun"): {"run_uuid", "experiment_id", "lifecycle_stage"},
}
#: Columns the accelerated search reads (a subset is enough).
SEARCH_COLUMNS = {
    ("mlflow.store.tracking.dbmodels.models", "SqlRun"): {
        "run_uuid", "name", "experiment_id", "user_id", "status", "start_time", "end_time",
        "lifecycle_stage", "artifact_uri",
    },
    ("mlflow.store.tracking.dbmodels.models", "SqlParam"): {"key", "value", "run_uuid"},
    ("mlflow.store.tracking.dbmodels.models", "SqlTag"): {"key", "value", "run_uuid"},
    ("mlflow.store.tracking.dbmodels.models", "SqlLatestMetric"): {
        "key", "value", "timestamp", "step", "is_nan", "run_uuid",
    },
}
#: The private store methods `mlflow gc` may call that the team store guards.
GC_GUARDED = frozenset({
    "_get_deleted_runs", "_get_deleted_logged_models", "_hard_delete_run",
    "_hard_delete_experiment", "_hard_delete_logged_model",
})


# --- resolving ---------------------------------------------------------------------------------


def resolve(path: str) -> Any:
    """The object at ``module:attr.attr`` (raises ImportError/AttributeError when it is gone)."""
    module_name, _, attrs = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


def get(path: str, default: Any = None) -> Any:
    """An internal of the list, or ``default`` when this MLflow does not have it."""
    if path not in _BY_PATH:
        raise KeyError(f"{path} is not in mlflow_team.store.compat.INTERNALS: add it there first")
    try:
        return resolve(path)
    except (ImportError, AttributeError):
        return default


_BY_PATH = {internal.path: internal for internal in INTERNALS}


def _check_internal(internal: Internal) -> str | None:
    try:
        obj = resolve(internal.path)
    except (ImportError, AttributeError) as exc:
        return None if internal.optional else f"{internal.path} is missing ({exc})"
    if internal.params:
        target = inspect.unwrap(obj)
        try:
            names = set(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            return f"{internal.path}: its signature cannot be read"
        missing = [p for p in internal.params if p not in names]
        if missing and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(target).parameters.values()
        ):
            return f"{internal.path} no longer takes {', '.join(missing)}"
    return None


def _check_columns(expected: dict, exact: bool) -> list[str]:
    problems = []
    for (module, name), columns in expected.items():
        try:
            model = getattr(importlib.import_module(module), name)
            found = {column.name for column in model.__table__.columns}
        except Exception as exc:  # noqa: BLE001 - any failure here means "not as we know it"
            problems.append(f"{module}.{name} cannot be read ({exc})")
            continue
        if exact and found != columns:
            problems.append(
                f"table {model.__tablename__} has columns {sorted(found ^ columns)} "
                "that differ from the ones the lean paths write"
            )
        elif not exact and not columns <= found:
            problems.append(f"table {model.__tablename__} lacks {sorted(columns - found)}")
    return problems


def _check_gc_source() -> list[str]:
    """`mlflow gc` must delete through the private methods the store guards, and only those."""
    # Read from the file: importing mlflow.cli (the whole CLI) would cost a second.
    try:
        from importlib.util import find_spec

        spec = find_spec("mlflow.cli")
        with open(spec.origin, encoding="utf-8") as file:  # type: ignore[union-attr, arg-type]
            source = file.read()
    except (OSError, TypeError, ImportError, AttributeError) as exc:
        return [f"the source of `mlflow gc` cannot be read ({exc})"]
    if not re.search(r"^def gc\(", source, re.MULTILINE):
        return ["`mlflow gc` is no longer defined where mlflow-team reads it (mlflow/cli)"]
    called = set(re.findall(r"backend_store\.(_\w+)\(", source))
    problems = []
    unguarded = sorted(called - GC_GUARDED)
    if unguarded:
        problems.append(f"`mlflow gc` calls store methods the team store does not guard: {unguarded}")
    for needed in ("_get_deleted_runs", "_hard_delete_run"):
        if needed not in called:
            problems.append(f"`mlflow gc` no longer calls {needed}, the method the team store guards")
    return problems


def _check_download_path() -> list[str]:
    """MLflow's ``download_artifacts`` must fetch every file through ``_download_file``, the hook
    where the team repositories check digests."""
    try:
        from mlflow.store.artifact.artifact_repo import ArtifactRepository

        source = inspect.getsource(ArtifactRepository.download_artifacts)
    except (OSError, TypeError, ImportError) as exc:
        return [f"the source of ArtifactRepository.download_artifacts cannot be read ({exc})"]
    if "self._download_file" not in source:
        return ["ArtifactRepository.download_artifacts no longer downloads through _download_file"]
    return []


def require(group: str) -> str | None:
    """For a guard: None when its probe passed, else the reasons, for the refusal's message."""
    result = probe()
    return None if result.ok(group) else "; ".join(result.reasons(group))


def mlflow_version() -> tuple[int, int]:
    from importlib.metadata import version

    parts = re.findall(r"\d+", version("mlflow-skinny") if _has_dist("mlflow-skinny") else version("mlflow"))
    return int(parts[0]), int(parts[1])


def _has_dist(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


# --- the probe ---------------------------------------------------------------------------------


class Probe:
    """The probe's findings, group by group. A group is checked the first time it is asked
    about (a client that only logs artifacts never imports what gc or hyperopt need)."""

    #: What a group needs besides its own internals.
    NEEDS = {
        "sessions": ("engine",), "lean": ("sessions",), "search": ("sessions",), "schema": ("engine",),
        "entities": ("search",),
        "s3": ("artifacts",),
        "spark-polling": ("spark",),
    }

    def __init__(self, version: tuple[int, int]) -> None:
        self.version = version
        self._failures: dict[str, list[str]] = {}
        self._disabled = _disabled()

    @property
    def failures(self) -> dict[str, list[str]]:
        """group -> reasons, for every group that failed (checks every group)."""
        return {name: self.reasons(name) for name in GROUPS if self.reasons(name)}

    def ok(self, group: str) -> bool:
        return not self.reasons(group)

    def reasons(self, group: str) -> list[str]:
        if group not in GROUPS:
            raise KeyError(group)
        if group not in self._failures:
            self._failures[group] = self._check(group)
        return self._failures[group]

    def _check(self, group: str) -> list[str]:
        problems = [p for p in map(_check_internal, _GROUP_INTERNALS.get(group, ())) if p]
        problems += _EXTRA_CHECKS.get(group, lambda _version: [])(self.version)
        problems += [f"needs the {need} group" for need in self.NEEDS.get(group, ()) if not self.ok(need)]
        if group in self._disabled:
            problems.append(f"switched off by {DISABLE_ENV}")
        return problems


def _disabled() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    names = {part.strip() for part in raw.split(",") if part.strip()}
    return set(GROUPS) if "all" in names else names


def _untested(version: tuple[int, int], what: str) -> list[str]:
    """A path that repeats stock's semantics is off on a minor newer than the suite has run on:
    MLflow may have changed what it must do without renaming anything."""
    newest = TESTED_MINORS[-1]
    if version > newest:
        return [f"MLflow {version[0]}.{version[1]} is newer than the newest tested "
                f"({newest[0]}.{newest[1]}) and {what}"]
    return []


def _lean_checks(version: tuple[int, int]) -> list[str]:
    return _check_columns(LEAN_COLUMNS, exact=True) + _untested(version, "the lean paths repeat stock's semantics")


def run_data_from_dicts(metrics: list, params: dict, tags: dict) -> Any:
    """``RunData(metrics, [Param(k, v) ...], [RunTag(k, v) ...])`` without the Param and RunTag
    objects, which its constructor only reads into ``{key: value}`` dicts (``entities`` group)."""
    from mlflow.entities import RunData

    data = RunData.__new__(RunData)
    data._metric_objs = metrics
    data._metrics = {metric.key: metric.value for metric in metrics}
    data._params = params
    data._tags = tags
    return data


def _check_run_data(_version: tuple[int, int]) -> list[str]:
    """RunData's constructor must make exactly what :func:`run_data_from_dicts` makes."""
    try:
        from mlflow.entities import Metric, Param, RunData, RunTag

        metrics = [Metric("rmse", 6.5, 1, 0), Metric("loss", float("nan"), 2, 3)]
        made = RunData(metrics=list(metrics), params=[Param("max_depth", "4")], tags=[RunTag("model", "xgboost")])
        fields = vars(made)
        ours = vars(run_data_from_dicts(list(metrics), {"max_depth": "4"}, {"model": "xgboost"}))
    except Exception as exc:  # noqa: BLE001 - any failure here means "not as we know it"
        return [f"RunData cannot be built as mlflow-team builds it ({exc})"]
    if repr(fields) != repr(ours):  # the same fields, in the same order, with the same values
        return [f"RunData's constructor sets {sorted(fields)}, not {sorted(ours)} as mlflow-team sets them"]
    return []


def _search_checks(version: tuple[int, int]) -> list[str]:
    # the accelerated search re-arranges stock's statement (the differential suite compares them)
    return _check_columns(SEARCH_COLUMNS, exact=False) + _untested(version, "the accelerated search repeats stock's semantics")


_GROUP_INTERNALS: dict[str, list[Internal]] = {}
for _internal in INTERNALS:
    _GROUP_INTERNALS.setdefault(_internal.group, []).append(_internal)
_EXTRA_CHECKS: dict[str, Callable[[tuple[int, int]], list[str]]] = {
    "lean": _lean_checks,
    "gc": lambda _version: _check_columns(LINK_COLUMNS, exact=False) + _check_gc_source(),
    "search": _search_checks,
    "entities": _check_run_data,
    "artifacts": lambda _version: _check_download_path(),
}


def _run_probe() -> Probe:
    return Probe(mlflow_version())


_PROBE: Probe | None = None
_LOGGED: set[str] = set()


def probe() -> Probe:
    """The probe's result for this process (run once; :func:`reset` runs it again)."""
    global _PROBE
    if _PROBE is None:
        _PROBE = _run_probe()
    return _PROBE


def reset() -> None:
    """Forget the probe (tests, or after changing ``MLFLOW_TEAM_COMPAT_DISABLE``)."""
    global _PROBE
    _PROBE = None
    _LOGGED.clear()


def use(group: str) -> bool:
    """Whether to use an accelerator; the first refusal per group logs one line saying why."""
    result = probe()
    if result.ok(group):
        return True
    if group not in _LOGGED:
        _LOGGED.add(group)
        info = GROUPS[group]
        _logger.warning(
            "mlflow-team: %s off on MLflow %d.%d (%s); %s instead%s",
            info.buys, *result.version, "; ".join(result.reasons(group)),
            f"using {info.fallback}" if info.kind == "accelerator" else info.fallback,
            ": slower, same results." if info.kind == "accelerator" else ".",
        )
    return False


def report() -> list[tuple[str, str, bool, str]]:
    """(group, kind, ok, detail) for every group: what doctor prints."""
    result = probe()
    return [
        (name, group.kind, result.ok(name),
         group.buys if result.ok(name) else "; ".join(result.reasons(name)))
        for name, group in GROUPS.items()
    ]


@functools.lru_cache(maxsize=None)
def accepts(path: str, parameter: str) -> bool:
    """Whether the callable at ``path`` (an entry of the list) takes ``parameter``."""
    obj = get(path)
    if obj is None:
        return False
    try:
        return parameter in inspect.signature(inspect.unwrap(obj)).parameters
    except (TypeError, ValueError):
        return False
