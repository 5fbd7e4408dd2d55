"""The one place mlflow-team reads environment variables and the policy file.

Environment variables (read when called, never at import):

``MLFLOW_TEAM_POLICY``
    Path of the policy file. Unset: ``mlflow-team.toml`` in the working directory if it exists,
    else built-in defaults that reject nothing. Unset, a file there with a near-miss name
    (``mlflow_team.toml``, ``mlflow-team.yaml``, ``.mlflow-team.toml``, ...) is not read: a
    warning says so, once per process.
``MLFLOW_TEAM_SQLITE_BUSY_TIMEOUT_MS``
    How long a SQLite writer waits for the lock before retrying (default 30000).
``MLFLOW_TEAM_LOCK_RETRIES``
    How many times a store call is retried after "database is locked" or a deadlock (default 8).
``MLFLOW_TEAM_ARTIFACT_WORKERS``
    Parallel transfers per artifact repository (files of a directory, parts of a large file;
    default 16).

Client side (author identity, see :mod:`mlflow_team.identity`):

``MLFLOW_TEAM_AUTHOR``
    The author of this process's runs (else git ``user.email``, ``MLFLOW_TRACKING_USERNAME``,
    ``user@host``).
``MLFLOW_TEAM_AUTHOR_KEY`` / ``MLFLOW_TEAM_AUTHOR_KEY_FILE``
    The author's personal signing key, or a file holding it (default
    ``~/.config/mlflow-team/author.key`` when that file exists). Signing is on with
    ``MLFLOW_TRACKING_AUTH=team``.
``MLFLOW_TEAM_AUTHOR_HOSTS``
    Comma-separated ``host`` or ``host:port`` names (``*`` wildcards allowed) that may receive the
    author headers. Unset: the http(s) tracking and registry servers a client was asked to talk
    to (the global URIs, and any ``MlflowClient(tracking_uri=..., registry_uri=...)``).
``MLFLOW_TEAM_IDENTITY``
    ``off`` stops the client plugins from adding author tags and headers.
``MLFLOW_TEAM_HEARTBEAT``
    ``off`` stops the heartbeats of fluent runs to a team server (:mod:`mlflow_team.heartbeat`);
    the server then never ends this process's runs as stale.

The policy file (TOML), each table a rule, each rule off unless its table is present::

    [experiment-name]
    pattern = '^[a-z0-9-]+/[a-z0-9-]+$'
    example = "vision/resnet-ablation"

    [registered-model-name]
    pattern = '^[a-z0-9-]+\\.[a-z0-9-]+$'
    example = "vision.resnet"

    [required-tags]
    tags = ["team.name", "team.project"]
    defaults = { "team.name" = "vision" }

    [protected-deletions]
    [lossless-values]
    [reserved-tags]            # team.author and team.author_verified, plus `extra`
    extra = ["team.cost-center"]

    [identity]                 # on by default: the store stamps the author of runs and versions
    keyring = "keyring.toml"   # author = key; relative to this file
    allow-unsigned = false     # default: true without a keyring, false with one
    max-clock-skew-seconds = 300
    require-verified = true    # default false: refuse authors no login or signature vouches for

    [artifacts]                # how team+s3 stores objects (not a rule: nothing is rejected)
    object-tags = ["team.name", "team.project", "team.author", "mlflow.run_id", "mlflow.experiment_id"]
    encryption = "aws:kms"     # "none" (the bucket's default), "AES256" or "aws:kms"
    kms-key-id = "alias/mlflow"
    kms-keys = { "finance/" = "alias/finance" }   # experiment-name prefix -> key

Every rule table also takes ``enabled = false`` to switch its rule off without deleting it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from mlflow_team import errors
from mlflow_team.policy import (
    RULE_IDS,
    STAMPED_TAGS,
    ArtifactSettings,
    IdentityRule,
    NameRule,
    ServerSettings,
    Policy,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

POLICY_ENV = "MLFLOW_TEAM_POLICY"
DEFAULT_POLICY_FILE = "mlflow-team.toml"
BUSY_TIMEOUT_ENV = "MLFLOW_TEAM_SQLITE_BUSY_TIMEOUT_MS"
LOCK_RETRIES_ENV = "MLFLOW_TEAM_LOCK_RETRIES"
ARTIFACT_WORKERS_ENV = "MLFLOW_TEAM_ARTIFACT_WORKERS"
AUTHOR_ENV = "MLFLOW_TEAM_AUTHOR"
AUTHOR_KEY_ENV = "MLFLOW_TEAM_AUTHOR_KEY"
AUTHOR_KEY_FILE_ENV = "MLFLOW_TEAM_AUTHOR_KEY_FILE"
AUTHOR_HOSTS_ENV = "MLFLOW_TEAM_AUTHOR_HOSTS"
IDENTITY_ENV = "MLFLOW_TEAM_IDENTITY"
HEARTBEAT_ENV = "MLFLOW_TEAM_HEARTBEAT"
DEFAULT_KEY_FILE = "~/.config/mlflow-team/author.key"
MIN_KEY_LENGTH = 32

_RULE_KEYS = {
    "experiment-name": {"enabled", "pattern", "example"},
    "registered-model-name": {"enabled", "pattern", "example"},
    "required-tags": {"enabled", "tags", "defaults"},
    "protected-deletions": {"enabled"},
    "lossless-values": {"enabled"},
    "reserved-tags": {"enabled", "extra"},
    "identity": {"enabled", "keyring", "allow-unsigned", "max-clock-skew-seconds", "require-verified"},
    "artifacts": {"object-tags", "encryption", "kms-key-id", "kms-keys"},
    "server": {"auth", "stale-after-seconds", "regex-budget-ms"},
}
_RULE_EXAMPLES = {
    "experiment-name": "pattern = '^[a-z0-9-]+/[a-z0-9-]+$' and example = 'vision/resnet'",
    "registered-model-name": "pattern = '^[a-z0-9-]+\\.[a-z0-9-]+$' and example = 'vision.resnet'",
    "required-tags": "tags = ['team.name'] and defaults = { 'team.name' = 'vision' }",
    "protected-deletions": "enabled = true",
    "lossless-values": "enabled = true",
    "reserved-tags": "extra = ['team.cost-center']",
    "identity": "keyring = 'keyring.toml' and allow-unsigned = false",
    "artifacts": "encryption = 'aws:kms' and kms-keys = { 'finance/' = 'arn:aws:kms:...:key/...' }",
    "server": "auth = 'basic' and stale-after-seconds = 900",
}


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise errors.TeamStoreConfigError(
            f"{name}={raw!r} was rejected: it must be a whole number of 0 or more, "
            f"for example {name}={default}."
        )
    return value


def sqlite_busy_timeout_ms() -> int:
    return _int_env(BUSY_TIMEOUT_ENV, 30_000)


def lock_retries() -> int:
    return _int_env(LOCK_RETRIES_ENV, 8)


def artifact_workers() -> int:
    return max(1, _int_env(ARTIFACT_WORKERS_ENV, 16))


def client_identity_on() -> bool:
    return os.environ.get(IDENTITY_ENV, "").strip().lower() not in {"off", "0", "false", "no"}


def client_heartbeat_on() -> bool:
    return os.environ.get(HEARTBEAT_ENV, "").strip().lower() not in {"off", "0", "false", "no"}


def author_key_file() -> Path | None:
    explicit = os.environ.get(AUTHOR_KEY_FILE_ENV, "").strip()
    path = Path(explicit or DEFAULT_KEY_FILE).expanduser()
    return path if path.is_file() else None


def author_hosts() -> list[str] | None:
    """The allow-list of hosts for author headers, or None for "the tracking server in use"."""
    raw = os.environ.get(AUTHOR_HOSTS_ENV, "")
    hosts = [h.strip().lower() for h in raw.split(",") if h.strip()]
    return hosts or None


def policy_path() -> Path | None:
    """Where the policy comes from: the env var, the working directory's file, or nowhere."""
    explicit = os.environ.get(POLICY_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise errors.PolicyFileError(
                str(path), errors.POLICY_ENV_MISSING.format(value=explicit)
            )
        return path
    local = Path.cwd() / DEFAULT_POLICY_FILE
    found = local if local.is_file() else None
    _warn_near_misses(found)
    return found


#: Names (lower case, leading dots and separators ignored) that look like the policy file.
_NEAR_MISS_STEMS = {"mlflowteam", "mlflowteampolicy"}
_NEAR_MISS_SUFFIXES = {"toml", "tml", "yaml", "yml", "json", "ini", "cfg", "conf", "txt", "toml.txt"}
_near_miss_dirs_seen: set[str] = set()
_logger = logging.getLogger(__name__)


def is_near_miss(name: str) -> bool:
    """Whether a file name looks like the policy file but is not ``mlflow-team.toml``."""
    stem, _, suffix = name.lower().lstrip(".").partition(".")
    return (
        name != DEFAULT_POLICY_FILE
        and re.sub(r"[-_ .]", "", stem) in _NEAR_MISS_STEMS
        and suffix in _NEAR_MISS_SUFFIXES
    )


def policy_near_misses(folder: Path, read: Path | None) -> list[Path]:
    """Files in ``folder`` that look like the policy file and are not ``read``."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if not is_near_miss(entry.name) or not entry.is_file():
            continue
        if read is not None and os.path.samefile(entry.path, read):  # a case-insensitive file system
            continue
        found.append(Path(entry.path))
    return found


def _warn_near_misses(read: Path | None) -> None:
    """Once per working directory and process: log each near-miss name found there."""
    folder = Path.cwd()
    if str(folder) in _near_miss_dirs_seen:
        return
    _near_miss_dirs_seen.add(str(folder))
    source = str(read) if read is not None else DEFAULT_SOURCE
    for path in policy_near_misses(folder, read):
        _logger.warning(
            "mlflow-team: %s",
            errors.POLICY_NEAR_MISS.format(
                found=path.name, cwd=folder, default=DEFAULT_POLICY_FILE, env=POLICY_ENV, source=source, path=path
            ),
        )


#: Where the policy in force comes from when no file is read.
DEFAULT_SOURCE = "built-in defaults (identity, protected-deletions, lossless-values)"


def load_policy() -> Policy:
    """The policy in force for this process (validated; raises ``PolicyFileError``)."""
    path = policy_path()
    return default_policy() if path is None else load_policy_file(path)


def default_policy() -> Policy:
    """The policy without a file: an empty policy document, so the same rules are on by default
    (identity stamping, protected deletions, lossless values)."""
    return parse_policy({}, source=DEFAULT_SOURCE)


def read_policy_toml(path: str | os.PathLike[str]) -> dict:
    """A policy file's TOML, or :class:`errors.PolicyFileError` naming the file and what is wrong."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.PolicyFileError(str(path), "does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.PolicyFileError(str(path), errors.POLICY_NOT_TOML.format(reason=exc)) from None


def load_policy_file(path: str | os.PathLike[str]) -> Policy:
    path = Path(path)
    data = read_policy_toml(path)
    try:
        return parse_policy(data, source=str(path), base_dir=path.parent)
    except _Invalid as exc:
        raise errors.PolicyFileError(str(path), str(exc)) from None


class _Invalid(ValueError):
    pass


def _typed(rule: str, table: dict[str, Any], key: str, check: Callable[[Any], bool], expected: str):
    value = table[key]
    if not check(value):
        raise _Invalid(
            errors.POLICY_WRONG_TYPE.format(
                rule=rule, key=key, value=value, expected=expected, example=_RULE_EXAMPLES[rule]
            )
        )
    return value


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _name_rule(rule: str, table: dict[str, Any]) -> NameRule:
    if "pattern" not in table or "example" not in table:
        missing = "pattern" if "pattern" not in table else "example"
        raise _Invalid(
            f"[{rule}] needs {missing!r}: the pattern names must match and an example name that "
            f"matches it (shown in every rejection). For example: {_RULE_EXAMPLES[rule]}"
        )
    raw = _typed(rule, table, "pattern", lambda v: isinstance(v, str) and v, "a non-empty string")
    example = _typed(rule, table, "example", lambda v: isinstance(v, str) and v, "a non-empty string")
    try:
        pattern = re.compile(raw)
    except re.error as exc:
        raise _Invalid(errors.POLICY_BAD_PATTERN.format(rule=rule, value=raw, reason=exc)) from None
    if not pattern.fullmatch(example):
        raise _Invalid(errors.POLICY_EXAMPLE_MISMATCH.format(rule=rule, value=example, pattern=raw))
    return NameRule(pattern=pattern, example=example)


def parse_policy(
    data: dict[str, Any], source: str = "<policy>", base_dir: Path | None = None
) -> Policy:
    """Validate a decoded policy document; raises ``_Invalid`` naming the key and value."""
    for key, table in data.items():
        if key not in _RULE_KEYS:
            known = ", ".join([*RULE_IDS, "artifacts", "server"])
            raise _Invalid(errors.POLICY_UNKNOWN_RULE.format(key=key, known=known))
        if not isinstance(table, dict):
            raise _Invalid(
                f"{key} = {table!r} must be a table, written [{key}]. "
                f"For example: [{key}] with {_RULE_EXAMPLES[key]}"
            )
        for sub in table:
            if sub not in _RULE_KEYS[key]:
                raise _Invalid(
                    errors.POLICY_UNKNOWN_KEY.format(
                        key=sub,
                        rule=key,
                        known=", ".join(sorted(_RULE_KEYS[key])),
                        example=_RULE_EXAMPLES[key],
                    )
                )
        if "enabled" in table:
            _typed(key, table, "enabled", lambda v: isinstance(v, bool), "true or false")

    def on(rule: str) -> dict[str, Any] | None:
        table = data.get(rule)
        return table if table is not None and table.get("enabled", True) else None

    fields: dict[str, Any] = {"source": source}
    if (table := on("experiment-name")) is not None:
        fields["experiment_name"] = _name_rule("experiment-name", table)
    if (table := on("registered-model-name")) is not None:
        fields["registered_model_name"] = _name_rule("registered-model-name", table)
    if (table := on("required-tags")) is not None:
        tags = []
        if "tags" in table:
            tags = _typed("required-tags", table, "tags", _is_str_list, "a list of tag keys")
        defaults = table.get("defaults", {})
        if not isinstance(defaults, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in defaults.items()
        ):
            raise _Invalid(
                errors.POLICY_WRONG_TYPE.format(
                    rule="required-tags",
                    key="defaults",
                    value=defaults,
                    expected="a table of tag key = string value",
                    example=_RULE_EXAMPLES["required-tags"],
                )
            )
        # A default makes a tag required too: it is filled in whenever a run lacks it.
        fields["required_tags"] = tuple(dict.fromkeys([*tags, *defaults]))
        fields["tag_defaults"] = dict(defaults)
    # On unless turned off: the README promises both, and a default that has to be asked for is
    # one nobody gets ([protected-deletions] enabled = false turns it off, as [identity] does).
    fields["protected_deletions"] = data.get("protected-deletions", {}).get("enabled", True)
    fields["lossless_values"] = data.get("lossless-values", {}).get("enabled", True)
    if (table := on("reserved-tags")) is not None:
        extra = []
        if "extra" in table:
            extra = _typed("reserved-tags", table, "extra", _is_str_list, "a list of tag keys")
        fields["reserved_tags"] = tuple(dict.fromkeys([*STAMPED_TAGS, *extra]))
    table = data.get("identity", {})
    fields["identity"] = (
        _identity_rule(table, base_dir or Path.cwd()) if table.get("enabled", True) else None
    )
    if "artifacts" in data:
        fields["artifacts"] = _artifact_settings(data["artifacts"])
    if "server" in data:
        fields["server"] = _server_settings(data["server"])
    reserved_required = set(fields.get("required_tags", ())) & set(fields.get("reserved_tags", ()))
    if reserved_required:
        raise _Invalid(
            f"[required-tags] lists {sorted(reserved_required)}, which [reserved-tags] forbids "
            "clients to set, so no run could satisfy both. Require a different key, for example "
            "tags = ['team.name']."
        )
    return Policy(**fields)


_MAX_OBJECT_TAGS = 9  # S3 allows 10 tags per object; one stays free for the bucket's own rules
_ENCRYPTIONS = {"none": None, "AES256": "AES256", "aws:kms": "aws:kms"}


def _artifact_settings(table: dict[str, Any]) -> ArtifactSettings:
    def invalid(key: str, rule: str) -> _Invalid:
        return _Invalid(
            errors.ARTIFACT_SETTINGS_INVALID.format(
                key=key, value=table[key], rule=rule, example=_RULE_EXAMPLES["artifacts"]
            )
        )

    fields: dict[str, Any] = {}
    if "object-tags" in table:
        tags = table["object-tags"]
        if not (isinstance(tags, list) and all(isinstance(t, str) and t for t in tags)):
            raise invalid("object-tags", "it must be a list of run tag keys (or [] for none)")
        if len(tags) > _MAX_OBJECT_TAGS:
            raise invalid("object-tags", f"S3 keeps at most 10 tags per object; name {_MAX_OBJECT_TAGS} or fewer")
        fields["object_tags"] = tuple(dict.fromkeys(tags))
    if "encryption" in table:
        if table["encryption"] not in _ENCRYPTIONS:
            raise invalid("encryption", "it must be one of 'none', 'AES256', 'aws:kms'")
        fields["encryption"] = _ENCRYPTIONS[table["encryption"]]
    if "kms-key-id" in table:
        if not isinstance(table["kms-key-id"], str) or not table["kms-key-id"]:
            raise invalid("kms-key-id", "it must be a KMS key id, alias or ARN")
        fields["kms_key_id"] = table["kms-key-id"]
    if "kms-keys" in table:
        keys = table["kms-keys"]
        if not isinstance(keys, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in keys.items()
        ):
            raise invalid("kms-keys", "it must map experiment-name prefixes to KMS key ids")
        fields["kms_keys"] = dict(keys)
    if (fields.get("kms_key_id") or fields.get("kms_keys")) and fields.get("encryption") != "aws:kms":
        key = "kms-keys" if "kms-keys" in table else "kms-key-id"
        raise invalid(key, "KMS keys are used only with encryption = 'aws:kms'; add that line")
    return ArtifactSettings(**fields)


def _server_settings(table: dict[str, Any]) -> ServerSettings:
    fields: dict[str, Any] = {}
    if "auth" in table:
        fields["auth"] = _typed("server", table, "auth", lambda v: v in ("none", "basic"), "'none' or 'basic'")
    if "stale-after-seconds" in table:
        fields["stale_after_s"] = _typed(
            "server", table, "stale-after-seconds",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 10 <= v <= 7 * 86_400,
            "a whole number of seconds from 10 to 604800",
        )
    if "regex-budget-ms" in table:
        fields["regex_budget_ms"] = _typed(
            "server", table, "regex-budget-ms",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10_000,
            "a whole number of milliseconds from 1 to 10000",
        )
    return ServerSettings(**fields)


def _identity_rule(table: dict[str, Any], base_dir: Path) -> IdentityRule:
    keyring: dict[str, bytes] = {}
    keyring_path = None
    if "keyring" in table:
        raw = _typed("identity", table, "keyring", lambda v: isinstance(v, str) and v, "a file path")
        path = Path(raw).expanduser()
        keyring_path = path if path.is_absolute() else base_dir / path
        keyring = load_keyring(keyring_path)
    require_verified = False
    if "require-verified" in table:
        require_verified = _typed(
            "identity", table, "require-verified", lambda v: isinstance(v, bool), "true or false"
        )
    allow_unsigned = not keyring and not require_verified
    if "allow-unsigned" in table:
        allow_unsigned = _typed(
            "identity", table, "allow-unsigned", lambda v: isinstance(v, bool), "true or false"
        )
    if require_verified and allow_unsigned:
        raise _Invalid(errors.POLICY_REQUIRE_VERIFIED_CONFLICT)
    skew = 300
    if "max-clock-skew-seconds" in table:
        skew = _typed(
            "identity",
            table,
            "max-clock-skew-seconds",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 86_400,
            "a whole number of seconds from 1 to 86400",
        )
    # require-verified without a keyring: a server behind MLflow's login (--app-name basic-auth).
    if not allow_unsigned and not keyring and not require_verified:
        raise _Invalid(
            "[identity] allow-unsigned = false needs a keyring, or no request could name its "
            "author. Add keyring = 'keyring.toml', or run the server with --app-name basic-auth "
            "and leave allow-unsigned at true."
        )
    return IdentityRule(
        keyring=keyring,
        keyring_path=None if keyring_path is None else str(keyring_path),
        allow_unsigned=allow_unsigned,
        max_clock_skew_s=skew,
        require_verified=require_verified,
    )


def load_keyring(path: Path) -> dict[str, bytes]:
    """``[keys]`` author = key. Errors name the file and the author, never the key."""

    def invalid(problem: str) -> _Invalid:
        return _Invalid(errors.KEYRING_INVALID.format(path=path, problem=problem))

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise invalid("does not exist. Create it, for example with [keys] and one line per "
                      "author: \"alice@example.com\" = \"<key from mlflow-team identity new-key>\"") from None
    except tomllib.TOMLDecodeError as exc:
        raise invalid(f"is not valid TOML ({exc})") from None
    keys = data.get("keys")
    extra = sorted(set(data) - {"keys"})
    if not isinstance(keys, dict) or extra:
        raise invalid("must hold exactly one table, [keys], with one line per author: "
                      "\"alice@example.com\" = \"<key>\"")
    keyring: dict[str, bytes] = {}
    for author, key in keys.items():
        if not isinstance(key, str) or len(key.strip()) < MIN_KEY_LENGTH:
            raise invalid(
                f"the key of {author!r} must be a string of at least {MIN_KEY_LENGTH} "
                "characters. Make one with `mlflow-team identity new-key`."
            )
        keyring[author] = key.strip().encode()
    return keyring
