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
2. **What each run holds.** The page's runs, params, tags and latest metrics are read with plain
   ``SELECT ... WHERE run_uuid IN (...)`` (one per table on SQLite, one ``UNION ALL`` elsewhere)
   and turned into the entities ``SqlRun.to_mlflow_entity`` makes; inputs and logged-model outputs
   come from stock's own bulk helpers.

A page ordered by one metric, param or tag is read off an index of that key's values where the
searched experiments hold enough of the database's runs (:func:`_ordered_first`, :func:`_walk_pays`).

What a search costs besides its statements is kept small too: filter and order strings are parsed,
and stock's clauses for a filter built, once per string; on PostgreSQL a search's id statement is
kept and run through the driver's cursor when it is asked again (:class:`_Listing`), and so is
the page's; ``RunData`` is set from dicts (the ``entities`` probe).

The indexes of :data:`INDEXES` (stock has none on ``runs.experiment_id``, nor on tag and param
values) let a search read its experiment's runs only, and an equality filter find its runs
directly. ``mlflow-team db upgrade`` and the creation of a new database add them, ``eject`` drops
them, and a database without them keeps MLflow's own search path and says once how to add them.
Dataset filters keep MLflow's path too.
"""

from __future__ import annotations

import copy
import functools
import gc
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mlflow_team import errors, redact
from mlflow_team.store import compat

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeamIndex:
    """An index of mlflow-team's on one of MLflow's tables (its name says whose it is)."""

    name: str
    table: str
    columns: tuple[str, ...]  # "start_time DESC" / "start_time DESC NULLS LAST": a column in that order
    dialects: tuple[str, ...] = ("sqlite", "postgresql", "mysql")
    postgresql_using: str | None = None
    postgresql_where: str | None = None  # a partial index: the rows it holds (SQL)

    def index(self) -> sa.Index:
        names = [c.split()[0] for c in self.columns]
        table = sa.Table(self.table, sa.MetaData(), *(sa.Column(n) for n in names))
        extra: dict[str, Any] = {"postgresql_using": self.postgresql_using} if self.postgresql_using else {}
        if self.postgresql_where:
            extra["postgresql_where"] = sa.text(self.postgresql_where)
        return sa.Index(self.name, *(self._expression(table.c[n], c) for n, c in zip(names, self.columns)), **extra)

    @staticmethod
    def _expression(column: Any, spec: str) -> Any:
        if spec.endswith("DESC NULLS LAST"):
            return column.desc().nulls_last()
        return column.desc() if spec.endswith("DESC") else column


#: A PostgreSQL b-tree entry holds at most ~2,700 bytes: param and tag values in a search's order
#: are indexed up to 1,500 bytes (plus a key of at most 250 characters), and the keys that have a
#: longer value somewhere are indexed apart, so that a search knows when the first index is not
#: the whole story.
_SHORT = "octet_length(value) <= 1500"
_LONG = "octet_length(value) > 1500"

#: The accelerator's indexes, by database. ``runs`` has no index on ``experiment_id`` in MLflow's
#: schema: this one covers a search's stage, experiment and newest-first order, which a page of
#: the UI then reads off the index without sorting the experiment (``lifecycle_stage`` first, so
#: that MySQL never takes it for the foreign key's index on ``experiment_id``, which it would then
#: drop, and refuse to let eject drop this one). Tag and param values
#: get one for equality filters (``tags.mlflow.parentRunId = '...'``, what the UI asks to expand a
#: parent): a b-tree on SQLite, a hash index on PostgreSQL (a b-tree there refuses values longer
#: than about 2,700 bytes, and MLflow accepts 8,000), none on MySQL/MariaDB. Latest metric values
#: get one in a search's order (``order_by=["metrics.rmse"]``, the course's best run), and so do
#: param and tag values on PostgreSQL (on SQLite the value indexes above are in that order): the
#: page's runs are read off it, and the search stops once it has a page (:func:`_ordered_first`).
INDEXES = (
    TeamIndex("team_runs_search", "runs", ("lifecycle_stage", "experiment_id", "start_time DESC", "run_uuid"),
              ("sqlite",)),
    TeamIndex("team_runs_search", "runs",
              ("lifecycle_stage", "experiment_id", "start_time DESC NULLS LAST", "run_uuid"), ("postgresql",)),
    TeamIndex("team_runs_search", "runs", ("lifecycle_stage", "experiment_id", "start_time", "run_uuid"),
              ("mysql",)),
    TeamIndex("team_tags_value", "tags", ("key", "value"), ("sqlite",)),
    TeamIndex("team_params_value", "params", ("key", "value"), ("sqlite",)),
    TeamIndex("team_tags_value", "tags", ("value",), ("postgresql",), postgresql_using="hash"),
    TeamIndex("team_params_value", "params", ("value",), ("postgresql",), postgresql_using="hash"),
    TeamIndex("team_metrics_order", "latest_metrics", ("key", "is_nan", "value"), ("sqlite", "postgresql")),
    TeamIndex("team_params_order", "params", ("key", "value"), ("postgresql",), postgresql_where=_SHORT),
    TeamIndex("team_params_long", "params", ("key",), ("postgresql",), postgresql_where=_LONG),
    TeamIndex("team_tags_order", "tags", ("key", "value"), ("postgresql",), postgresql_where=_SHORT),
    TeamIndex("team_tags_long", "tags", ("key",), ("postgresql",), postgresql_where=_LONG),
)
#: Every index name eject may find (whatever database made it).
INDEX_NAMES = tuple(dict.fromkeys((ix.table, ix.name) for ix in INDEXES))
#: An equality filter that names fewer runs than this is read off the value index (SQLite).
_FEW = 2_000
_STORE = "mlflow.store.tracking.sqlalchemy_store"
_WARNED: set[str] = set()


# --- the indexes -----------------------------------------------------------------------------


def _wanted(dialect: str) -> list[TeamIndex]:
    return [ix for ix in INDEXES if dialect in ix.dialects]


def _present(bind: Any, table: str) -> set[str]:
    return {ix.get("name") for ix in sa.inspect(bind).get_indexes(table)}


def index_names(url: str) -> list[str]:
    """The accelerator's index names on the database behind a plain SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    return [ix.name for ix in _wanted(make_url(url).get_backend_name())]


