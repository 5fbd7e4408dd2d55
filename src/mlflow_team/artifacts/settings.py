"""The policy's ``[artifacts]`` table, read on its own.

A repository runs wherever artifacts are written: in a training process (setups 1 and 2 of the
README) as well as on the server. It needs the ``[artifacts]`` table only, so it never reads the
rest of the policy file: the ``[identity]`` table names the server's keyring, a secret file that a
client does not have (and must not need) to upload artifacts. The rest of the file is checked
by the store that uses it.
"""

from __future__ import annotations

from mlflow_team import config, errors
from mlflow_team.policy import ArtifactSettings


def artifact_settings() -> ArtifactSettings:
    """The ``[artifacts]`` settings in force (defaults without a policy file or table)."""
    path = config.policy_path()
    if path is None:
        return ArtifactSettings()
    table = config.read_policy_toml(path).get("artifacts")
    if table is None:
        return ArtifactSettings()
    try:
        return config.parse_policy({"artifacts": table}, source=str(path)).artifacts
    except ValueError as exc:  # the policy's own validation error, with the key and value
        raise errors.PolicyFileError(str(path), str(exc)) from None
