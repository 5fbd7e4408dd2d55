"""The way out: rewrite ``team+file`` / ``team+s3`` locations so stock MLflow reads the database.

A ``team+`` store records artifact locations under the plugin's schemes
(``team+file:/abs/mlruns/1/...``, ``team+s3://bucket/prefix/...``), which stock MLflow cannot
resolve. The bytes themselves are plain files and plain S3 objects, so dropping the ``team+``
prefix is all it takes: ``file:/abs/mlruns/1/...`` and ``s3://bucket/prefix/...``.

:func:`eject` finds every such location in the columns listed in :data:`COLUMNS` and rewrites
them, all in one transaction (``apply=True``), or only counts them (the default). A second run
finds nothing. It works on SQLAlchemy Core over its own engine, never on the store's sessions, so
it runs on a database no ``team+`` store can open (an older schema, a half-installed plugin).
mlflow-team's own tables (:data:`TEAM_TABLES`, which stock MLflow never reads) and its indexes on
MLflow's tables (:data:`TEAM_INDEXES`) are dropped once the rewrite has committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from mlflow_team import errors
from mlflow_team.identity import replay
from mlflow_team.server import heartbeats
from mlflow_team.store import search
from mlflow_team.redact import mask_secrets, mask_url

PREFIX = "team+"
#: The artifact schemes of the plugin; ``team+`` dropped, each is a stock scheme.
ARTIFACT_PREFIXES = ("team+file:", "team+s3:")
#: Database backends eject knows how to rewrite (the ones the test suite runs).
SUPPORTED_BACKENDS = ("sqlite", "postgresql", "mysql")
#: Tables of mlflow-team's own beside MLflow's: the signatures first used (identity/replay.py),
#: the runs' heartbeats and the reaper's lease (server/heartbeats.py).
TEAM_TABLES = (replay.TABLE, *heartbeats.TABLES)
#: mlflow-team's indexes on MLflow's tables, (table, name) (store/search.py's).
TEAM_INDEXES = search.INDEX_NAMES


@dataclass(frozen=True)
class Column:
    """A column of MLflow's schema that may hold an artifact URI."""

    table: str
    column: str
    #: For a key/value table: only the rows whose ``key`` is this.
    key: str | None = None

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column}" + (f" [{self.key}]" if self.key else "")


#: Every place a ``team+`` store writes an artifact location (MLflow 3.12 to 3.17), in the order
#: they are rewritten. What reads each one:
COLUMNS = (
    Column("experiments", "artifact_location"),  # new runs, logged models and traces go under it
    Column("runs", "artifact_uri"),  # runs:/ URIs, download_artifacts, the UI's artifact view
    Column("logged_models", "artifact_location"),  # models:/m-<id>, hence models:/name@alias
    Column("model_versions", "storage_location"),  # where models:/name/1 and @alias download from
    Column("model_versions", "source"),  # a version registered from a direct location
    Column("trace_tags", "value", key="mlflow.artifactLocation"),  # traces kept as artifacts
)


@dataclass(frozen=True)
class Change:
    """What eject rewrites (or would) in one column."""

    table: str
    column: str
    key: str | None
    rows: int
    example_old: str | None
    example_new: str | None

    @property
    def label(self) -> str:
        return Column(self.table, self.column, self.key).label


@dataclass
class EjectReport:
    url: str  # the URL as given, password masked
    stock_url: str  # the plain URL stock MLflow opens, password masked
    applied: bool
    changes: list[Change] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)  # columns this schema does not have
    team_tables: list[str] = field(default_factory=list)  # mlflow-team's own: dropped when applied
    team_indexes: list[str] = field(default_factory=list)  # its indexes on MLflow's tables: the same

    @property
    def rows(self) -> int:
        return sum(change.rows for change in self.changes)

    def table(self) -> str:
        """The changes as a text table: column, rows, one example old -> new."""
        header = ("column", "rows", "example (old -> new)")
        lines = [
            (c.label, str(c.rows), f"{c.example_old} -> {c.example_new}" if c.rows else "-")
            for c in self.changes
        ]
        first = max(len(header[0]), *(len(line[0]) for line in lines)) if lines else len(header[0])
        second = max(len(header[1]), *(len(line[1]) for line in lines)) if lines else len(header[1])
        out = []
        for name, rows, example in (header, *lines):
            out.append(f"{name:<{first}}  {rows:>{second}}  {example}")
        return "\n".join(out)


class EjectError(MlflowException):
    """Eject cannot run on this URL, or its transaction failed (and changed nothing)."""

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE):
        super().__init__(message, error_code=error_code)