def missing_indexes(engine: sa.engine.Engine) -> list[str]:
    """The names of the accelerator's indexes this database lacks."""
    present: dict[str, set[str]] = {}
    lacking = []
    for ix in _wanted(engine.dialect.name):
        if ix.table not in present:
            present[ix.table] = _present(engine, ix.table)
        if ix.name not in present[ix.table]:
            lacking.append(ix.name)
    return lacking


def create_indexes(engine: sa.engine.Engine) -> list[str]:
    """Add the accelerator's indexes where missing; returns the names created now."""
    lacking = set(missing_indexes(engine))
    made = []
    for ix in _wanted(engine.dialect.name):
        if ix.name in lacking:
            with engine.begin() as conn:
                ix.index().create(conn)
            made.append(ix.name)
    return made


def drop_indexes(conn: sa.engine.Connection) -> list[str]:
    """Drop every index of the accelerator found (``eject``); returns their names."""
    dropped = []
    for table, name in INDEX_NAMES:
        if name in _present(conn, table):
            TeamIndex(name, table, ("run_uuid",)).index().drop(conn)  # DROP INDEX needs the name (and table)
            dropped.append(name)
    return dropped


def available(engine: sa.engine.Engine, team_uri: str) -> bool:
    """Whether this database can take the accelerated search; says once per database why not."""
    if not compat.use("search"):
        return False
    try:
        lacking = missing_indexes(engine)
    except sa.exc.SQLAlchemyError as exc:  # no reason to keep a store from starting
        _logger.debug("mlflow-team: could not list the indexes of MLflow's tables: %s", exc)
        return False
    if not lacking:
        return True
    masked = redact.mask_url(team_uri)
    if masked not in _WARNED:
        _WARNED.add(masked)
        _logger.warning(errors.SEARCH_INDEX_MISSING.format(uri=masked, index=", ".join(lacking)))
    return False


# --- the search ------------------------------------------------------------------------------


def search_runs(store: Any, experiment_ids, filter_string, run_view_type, max_results, order_by, page_token):
    """Stock ``_search_runs``'s answer, ``(runs, next_page_token)``; None for a search that needs
    MLflow's own path (a dataset filter)."""
    from mlflow.entities import LifecycleStage
    from mlflow.utils.search_utils import SearchUtils

    get_order = compat.get(f"{_STORE}:_get_orderby_clauses")
    run = compat.resolve("mlflow.store.tracking.dbmodels.models:SqlRun")

    # The same checks, in the same order, as stock: the same errors.
    store._validate_max_results_param(max_results, allow_null=True)
    stages = set(LifecycleStage.view_type_to_stages(run_view_type))
    with store.ManagedSessionMaker() as session:
        parsed = _parsed(filter_string)
        # An order read off an index below is checked here, where stock checks it (the same
        # function, the same errors for that one key); stock's clauses for it (an ORM subquery to
        # build) are only made for a page that reaches past the index.
        first = _ordered_first(order_by, run, store.db_type) if max_results is not None else None
        newest = _newest_first(order_by, run, store.db_type)
        if first is None and store.db_type == "postgresql" and isinstance(session.bind, sa.engine.Engine):
            # Without the ordered walk (whose settings live in a transaction), the search's
            # statements run in autocommit: no BEGIN and COMMIT round trips. Each statement sees
            # what was committed before it, as each does in stock's READ COMMITTED transaction.
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        # a search asked before (the UI's runs page, a parent's trials, a notebook's loop): its
        # statement is built, and its filter and order were checked, when it was first asked
        key = (_listing_key(filter_string, order_by, max_results, session, experiment_ids, len(stages))
               if store.db_type == "postgresql" else None)
        listing = _LISTINGS.get(key) if key is not None and first is None else None  # a walk's is its fallback
        if listing is None:
            stock_order = get_order(order_by, session) if first is None and newest is None else None
            attribute_filters, entity_filters, dataset_filters = _filter_clauses(filter_string, parsed, session, store)
            if dataset_filters:
                return None
        offset = SearchUtils.parse_start_offset_from_page_token(page_token)
        experiment_ids = store._filter_experiment_ids(session, _parse_experiment_ids(experiment_ids))
        if listing is not None and listing.experiments == len(experiment_ids):
            run_ids = listing.run_ids(session, experiment_ids, stages, offset, max_results)
        else:
            if listing is not None:  # a subclass's filter of the experiments changed their number
                stock_order = get_order(order_by, session) if newest is None else None
                attribute_filters, entity_filters, _ = _filter_clauses(filter_string, parsed, session, store)
                key = None
            run_ids = None
            # whether an equality names few runs: SQLite reads those few by key, whatever the
            # order; PostgreSQL plans that itself, and only needs to know whether the walk below
            # is worth it
            ask_few = store.db_type == "sqlite" or first is not None
            joins, few = _semi_joins(session, entity_filters, _equalities(parsed) if ask_few else None, run,
                                     store.db_type)
            filters = (*attribute_filters, *joins)
            plain = (run.experiment_id.in_(experiment_ids), run.lifecycle_stage.in_(stages))
            # the same, out of SQLite's indexes' reach: for a filter that names few runs (an IN
            # list), those runs by their key, then sorted, rather than the experiment's every run
            # in the runs index's order (23 ms at 100,000 runs); and for the ordered walk below
            scope = (_unindexed(run.experiment_id, store.db_type).in_(experiment_ids),
                     _unindexed(run.lifecycle_stage, store.db_type).in_(stages))
            # an equality that names few runs (a parent's trials) finds them faster than any walk
            # of the experiment's values would, and so does stock's order for a small experiment
            if first is not None and not few and _walk_pays(session, store.db_type, run, plain, experiment_ids, stages):
                run_ids = _walk(session, store.db_type, first, run, scope, attribute_filters, joins, entity_filters,
                                offset, max_results)
            if run_ids is None:
                def whole_order(*where: Any) -> sa.Select:
                    order = None if newest is not None else stock_order or get_order(order_by, session)
                    return _whole_order(run, newest, order, (*where, *filters))

                if store.db_type == "postgresql":
                    listing = _listing(key, whole_order, max_results, session, run, len(experiment_ids), len(stages))
                    run_ids = listing.run_ids(session, experiment_ids, stages, offset, max_results)
                else:
                    stmt = whole_order(*(scope if few else plain)).offset(offset)
                    if max_results is not None:
                        stmt = stmt.limit(max_results + 1)
                    run_ids = [row[0] for row in session.execute(stmt)]

        next_token = None
        if max_results is not None and len(run_ids) == max_results + 1:
            next_token = SearchUtils.create_page_token(offset + max_results)
            run_ids = run_ids[:max_results]
        with _collector_paused():
            return _hydrate(store, session, run_ids), next_token


