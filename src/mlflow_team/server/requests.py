"""Request bodies the store would take or choke on, refused first; error bodies without internals.

MLflow's handlers read a body with ``request.get_json(force=True, silent=True)``: malformed,
truncated or empty JSON becomes an empty request, which creates an empty run (or fails in SQL,
whose text, statement and parameters included, goes back to the client). JSON nested 20,000 deep
fails in the parser with a 500; a ``metrics`` list of lists fails in the protobuf conversion with
a 500; a metric value of ``1e309`` is read as infinity, a step of ``1.5`` or a timestamp past 64
bits is stored as something else. Before any handler runs, the team app parses a JSON API
request's body itself and refuses each of these with a 400 that names the problem and the field.

After any handler, an error body whose message carries the database's text (SQL, parameters, a
driver's name) has that message replaced by one with a reference to the server's log, where the
full text goes; a local path of the server in a message is replaced by ``<server path>``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from typing import Any

from mlflow_team import errors
from mlflow_team.policy import Policy

_logger = logging.getLogger(__name__)

#: MLflow's JSON API (the tracking and registry REST API, and the UI's ajax twin of it); the
#: artifact proxy (``mlflow-artifacts``) takes files, not JSON.
_JSON_API = re.compile(r"^/(?:ajax-)?api/[23]\.0/mlflow/")
_BODY_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
#: Deeper than any MLflow request (a few levels); far below the parser's recursion limit.
MAX_DEPTH = 32
#: Fields holding 64-bit integers (protobuf int64) wherever they appear in a request.
INT64_FIELDS = frozenset({"timestamp", "step", "start_time", "end_time"})
_INT64 = (-(2**63), 2**63 - 1)
#: Fields holding a list of messages (``{"key": ..., "value": ...}`` objects) where they are lists.
_LISTS_OF_OBJECTS = {
    "metrics": '[{"key": "rmse", "value": 5.2, "timestamp": 1700000000000, "step": 0}]',
    "params": '[{"key": "max_depth", "value": "6"}]',
    "tags": '[{"key": "model", "value": "xgboost"}]',
}


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Overflow(float):
    """A JSON number whose text is beyond a double's range (read as infinity by Python)."""

    text: str

    def __new__(cls, text: str) -> "_Overflow":
        value = super().__new__(cls, float(text))
        value.text = text
        return value


def _parse_float(text: str) -> float:
    value = float(text)
    return _Overflow(text) if math.isinf(value) else value


def install(app: Any, team_policy: Policy) -> None:
    app.before_request(check_body)
    app.after_request(scrub_error)


def check_body():
    """Flask before-request hook: None lets the request through, a response refuses it."""
    import flask

    request = flask.request
    if request.method not in _BODY_METHODS or not _JSON_API.match(request.path):
        return None
    endpoint = request.path
    try:
        _check(request, endpoint)
    except _Refused as refused:
        from mlflow.exceptions import MlflowException

        return error_response(MlflowException.invalid_parameter_value(refused.message))
    return None


def _check(request, endpoint: str) -> None:
    body = request.get_data(cache=True)
    if not body.strip():
        # An endpoint whose URL names the object (logged-models/<id>, a job's cancel) may take no
        # body; one whose every field is in the body creates or changes nothing meaningful.
        if request.method in ("POST", "PATCH") and not request.view_args:
            raise _Refused(errors.REQUEST_BODY_EMPTY.format(endpoint=endpoint))
        return
    try:
        data = json.loads(body, parse_float=_parse_float)
        if isinstance(data, str):  # older clients double-encode their JSON (as MLflow accepts)
            data = json.loads(data, parse_float=_parse_float)
    except RecursionError:
        raise _Refused(errors.REQUEST_BODY_TOO_DEEP.format(endpoint=endpoint, limit=MAX_DEPTH)) from None
    except ValueError as exc:  # JSONDecodeError, and bytes that are not UTF-8
        raise _Refused(errors.REQUEST_BODY_NOT_JSON.format(endpoint=endpoint, problem=_problem(exc))) from None
    if not isinstance(data, dict):
        raise _Refused(errors.REQUEST_BODY_NOT_OBJECT.format(endpoint=endpoint, kind=_kind(data)))
    _walk(data, "", 1, endpoint)


def _problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    return str(exc).split("\n")[0][:200]


