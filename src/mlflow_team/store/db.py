"""Engines and sessions hardened for many writers, shared by the tracking and registry stores.

What stock MLflow does differently, and why it loses writes under parallel runs:

* SQLite runs in rollback-journal mode, where a reader blocks a writer; a transaction that reads
  first and writes later cannot wait for the lock (SQLite returns "database is locked" at once to
  avoid a deadlock). Here SQLite runs in WAL mode, write sessions open with ``BEGIN IMMEDIATE``
  (they queue for the lock up front, honouring the busy timeout), and a store call that still
  meets a lock, a deadlock or a serialization failure is retried whole with backoff.
* Stock creates the tables of a new database from every process at once; here table creation
  holds a file lock, so one process migrates and the others wait and find it done.
* Stock ``log_batch`` commits params, metrics and tags in separate transactions. ``atomic()``
  runs a whole store call in one transaction: the sessions MLflow's code opens inside it join
  that transaction through savepoints, so a crash leaves all of it or none of it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from mlflow_team import config, errors, extras, redact
from mlflow_team.store import compat, uri

_logger = logging.getLogger(__name__)

_IMMEDIATE = "mlflow_team_immediate"
#: ``connection.execution_options(**{IMMEDIATE_OPTION: True})``: on the team's SQLite engine, the
#: connection's transactions begin with ``BEGIN IMMEDIATE`` (mlflow-team's own tables use it).
IMMEDIATE_OPTION = _IMMEDIATE
_DB = "mlflow.store.db.utils"
_engines: dict[str, sqlalchemy.engine.Engine] = {}
_engines_lock = threading.Lock()
_local = threading.local()

F = TypeVar("F", bound=Callable[..., Any])


# --- engines ---------------------------------------------------------------------------------


def get_engine(url: str) -> sqlalchemy.engine.Engine:
    """One hardened engine per database URL for the whole process (never one per store)."""
    engine = _engines.get(url)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(url)
            if engine is None:
                engine = _engines[url] = _create_engine(url)
    return engine


def _create_engine(url: str) -> sqlalchemy.engine.Engine:
    from mlflow.store.db.utils import _make_parent_dirs_if_sqlite, create_sqlalchemy_engine

    # Stock's retrying creation (a server started before its database waits for it), where
    # this MLflow has it; MLflow's pool settings and SQLite functions either way.
    create = compat.get(f"{_DB}:create_sqlalchemy_engine_with_retry") or create_sqlalchemy_engine
    _make_parent_dirs_if_sqlite(url)
    with extras.database_driver(url):  # a missing driver names the extra that installs it
        engine = create(url)
    if engine.dialect.name == "sqlite":
        _harden_sqlite(engine, config.sqlite_busy_timeout_ms())
        engine.dispose()  # the retrying creation pooled a connection opened before the hooks
    return engine


def _harden_sqlite(engine: sqlalchemy.engine.Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # pysqlite's own transaction handling cannot do BEGIN IMMEDIATE or real savepoints;
        # take it over (SQLAlchemy's documented recipe) and emit BEGIN in the "begin" hook.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # Safe in WAL: a crash never corrupts; only a power loss may drop the last commits.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA case_sensitive_like = true")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# --- creating and checking the schema --------------------------------------------------------


def _init_lock_path(url: str) -> Path:
    path = uri.sqlite_path(url)
    key = str(path) if path is not None else url
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mlflow-team-init-{digest}.lock"


def prepare(url: str, team_uri: str, policy: Any) -> bool:
    """What a store does before MLflow's constructor runs: refuse to start where a rule cannot be
    enforced, create or check the schema, and say whether the team sessions are to be installed."""
    result = compat.probe()
    if policy.protected_deletions and not result.ok("gc"):
        lo, hi = compat.TESTED_MINORS[0], compat.TESTED_MINORS[-1]
        raise errors.TeamStoreConfigError(
            errors.GC_GUARD_UNAVAILABLE.format(
                uri=redact.mask_url(team_uri), version="%d.%d" % result.version,
                reason="; ".join(result.reasons("gc")),
                tested=f"{lo[0]}.{lo[1]} to {hi[0]}.{hi[1]}",
            )
        )
    if compat.use("engine") and compat.use("schema"):
        try:
            ensure_schema(url, team_uri)
        except sqlalchemy.exc.OperationalError as exc:  # no server, no database, bad login
            reason = redact.mask_secrets(str(exc.orig or exc).strip().splitlines()[0], url)
            raise errors.TeamStoreConfigError(
                errors.DATABASE_UNREACHABLE.format(uri=redact.mask_url(team_uri), reason=reason)
            ) from None
    # An in-memory database lives in one connection: MLflow's own engine and sessions serve it.
    return in_memory(url) is False and compat.use("sessions")


class TeamStoreHooks:
    """What the tracking and registry stores share: the policy, the start-up checks, and the two
    MLflow hooks (named in :mod:`compat`) through which the team engine and sessions go in."""

    policy: Any
    team_uri: str
    _team_sessions: bool

    def _team_prepare(self, store_uri: str, team_policy: Any) -> str:
        """Before MLflow's constructor: the policy, the checks of :func:`prepare`; the plain URL."""
        from mlflow_team import config

        self.team_uri = uri.team_uri(store_uri)
        url = uri.db_url(self.team_uri)
        self.policy = team_policy if team_policy is not None else config.load_policy()
        self._team_sessions = prepare(url, self.team_uri, self.policy)
        return url

    @classmethod
    def _get_or_create_engine(cls, db_uri: str):
        with extras.database_driver(db_uri):
            return get_engine(db_uri) if hardened(db_uri) else super()._get_or_create_engine(db_uri)  # type: ignore[misc]

    def _initialize_store_state(self):
        # MLflow calls this at the end of its __init__, once the engines exist. Our sessions
        # must be in place before it: MLflow's own session maker would set its pragmas
        # (a 20 s busy timeout among them) on a pooled connection of our engine.
        if self._team_sessions:
            engine, read_engine = self.engine, getattr(self, "read_engine", None)  # type: ignore[attr-defined]
            self.ManagedSessionMaker = ManagedSessions(engine, read_engine)
        try:
            super()._initialize_store_state()  # type: ignore[misc]
        except Exception as exc:
            # MLflow 3.12 looks for the Default experiment and creates it in two transactions:
            # processes starting together on a new database race, and the losers fail on the
            # unique key. Looking again finds the winner's.
            if not _is_unique_violation(exc):
                raise
            super()._initialize_store_state()  # type: ignore[misc]