def _walk(session: Any, dialect: str, first: tuple, run: Any, scope: tuple, attribute_filters: tuple,
          joins: list, entity_filters: Sequence[Any], offset: int, max_results: int) -> list[str] | None:
    """The page's run ids read off the order key's value index (:func:`_ordered_first`); None
    where the page reaches past the runs with a value (stock's whole order answers then)."""
    values, conditions, order = first
    if dialect == "postgresql":
        # each filter checked run by run as the walk reaches it (see _semi_joins' fence)
        joins, _ = _semi_joins(session, entity_filters, None, run, dialect, walked=values)
    # SQLite would start from the runs index and sort every matching run: with the runs' stage
    # and experiment out of any index's reach (`+column`), it walks the values' index
    stmt = sa.select(run.run_uuid).join(values, values.c.run_uuid == run.run_uuid).where(
        *conditions, *scope, *attribute_filters, *joins,
    ).order_by(*order).offset(offset).limit(max_results + 1)
    jit = dialect == "postgresql" and (session.bind.dialect.server_version_info or (0,)) >= (11,)
    previous = _walk_settings(session, dialect, _WALK_SETTINGS_11 if jit else _WALK_SETTINGS)
    run_ids = [row[0] for row in session.execute(stmt)]
    # back as they were, for what follows: left on, they slow the page's statement by about
    # 1.5 ms (a new plan each time) and would keep stock's order from sorting
    _walk_settings(session, dialect, previous)
    return run_ids if len(run_ids) == max_results + 1 else None


def _whole_order(run: Any, newest: list | None, stock_order: tuple | None, where: tuple) -> sa.Select:
    """The run ids that match ``where`` in stock's whole order (``newest``: the runs index's
    spelling of it; else stock's order clauses and their joins)."""
    if newest is not None:
        return sa.select(run.run_uuid).where(*where).order_by(*newest)
    order_columns, order_clauses, order_joins = stock_order
    stmt = sa.select(run.run_uuid, *order_columns)
    for joined in order_joins:
        stmt = stmt.outerjoin(joined, run.run_uuid == joined.c.run_uuid)
    return stmt.where(*where).order_by(*order_clauses)


_OFFSET = sa.bindparam("team_offset", type_=sa.Integer())
_LIMIT = sa.bindparam("team_limit", type_=sa.Integer())


def _listing_params(experiment_ids: Sequence[int], stages: Sequence[str], offset: int, max_results: int | None) -> dict:
    """A :class:`_Listing`'s values: one parameter per experiment and stage (``IN ($1)`` is
    ``= $1`` to PostgreSQL, which the runs index then reads in order; ``= ANY($1)`` it would sort)."""
    params = {f"team_experiment_{i}": e for i, e in enumerate(experiment_ids)}
    params.update((f"team_stage_{i}", stage) for i, stage in enumerate(stages))
    params["team_offset"] = offset
    if max_results is not None:
        params["team_limit"] = max_results + 1
    return params


@dataclass(frozen=True)
class _Listing:
    """PostgreSQL's statement for a page's run ids in stock's whole order, with the experiments,
    stages, offset and page size as its parameters; its SQL for the driver's cursor, or None
    where one of its values needs SQLAlchemy's conversion."""

    statement: Any
    sql: str | None
    constants: dict
    experiments: int

    def run_ids(self, session: Any, experiment_ids: Sequence[int], stages: set[str], offset: int,
                max_results: int | None) -> list[str]:
        params = _listing_params(experiment_ids, sorted(stages), offset, max_results)
        if self.sql is None:
            return [row[0] for row in session.execute(self.statement, params)]
        return [row[0] for row in _driver_execute(session, self.sql, {**self.constants, **params})]


#: :class:`_Listing` by filter string, order, whether the page has a size, driver, and how many
#: experiments and stages: a search asked again (the UI's runs page, a parent's trials, a
#: notebook's loop) neither builds stock's clauses nor has SQLAlchemy build and execute a
#: statement (about 0.7 ms of a 4 ms search).
_LISTINGS: dict[tuple, _Listing] = {}


