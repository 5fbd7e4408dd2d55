"""Hyperopt search spaces and points, as MLflow can show them.

- ``describe``: a search space as readable JSON (each ``hp.*`` node named by its distribution and
  arguments, ``hp.choice`` with its options, constants as they are).
- ``flatten``: a point of the space (what the objective receives) as flat ``name -> str`` params,
  nested dicts as dotted names and lists by index.
- ``resolve``: a trial's raw assignment (``hp.choice`` indexes) as the point the objective saw.
"""

from __future__ import annotations

import math
from typing import Any

#: MLflow's limit on a param value.
MAX_PARAM_LENGTH = 6000

_ARG_NAMES = {
    "uniform": ("low", "high"),
    "quniform": ("low", "high", "q"),
    "loguniform": ("low", "high"),
    "qloguniform": ("low", "high", "q"),
    "normal": ("mu", "sigma"),
    "qnormal": ("mu", "sigma", "q"),
    "lognormal": ("mu", "sigma"),
    "qlognormal": ("mu", "sigma", "q"),
}


def describe(space: Any) -> Any:
    """The search space as JSON-serialisable data."""
    from hyperopt.pyll import as_apply

    return _describe(as_apply(space))


def _describe(node) -> Any:
    name = node.name
    if name == "literal":
        return _plain(node.obj)
    if name == "dict":
        return {key: _describe(value) for key, value in node.named_args}
    if name == "pos_args":
        return [_describe(arg) for arg in node.pos_args]
    if name == "switch" and node.pos_args and node.pos_args[0].name == "hyperopt_param":
        return {
            "hp": "choice",
            "label": node.pos_args[0].arg["label"].obj,
            "options": [_describe(option) for option in node.pos_args[1:]],
        }
    if name == "hyperopt_param":
        distribution = node.arg["obj"]
        described = {"hp": distribution.name, "label": node.arg["label"].obj}
        described.update(_arguments(distribution))
        return described
    if name in ("float", "int") and len(node.pos_args) == 1:
        inner = _describe(node.pos_args[0])
        if isinstance(inner, dict) and "hp" in inner:
            if name == "int":
                inner["type"] = "int"
            return inner
        return {"expr": name, "args": [inner]}
    described = {"expr": name}
    if node.pos_args:
        described["args"] = [_describe(arg) for arg in node.pos_args]
    for key, value in node.named_args:
        described[key] = _describe(value)
    return described


def _arguments(distribution) -> dict:
    values = [_describe(arg) for arg in distribution.pos_args]
    if distribution.name == "randint":
        names = ("upper",) if len(values) == 1 else ("low", "high")
    else:
        names = _ARG_NAMES.get(distribution.name, ())
    arguments = {
        (names[i] if i < len(names) else f"arg{i}"): value for i, value in enumerate(values)
    }
    arguments.update({key: _describe(value) for key, value in distribution.named_args})
    return arguments


def _plain(value: Any) -> Any:
    """A value as JSON has it (numpy scalars become numbers, anything else its repr)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return _plain(value.item())
        except (TypeError, ValueError):
            pass
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return repr(value)


def flatten(point: Any, prefix: str = "") -> dict[str, str]:
    """``{"clf": {"C": 1.0}}`` -> ``{"clf.C": "1.0"}``; a scalar point is named ``prefix`` or ``x``."""
    return {name: str(value)[:MAX_PARAM_LENGTH] for name, value in _leaves(point, prefix, into_lists=True)}


def numbers(point: Any, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of ``point`` (bools left out), named like ``flatten`` names them."""
    return {
        name: float(value)
        for name, value in _leaves(point, prefix, into_lists=False)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def params_of(point: Any) -> tuple[dict[str, str], dict[str, float]]:
    """A point as a trial logs it: every param (``flatten``) and the numeric ones (``numbers``)."""
    return flatten(point), numbers(point)


def _leaves(value: Any, name: str, into_lists: bool):
    """``(dotted name, plain value)`` for every leaf of nested dicts (and, with ``into_lists``,
    of lists that hold containers, named by index)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{name}.{key}" if name else str(key), into_lists)
    elif into_lists and isinstance(value, (list, tuple)) and any(isinstance(i, (dict, list, tuple)) for i in value):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{name}.{index}" if name else str(index), into_lists)
    else:
        yield name or "x", _plain(value)


def resolve(space_expr: Any, assignment: dict[str, Any]) -> Any:
    """The point a raw assignment (``{label: value}``; ``hp.choice`` as an index) stands for."""
    from hyperopt import space_eval

    return space_eval(space_expr, assignment)


def assignment_of(trial: dict) -> dict[str, Any]:
    """A hyperopt trial document's raw assignment (inactive conditional labels left out)."""
    return {label: values[0] for label, values in trial["misc"]["vals"].items() if len(values)}