def _is_unique_violation(exc: BaseException) -> bool:
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        if isinstance(current, sqlalchemy.exc.IntegrityError) or "UNIQUE constraint failed" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def hardened(url: str) -> bool:
    """Whether the store gets mlflow-team's engine for ``url`` (MLflow's own serves in-memory)."""
    return not in_memory(url) and compat.use("engine")


def in_memory(url: str) -> bool:
    return url.startswith("sqlite") and uri.sqlite_path(url) is None


def replica_kwargs(init_path: str, read_db_uri: str | None) -> dict[str, Any]:
    """``read_db_uri`` for MLflow's constructor, on the minors that take it (3.17+)."""
    if read_db_uri and compat.accepts(init_path, "read_db_uri"):
        return {"read_db_uri": read_db_uri}
    return {}


def write_session(maker: Any):
    """A session for writing, from the team sessions or MLflow's (3.12's take no ``read_only``)."""
    try:
        return maker(read_only=False)
    except TypeError:
        return maker()


def atomic(maker: Any):
    """One transaction for the block where the team sessions are in place; otherwise a no-op
    (MLflow's own sessions keep stock's transactions)."""
    from contextlib import nullcontext

    return maker.atomic() if isinstance(maker, ManagedSessions) else nullcontext()


def _is_empty_database(engine: sqlalchemy.engine.Engine) -> bool:
    """Stock's test (3.13+), which older minors lack: no table but alembic's own."""
    found = compat.get(f"{_DB}:_is_empty_database")
    if found is not None:
        return found(engine)
    return all(t.startswith("alembic_") for t in sqlalchemy.inspect(engine).get_table_names())