def _listing_key(filter_string: Any, order_by: Any, max_results: Any, session: Any, experiment_ids: Any,
                 stages: int) -> tuple | None:
    if filter_string is not None and not isinstance(filter_string, str):
        return None
    if order_by is not None and not (isinstance(order_by, (list, tuple)) and all(isinstance(o, str) for o in order_by)):
        return None
    if not isinstance(experiment_ids, (list, tuple)):
        return None
    return (filter_string, None if order_by is None else tuple(order_by), max_results is None,
            session.bind.dialect.driver, len(experiment_ids), stages)


def _listing(key: tuple | None, whole_order: Callable[..., sa.Select], max_results: int | None, session: Any,
             run: Any, experiments: int, stages: int) -> _Listing:
    """The search's :class:`_Listing`, built (and kept, under ``key``) where not found."""
    found = _LISTINGS.get(key) if key is not None else None
    if found is not None and found.experiments == experiments:
        return found
    stmt = whole_order(
        run.experiment_id.in_([sa.bindparam(f"team_experiment_{i}", type_=sa.Integer()) for i in range(experiments)]),
        run.lifecycle_stage.in_([sa.bindparam(f"team_stage_{i}", type_=sa.String()) for i in range(stages)]),
    ).offset(_OFFSET)
    if max_results is not None:
        stmt = stmt.limit(_LIMIT)
    dialect = session.bind.dialect
    compiled = stmt.compile(dialect=dialect)
    placeholders = _listing_params([0] * experiments, [""] * stages, 0, max_results)
    ours = set(placeholders)
    # the driver's cursor only where SQLAlchemy would pass every value as it is (no expanding IN
    # to render, no type that converts its value)
    direct = "POSTCOMPILE" not in compiled.string and all(
        bind.type.dialect_impl(dialect).bind_processor(dialect) is None
        for name, bind in compiled.binds.items() if name not in ours
    )
    constants = {k: v for k, v in compiled.construct_params(placeholders).items() if k not in ours}
    found = _Listing(stmt, compiled.string if direct else None, constants, experiments)
    if key is not None:
        if len(_LISTINGS) >= _CLAUSES_MAX:
            _LISTINGS.clear()
        _LISTINGS[key] = found
    return found


def _driver_execute(session: Any, sql: str, params: dict) -> list[tuple]:
    """One statement's rows through the driver's cursor on the session's connection (same
    transaction); the driver's errors raised as SQLAlchemy raises them."""
    connection = session.connection()
    dialect = connection.dialect
    dbapi = getattr(dialect, "loaded_dbapi", None) or dialect.dbapi
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, dbapi.Error) from exc
    finally:
        cursor.close()


@functools.lru_cache(maxsize=256)
def _order_key_once(order_by: str) -> tuple[str, str, bool]:
    from mlflow.utils.search_utils import SearchUtils

    return tuple(SearchUtils.parse_order_by_for_search_runs(order_by))


def _order_key(order_by: Any) -> tuple[str, str, bool]:
    """``SearchUtils.parse_order_by_for_search_runs`` (sqlparse), once per order string: its
    ``(key type, key, ascending)``; an order it refuses raises stock's error each time."""
    if not isinstance(order_by, str):
        from mlflow.utils.search_utils import SearchUtils

        return SearchUtils.parse_order_by_for_search_runs(order_by)  # stock's answer to whatever it is
    return _order_key_once(order_by)


@functools.lru_cache(maxsize=256)
def _parsed_once(filter_string: str | None) -> tuple:
    from mlflow.utils.search_utils import SearchUtils

    return tuple(SearchUtils.parse_search_filter(filter_string))


def _parsed(filter_string: str | None) -> list[dict]:
    """``SearchUtils.parse_search_filter(filter_string)``, parsed once per filter string (sqlparse
    takes about half a millisecond of a search that the database answers in one); each search gets
    its own copy. A filter it refuses is not kept: each search raises stock's error again."""
    if filter_string is not None and not isinstance(filter_string, str):
        from mlflow.utils.search_utils import SearchUtils

        return SearchUtils.parse_search_filter(filter_string)  # stock's answer to whatever it is
    return copy.deepcopy(list(_parsed_once(filter_string)))


_CLAUSES: dict[tuple[str, str], tuple] = {}
_CLAUSES_MAX = 256


def _filter_clauses(filter_string: Any, parsed: list[dict], session: Any, store: Any) -> tuple:
    """Stock's ``_get_sqlalchemy_filter_clauses(parsed, session, dialect)``, built once per filter
    string and dialect (0.4 ms of ORM subqueries otherwise; they only *describe* the filter, no
    statement runs, and SQLAlchemy's expressions are immutable and safe to share between threads).
    A filter it refuses is not kept: stock's error each time."""
    dialect = store._get_dialect()
    key = (filter_string, dialect) if filter_string is None or isinstance(filter_string, str) else None
    found = _CLAUSES.get(key) if key is not None else None
    if found is None:
        get_filters = compat.get(f"{_STORE}:_get_sqlalchemy_filter_clauses")
        found = tuple(tuple(clauses) for clauses in get_filters(parsed, session, dialect))
        if key is not None:
            if len(_CLAUSES) >= _CLAUSES_MAX:
                _CLAUSES.clear()
            _CLAUSES[key] = found
    return found


