"""First uses of author signatures, recorded in the team database (server side).

A signed request is accepted once. The record of that first use has to be where every worker of
``mlflow server`` and every other server process on the same database sees it: a table of its
own, :data:`TABLE`, whose primary key is the signature. Accepting a signature inserts its row; a
second insert of it, by any process, fails on the key, and that request is refused as a replay.

Rows carry the end of their signature's clock-skew window and are pruned some time after it (a
signature that old is refused as stale before it gets here). The table is created with the
store's schema (:func:`mlflow_team.store.db.prepare`, ``mlflow-team db upgrade``), or on first
use where the store did not create the schema; MLflow's migrations never touch it (``mlflow db
upgrade`` on the plain URL keeps working), and ``mlflow-team eject`` drops it.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

TABLE = "team_signatures_seen"

_metadata = sa.MetaData()
SEEN = sa.Table(
    TABLE,
    _metadata,
    sa.Column("signature", sa.String(64), primary_key=True),  # hex HMAC-SHA256
    sa.Column("expires_at", sa.BigInteger, nullable=False),  # Unix seconds
)

#: How often one process deletes the rows past their window (at most).
PRUNE_EVERY_S = 60
_last_prune: dict[str, float] = {}
_lock = threading.Lock()


def _key(engine: sa.engine.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def create_table(engine: sa.engine.Engine) -> None:
    """Create the table where it is missing; several processes may do it at the same moment."""
    try:
        SEEN.create(engine, checkfirst=True)
    except sa.exc.DBAPIError:
        # Another process created it between the check and the create (PostgreSQL reports a
        # duplicate type, SQLite and MySQL "already exists"): fine if it is there now.
        if not sa.inspect(engine).has_table(TABLE):
            raise


def drop_table(connection: sa.engine.Connection) -> bool:
    """Drop the table if this database has it; whether it did."""
    if not sa.inspect(connection).has_table(TABLE):
        return False
    SEEN.drop(connection)
    return True


def first_use(engine: sa.engine.Engine, signature: str, expires_at: int, skew_s: int) -> bool:
    """Record ``signature`` as used; False when some process on this database already has.

    ``expires_at`` is when the signature stops being accepted anyway (its time plus the allowed
    clock skew ``skew_s``). Raises the database's own error when it cannot record (the request
    then fails: a signature is never accepted without its record). Runs in a transaction of its
    own, committed before the store writes anything: call it outside the store's transaction,
    and :func:`forget` the signature if the write it vouched for fails.
    """
    try:
        inserted = _insert(engine, signature, expires_at)
    except sa.exc.DBAPIError:
        if sa.inspect(engine).has_table(TABLE):
            raise
        create_table(engine)  # a database whose schema the store did not create
        inserted = _insert(engine, signature, expires_at)
    if inserted:
        _prune_if_due(engine, skew_s)
    return inserted


def forget(engine: sa.engine.Engine, signature: str) -> None:
    """Drop ``signature``'s record: the request it signed failed before writing anything, and the
    client's retry of that request (the same signature) is its first use, not a replay."""
    with engine.begin() as connection:
        connection.execute(SEEN.delete().where(SEEN.c.signature == signature))


def _insert(engine: sa.engine.Engine, signature: str, expires_at: int) -> bool:
    try:
        with engine.begin() as connection:
            connection.execute(SEEN.insert().values(signature=signature, expires_at=int(expires_at)))
    except sa.exc.IntegrityError:
        return False  # the primary key: this signature was accepted before, here or elsewhere
    return True


def _prune_if_due(engine: sa.engine.Engine, skew_s: int) -> None:
    """Delete the rows past their window, kept one window longer for server processes whose
    clocks run behind this one's."""
    now = time.time()
    key = _key(engine)
    with _lock:
        if now - _last_prune.get(key, 0.0) < PRUNE_EVERY_S:
            return
        _last_prune[key] = now
    with engine.begin() as connection:
        connection.execute(SEEN.delete().where(SEEN.c.expires_at < int(now) - skew_s))


def count(engine: sa.engine.Engine) -> int:
    """Rows in the table (for ``mlflow-team doctor`` and the tests)."""
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(SEEN)).scalar_one()