def ensure_schema(url: str, team_uri: str) -> None:
    """Create the tables of a new database once, whoever else is starting at the same moment,
    and refuse an out-of-date schema with the command that fixes it."""
    from filelock import FileLock
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version

    if in_memory(url):
        return  # MLflow creates an in-memory database's tables on its own engine
    engine = get_engine(url)
    # Only an empty database is created here. Stock MLflow also "initializes" a database that
    # merely lacks a table, which silently migrates an old schema; that is refused below.
    expected = _get_latest_schema_revision()
    found = None if retrying_call(_is_empty_database, engine) else retrying_call(_get_schema_version, engine)
    if found != expected:
        # Empty, half-built by a process that is creating it right now, or really out of date:
        # wait for whoever holds the lock, then look again.
        with FileLock(str(_init_lock_path(url))):
            if _is_empty_database(engine):
                _create_tables(url)
            found = _get_schema_version(engine)
    if found != expected:
        raise schema_error(team_uri, found, expected)
    _create_team_tables(engine)


def _create_team_tables(engine: sqlalchemy.engine.Engine) -> None:
    """mlflow-team's own tables, beside MLflow's (never before them: MLflow creates its schema
    only in a database with no table). MLflow's migrations leave them alone; eject drops them."""
    from mlflow_team.identity import replay
    from mlflow_team.server import heartbeats

    retrying_call(replay.create_table, engine)
    retrying_call(heartbeats.create_tables, engine)


def schema_error(team_uri: str, found: str | None, expected: str) -> Exception:
    """Out of date (``mlflow-team db upgrade``) or newer than this MLflow ("upgrade MLflow")."""
    if found is not None and not _known_revision(found):
        from importlib.metadata import version

        return errors.TeamStoreConfigError(
            errors.SCHEMA_NEWER_THAN_MLFLOW.format(
                uri=redact.mask_url(team_uri), found=found, expected=expected, version=version("mlflow-skinny"),
            )
        )
    return errors.TeamStoreConfigError(
        errors.SCHEMA_OUT_OF_DATE.format(uri=redact.mask_url(team_uri), found=found, expected=expected)
    )


def _known_revision(revision: str) -> bool:
    """Whether the installed MLflow's migrations contain ``revision`` (else a newer MLflow wrote it)."""
    try:
        from alembic.script import ScriptDirectory
        from mlflow.store.db.utils import _get_alembic_config

        scripts = ScriptDirectory.from_config(_get_alembic_config(""))
        return scripts.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - unknown to alembic, or alembic cannot say: not ours
        return False