def _newest_first(order_by: list[str] | None, run: Any, dialect: str) -> list[Any] | None:
    """For ``order_by=["attributes.start_time DESC"]`` (the UI's runs page): stock's clauses,
    ``CASE WHEN start_time IS NULL THEN 1 ELSE 0 END, start_time DESC, run_uuid``, spelled as the
    index's order, ``start_time DESC NULLS LAST, run_uuid``: the same order (runs without a start
    time last), read off :data:`INDEXES`' runs index instead of sorting every run. SQLite puts
    NULL last in a descending order by itself; MySQL has no ``NULLS LAST`` (stock's clauses)."""
    from mlflow.utils.search_utils import SearchUtils

    if dialect not in ("sqlite", "postgresql") or not order_by or len(order_by) != 1:
        return None
    key_type, key, ascending = _order_key(order_by[0])
    if ascending or SearchUtils.translate_key_alias(key) != "start_time" or not (
        SearchUtils.is_string_attribute(key_type, "start_time", "=")
        or SearchUtils.is_numeric_attribute(key_type, "start_time", "=")
    ):
        return None
    newest = run.start_time.desc()
    return [newest.nulls_last() if dialect == "postgresql" else newest, run.run_uuid]


_TABLES = {
    "metric": sa.table("latest_metrics", *(sa.column(c) for c in ("key", "value", "is_nan", "run_uuid"))),
    "param": sa.table("params", *(sa.column(c) for c in ("key", "value", "run_uuid"))),
    "tag": sa.table("tags", *(sa.column(c) for c in ("key", "value", "run_uuid"))),
}


def _ordered_first(order_by: list[str] | None, run: Any, dialect: str) -> tuple[Any, list, list] | None:
    """For ``order_by=["metrics|params|tags.<key> [ASC|DESC]"]``: the table of the key's values, the
    conditions of the runs that have a value for it, and their order ``value, start_time DESC,
    run_uuid``.

    Stock's order is ``CASE WHEN is_nan THEN 1 WHEN value IS NULL THEN 2 ELSE 0 END, value,
    start_time DESC, run_uuid`` (params and tags: ``CASE WHEN value IS NULL THEN 1 ELSE 0 END``):
    runs with a value first, by value, then (metrics) NaN, then runs without the key. A page inside
    the first group is that group's window, which an index on ``(key, [is_nan,] value)`` hands over
    in order: the database walks it from the first value and stops at the page's last run instead
    of joining and sorting every matching run. A page that reaches past the group (fewer rows than
    asked) is answered again by stock's whole order. On PostgreSQL the param and tag index holds
    values up to 1,500 bytes: where the key has a longer value, the statement finds nothing (one
    look at ``team_*_long``) and stock's order answers. SQLite and PostgreSQL."""
    from mlflow.utils.search_utils import SearchUtils

    if dialect not in ("sqlite", "postgresql") or not order_by or len(order_by) != 1:
        return None
    key_type, key, ascending = _order_key(order_by[0])
    kind = next((k for k, is_kind in (("metric", SearchUtils.is_metric), ("param", SearchUtils.is_param),
                                      ("tag", SearchUtils.is_tag)) if is_kind(key_type, "=")), None)
    if kind is None:
        return None
    key = SearchUtils.translate_key_alias(key)  # stock's, for every key type ("metrics.created")
    table = _TABLES[kind]
    values = table.alias("team_order")
    conditions = [values.c.key == key]
    if kind == "metric":
        conditions.append(values.c.is_nan == sa.false())
    elif dialect == "postgresql":
        longer = table.alias("team_long")
        conditions += [sa.text(_SHORT.replace("value", "team_order.value")),  # the partial index's rows
                       ~sa.exists().where(longer.c.key == key, sa.text(_LONG.replace("value", "team_long.value")))]
    return values, conditions, [values.c.value if ascending else values.c.value.desc(), run.start_time.desc(),
                                run.run_uuid]


#: PostgreSQL's planner, for the ordered walk: no full sort (it misjudges how many runs several
#: filters keep, 100 where there are thousands, and would join and sort them all: 74 ms against 9 ms
#: at 10,000 runs), no parallel workers (starting them costs ~30 ms, the walk takes ~10), and a plan
#: made for this statement's values (psycopg prepares a statement run five times, and PostgreSQL's
#: generic plan for it, blind to the key and the page size, took 10 s at 100,000 runs). And no JIT
#: compilation (PostgreSQL 11+): the walk's cost estimate counts every run it could reach, not the
#: page it stops at, and passes ``jit_above_cost`` on large pages (16 ms of compiling for a walk
#: of 40 ms at 10,000 runs).
_WALK_SETTINGS = {"enable_sort": "off", "max_parallel_workers_per_gather": "0", "plan_cache_mode": "force_custom_plan"}
_WALK_SETTINGS_11 = {**_WALK_SETTINGS, "jit": "off"}


def _walk_settings(session: Any, dialect: str, settings: dict[str, str]) -> dict[str, str]:
    """Set ``settings`` for the rest of the transaction (PostgreSQL; ``set_config(..., true)`` is
    ``SET LOCAL``), in the round trip that reads the values they replace, which it returns."""
    if dialect != "postgresql":
        return {}
    names = list(settings)
    previous = session.execute(sa.select(
        *(sa.func.current_setting(name) for name in names),
        *(sa.func.set_config(name, value, True) for name, value in settings.items()),
    )).one()
    return dict(zip(names, previous[:len(names)]))


def _unindexed(column: Any, dialect: str) -> Any:
    """SQLite's ``+column``: the same value, which no index can serve (the planner's documented
    steering wheel: "Disqualifying WHERE Clause Terms using Unary-+", https://sqlite.org/optoverview.html)."""
    if dialect != "sqlite":
        return column
    return sa.sql.expression.UnaryExpression(column, operator=sa.sql.operators.custom_op("+"), type_=column.type)


