"""``team+<SQLAlchemy URL>``: which URLs the plugin takes and where their artifacts go."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from mlflow_team import errors, redact

PREFIX = "team+"

#: Database URL schemes the test suite runs against; nothing else is claimed.
SUPPORTED_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgresql+psycopg2",
    "postgresql+psycopg",
    # Bare `mysql://` means the mysqlclient driver, which the suite does not run; PyMySQL it does.
    "mysql+pymysql",
)
TEAM_SCHEMES = tuple(PREFIX + scheme for scheme in SUPPORTED_SCHEMES)


def db_url(team_uri: str) -> str:
    """The SQLAlchemy URL behind a ``team+`` URI (``team+sqlite:///x.db`` -> ``sqlite:///x.db``)."""
    scheme = team_uri.split(":", 1)[0] if ":" in team_uri else ""
    if not team_uri.startswith(PREFIX) or scheme not in TEAM_SCHEMES:
        raise errors.TeamStoreConfigError(
            errors.UNSUPPORTED_SCHEME.format(uri=redact.mask_url(team_uri), supported=", ".join(TEAM_SCHEMES))
        )
    return team_uri[len(PREFIX) :]


def team_uri(url: str) -> str:
    """The ``team+`` form of a database URL (idempotent)."""
    return url if url.startswith(PREFIX) else PREFIX + url


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or None (other dialects, in-memory)."""
    if not url.startswith("sqlite:///"):
        return None
    raw = unquote(url[len("sqlite:///") :].split("?", 1)[0])
    if raw in ("", ":memory:"):
        return None
    return Path(raw).expanduser().resolve()


def default_artifact_root(url: str) -> str:
    """Where artifacts go when nobody says: a ``team+file`` folder (atomic, checksummed).

    Beside a SQLite file it is ``mlruns/`` next to the database, as stock puts it; for other
    databases stock's ``./mlruns``. Inside ``mlflow server`` the server's own artifact root wins,
    exactly like stock MLflow.
    """
    server_root = os.environ.get("_MLFLOW_SERVER_ARTIFACT_ROOT")
    if server_root:
        return server_root
    path = sqlite_path(url)
    if path is not None:
        return "team+" + (path.parent / "mlruns").as_uri()
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH

    return "team+" + Path(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH).resolve().as_uri()


def read_replica_url() -> str | None:
    """The read-replica URL ``mlflow server --read-replica-backend-store-uri`` hands its stores."""
    raw = os.environ.get("_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE")
    if not raw:
        return None
    return db_url(raw) if raw.startswith(PREFIX) else raw
