"""The heartbeats of runs and the reaper's lease, in the database every server process shares.

Two tables of mlflow-team's own, beside MLflow's (SQLAlchemy Core only: no MLflow import):

- :data:`HEARTBEATS` (``team_run_heartbeats``): one row per run whose client sends heartbeats,
  ``last_seen`` the server's clock at the latest one. A run has a row only once its client sent
  one: runs of clients that never do (stock MLflow) are never candidates. Rows go when the run
  ends (the server app drops them on a terminal status) or when the reaper looks at them.
- :data:`LEASE` (``team_reaper_lease``): one row per job (:data:`REAPER`), the worker holding it
  and until when. Whoever holds an unexpired lease is the one reaper of all the server processes
  on the database; a holder that dies stops renewing, and the lease goes to the next worker that
  asks once it expires.

A stale run is *claimed* before it is ended: deleting its row on the condition that ``last_seen``
is still the stale value read. Whoever deletes the row (one process at most: a heartbeat that
came in meanwhile changed ``last_seen``, so the delete finds nothing) ends the run; if ending it
fails, :func:`restore` puts the row back for the next sweep.

Times are Unix milliseconds on the clock of the server process that writes them: the server
processes of one database need clocks within a few seconds of each other (NTP), as signatures
do. The tables are created with the store's schema (:func:`mlflow_team.store.db.prepare`,
``mlflow-team db upgrade``) or when the team server app starts on a database without them;
MLflow's migrations never touch them, and ``mlflow-team eject`` drops them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa

HEARTBEATS_TABLE = "team_run_heartbeats"
LEASE_TABLE = "team_reaper_lease"
TABLES = (HEARTBEATS_TABLE, LEASE_TABLE)
#: The lease's name for the stale-run reaper.
REAPER = "stale-runs"

_metadata = sa.MetaData()
HEARTBEATS = sa.Table(
    HEARTBEATS_TABLE,
    _metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),  # MLflow's run_uuid (32 hex)
    sa.Column("last_seen", sa.BigInteger, nullable=False),  # Unix ms
)
LEASE = sa.Table(
    LEASE_TABLE,
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),  # host:pid:random of the worker
    sa.Column("expires_at", sa.BigInteger, nullable=False),  # Unix ms
)


def now_ms() -> int:
    return int(time.time() * 1000)


# --- the tables ------------------------------------------------------------------------------


def create_tables(engine: sa.engine.Engine) -> None:
    """Create the tables where they are missing; several processes may do it at the same moment."""
    for table in (HEARTBEATS, LEASE):
        try:
            table.create(engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process created it between the check and the create: fine if it is there.
            if not sa.inspect(engine).has_table(table.name):
                raise


def drop_tables(connection: sa.engine.Connection) -> list[str]:
    """Drop the tables this database has; the names dropped."""
    dropped = []
    for table in (HEARTBEATS, LEASE):
        if sa.inspect(connection).has_table(table.name):
            table.drop(connection)
            dropped.append(table.name)
    return dropped


@contextmanager
def _writing(engine: sa.engine.Engine) -> Iterator[sa.engine.Connection]:
    """A write transaction; on the team's SQLite engine it queues for the lock up front
    (``BEGIN IMMEDIATE``), so it waits out another writer instead of failing."""
    from mlflow_team.store import db

    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection = connection.execution_options(**{db.IMMEDIATE_OPTION: True})
        with connection.begin():
            yield connection


# --- heartbeats ------------------------------------------------------------------------------


def record(engine: sa.engine.Engine, run_id: str, at_ms: int | None = None) -> None:
    """A heartbeat of ``run_id`` now (or at ``at_ms``): insert its row or move ``last_seen``."""
    at_ms = now_ms() if at_ms is None else int(at_ms)
    with _writing(engine) as connection:
        changed = connection.execute(
            HEARTBEATS.update().where(HEARTBEATS.c.run_id == run_id).values(last_seen=at_ms)
        ).rowcount
        if changed:
            return
    try:
        with _writing(engine) as connection:
            connection.execute(HEARTBEATS.insert().values(run_id=run_id, last_seen=at_ms))
    except sa.exc.IntegrityError:
        # Another worker inserted it meanwhile (the same client's previous heartbeat, retried).
        with _writing(engine) as connection:
            connection.execute(
                HEARTBEATS.update().where(HEARTBEATS.c.run_id == run_id).values(last_seen=at_ms)
            )


def forget(engine: sa.engine.Engine, run_ids: list[str] | tuple[str, ...]) -> int:
    """Stop tracking ``run_ids`` (they ended); how many rows went."""
    if not run_ids:
        return 0
    with _writing(engine) as connection:
        return connection.execute(HEARTBEATS.delete().where(HEARTBEATS.c.run_id.in_(list(run_ids)))).rowcount


def last_seen(engine: sa.engine.Engine, run_id: str) -> int | None:
    """``run_id``'s latest heartbeat (Unix ms), None when it has no row."""
    with engine.connect() as connection:
        return connection.execute(
            sa.select(HEARTBEATS.c.last_seen).where(HEARTBEATS.c.run_id == run_id)
        ).scalar_one_or_none()


