"""Optional dependencies: which extra of mlflow-team installs each, and what a missing one says.

One table (:data:`OPTIONAL`, module -> extra) and one translation (:func:`missing_dependency`):
an ``ImportError`` of a module in the table, or SQLAlchemy's ``NoSuchModuleError`` for a driver
in it, becomes :class:`~mlflow_team.errors.MissingDependency` (an ``MlflowException``, so
``mlflow server`` shows it too) whose message names the command that installs it:
``pip install "mlflow-team[postgres]"``. Everything else passes through untouched.

Imports only the standard library and :mod:`mlflow_team.errors`.
"""

from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from mlflow_team import errors

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptionalModule:
    """An optional top-level module: what it is, the extra that installs it, else the package."""

    what: str
    extra: str
    package: str


#: Top-level module -> how to get it. An extra not (yet) declared by the installed mlflow-team
#: (``spark``) is replaced by its package in the message: the command always works.
OPTIONAL: dict[str, OptionalModule] = {
    "psycopg": OptionalModule("the PostgreSQL driver psycopg 3", "postgres", "psycopg[binary]"),
    "psycopg2": OptionalModule("the PostgreSQL driver psycopg2", "postgres", "psycopg2-binary"),
    "pymysql": OptionalModule("the MySQL/MariaDB driver PyMySQL", "mysql", "pymysql"),
    "boto3": OptionalModule("boto3 (the AWS SDK)", "s3", "boto3"),
    "botocore": OptionalModule("boto3 (the AWS SDK)", "s3", "boto3"),
    "hyperopt": OptionalModule("hyperopt", "hyperopt", "hyperopt"),
    "matplotlib": OptionalModule("matplotlib (for the plots)", "hyperopt", "matplotlib"),
    "pyspark": OptionalModule("pyspark", "spark", "pyspark"),
}


def declared_extras() -> frozenset[str]:
    """The extras the installed mlflow-team declares (empty when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        return frozenset(metadata("mlflow-team").get_all("Provides-Extra") or ())
    except PackageNotFoundError:  # pragma: no cover - a source tree on sys.path
        return frozenset()


def install_command(module: str) -> str:
    """``pip install "mlflow-team[<extra>]"``, or of the package itself when no extra has it."""
    entry = OPTIONAL[module]
    if entry.extra in declared_extras():
        return f'pip install "mlflow-team[{entry.extra}]" (from a clone: pip install -e ".[{entry.extra}]")'
    return f'pip install "{entry.package}"'


def _module_of(exc: BaseException, default: str | None) -> str | None:
    """The table's module that ``exc`` (or an exception it was raised from) failed to import."""
    from sqlalchemy.exc import NoSuchModuleError

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ImportError):
            name = (exc.name or "").split(".")[0]
            if name in OPTIONAL:
                return name
            if not name and default in OPTIONAL:  # raised inside the driver ("no pq wrapper ...")
                return default
        if isinstance(exc, NoSuchModuleError):  # "Can't load plugin: sqlalchemy.dialects:postgresql.foo"
            driver = str(exc).rsplit(".", 1)[-1].strip()
            if driver in OPTIONAL:
                return driver
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def missing_dependency(
    exc: BaseException, needed_for: str, default: str | None = None
) -> errors.MissingDependency | None:
    """``exc`` as the error that names the extra to install, or None when it is about something else.

    ``needed_for`` starts the message ("The store for 'team+postgresql://...'"); ``default`` is
    the module to blame for an ``ImportError`` that names none (a driver's own import failure).
    """
    module = _module_of(exc, default)
    if module is None:
        return None
    message = errors.MISSING_DEPENDENCY.format(**_fields(module, exc, needed_for))
    return errors.MissingDependency(message, module=module, extra=OPTIONAL[module].extra)


def _fields(module: str, exc: BaseException, needed_for: str) -> dict[str, str]:
    return {
        "needed_for": needed_for,
        "what": OPTIONAL[module].what,
        "reason": str(exc).strip() or type(exc).__name__,
        "install": install_command(module),
    }


@contextmanager
def translated(needed_for: str, default: str | None = None) -> Iterator[None]:
    """Inside the block, a missing optional dependency raises :class:`errors.MissingDependency`."""
    try:
        yield
    except Exception as exc:
        error = missing_dependency(exc, needed_for, default)
        if error is None:
            raise
        raise error from exc


def require(module: str, needed_for: str) -> None:
    """Import ``module`` (one of :data:`OPTIONAL`) or raise :class:`errors.MissingDependency`."""
    with translated(needed_for, module):
        importlib.import_module(module)


def database_driver(url: str):
    """:func:`translated` for building an engine on ``url`` (plain or ``team+``; no password shown)."""
    from mlflow_team import redact

    shown = url if url.startswith("team+") else "team+" + url
    return translated(f"The store for {redact.mask_url(shown)!r}", _driver_module(url))


def _driver_module(url: str) -> str | None:
    """The driver module a SQLAlchemy URL loads (``postgresql://`` -> SQLAlchemy's default)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url.removeprefix("team+")).get_driver_name()
    except Exception:  # noqa: BLE001 - an unparsable or unknown URL: its own error says so
        return None


def warn_if_missing(module: str, needed_for: str, consequence: str) -> bool:
    """For code that must not raise at the user (autologging): log why, once per call; True if missing."""
    try:
        importlib.import_module(module)
    except Exception as exc:
        if _module_of(exc, module) != module:
            return False  # installed but broken in another way: the caller's own path reports it
        fields = _fields(module, exc, needed_for)
        _logger.warning("mlflow-team: %s", errors.MISSING_DEPENDENCY_DEGRADED.format(consequence=consequence, **fields))
        return True
    return False