def _kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _walk(value: Any, path: str, depth: int, endpoint: str) -> None:
    if depth > MAX_DEPTH:
        raise _Refused(errors.REQUEST_BODY_TOO_DEEP.format(endpoint=endpoint, limit=MAX_DEPTH))
    if isinstance(value, dict):
        for key, item in value.items():
            field = f"{path}.{key}" if path else str(key)
            if key in INT64_FIELDS:
                _check_int64(item, field, endpoint)
            if key in _LISTS_OF_OBJECTS and isinstance(item, list) and not all(isinstance(i, dict) for i in item):
                wrong = next(i for i in item if not isinstance(i, dict))
                raise _Refused(errors.REQUEST_FIELD_NOT_OBJECTS.format(
                    endpoint=endpoint, field=field, example=_LISTS_OF_OBJECTS[key],
                    got=f"a {_kind(wrong)} ({errors.preview(wrong, 40)})",
                ))
            _walk(item, field, depth + 1, endpoint)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", depth + 1, endpoint)
    elif isinstance(value, _Overflow):
        raise _Refused(errors.REQUEST_FIELD_OVERFLOW.format(endpoint=endpoint, field=path, text=value.text))


def _check_int64(value: Any, field: str, endpoint: str) -> None:
    """protobuf's JSON takes an int64 as a number or a string of digits; nothing else is one."""
    if value is None:
        return
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and not isinstance(value, _Overflow) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        number = int(value)
    if number is None:
        what = "a whole number" if not isinstance(value, (list, dict)) else "a number"
        raise _Refused(errors.REQUEST_FIELD_NOT_INT64.format(
            endpoint=endpoint, field=field, value=_shown(value), what=what))
    if not _INT64[0] <= number <= _INT64[1]:
        raise _Refused(errors.REQUEST_FIELD_NOT_INT64.format(
            endpoint=endpoint, field=field, value=_shown(value), what="within 64 bits"))


def _shown(value: Any) -> str:
    if isinstance(value, _Overflow):
        return value.text
    return errors.preview(value, 60) if isinstance(value, (str, list, dict)) else str(value)


def error_response(exc: Any) -> Any:
    """An ``MlflowException`` as MLflow's handlers answer it: its JSON body and HTTP status."""
    import flask

    return flask.Response(exc.serialize_as_json(), status=exc.get_http_status_code(), mimetype="application/json")


# --- error bodies ------------------------------------------------------------------------------

#: Text only the database (or its driver, or SQLAlchemy) writes.
_INTERNAL = re.compile(
    r"\[SQL: |\[parameters: |sqlalche\.me/|\(Background on this error"
    r"|\b(?:psycopg2?|pymysql|MySQLdb|sqlite3)\.|\(sqlite3\.|\(psycopg|\(pymysql"
    r"|\bINSERT INTO\b|\bDELETE FROM\b|\bUPDATE \w+ SET\b|\bSELECT\b[^.]{0,200}\bFROM\b",
)
#: A candidate absolute path: after a space, a quote or a parenthesis, up to a quote or a space.
_PATH = re.compile(r"(?<=[\s'\"(=])(/[^\s'\"()<>,;]+)")


def scrub_error(response):
    """Flask after-request hook: an error body's message without the database's text or paths."""
    if response.status_code < 400 or response.mimetype != "application/json" or response.direct_passthrough:
        return response
    try:
        data = json.loads(response.get_data())
    except ValueError:
        return response
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return response
    message = data["message"]
    scrubbed = _scrubbed(message, str(data.get("error_code", response.status_code)))
    if scrubbed != message:
        data["message"] = scrubbed
        response.set_data(json.dumps(data))
    return response


def _scrubbed(message: str, code: str) -> str:
    if _INTERNAL.search(message):
        reference = uuid.uuid4().hex[:12]
        _logger.error("mlflow-team: request failed (reference %s, %s): %s", reference, code, message)
        return errors.SERVER_ERROR_HIDDEN.format(code=code, reference=reference)
    return _PATH.sub(_server_path, message)


def _server_path(match: re.Match) -> str:
    """``<server path>`` for a path of this machine (it or its folder exists), else the text."""
    path = match.group(1).rstrip(".:")
    parent = os.path.dirname(path)
    if os.path.exists(path) or (parent not in ("", "/") and os.path.isdir(parent)):
        return match.group(0).replace(path, "<server path>")
    return match.group(0)