def _create_tables(url: str) -> None:
    """Run MLflow's migrations on a plain engine: they manage their own pragmas/transactions. A new
    SQLite file is a copy of the schema this MLflow and mlflow-team made before, where there is one
    (:func:`_from_template`)."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    path = uri.sqlite_path(url)
    template = _template_path() if path is not None else None
    if template is not None and _from_template(template, path):
        return
    plain = create_sqlalchemy_engine(url)
    try:
        if plain.dialect.name == "sqlite":
            with plain.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode = WAL")
        _initialize_tables(plain)
        _create_team_indexes(plain)
    finally:
        plain.dispose()
    if template is not None:
        _save_template(path, template)


# --- new SQLite files from a template --------------------------------------------------------
# MLflow creates a database by running every one of its migrations (~70 alembic steps: about 2 s,
# each time a notebook or a test opens a new SQLite file). What they leave is the same every time
# for one MLflow and one mlflow-team (the schema, its alembic revision and the default workspace
# row), so the first new file is kept as a template in the user's cache, and later new files are
# copies of it, made with SQLite's backup API (one transaction into the new file: all or nothing).
# Any failure falls back to MLflow's migrations. MLFLOW_TEAM_CACHE_DIR moves the cache; "off" turns
# templates off.

CACHE_DIR_ENV = "MLFLOW_TEAM_CACHE_DIR"


def _template_path() -> Path | None:
    """Where this MLflow's and mlflow-team's schema template lives (None: templates are off)."""
    import os
    import sqlite3
    from importlib.metadata import version

    from mlflow.store.db.utils import _get_latest_schema_revision

    from mlflow_team.store import search

    setting = os.environ.get(CACHE_DIR_ENV, "").strip()
    if setting.lower() == "off":
        return None
    base = Path(setting).expanduser() if setting else (
        Path(os.environ.get("XDG_CACHE_HOME", "") or Path.home() / ".cache") / "mlflow-team")
    try:
        key = repr((*(version(name) for name in ("mlflow-skinny", "mlflow-team", "sqlalchemy", "alembic")),
                    _get_latest_schema_revision(), sqlite3.sqlite_version, search.INDEXES))
    except Exception as exc:  # noqa: BLE001 - no template is better than a wrong one
        _logger.debug("mlflow-team: no schema template: %s", exc)
        return None
    return base / f"sqlite-schema-{hashlib.sha256(key.encode()).hexdigest()[:20]}.db"


def _from_template(template: Path, path: Path) -> bool:
    """Copy the template's schema into the new file ``path``; False (nothing changed) without one."""
    import sqlite3

    if not template.is_file():
        return False
    try:
        _backup(f"{template.as_uri()}?mode=ro", path, "WAL")
        return True
    except sqlite3.Error as exc:  # a damaged template: MLflow's migrations, and a new template after them
        _logger.debug("mlflow-team: the schema template %s was not used: %s", template, exc)
        template.unlink(missing_ok=True)
        return False


def _save_template(path: Path, template: Path) -> None:
    """Keep the new file's schema as the template (written aside, then renamed into place)."""
    import os
    import sqlite3

    if template.exists():
        return
    aside = template.with_name(f"{template.name}.{os.getpid()}.tmp")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        _backup(path.as_uri(), aside, "DELETE")  # one file, no -wal beside it
        os.replace(aside, template)
    except (OSError, sqlite3.Error) as exc:  # a read-only home, a full disk: no template, no harm
        _logger.debug("mlflow-team: the schema template %s was not written: %s", template, exc)
        aside.unlink(missing_ok=True)


