"""``search_runs`` at 100,000 runs: stock's clauses, a query that scales, and plain-SQL hydration.

Stock ``SqlAlchemyStore._search_runs`` builds one statement: ``SELECT DISTINCT runs.*`` inner-joined
to one subquery per param, tag or metric filter, outer-joined to one per order key, then loads the
page as ORM objects with their params, tags and latest metrics. On SQLite the planner turns those
inner joins into a scan of every filter's rows per run (3 s at 10,000 runs for a filter on a param,
a tag and a metric), ``DISTINCT`` sorts whole rows, and the ORM spends most of a 1,000-run page
building objects that are dropped at once.

Here the same search is two steps:

1. **Which runs, in which order.** The filter and order clauses are *stock's own* (its parser, its
   ``_get_sqlalchemy_filter_clauses`` and ``_get_orderby_clauses``, so every comparator, dialect
   quirk, NaN rule and error is the same), arranged differently: each param/tag/metric filter
   becomes a correlated ``EXISTS`` on the table's primary key ``(key, run_uuid)`` instead of an
   inner join, only ``run_uuid`` and the order values are selected, and there is no ``DISTINCT``
   (each of those tables has at most one row per run and key, so stock's joins never repeat a
   run). The page is the same ``OFFSET``/``LIMIT`` window of the same total order, so page tokens
   are stock's.
2. **What each run holds.** The page's runs, params, tags and latest metrics are read with four
   plain ``SELECT ... WHERE run_uuid IN (...)`` and turned into the entities ``SqlRun.to_mlflow_entity``
   makes; inputs and logged-model outputs come from stock's own bulk helpers.

The index :data:`INDEX` on ``runs (experiment_id, lifecycle_stage, start_time)`` (stock has none on
``experiment_id``) lets a search read its experiment's runs only. ``mlflow-team db upgrade`` and the
creation of a new database add it, ``eject`` drops it, and a database without it keeps MLflow's own
search path and says once how to add it. Dataset filters keep MLflow's path too.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import sqlalchemy as sa

from mlflow_team import errors, redact
from mlflow_team.store import compat

_logger = logging.getLogger(__name__)

#: mlflow-team's index on MLflow's ``runs`` table (the name says whose it is).
INDEX = "team_runs_search"
INDEX_COLUMNS = ("experiment_id", "lifecycle_stage", "start_time")
#: Run ids per ``IN (...)`` when a page is hydrated (SQLite's oldest limit is 999 variables).
_CHUNK = 500
_STORE = "mlflow.store.tracking.sqlalchemy_store"
_WARNED: set[str] = set()


# --- the index -------------------------------------------------------------------------------


def _index(metadata: sa.MetaData | None = None) -> sa.Index:
    runs = sa.Table("runs", metadata or sa.MetaData(), *(sa.Column(c) for c in INDEX_COLUMNS))
    return sa.Index(INDEX, *(runs.c[c] for c in INDEX_COLUMNS))


def has_index(engine: sa.engine.Engine) -> bool:
    return any(ix.get("name") == INDEX for ix in sa.inspect(engine).get_indexes("runs"))


def create_index(engine: sa.engine.Engine) -> bool:
    """Add :data:`INDEX` where it is missing; True when it was created now."""
    if has_index(engine):
        return False
    with engine.begin() as conn:
        _index().create(conn)
    return True


def drop_index(conn: sa.engine.Connection) -> bool:
    """Drop :data:`INDEX` (``eject``); True when there was one."""
    if not any(ix.get("name") == INDEX for ix in sa.inspect(conn).get_indexes("runs")):
        return False
    _index().drop(conn)
    return True


def available(engine: sa.engine.Engine, team_uri: str) -> bool:
    """Whether this database can take the accelerated search; says once per database why not."""
    if not compat.use("search"):
        return False
    try:
        if has_index(engine):
            return True
    except sa.exc.SQLAlchemyError as exc:  # no reason to keep a store from starting
        _logger.debug("mlflow-team: could not list the indexes of runs: %s", exc)
        return False
    masked = redact.mask_url(team_uri)
    if masked not in _WARNED:
        _WARNED.add(masked)
        _logger.warning(errors.SEARCH_INDEX_MISSING.format(uri=masked, index=INDEX))
    return False


# --- the search ------------------------------------------------------------------------------


def search_runs(store: Any, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
    """Stock ``_search_runs``'s answer, ``(runs, next_page_token)``; None for a search that needs
    MLflow's own path (a dataset filter)."""
    from mlflow.entities import LifecycleStage
    from mlflow.utils.search_utils import SearchUtils

    get_order = compat.get(f"{_STORE}:_get_orderby_clauses")
    get_filters = compat.get(f"{_STORE}:_get_sqlalchemy_filter_clauses")
    models = compat.resolve("mlflow.store.tracking.dbmodels.models:SqlRun")

    # The same checks, in the same order, as stock: the same errors.
    store._validate_max_results_param(max_results, allow_null=True)
    stages = set(LifecycleStage.view_type_to_stages(run_view_type))
    with store.ManagedSessionMaker() as session:
        parsed = SearchUtils.parse_search_filter(filter_string)
        order_columns, order_clauses, order_joins = get_order(order_by, session)
        attribute_filters, entity_filters, dataset_filters = get_filters(parsed, session, store._get_dialect())
        if dataset_filters:
            return None
        offset = SearchUtils.parse_start_offset_from_page_token(page_token)
        experiment_ids = store._filter_experiment_ids(session, _parse_experiment_ids(experiment_ids))

        run = models
        stmt = sa.select(run.run_uuid, *order_columns)
        for joined in order_joins:
            stmt = stmt.outerjoin(joined, run.run_uuid == joined.c.run_uuid)
        stmt = stmt.where(
            run.experiment_id.in_(experiment_ids),
            run.lifecycle_stage.in_(stages),
            *attribute_filters,
            *(_exists(subquery, run) for subquery in entity_filters),
        ).order_by(*order_clauses).offset(offset)
        if max_results is not None:
            stmt = stmt.limit(max_results + 1)
        run_ids = [row[0] for row in session.execute(stmt)]

        next_token = None
        if max_results is not None and len(run_ids) == max_results + 1:
            next_token = SearchUtils.create_page_token(offset + max_results)
            run_ids = run_ids[:max_results]
        return _hydrate(store, session, run_ids), next_token