_PAUSE_LOCK = threading.Lock()
_PAUSED = [0, False]  # searches inside the pause, whether the collector was on when the first came in


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a page's entities are built. A page of 1,000
    runs is some 30,000 objects; their allocation sets off collections of every generation, and a
    full one walks the whole heap (about 200 ms with MLflow loaded, in one search out of three in
    the benchmark). The entities hold no reference cycles: reference counting frees them, and the
    collector resumes, as it was, when the last search in the pause leaves it."""
    with _PAUSE_LOCK:
        if _PAUSED[0] == 0:
            _PAUSED[1] = gc.isenabled()
            gc.disable()
        _PAUSED[0] += 1
    try:
        yield
    finally:
        with _PAUSE_LOCK:
            _PAUSED[0] -= 1
            if _PAUSED[0] == 0 and _PAUSED[1]:
                gc.enable()


def _semi_joins(session: Any, subqueries: Sequence[Any], equalities: list[bool] | None, run: Any,
                dialect: str, walked: Any = None) -> tuple[list[Any], bool]:
    """Stock's filter subqueries (``SELECT * FROM <table> WHERE key = ? AND <comparison>``), each
    as a semi-join of ``runs``: a correlated ``EXISTS`` on the table's ``(key, run_uuid)`` primary
    key, or ``run_uuid IN (...)`` read off the value index for an equality on SQLite that names
    few runs (SQLite never turns an ``EXISTS`` around to start from those few rows, and a long
    ``IN`` list costs more than the ``EXISTS`` probes it saves; PostgreSQL and MySQL plan both
    forms alike, by their own statistics). Also whether an equality names few runs (SQLite and
    PostgreSQL, off their value indexes).

    ``walked`` (PostgreSQL's ordered walk: the walked values' alias): each ``EXISTS`` is tied to
    the walked value's run and fenced with ``OFFSET 0``, "traditionally used as an optimization
    fence" (PostgreSQL's ``simplify_EXISTS_query``, src/backend/optimizer/plan/subselect.c), so
    that it stays a subplan checked on each value as the walk reads it, through the table's
    ``(key, run_uuid)`` primary key, before the run's own row is read. Unfenced, the
    planner makes it a join through ``run_uuid`` alone (every tag of a run read to find one),
    after the runs lookup, and weighs join orders for a plan it makes anew each time: 12.6 ms
    against 10.1 for a LIKE filter's second page at 10,000 runs (planning 2.2 ms against 0.4)."""
    if equalities is None or len(equalities) != len(subqueries):
        equalities = [False] * len(subqueries)  # not matched up: EXISTS is right for every filter
    clauses, few = [], False
    for subquery, equality in zip(subqueries, equalities):
        select = subquery.element
        # the table its columns come from (``get_final_froms()`` compiles the statement: 0.3 ms)
        (table,) = select.columns_clause_froms if len(select.columns_clause_froms) == 1 else select.get_final_froms()
        if (equality and dialect in ("sqlite", "postgresql") and table.name in ("tags", "params")
                and _fewer_than(session, table, select.whereclause, _FEW)):
            few = True
            if dialect == "sqlite":
                clauses.append(run.run_uuid.in_(sa.select(table.c.run_uuid).where(select.whereclause)))
                continue
        if walked is not None:
            clauses.append(sa.select(sa.literal(1)).select_from(table).where(
                table.c.run_uuid == walked.c.run_uuid, select.whereclause).offset(0).exists())
        else:
            clauses.append(sa.exists().where(table.c.run_uuid == run.run_uuid, select.whereclause))
    return clauses, few


#: The ordered walk reads the key's values of every experiment, in order, until it has a page of
#: the searched ones: where those hold a small share of the database's runs (an experiment of
#: 1,000 runs beside one of 100,000), most of what it reads is someone else's, and stock's order
#: (join and sort the experiment's runs) costs less: 80 ms against 790 at 100,000 runs on
#: PostgreSQL for a LIKE filter ordered by a param. The walk is taken where the searched
#: experiments hold at least 2,000 runs and an eighth of the database's; both counted at most that
#: far, and kept for half a minute (an experiment's size moves slowly, and either path answers
#: the same).
_WALK_MIN_RUNS = 2_000
_WALK_MIN_SHARE = 8
_WALK_TTL_S = 30.0
_WALK_PAYS: dict[tuple, tuple[float, bool]] = {}