def _backup(source_uri: str, target: Path, journal_mode: str) -> None:
    """SQLite's backup of ``source_uri`` into ``target`` (one transaction), then its journal mode."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(source_uri, uri=True)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
        copy.execute(f"PRAGMA journal_mode = {journal_mode}")


def _create_team_indexes(engine: sqlalchemy.engine.Engine) -> None:
    """mlflow-team's indexes on MLflow's tables (the search accelerator's): with a new database,
    and by ``mlflow-team db upgrade``, never at a store's start (an index on a big table takes a
    while and a lock); eject drops them."""
    from mlflow_team.store import search

    retrying_call(search.create_indexes, engine)


def upgrade(url: str) -> tuple[str | None, str]:
    """Migrate the database to MLflow's latest schema, then add mlflow-team's tables and indexes;
    returns (before, after) revisions."""
    from mlflow.store.db.utils import (
        _get_schema_version,
        _initialize_tables,
        _upgrade_db,
        create_sqlalchemy_engine,
    )

    with extras.database_driver(url):
        plain = create_sqlalchemy_engine(url)
    try:
        if _is_empty_database(plain):  # a new database: create it, as the store would
            _initialize_tables(plain)
            _create_team_tables(plain)
            _create_team_indexes(plain)
            return None, _get_schema_version(plain)
        before = _get_schema_version(plain)
        _upgrade_db(plain)
        _create_team_tables(plain)
        _create_team_indexes(plain)
        return before, _get_schema_version(plain)
    finally:
        plain.dispose()


# --- sessions and transactions ---------------------------------------------------------------


def _ambient() -> dict[int, sqlalchemy.engine.Connection]:
    connections = getattr(_local, "connections", None)
    if connections is None:
        connections = _local.connections = {}
    return connections


_WRITE_LOCKS: dict[int, threading.Lock] = {}


@contextmanager
def _writer_turn(engine: sqlalchemy.engine.Engine, sqlite: bool) -> Iterator[None]:
    """On SQLite, the threads of one process take turns at writing through a lock of their own.

    SQLite lets one writer in at a time; a second one waits in its busy handler, which sleeps in
    steps of up to 100 ms before it looks again. Between threads of one process a lock hands the
    turn over the moment it is free (other processes still meet the busy handler)."""
    if not sqlite:
        yield
        return
    with _engines_lock:
        lock = _WRITE_LOCKS.setdefault(id(engine), threading.Lock())
    with lock:
        yield


class ManagedSessions:
    """Drop-in for MLflow's ``ManagedSessionMaker``: ``with sessions(read_only=False) as s``.

    The outermost write session of a thread opens one transaction (``BEGIN IMMEDIATE`` on
    SQLite); every session opened inside it, for reading or writing, joins that transaction
    through a savepoint. MLflow's code opens sessions inside sessions (``log_inputs``, for one):
    on separate connections those would wait on each other's write lock, here they share it.
    MLflow code that commits its own sessions thus commits only into the enclosing transaction.
    """

    def __init__(self, engine: sqlalchemy.engine.Engine, read_engine=None):
        self.engine = engine
        # MLflow 3.13+ marks its write sessions read_only=False; older minors open every session
        # with no argument, writes included, so there a bare call must be a write session.
        self._default_read_only = _stock_sessions_say_read_only()
        self._sqlite = engine.dialect.name == "sqlite"
        self._read = sessionmaker(bind=read_engine if read_engine is not None else engine)

    @contextmanager
    def __call__(self, read_only: bool | None = None) -> Iterator[Session]:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import (
            BAD_REQUEST,
            INTERNAL_ERROR,
            TEMPORARILY_UNAVAILABLE,
        )

        if read_only is None:
            read_only = self._default_read_only
        connection = _ambient().get(id(self.engine))
        if connection is None and not read_only:
            with self.atomic():
                with self(read_only=False) as session:
                    yield session
            return
        if connection is not None:
            session = Session(bind=connection, join_transaction_mode="create_savepoint")
        else:
            session = self._read()
        with session:
            try:
                yield session
                session.commit()
            except MlflowException:
                session.rollback()
                raise
            except sqlalchemy.exc.OperationalError as exc:
                session.rollback()
                raise MlflowException(message=self._masked(exc), error_code=TEMPORARILY_UNAVAILABLE) from exc
            except sqlalchemy.exc.SQLAlchemyError as exc:
                session.rollback()
                raise MlflowException(message=self._masked(exc), error_code=BAD_REQUEST) from exc
            except Exception as exc:
                session.rollback()
                raise MlflowException(message=self._masked(exc), error_code=INTERNAL_ERROR) from exc

    def _masked(self, exc: BaseException) -> str:
        """A database error's text without the URL's password (a driver may quote either)."""
        return redact.mask_secrets(str(exc), self.engine.url.render_as_string(hide_password=False))

    def _masked_driver(self, exc: BaseException) -> str:
        """A driver's error as a session reports it: ``(sqlite3.IntegrityError) text``."""
        return f"({type(exc).__module__}.{type(exc).__name__}) {self._masked(exc)}"

    @contextmanager
    def driver(self) -> Iterator["Statements"]:
        """Plain driver statements inside this thread's write transaction (opened here if there
        is none): the lean paths' way in, without a Session. Driver errors are mapped as a
        session's are, so a lock error is still retried."""
        import sqlite3

        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import (
            BAD_REQUEST,
            INTERNAL_ERROR,
            TEMPORARILY_UNAVAILABLE,
        )

        with self.atomic():
            connection = _ambient()[id(self.engine)]
            cursor = connection.connection.dbapi_connection.cursor()
            try:
                yield Statements(cursor)
            except MlflowException:
                raise
            except sqlite3.OperationalError as exc:
                raise MlflowException(message=self._masked_driver(exc), error_code=TEMPORARILY_UNAVAILABLE) from exc
            except sqlite3.Error as exc:
                raise MlflowException(message=self._masked_driver(exc), error_code=BAD_REQUEST) from exc
            except Exception as exc:
                raise MlflowException(message=self._masked(exc), error_code=INTERNAL_ERROR) from exc
            finally:
                cursor.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction for everything the block does through these sessions."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import BAD_REQUEST, TEMPORARILY_UNAVAILABLE

        ambient = _ambient()
        key = id(self.engine)
        if key in ambient:
            yield
            return
        try:
            with _writer_turn(self.engine, self._sqlite), self.engine.connect() as connection:
                if self._sqlite:
                    connection = connection.execution_options(**{_IMMEDIATE: True})
                with connection.begin():
                    ambient[key] = connection
                    try:
                        yield
                    finally:
                        del ambient[key]
        except sqlalchemy.exc.OperationalError as exc:
            raise MlflowException(message=self._masked(exc), error_code=TEMPORARILY_UNAVAILABLE) from exc
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise MlflowException(message=self._masked(exc), error_code=BAD_REQUEST) from exc