def _exists(subquery: Any, run: Any) -> Any:
    """Stock's ``SELECT * FROM <table> WHERE key = ? AND <comparison>`` filter subquery, as a
    correlated ``EXISTS`` on the table's ``(key, run_uuid)`` primary key."""
    select = subquery.element
    (table,) = select.get_final_froms()
    return sa.exists().where(table.c.run_uuid == run.run_uuid, select.whereclause)


def _parse_experiment_ids(experiment_ids: Sequence[Any]) -> list[int]:
    parse = compat.get(f"{_STORE}:_parse_experiment_ids")  # 3.17+; older minors: int()
    return parse(experiment_ids) if parse is not None else [int(e) for e in experiment_ids]


# --- the page's entities ---------------------------------------------------------------------

_RUN_COLUMNS = ("run_uuid", "name", "experiment_id", "user_id", "status", "start_time", "end_time",
                "lifecycle_stage", "artifact_uri")


def _rows(session: Any, table: str, columns: Sequence[str], run_ids: Sequence[str]):
    t = sa.table(table, *(sa.column(c) for c in columns))
    for start in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[start:start + _CHUNK]
        yield from session.execute(sa.select(*t.c).where(t.c.run_uuid.in_(chunk)))


def _hydrate(store: Any, session: Any, run_ids: list[str]) -> list[Any]:
    """The runs as ``SqlRun.to_mlflow_entity`` makes them, with stock's inputs and outputs."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunInputs, RunOutputs, RunTag

    run_name_from_tags = compat.get("mlflow.utils.mlflow_tags:_get_run_name_from_tags")
    if not run_ids:
        return []
    infos = {row[0]: row for row in _rows(session, "runs", _RUN_COLUMNS, run_ids)}
    params: dict[str, list] = {r: [] for r in run_ids}
    tags: dict[str, list] = {r: [] for r in run_ids}
    metrics: dict[str, list] = {r: [] for r in run_ids}
    for key, value, run_id in _rows(session, "params", ("key", "value", "run_uuid"), run_ids):
        params[run_id].append(Param(key, value))
    for key, value, run_id in _rows(session, "tags", ("key", "value", "run_uuid"), run_ids):
        tags[run_id].append(RunTag(key, value))
    metric_columns = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
    for key, value, timestamp, step, is_nan, run_id in _rows(session, "latest_metrics", metric_columns, run_ids):
        metrics[run_id].append(Metric(key, float("nan") if is_nan else value, timestamp, step))

    inputs = store._get_run_inputs(run_uuids=run_ids, session=session)
    outputs = store._get_model_outputs_bulk(run_ids=run_ids, session=session)
    runs = []
    for i, run_id in enumerate(run_ids):
        uuid, name, experiment_id, user_id, status, start_time, end_time, stage, artifact_uri = infos[run_id]
        info = RunInfo(
            run_id=uuid, run_name=name or run_name_from_tags(tags[run_id]), experiment_id=str(experiment_id),
            user_id=user_id, status=status, start_time=start_time, end_time=end_time, lifecycle_stage=stage,
            artifact_uri=artifact_uri,
        )
        data = RunData(metrics=metrics[run_id], params=params[run_id], tags=tags[run_id])
        runs.append(Run(info, data, RunInputs(dataset_inputs=inputs[i]), RunOutputs(outputs[run_id])))
    return runs