def _walk_pays(session: Any, dialect: str, run: Any, scope: tuple, experiment_ids: Sequence[int],
               stages: set[str]) -> bool:
    """Whether the searched experiments hold enough of the database's runs for the ordered walk."""
    key = (session.bind.engine, tuple(sorted(experiment_ids)), tuple(sorted(stages)))  # never a Connection
    now = time.monotonic()
    found = _WALK_PAYS.get(key)
    if found is not None and found[0] > now:
        return found[1]
    if dialect == "postgresql":  # the planner's count of the table (-1 or 0: never analyzed)
        total = session.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST('runs' AS regclass)")).scalar()
    else:
        total = session.execute(sa.select(sa.func.count()).select_from(sa.table("runs"))).scalar()
    need = max(_WALK_MIN_RUNS, int(total or 0) // _WALK_MIN_SHARE)
    pays = not _fewer_than(session, run.__table__, sa.and_(*scope), need)
    if len(_WALK_PAYS) >= _CLAUSES_MAX:
        _WALK_PAYS.clear()
    _WALK_PAYS[key] = (now + _WALK_TTL_S, pays)
    return pays


def _fewer_than(session: Any, table: Any, where: Any, limit: int) -> bool:
    """Whether fewer than ``limit`` rows match (one look at the value index, at most ``limit`` rows)."""
    capped = sa.select(sa.literal(1)).select_from(table).where(where).limit(limit).subquery()
    return session.execute(sa.select(sa.func.count()).select_from(capped)).scalar() < limit


def _equalities(parsed: list[dict]) -> list[bool] | None:
    """For each filter stock turns into a subquery, in its order: whether it is an ``=``."""
    from mlflow.utils.search_utils import SearchUtils

    flags = []
    try:
        for clause in parsed:
            key_type, comparator = clause.get("type"), clause.get("comparator").upper()
            key = SearchUtils.translate_key_alias(clause.get("key"))
            if SearchUtils.is_string_attribute(key_type, key, comparator) or SearchUtils.is_numeric_attribute(
                key_type, key, comparator
            ):
                if key == "run_name":  # stock: a filter on the mlflow.runName tag
                    flags.append(comparator == "=")
            elif comparator not in ("IS NULL", "IS NOT NULL") and not SearchUtils.is_dataset(key_type, comparator):
                flags.append(comparator == "=")
    except Exception:  # stock has raised on this filter already; never on the way here
        return None
    return flags


def _parse_experiment_ids(experiment_ids: Sequence[Any]) -> list[int]:
    parse = compat.get(f"{_STORE}:_parse_experiment_ids")  # 3.17+; older minors: int()
    return parse(experiment_ids) if parse is not None else [int(e) for e in experiment_ids]


# --- the page's entities ---------------------------------------------------------------------

_IDS = sa.bindparam("ids", expanding=True)


def _table(name: str, *columns: str) -> Any:
    return sa.table(name, *(sa.column(c) for c in (*columns, "run_uuid")))


_runs_t = _table("runs", "name", "experiment_id", "user_id", "status", "start_time", "end_time", "lifecycle_stage",
                 "artifact_uri")
_params_t, _tags_t = _table("params", "key", "value"), _table("tags", "key", "value")
_metrics_t = _table("latest_metrics", "key", "value", "timestamp", "step", "is_nan")
_inputs = sa.table("inputs", *(sa.column(c) for c in ("source_type", "source_id", "destination_type", "destination_id")))
#: Row kinds of :func:`_page`.
_RUN, _PARAM, _TAG, _METRIC, _IN_OR_OUT = range(5)


def _an_input_or_output(of_the_page: Any) -> Any:
    """An ``inputs`` row that is a dataset input or a logged-model output of one of the page's runs."""
    return sa.or_(
        sa.and_(_inputs.c.destination_type == "RUN", of_the_page(_inputs.c.destination_id)),
        sa.and_(_inputs.c.source_type == "RUN_OUTPUT", of_the_page(_inputs.c.source_id)),
    )


@functools.lru_cache(maxsize=None)
def _page(dialect: str) -> Any:
    """The page's runs, params, tags and latest metrics, and whether any of them has a dataset input
    or a logged-model output (most have neither), in one statement of uniform rows ``(kind,
    run_uuid, key, text1..text4, number1..number3, float, bool)``: one round trip to the database
    instead of five (on PostgreSQL each costs about as much as reading the rows)."""

    def null(type_: Any) -> Any:
        # PostgreSQL types a UNION's columns branch by branch (an untyped NULL twice is text);
        # SQLite and MySQL type them from every branch (and MySQL has no CAST(... AS BIGINT)).
        # Untyped, no result processing either: the drivers' own values (an is_nan of 0 or 1)
        return sa.cast(sa.null(), type_) if dialect == "postgresql" else sa.null()

    def of_the_page(column: Any) -> Any:
        # PostgreSQL: one array parameter (a short statement, which psycopg and the database cache,
        # where an IN list of the page's ids is a new statement text for every page size)
        if dialect == "postgresql":
            return column == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String())))
        return column.in_(_IDS)

    text, big, real, boolean = (null(t) for t in (sa.String(), sa.BigInteger(), sa.Float(53), sa.Boolean()))
    r, m = _runs_t.c, _metrics_t.c
    return sa.union_all(
        sa.select(sa.literal(_RUN), r.run_uuid, r.name, r.user_id, r.status, r.lifecycle_stage, r.artifact_uri,
                  r.experiment_id, r.start_time, r.end_time, real, boolean).where(of_the_page(r.run_uuid)),
        *(sa.select(sa.literal(kind), t.c.run_uuid, t.c.key, t.c.value, text, text, text, big, big, big, real,
                    boolean).where(of_the_page(t.c.run_uuid)) for kind, t in ((_PARAM, _params_t), (_TAG, _tags_t))),
        sa.select(sa.literal(_METRIC), m.run_uuid, m.key, text, text, text, text, m.timestamp, m.step, big, m.value,
                  m.is_nan).where(of_the_page(m.run_uuid)),
        sa.select(sa.literal(_IN_OR_OUT), text, text, text, text, text, text, big, big, big, real, boolean).where(
            sa.exists().where(_an_input_or_output(of_the_page))),
    )


def _narrow(table: Any, *columns: str) -> sa.Select:
    return sa.select(table.c.run_uuid, *(table.c[c] for c in columns)).where(table.c.run_uuid.in_(_IDS))


#: SQLite's page: the same rows as :func:`_page`'s, each table's alone (an in-process database has
#: no round trip to save, and SQLAlchemy builds a narrow row faster than a padded one).
_NARROW_RUNS = _narrow(_runs_t, "name", "user_id", "status", "lifecycle_stage", "artifact_uri", "experiment_id",
                       "start_time", "end_time")
_NARROW_PARAMS, _NARROW_TAGS = _narrow(_params_t, "key", "value"), _narrow(_tags_t, "key", "value")
_NARROW_METRICS = _narrow(_metrics_t, "key", "value", "timestamp", "step", "is_nan")
_NARROW_IN_OR_OUT = sa.select(sa.literal(1)).where(_an_input_or_output(lambda column: column.in_(_IDS))).limit(1)

#: Run ids per statement: SQLite's oldest limit is 999 variables (its statements name the ids at
#: most twice); :func:`_page` names them six times on MySQL (65,535 placeholders) and once, as an
#: array, on PostgreSQL.
_CHUNK = {"sqlite": 450, "mysql": 1_000, "postgresql": 10_000}