@functools.lru_cache(maxsize=1)
def _stock_sessions_say_read_only() -> bool:
    import inspect

    make = compat.get(f"{_DB}:_get_managed_session_maker")
    if make is None:
        return False
    try:
        return "read_only" in inspect.signature(make(None, "sqlite")).parameters
    except (TypeError, ValueError):
        return False


class Statements:
    """A DBAPI cursor with the few shapes the lean paths need (qmark parameters)."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def run(self, sql: str, params: tuple = ()) -> int:
        """Execute; the number of rows it changed."""
        return self._cursor.execute(sql, params).rowcount

    def many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self._cursor.executemany(sql, rows)

    def first(self, sql: str, params: tuple = ()) -> tuple | None:
        return self._cursor.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: tuple = ()) -> Any:
        row = self.first(sql, params)
        return None if row is None else row[0]

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self._cursor.execute(sql, params).fetchall()


# --- retries ---------------------------------------------------------------------------------

_TRANSIENT_TEXT = (
    "database is locked",
    "database table is locked",
    "deadlock",  # MySQL 1213, PostgreSQL 40P01
    "lock wait timeout",  # MySQL 1205
    "could not serialize access",  # PostgreSQL 40001
    "try restarting transaction",
)
_DRIVER_MODULES = frozenset({"sqlite3", "pymysql", "psycopg2", "psycopg", "MySQLdb"})


def is_transient(exc: BaseException) -> bool:
    """A lock or deadlock error from the database that a fresh attempt can get past.

    Only database errors are read (an ``MlflowException`` carries its cause), so a user's
    value that happens to contain "deadlock" is never taken for one.
    """
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        is_db_error = isinstance(current, sqlalchemy.exc.DBAPIError) or (
            type(current).__module__.split(".")[0] in _DRIVER_MODULES
        )
        if is_db_error and any(marker in str(current).lower() for marker in _TRANSIENT_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def retrying_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; on a transient lock error, back off and call it again (outermost call only)."""
    if getattr(_local, "retrying", False):
        return fn(*args, **kwargs)
    _local.retrying = True
    try:
        retries = config.lock_retries()
        for attempt in range(retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if attempt >= retries or not is_transient(exc):
                    raise
                delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                _logger.info("Database busy (%s); retrying in %.2fs", type(exc).__name__, delay)
                time.sleep(delay)
    finally:
        _local.retrying = False


def retrying(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return retrying_call(fn, *args, **kwargs)

    wrapper.__mlflow_team_retrying__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


_RETRIED_PRIVATE = frozenset(
    {"_hard_delete_run", "_hard_delete_experiment", "_hard_delete_logged_model"}
)


def retry_public_methods(cls: type) -> type:
    """Wrap every public store method (and gc's hard deletes) of ``cls`` in :func:`retrying`."""
    import inspect

    for name in dir(cls):
        if name.startswith("__") or (name.startswith("_") and name not in _RETRIED_PRIVATE):
            continue
        attr = inspect.getattr_static(cls, name)
        if inspect.isfunction(attr) and not getattr(attr, "__mlflow_team_retrying__", False):
            setattr(cls, name, retrying(attr))
    return cls