def database_url(tracking_uri: str):
    """The SQLAlchemy URL behind ``team+<url>`` or ``<url>``; EjectError when it is no database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    plain = tracking_uri[len(PREFIX) :] if tracking_uri.startswith(PREFIX) else tracking_uri
    try:
        url = make_url(plain)
        backend = url.get_backend_name()
    except (ArgumentError, ValueError):
        backend = None
    if backend not in SUPPORTED_BACKENDS:
        raise EjectError(
            errors.EJECT_NOT_A_DATABASE.format(
                uri=mask_url(tracking_uri), supported=", ".join(f"{b}://..." for b in SUPPORTED_BACKENDS)
            )
        )
    return url


def eject(tracking_uri: str, apply: bool = False) -> EjectReport:
    """Rewrite (``apply=True``) or count (the default) the ``team+`` artifact locations.

    ``tracking_uri`` is ``team+sqlite:///...``, ``team+postgresql://...``,
    ``team+mysql+pymysql://...`` or the plain SQLAlchemy URL of the same database. With
    ``apply=True`` every rewrite happens in one transaction: on any error nothing is changed and
    :class:`EjectError` says where it failed.
    """
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    url = database_url(tracking_uri)
    shown = mask_url(tracking_uri)
    report = EjectReport(url=shown, stock_url=mask_url(url.render_as_string(hide_password=False)), applied=apply)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        # SQLite creates a missing file on connect: eject must not leave an empty one behind.
        if not Path(url.database).expanduser().is_file():
            raise EjectError(
                errors.EJECT_NO_MLFLOW_TABLES.format(uri=shown, reason=f"no file at {url.database}")
            )
    try:
        engine = create_engine(url, poolclass=NullPool)
        connection = engine.connect()
    except Exception as exc:  # a missing driver, a server that does not answer, a bad login
        reason = mask_secrets(_reason(exc), tracking_uri)
        raise EjectError(errors.EJECT_CANNOT_OPEN.format(uri=shown, reason=reason)) from None
    try:
        with connection.begin():
            tables = _columns_by_table(inspect(connection))
            if "experiments" not in tables:
                raise EjectError(
                    errors.EJECT_NO_MLFLOW_TABLES.format(uri=shown, reason="it has no 'experiments' table")
                )
            for target in COLUMNS:
                if target.column not in tables.get(target.table, ()):
                    report.absent.append(target.label)
                    continue
                report.changes.append(_rewrite(connection, text, target, tracking_uri, apply))
            present = set(inspect(connection).get_table_names())
            report.team_tables = [name for name in TEAM_TABLES if name in present]
            found = {(table, ix.get("name")) for table in {t for t, _ in TEAM_INDEXES} & present
                     for ix in inspect(connection).get_indexes(table)}
            report.team_indexes = [name for table, name in TEAM_INDEXES if (table, name) in found]
        if apply:
            _drop_team_tables(connection, report.team_tables, tracking_uri)
            _drop_team_indexes(connection, report.team_indexes, tracking_uri)
    finally:
        connection.close()
        engine.dispose()
    return report


def _rewrite(connection, text, target: Column, tracking_uri: str, apply: bool) -> Change:
    table, column = _quoted(connection, target.table), _quoted(connection, target.column)
    conditions = " OR ".join(f"{column} LIKE :p{i}" for i in range(len(ARTIFACT_PREFIXES)))
    where = f"({conditions})" + (f" AND {_quoted(connection, 'key')} = :key" if target.key else "")
    params = {f"p{i}": prefix + "%" for i, prefix in enumerate(ARTIFACT_PREFIXES)}
    if target.key:
        params["key"] = target.key
    try:
        rows, example = connection.execute(
            text(f"SELECT COUNT(*), MIN({column}) FROM {table} WHERE {where}"), params
        ).one()
        if apply and rows:
            # SUBSTR(x, 6) is x without its first 5 characters ("team+") on all three backends.
            rows = connection.execute(
                text(f"UPDATE {table} SET {column} = SUBSTR({column}, {len(PREFIX) + 1}) WHERE {where}"),
                params,
            ).rowcount
    except Exception as exc:
        raise EjectError(
            errors.EJECT_FAILED.format(
                uri=mask_url(tracking_uri), table=target.table, column=target.column,
                reason=mask_secrets(_reason(exc), tracking_uri),
            ),
            error_code=INTERNAL_ERROR,
        ) from None
    new = example[len(PREFIX) :] if example else None
    return Change(target.table, target.column, target.key, rows, example, new)


def _drop_team_tables(connection, names: list[str], tracking_uri: str) -> None:
    """After the rewrite committed (MySQL would commit it at the first DROP anyway)."""
    for name in names:
        try:
            with connection.begin():
                connection.exec_driver_sql(f"DROP TABLE {_quoted(connection, name)}")
        except Exception as exc:
            raise EjectError(
                errors.EJECT_DROP_FAILED.format(
                    uri=mask_url(tracking_uri), table=name, reason=mask_secrets(_reason(exc), tracking_uri)
                ),
                error_code=INTERNAL_ERROR,
            ) from None


def _drop_team_indexes(connection, names: list[str], tracking_uri: str) -> None:
    if not names:
        return
    try:
        with connection.begin():
            search.drop_indexes(connection)
    except Exception as exc:
        raise EjectError(
            errors.EJECT_DROP_INDEX_FAILED.format(
                uri=mask_url(tracking_uri), index=", ".join(names), reason=mask_secrets(_reason(exc), tracking_uri),
            ),
            error_code=INTERNAL_ERROR,
        ) from None


def _columns_by_table(inspector) -> dict[str, set[str]]:
    wanted = {target.table for target in COLUMNS} | {"experiments"}
    present = set(inspector.get_table_names())
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in wanted & present}


def _quoted(connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)


def _reason(exc: BaseException) -> str:
    """The driver's own words, first line: no SQL, no parameters, no URL."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return f"{type(original).__name__}: {lines[0] if lines else ''}".strip()