def _rows(session: Any, statement: Any, run_ids: Sequence[str], dialect: str) -> list:
    rows, chunk = [], _CHUNK.get(dialect, 450)
    for start in range(0, len(run_ids), chunk):
        rows.extend(session.execute(statement, {"ids": run_ids[start:start + chunk]}).all())
    return rows


@functools.lru_cache(maxsize=None)
def _compiled(statement: Any, dialect: Any) -> tuple[str, dict]:
    """The statement's SQL for the driver, and its constant parameters (compiled once)."""
    compiled = statement.compile(dialect=dialect)
    return compiled.string, {k: v for k, v in compiled.construct_params({"ids": []}).items() if k != "ids"}


def _driver_rows(session: Any, statement: Any, run_ids: Sequence[str], dialect: str) -> list:
    """:func:`_rows` through the driver's cursor (PostgreSQL's page: some 1,000 rows of twelve
    columns, none of which SQLAlchemy converts, so its result rows only cost time: about 1 ms of a
    search of a parent's 50 trials). Same connection, same transaction."""
    sql, constants = _compiled(statement, session.bind.dialect)
    rows, chunk = [], _CHUNK.get(dialect, 450)
    for start in range(0, len(run_ids), chunk):
        rows.extend(_driver_execute(session, sql, {**constants, "ids": list(run_ids[start:start + chunk])}))
    return rows


def _inputs_and_outputs(store: Any, session: Any, run_ids: list[str], any_found: bool) -> tuple[list, dict]:
    """Stock's dataset inputs and logged-model outputs of the runs (its two ORM queries, only where
    :func:`_page` found any)."""
    if not any_found:
        return [[] for _ in run_ids], {run_id: [] for run_id in run_ids}
    inputs = store._get_run_inputs(run_uuids=run_ids, session=session)
    return inputs, store._get_model_outputs_bulk(run_ids=run_ids, session=session)


def _hydrate(store: Any, session: Any, run_ids: list[str]) -> list[Any]:
    """The runs as ``SqlRun.to_mlflow_entity`` makes them, with stock's inputs and outputs."""
    from mlflow.entities import Metric, Run, RunInfo, RunInputs, RunOutputs
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    if not run_ids:
        return []
    infos: dict[str, tuple] = {}
    params: dict[str, dict] = {r: {} for r in run_ids}
    tags: dict[str, dict] = {r: {} for r in run_ids}
    metrics: dict[str, list] = {r: [] for r in run_ids}
    any_input_or_output = False
    if store.db_type == "sqlite":  # in-process: no round trip to save, and narrow rows build faster
        for run_id, *info in _rows(session, _NARROW_RUNS, run_ids, "sqlite"):
            infos[run_id] = info
        for run_id, key, value in _rows(session, _NARROW_PARAMS, run_ids, "sqlite"):
            params[run_id][key] = value
        for run_id, key, value in _rows(session, _NARROW_TAGS, run_ids, "sqlite"):
            tags[run_id][key] = value
        for run_id, key, value, timestamp, step, is_nan in _rows(session, _NARROW_METRICS, run_ids, "sqlite"):
            metrics[run_id].append(Metric(key, float("nan") if is_nan else value, timestamp, step))
        any_input_or_output = any(_rows(session, _NARROW_IN_OR_OUT, run_ids, "sqlite"))
    else:
        read = _driver_rows if store.db_type == "postgresql" else _rows
        for kind, run_id, key, text1, text2, text3, text4, number1, number2, number3, value, is_nan in read(
                session, _page(store.db_type), run_ids, store.db_type):
            if kind == _PARAM:
                params[run_id][key] = text1
            elif kind == _TAG:
                tags[run_id][key] = text1
            elif kind == _METRIC:
                metrics[run_id].append(Metric(key, float("nan") if is_nan else value, number1, number2))
            elif kind == _RUN:
                infos[run_id] = (key, text1, text2, text3, text4, number1, number2, number3)
            else:
                any_input_or_output = True

    inputs, outputs = _inputs_and_outputs(store, session, run_ids, any_input_or_output)
    run_data = _run_data_builder()
    runs = []
    for i, run_id in enumerate(run_ids):
        name, user_id, status, stage, artifact_uri, experiment_id, start_time, end_time = infos[run_id]
        run_tags = tags[run_id]
        info = RunInfo(
            # SqlRun.to_mlflow_entity: a run without a name takes its mlflow.runName tag's, if any
            run_id=run_id, run_name=name or run_tags.get(MLFLOW_RUN_NAME) or name, experiment_id=str(experiment_id),
            user_id=user_id, status=status, start_time=start_time, end_time=end_time, lifecycle_stage=stage,
            artifact_uri=artifact_uri,
        )
        data = run_data(metrics[run_id], params[run_id], run_tags)
        runs.append(Run(info, data, RunInputs(dataset_inputs=inputs[i]), RunOutputs(outputs[run_id])))
    return runs


def _run_data_builder() -> Callable[[list, dict, dict], Any]:
    """``RunData(metrics, params, tags)`` for a run's metric list and its param and tag dicts: field
    by field where the ``entities`` probe found RunData's fields as this builder sets them (its
    constructor turns lists of Param and RunTag objects into these same dicts: some 900 objects
    made and dropped for a page of 50 trials), else through the constructor."""
    from mlflow.entities import Param, RunData, RunTag

    if compat.use("entities"):
        return compat.run_data_from_dicts
    return lambda metrics, params, tags: RunData(
        metrics=metrics, params=[Param(k, v) for k, v in params.items()], tags=[RunTag(k, v) for k, v in tags.items()]
    )