def stale(engine: sa.engine.Engine, older_than_ms: int, limit: int = 100) -> list[tuple[str, int]]:
    """``(run_id, last_seen)`` of the rows whose latest heartbeat is before ``older_than_ms``,
    oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(HEARTBEATS.c.run_id, HEARTBEATS.c.last_seen)
            .where(HEARTBEATS.c.last_seen < older_than_ms)
            .order_by(HEARTBEATS.c.last_seen)
            .limit(limit)
        ).all()
    return [(run_id, seen) for run_id, seen in rows]


def claim(engine: sa.engine.Engine, run_id: str, seen_ms: int) -> bool:
    """Take ``run_id`` off the list if its latest heartbeat is still ``seen_ms``: True for the one
    caller (of every process) that did; False when a heartbeat or another reaper came first."""
    with _writing(engine) as connection:
        return connection.execute(
            HEARTBEATS.delete().where(HEARTBEATS.c.run_id == run_id, HEARTBEATS.c.last_seen == seen_ms)
        ).rowcount == 1


def restore(engine: sa.engine.Engine, run_id: str, seen_ms: int) -> None:
    """Put a claimed row back (ending its run failed): the next sweep tries again. A heartbeat
    that arrived meanwhile wrote a newer row, which stays."""
    try:
        with _writing(engine) as connection:
            connection.execute(HEARTBEATS.insert().values(run_id=run_id, last_seen=seen_ms))
    except sa.exc.IntegrityError:
        pass


# --- the lease -------------------------------------------------------------------------------


def acquire(engine: sa.engine.Engine, holder: str, ttl_ms: int, name: str = REAPER, at_ms: int | None = None) -> bool:
    """Take or renew the lease ``name`` for ``ttl_ms``: True when ``holder`` holds it now.

    The lease changes hands only in a conditional update (``holder`` already holds it, or it
    expired), which the database runs for one writer at a time: of workers asking together,
    exactly one gets it. A worker that sees someone else's unexpired lease does not write at all.
    """
    at_ms = now_ms() if at_ms is None else int(at_ms)
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(LEASE.c.holder, LEASE.c.expires_at).where(LEASE.c.name == name)
        ).one_or_none()
    if row is not None and row.holder != holder and row.expires_at > at_ms:
        return False
    if row is None:
        try:
            with _writing(engine) as connection:
                connection.execute(LEASE.insert().values(name=name, holder=holder, expires_at=at_ms + ttl_ms))
            return True
        except sa.exc.IntegrityError:
            pass  # another worker created it first: the conditional update below decides
    with _writing(engine) as connection:
        return connection.execute(
            LEASE.update()
            .where(LEASE.c.name == name, sa.or_(LEASE.c.holder == holder, LEASE.c.expires_at <= at_ms))
            .values(holder=holder, expires_at=at_ms + ttl_ms)
        ).rowcount == 1


def holder(engine: sa.engine.Engine, name: str = REAPER, at_ms: int | None = None) -> str | None:
    """Who holds an unexpired lease ``name`` (for ``mlflow-team doctor`` and the tests)."""
    at_ms = now_ms() if at_ms is None else int(at_ms)
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(LEASE.c.holder, LEASE.c.expires_at).where(LEASE.c.name == name)
        ).one_or_none()
    return row.holder if row is not None and row.expires_at > at_ms else None
