"""Search filters' regular expressions (``RLIKE``): vetted before a search runs, and timed while it runs.

MLflow 3 takes ``RLIKE`` in trace searches (tags, metadata, ``trace.*`` attributes, span names
and span attributes; runs, experiments and models refuse it). Each backend matches the pattern
itself: SQLite through a Python ``regexp`` function MLflow registers on its connections (Python's
``re``, which backtracks, holds the GIL and cannot be interrupted), PostgreSQL with ``~``, MySQL
with ``REGEXP``. Two layers keep one filter from stalling a server:

1. **Vetting** (every backend, before the handler): the shapes that backtrack catastrophically
   in a backtracking engine are refused: a repeated group that itself repeats (``(a+)+``) and
   backreferences (``\\1``). :func:`hazard` is a small scanner, not a full regex parser: it
   errs towards refusing and never lets an unbalanced pattern crash a request.
2. **Budget** (``[server] regex-budget-ms``, per request): on SQLite the ``regexp`` function is
   replaced, on the server's connections, by one that matches with the ``regex`` package under a
   timeout (the request's remaining budget) and without holding the GIL; on PostgreSQL a statement
   that matches a regular expression runs under ``SET LOCAL statement_timeout``. A search that runs
   out is answered 400 with :data:`~mlflow_team.errors.SEARCH_REGEX_CUT_OFF`, never with partial
   results. MySQL/MariaDB get the vetting only (MySQL 8 bounds ``REGEXP`` itself:
   ``regexp_time_limit``).

Outside a request the team app sees (MLflow's FastAPI-native routes) the function behaves as
stock's: ``re.search``, ``False`` for an invalid pattern.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator

_logger = logging.getLogger(__name__)

# --- vetting -------------------------------------------------------------------------------------

#: MLflow's filter tokens, as sqlparse reads them: quoted literals (doubled or backslashed quotes
#: inside), backticked identifiers, words, single characters.
_FILTER_TOKEN = re.compile(r"""'(?:''|\\'|[^'])*'|"(?:""|\\"|[^"])*"|`[^`]*`|\w+|\S""")
_QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")
#: A filter longer than this is not scanned (MLflow's own limits are far below it).
MAX_FILTER_CHARS = 1_000_000


def patterns_in(filter_string: str) -> list[str]:
    """The operands of ``RLIKE`` in a search filter, as MLflow hands them to the database."""
    found, previous = [], ""
    for token in _FILTER_TOKEN.findall(filter_string[:MAX_FILTER_CHARS]):
        if previous.upper() == "RLIKE" and token[:1] in ("'", '"') and len(token) >= 2:
            found.append(token[1:-1])  # MLflow strips the quotes and nothing else
        previous = token
    return found


def hazard(pattern: str) -> tuple[str, str] | None:
    """``("nested" | "backreference", what)`` for a pattern that can backtrack catastrophically."""
    # One flag per open group: does it contain a repetition of variable length?
    stack, last_group, group_starts = [False], None, [0]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            following = pattern[i + 1:i + 2]
            if following and following in "123456789gk":
                return "backreference", pattern[i:i + 2]
            i, last_group = i + 2, None
        elif c == "[":
            i, last_group = _skip_class(pattern, i), None
        elif c == "(":
            if pattern.startswith("(?P=", i):
                return "backreference", pattern[i:pattern.find(")", i) + 1 or n]
            if pattern.startswith("(?#", i):  # a comment
                close = pattern.find(")", i)
                i = n if close < 0 else close + 1
                continue
            stack.append(False)
            group_starts.append(i)
            i, last_group = _skip_group_prefix(pattern, i + 1), None
        elif c == ")":
            if len(stack) == 1:
                return None  # unbalanced: the database says so
            inner = stack.pop()
            last_group = (inner, group_starts.pop())
            stack[-1] = stack[-1] or inner
            i += 1
        elif (quantifier := _quantifier(pattern, i)) is not None:
            low, high, end = quantifier
            if last_group is not None and last_group[0] and (high is None or high > 1):
                return "nested", pattern[last_group[1]:end]
            if high is None or low != high:
                stack[-1] = True
            i, last_group = end, None
        else:
            i, last_group = i + 1, None
    return None


def _skip_class(pattern: str, i: int) -> int:
    """The index after the character class that starts at ``pattern[i] == '['``."""
    j, n = i + 1, len(pattern)
    if pattern[j:j + 1] == "^":
        j += 1
    if pattern[j:j + 1] == "]":
        j += 1
    while j < n and pattern[j] != "]":
        if pattern[j] == "\\":
            j += 2
        elif pattern.startswith(("[:", "[=", "[."), j):  # POSIX [:alpha:], [=e=], [.-.]
            close = pattern.find(pattern[j + 1] + "]", j + 2)
            j = n if close < 0 else close + 2
        else:
            j += 1
    return j + 1


def _skip_group_prefix(pattern: str, j: int) -> int:
    """After ``(``: skip ``?:``, ``?=``, ``?<name>``, ``?P<name>``, ``?i:`` and the like."""
    if pattern[j:j + 1] != "?":
        return j
    j += 1
    if pattern.startswith(("P<", "<"), j) and not pattern.startswith(("<=", "<!"), j):
        close = pattern.find(">", j)
        return len(pattern) if close < 0 else close + 1
    if pattern.startswith(("<=", "<!"), j):
        return j + 2
    while j < len(pattern) and pattern[j] not in ":)=!>":
        j += 1  # inline flags
    return j + 1 if j < len(pattern) and pattern[j] != ")" else j


def _quantifier(pattern: str, i: int) -> tuple[int, int | None, int] | None:
    """``(min, max or None, end)`` of a quantifier at ``i`` (lazy/possessive suffix included)."""
    c = pattern[i]
    if c in "*+?":
        low, high, end = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c] + (i + 1,)
    elif c == "{" and (m := _QUANTIFIER.match(pattern, i)) and (m.group(1) or m.group(3)):
        low = int(m.group(1) or 0)
        high = int(m.group(3)) if m.group(3) else (None if m.group(2) else low)
        end = m.end()
    else:
        return None
    if pattern[end:end + 1] in ("?", "+") and end < len(pattern):  # lazy or possessive
        end += 1
    return low, high, end


def request_patterns(args: Any, body: Any) -> list[str]:
    """Every ``RLIKE`` pattern in a request's filters: query arguments and JSON fields whose
    name contains ``filter`` (``filter``, ``filter_string``, ``filter_string1``, ``filters``)."""
    found: list[str] = []
    for key in args.keys() if args is not None else ():
        if "filter" in key.lower():
            for value in args.getlist(key):
                found += patterns_in(value)
    for text in _filter_strings(body):
        found += patterns_in(text)
    return found


def _filter_strings(node: Any, under_filter: bool = False, depth: int = 0) -> Iterator[str]:
    if depth > 20:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _filter_strings(value, under_filter or "filter" in str(key).lower(), depth + 1)
    elif isinstance(node, list):
        for value in node:
            yield from _filter_strings(value, under_filter, depth + 1)
    elif isinstance(node, str) and under_filter:
        yield node


def parse_body(raw: Any) -> Any:
    """A request's JSON as MLflow reads it (older clients double-encode it as a string)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return raw


# --- the budget ----------------------------------------------------------------------------------


@dataclass
class Budget:
    """One request's allowance of regular-expression time."""

    limit_s: float
    patterns: list[str] = field(default_factory=list)
    spent_s: float = 0.0
    exceeded: str | None = None  # the pattern that ran out of time ("" when not known)

    def remaining(self) -> float:
        return self.limit_s - self.spent_s


CURRENT: ContextVar[Budget | None] = ContextVar("mlflow_team_regex_budget", default=None)

#: A PostgreSQL statement that matches a regular expression (SQLAlchemy renders ``a ~ b``).
_PG_REGEX_OPERATOR = re.compile(r"\s!?~\*?\s")
_REGISTERED = "mlflow_team_regexp"  # a connection's info key: our regexp() is on it
_STARTED = "mlflow_team_regex_started"
_QUERY_CANCELED = "57014"


@functools.lru_cache(maxsize=256)
def _stock_pattern(pattern: str) -> re.Pattern:
    return re.compile(pattern)


@functools.lru_cache(maxsize=256)
def _timed_pattern(pattern: str):
    import regex

    try:
        return regex.compile(pattern)
    except regex.error:
        return None


def budgeted_regexp(pattern: str | None, value: str | None) -> bool:
    """SQLite's ``regexp(pattern, value)``: stock's results, within the request's budget."""
    if value is None or pattern is None:
        return False
    try:
        stock = _stock_pattern(pattern)
    except re.error:
        return False  # as stock: an invalid pattern matches nothing
    budget = CURRENT.get()
    if budget is None:
        return stock.search(value) is not None
    if budget.exceeded is not None:
        return False  # the answer is already a refusal; finish the scan quickly
    remaining = budget.remaining()
    timed = _timed_pattern(pattern)
    if remaining <= 0 or timed is None:
        if timed is None:  # valid for re, not for regex: stock's engine, unbudgeted
            return stock.search(value) is not None
        budget.exceeded = pattern
        return False
    started = time.perf_counter()
    try:
        return timed.search(value, timeout=remaining, concurrent=True) is not None
    except TimeoutError:
        budget.exceeded = pattern
        return False
    finally:
        budget.spent_s += time.perf_counter() - started


def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    dialect = conn.dialect.name
    if dialect == "sqlite":
        info = conn.connection.info
        if not info.get(_REGISTERED):
            try:
                conn.connection.driver_connection.create_function("regexp", 2, budgeted_regexp)
                info[_REGISTERED] = True
            except Exception as exc:  # noqa: BLE001 - never fail a statement over this
                _logger.warning("mlflow-team: the regexp budget is not on this SQLite connection (%s)", exc)
                info[_REGISTERED] = True
        return
    budget = CURRENT.get()
    if dialect == "postgresql" and budget is not None and _PG_REGEX_OPERATOR.search(statement):
        milliseconds = max(1, int(budget.remaining() * 1000))
        cursor.execute(f"SET LOCAL statement_timeout = {milliseconds:d}")
        conn.info[_STARTED] = time.perf_counter()


def _after_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    started = conn.info.pop(_STARTED, None)
    budget = CURRENT.get()
    if started is None or budget is None:
        return
    budget.spent_s += time.perf_counter() - started
    # A second cursor: the first still holds the statement's rows.
    reset = conn.connection.driver_connection.cursor()
    try:
        reset.execute("SET LOCAL statement_timeout TO DEFAULT")
    finally:
        reset.close()


def _handle_error(context) -> None:
    connection = context.connection
    started = connection.info.pop(_STARTED, None) if connection is not None else None
    budget = CURRENT.get()
    if started is None or budget is None:
        return
    error = context.original_exception
    if getattr(error, "pgcode", None) == _QUERY_CANCELED or getattr(error, "sqlstate", None) == _QUERY_CANCELED:
        budget.spent_s += time.perf_counter() - started
        budget.exceeded = budget.patterns[0] if budget.patterns else ""


_installed = False


def install_database_hooks() -> None:
    """Listen on every SQLAlchemy engine of this process (once): the server's stores'."""
    global _installed
    if _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(Engine, "after_cursor_execute", _after_cursor_execute)
    event.listen(Engine, "handle_error", _handle_error)
    _installed = True


def remove_database_hooks() -> None:
    """Undo :func:`install_database_hooks` (tests; connections keep the function they were given)."""
    global _installed
    if not _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.remove(Engine, "before_cursor_execute", _before_cursor_execute)
    event.remove(Engine, "after_cursor_execute", _after_cursor_execute)
    event.remove(Engine, "handle_error", _handle_error)
    _installed = False
