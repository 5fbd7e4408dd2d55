"""Author identity: who made a run or model version, and how a server can believe it.

- :mod:`~mlflow_team.identity.whoami`: the author of this process and its personal key (client).
- :mod:`~mlflow_team.identity.signing`: the signed author headers: build, read, check.
- :mod:`~mlflow_team.identity.client`: the plugins MLflow's clients load through entry points.
- :mod:`~mlflow_team.identity.server`: which author the store stamps for a call (server side).
- :mod:`~mlflow_team.identity.replay`: signatures already used, in a table of the team database.

Importing this package imports the standard library only: MLflow loads the client plugins while
``import mlflow`` runs. The client-side names are imported here; the server-side ones
(:func:`current_stamp`, :func:`answer_probe`, :data:`PROBE_EXPERIMENT_ID`) import MLflow and are
loaded on first use, so ``from mlflow_team import identity; identity.author()`` and
``identity.current_stamp(...)`` both work.
"""

from __future__ import annotations

from mlflow_team.identity import signing
from mlflow_team.identity.whoami import Author, Key, author, clear_cache, signing_key

__all__ = [
    "Author", "Key", "author", "clear_cache", "signing", "signing_key",
    "current_stamp", "answer_probe", "PROBE_EXPERIMENT_ID",
]

#: Server-side names, imported from :mod:`.server` on first use (it imports MLflow).
_SERVER_NAMES = frozenset({"current_stamp", "answer_probe", "PROBE_EXPERIMENT_ID"})


def __getattr__(name: str):
    if name in _SERVER_NAMES:
        from mlflow_team.identity import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SERVER_NAMES)
