"""The team policy: a plain description of the rules and pure functions that apply them.

Nothing here touches a database or MLflow's server: each check takes plain values and either
returns (the request is allowed, possibly with defaults filled in) or raises a
:class:`~mlflow_team.errors.PolicyViolation` whose message follows ``errors``' templates.
``Policy()`` only stamps authors; the policy file (:mod:`mlflow_team.config`) turns rules on, and
``protected-deletions`` and ``lossless-values`` are on there unless it turns them off.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from mlflow_team import errors

#: Tags the mlflow-team store stamps itself; with ``reserved-tags`` on, clients cannot touch them.
STAMPED_TAGS = ("team.author", "team.author_verified")
#: The tags that say who made a run or model version: stamped while ``identity`` is on.
AUTHOR_TAGS = ("mlflow.user", *STAMPED_TAGS)

RULE_IDS = (
    "experiment-name",
    "registered-model-name",
    "required-tags",
    "protected-deletions",
    "lossless-values",
    "reserved-tags",
    "identity",
)


@dataclass(frozen=True)
class IdentityRule:
    """How the store decides who the author of a run or model version is (on by default)."""

    keyring: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # author -> key
    keyring_path: str | None = None
    allow_unsigned: bool = True
    max_clock_skew_s: int = 300
    require_verified: bool = False  # refuse what no login or signature vouches for (401)


#: Object tags the team+s3 repository puts on every artifact unless the policy names others.
DEFAULT_OBJECT_TAGS = ("team.name", "team.project", "team.author", "mlflow.run_id", "mlflow.experiment_id")


@dataclass(frozen=True)
class ArtifactSettings:
    """How team+s3 stores objects: which run values become object tags, and the encryption."""

    object_tags: tuple[str, ...] = DEFAULT_OBJECT_TAGS
    encryption: str | None = None  # None (the bucket's default), "AES256" or "aws:kms"
    kms_key_id: str | None = None  # aws:kms key for experiments no prefix below matches
    kms_keys: Mapping[str, str] = field(default_factory=dict)  # experiment-name prefix -> key

    def encryption_for(self, experiment_name: str | None) -> dict[str, str]:
        """The upload arguments for an artifact of ``experiment_name``; the longest prefix wins."""
        if self.encryption is None:
            return {}
        if self.encryption == "AES256":
            return {"ServerSideEncryption": "AES256"}
        key = self.kms_key_id
        matches = [p for p in self.kms_keys if experiment_name and experiment_name.startswith(p)]
        if matches:
            key = self.kms_keys[max(matches, key=len)]
        args = {"ServerSideEncryption": "aws:kms"}
        if key:
            args["SSEKMSKeyId"] = key
        return args


@dataclass(frozen=True)
class ServerSettings:
    """What the team server app (``mlflow server --app-name team``) does beyond the store."""

    auth: str = "none"  # "none", or "basic": MLflow's basic-auth runs inside the team app
    stale_after_s: int = 900  # a run whose client stopped sending heartbeats this long ago is ended FAILED
    regex_budget_ms: int = 100  # the CPU a search filter's regular expression may take per request


@dataclass(frozen=True)
class Stamp:
    """The author the store writes, and whether anything vouched for it."""

    author: str
    verified: bool
    source: str  # "mlflow-auth", "signature", "header", "client-claim" or "direct"

    def tags(self) -> dict[str, str]:
        verified = "true" if self.verified else "false"
        return {"mlflow.user": self.author, "team.author": self.author, "team.author_verified": verified}


@dataclass(frozen=True)
class NameRule:
    pattern: re.Pattern[str]
    example: str


@dataclass(frozen=True)
class Policy:
    """What the team enforces. ``Policy()`` rejects nothing but client writes of the author tags."""

    experiment_name: NameRule | None = None
    registered_model_name: NameRule | None = None
    required_tags: tuple[str, ...] = ()
    tag_defaults: Mapping[str, str] = field(default_factory=dict)
    protected_deletions: bool = False
    lossless_values: bool = False
    reserved_tags: tuple[str, ...] = ()
    identity: IdentityRule | None = field(default_factory=IdentityRule)
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    source: str = "built-in defaults (identity stamping only)"

    def enabled_rules(self) -> list[str]:
        on = {
            "experiment-name": self.experiment_name is not None,
            "registered-model-name": self.registered_model_name is not None,
            "required-tags": bool(self.required_tags),
            "protected-deletions": self.protected_deletions,
            "lossless-values": self.lossless_values,
            "reserved-tags": bool(self.reserved_tags),
            "identity": self.identity is not None,
        }
        return [rule for rule in RULE_IDS if on[rule]]


# --- names -----------------------------------------------------------------------------------


def check_experiment_name(policy: Policy, name: str) -> None:
    rule = policy.experiment_name
    if rule is not None and not rule.pattern.fullmatch(name or ""):
        raise errors.PolicyViolation(
            errors.EXPERIMENT_NAME_REJECTED.format(
                value=errors.preview(name), pattern=rule.pattern.pattern, example=rule.example
            ),
            rule="experiment-name",
        )


def check_registered_model_name(policy: Policy, name: str) -> None:
    rule = policy.registered_model_name
    if rule is not None and not rule.pattern.fullmatch(name or ""):
        raise errors.PolicyViolation(
            errors.REGISTERED_MODEL_NAME_REJECTED.format(
                value=errors.preview(name), pattern=rule.pattern.pattern, example=rule.example
            ),
            rule="registered-model-name",
        )


# --- tags ------------------------------------------------------------------------------------


#: MLflow's tag on a run that autologging created (``mlflow.utils.mlflow_tags.MLFLOW_AUTOLOGGING``);
#: its value is the integration's flavor, ``hyperopt`` for :mod:`mlflow_team.hyperopt`.
AUTOLOGGING_TAG = "mlflow.autologging"
HYPEROPT_AUTOLOGGER = "hyperopt"


def experiment_text(experiment_id: str, experiment_name: str | None = None) -> str:
    """How a message names an experiment: ``'vision/resnet' (id '7')``, or ``'7'`` without a name."""
    if experiment_name is None:
        return repr(str(experiment_id))
    return f"{errors.preview(experiment_name)} (id {str(experiment_id)!r})"


def missing_required_tags(policy: Policy, tags: Mapping[str, str]) -> list[str]:
    """The required tags ``tags`` lacks that no default fills in (a run with any is refused)."""
    return [key for key in policy.required_tags if key not in tags and key not in policy.tag_defaults]


def fill_required_tags(
    policy: Policy, experiment_id: str, tags: Mapping[str, str], experiment_name: str | None = None
) -> dict[str, str]:
    """The tags a new run must add: policy defaults for missing required tags.

    Raises when a required tag is missing and has no default; the message names the experiment
    by ``experiment_name`` too when the caller knows it, and, for a run an autologger created,
    says how to give that autologger the tags.
    """
    missing = missing_required_tags(policy, tags)
    if missing:
        example = {key: "..." for key in missing}
        experiment = experiment_text(experiment_id, experiment_name)
        autologger = tags.get(AUTOLOGGING_TAG)
        if not autologger:
            message = errors.REQUIRED_TAGS_MISSING.format(experiment=experiment, missing=missing, example=example)
        else:
            if autologger == HYPEROPT_AUTOLOGGER:
                call = errors.AUTOLOG_CALL_HYPEROPT.format(example=example)
            else:
                call = errors.AUTOLOG_CALL_MLFLOW.format(example=example, flavor=autologger)
            message = errors.REQUIRED_TAGS_MISSING_AUTOLOGGED.format(
                experiment=experiment, autologger=errors.preview(autologger, 40), missing=missing, call=call
            )
        raise errors.PolicyViolation(message, rule="required-tags")
    return {
        key: policy.tag_defaults[key] for key in policy.required_tags if key not in tags and key in policy.tag_defaults
    }


# --- tag writes: one rule for every create, set and delete of a tag --------------------------


#: The kinds of MLflow entity whose tags the policy decides, as messages name them.
RUN, EXPERIMENT, REGISTERED_MODEL, MODEL_VERSION = "run", "experiment", "registered model", "model version"
TAG_ENTITIES = (RUN, EXPERIMENT, REGISTERED_MODEL, MODEL_VERSION)
#: What a tag write does: tags given when the entity is created, set (or changed) later, deleted.
CREATE, SET, DELETE = "create", "set", "delete"
TAG_ACTIONS = (CREATE, SET, DELETE)
#: The author tags the store stamps on each kind of entity when it creates one (identity on).
#: MLflow's client sends ``mlflow.user`` with every new run, so a run gets all three.
STAMPED_ON_CREATE = {RUN: AUTHOR_TAGS, EXPERIMENT: (), REGISTERED_MODEL: (), MODEL_VERSION: STAMPED_TAGS}

# How a refusal names what the write is on ({0}, {1}: the ids the write gives) and the call that
# does the same with a key of the client's own ({ids} as the client would pass them).
_TAG_TARGETS = {
    (RUN, CREATE): "a new run in experiment {0!r}",
    (RUN, SET): "run {0!r}",
    (EXPERIMENT, CREATE): "new experiment {0!r}",
    (EXPERIMENT, SET): "experiment {0!r}",
    (REGISTERED_MODEL, CREATE): "new registered model {0!r}",
    (REGISTERED_MODEL, SET): "registered model {0!r}",
    (MODEL_VERSION, CREATE): "a new version of registered model {0!r}",
    (MODEL_VERSION, SET): "version {1!r} of registered model {0!r}",
}
_TAG_CALLS = {
    (RUN, CREATE): "mlflow.start_run(experiment_id={ids}, tags={{{key!r}: {value!r}}})",
    (RUN, SET): "MlflowClient().set_tag({ids}, {key!r}, {value!r})",
    (RUN, DELETE): "MlflowClient().delete_tag({ids}, {key!r})",
    (EXPERIMENT, CREATE): "MlflowClient().create_experiment({ids}, tags={{{key!r}: {value!r}}})",
    (EXPERIMENT, SET): "MlflowClient().set_experiment_tag({ids}, {key!r}, {value!r})",
    (EXPERIMENT, DELETE): "MlflowClient().delete_experiment_tag({ids}, {key!r})",
    (REGISTERED_MODEL, CREATE): "MlflowClient().create_registered_model({ids}, tags={{{key!r}: {value!r}}})",
    (REGISTERED_MODEL, SET): "MlflowClient().set_registered_model_tag({ids}, {key!r}, {value!r})",
    (REGISTERED_MODEL, DELETE): "MlflowClient().delete_registered_model_tag({ids}, {key!r})",
    (MODEL_VERSION, CREATE): "MlflowClient().create_model_version({ids}, source, tags={{{key!r}: {value!r}}})",
    (MODEL_VERSION, SET): "MlflowClient().set_model_version_tag({ids}, {key!r}, {value!r})",
    (MODEL_VERSION, DELETE): "MlflowClient().delete_model_version_tag({ids}, {key!r})",
}
# The key of the client's own that a refusal suggests instead.
_OWN_KEY = {"identity": ("reviewer", "bob@example.com"), "reserved-tags": ("note", "...")}


@dataclass(frozen=True)
class TagWrite:
    """A client's write of tags, as plain values.

    ``ids`` name what the write is on as a client names it: ``(run_id,)``, ``(experiment_id,)``,
    ``(model name,)``, ``(model name, version)``; for a create, where the new entity goes:
    ``(experiment_id,)`` for a run, ``(name,)`` for an experiment, a registered model, and the
    registered model of a new version. ``tags`` are ``(key, value)`` pairs; a delete's value is None.
    """

    entity: str
    action: str
    ids: tuple[str, ...]
    tags: tuple[tuple[str, str | None], ...]

    def __post_init__(self) -> None:
        if self.entity not in TAG_ENTITIES or self.action not in TAG_ACTIONS:
            raise ValueError(f"unknown tag write: {self.entity!r} {self.action!r}")

    def on(self) -> str:
        """``run 'abc'``, ``version '2' of registered model 'taxi'``, ``new experiment 'a/b'``."""
        action = CREATE if self.action == CREATE else SET
        return _TAG_TARGETS[(self.entity, action)].format(*self.ids)

    def fix(self, key: str, value: str) -> str:
        """The same call with a key of the client's own, for example ``set_tag('abc', 'note', '...')``."""
        ids = ", ".join(repr(str(i)) for i in self.ids)
        return _TAG_CALLS[(self.entity, self.action)].format(ids=ids, key=key, value=value)


def tag_write(
    entity: str, action: str, ids: Sequence[object], tags: Iterable[tuple[str, str | None]] | Mapping[str, str | None]
) -> TagWrite:
    """A :class:`TagWrite` from what a store method got (ids as strings, tags as pairs)."""
    pairs = tags.items() if isinstance(tags, Mapping) else tags
    return TagWrite(entity, action, tuple(str(i) for i in ids), tuple((k, v) for k, v in pairs))


def decide_tag_write(policy: Policy, write: TagWrite, stamp: Stamp | None = None) -> dict[str, str | None]:
    """Every create, set and delete of tags on a run, experiment, registered model or model
    version: the tags the store writes, or a refusal. Pure: the store gives the plain values.

    In order, for each tag:

    - **author tags** (``mlflow.user``, ``team.author``, ``team.author_verified``, identity on): the
      store's alone. Creating a run or model version, ``stamp`` is the author the store stamps: a
      client's author tag that equals it is kept, a different ``mlflow.user`` is overwritten (MLflow's
      client always sends one), a different ``team.author``/``team.author_verified`` is a forgery,
      refused under ``reserved-tags`` and overwritten otherwise. Anything else (setting, deleting,
      other entities, no stamp) is refused ``[rule: identity]``.
    - **reserved tags** (``reserved-tags``: the stamped tags and ``extra``): refused on every entity
      and action, except the stamp itself.
    - **required tags** of runs cannot be deleted; **lossless values**: a run tag's value must fit.

    Returns ``write``'s tags as a dict; for a create with a stamp, with the author stamped on them.
    """
    if policy.identity is None:
        stamp = None
    stamped = STAMPED_ON_CREATE[write.entity] if write.action == CREATE and stamp is not None else ()
    stamp_tags = stamp.tags() if stamped and stamp is not None else {}
    decided: dict[str, str | None] = {}
    for key, value in write.tags:
        if key in AUTHOR_TAGS and stamped:
            if key in STAMPED_TAGS and value != stamp_tags[key] and key in policy.reserved_tags:
                _refuse(write, key, value, "reserved-tags", list(policy.reserved_tags))
            decided[key] = stamp_tags[key]
            continue
        if policy.identity is not None and key in AUTHOR_TAGS:
            _refuse(write, key, value, "identity", list(AUTHOR_TAGS))
        if key in policy.reserved_tags:
            _refuse(write, key, value, "reserved-tags", list(policy.reserved_tags))
        if write.entity == RUN and write.action == DELETE and key in policy.required_tags:
            raise errors.PolicyViolation(
                errors.REQUIRED_TAG_DELETE.format(key=key, run_id=write.ids[0], required=list(policy.required_tags)),
                rule="required-tags",
            )
        if write.entity == RUN and write.action != DELETE and policy.lossless_values:
            _check_length("Tag", key, None if value is None else str(value), _limits()[1])
        decided[key] = value
    decided.update((key, stamp_tags[key]) for key in stamped)
    return decided


def _refuse(write: TagWrite, key: str, value: str | None, rule: str, tags: list[str]) -> None:
    change = "deleted" if write.action == DELETE else f"value {errors.preview(value)}"
    own_key, own_value = _OWN_KEY[rule]
    template = errors.AUTHOR_TAG_REJECTED if rule == "identity" else errors.RESERVED_TAG_REJECTED
    message = template.format(key=key, change=change, on=write.on(), tags=tags, fix=write.fix(own_key, own_value))
    raise errors.ReservedTag(message, rule=rule)


# --- author identity -------------------------------------------------------------------------


#: The author stamped when the server has no login, no signature and no claim to go on.
UNKNOWN_AUTHOR = "unknown"


def unsigned_stamp(policy: Policy, header_author: str | None, claimed: str | None) -> Stamp:
    """Server side, when neither MLflow's auth nor a signature named the author."""
    rule = policy.identity
    assert rule is not None
    if not rule.allow_unsigned:
        raise errors.IdentityRejected(
            errors.UNSIGNED_REJECTED.format(author=errors.preview(header_author or claimed))
        )
    if header_author:
        return Stamp(header_author, False, "header")
    if claimed:
        return Stamp(claimed, False, "client-claim")
    # A client that says nothing (stock MLflow registering a version, a REST call from another
    # language) is still served, as a stock server would; `allow-unsigned = false` refuses it.
    return Stamp(UNKNOWN_AUTHOR, False, "none")


# --- lossless values -------------------------------------------------------------------------


def _limits() -> tuple[int, int]:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

    return MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH


def _check_length(kind: str, key: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise errors.PolicyViolation(
            errors.VALUE_TOO_LONG.format(
                kind=kind,
                kind_lower=kind.lower(),
                key=key,
                value=errors.preview(value, 40),
                length=len(value),
                limit=limit,
                artifact=f"{kind.lower()}s/{key}.txt",
            ),
            rule="lossless-values",
        )


def check_params(policy: Policy, params: Iterable[tuple[str, str]]) -> None:
    if not policy.lossless_values:
        return
    param_limit, _ = _limits()
    for key, value in params:
        _check_length("Param", key, None if value is None else str(value), param_limit)


def _stored_float(value: float) -> float:
    # What MLflow's SQL store writes in place of +/-inf.
    return math.copysign(1.7976931348623157e308, value)


def check_metrics(policy: Policy, metrics: Sequence[tuple[str, float, int, int]]) -> None:
    """``metrics`` are ``(key, value, timestamp, step)``; NaN round-trips, so it is allowed."""
    if not policy.lossless_values:
        return
    for key, value, timestamp, step in metrics:
        if isinstance(value, (int, float)) and math.isinf(value):
            raise errors.PolicyViolation(
                errors.METRIC_NOT_FINITE.format(key=key, value=value, stored=_stored_float(value)),
                rule="lossless-values",
            )
        for field_name, number in (("step", step), ("timestamp", timestamp)):
            if isinstance(number, float) and not number.is_integer():
                raise errors.PolicyViolation(
                    errors.METRIC_NOT_INTEGRAL.format(
                        key=key,
                        field=field_name,
                        value=number,
                        stored=int(number),
                        example=round(number),
                    ),
                    rule="lossless-values",
                )


# --- deletions -------------------------------------------------------------------------------


def _versions_text(versions: Sequence[tuple[str, str]]) -> str:
    shown = ", ".join(f"{name!r} v{version}" for name, version in versions[:5])
    more = len(versions) - 5
    return shown + (f" and {more} more" if more > 0 else "")


def check_run_delete(policy: Policy, run_id: str, versions: Sequence[tuple[str, str]]) -> None:
    """``versions`` are the live ``(model name, version)`` pairs built from the run."""
    if policy.protected_deletions and versions:
        name, version = versions[0]
        raise errors.ProtectedResource(
            errors.RUN_DELETE_PROTECTED.format(
                run_id=run_id, versions=_versions_text(versions), name=name, version=version
            )
        )


def check_experiment_delete(
    policy: Policy, experiment_id: str, versions: Sequence[tuple[str, str]]
) -> None:
    if policy.protected_deletions and versions:
        name, version = versions[0]
        raise errors.ProtectedResource(
            errors.EXPERIMENT_DELETE_PROTECTED.format(
                experiment_id=str(experiment_id),
                versions=_versions_text(versions),
                name=name,
                version=version,
            )
        )


def check_logged_model_delete(
    policy: Policy, model_id: str, versions: Sequence[tuple[str, str]]
) -> None:
    if policy.protected_deletions and versions:
        name, version = versions[0]
        raise errors.ProtectedResource(
            errors.LOGGED_MODEL_DELETE_PROTECTED.format(
                model_id=model_id, versions=_versions_text(versions), name=name, version=version
            )
        )


def check_model_version_delete(
    policy: Policy, name: str, version: str, aliases: Sequence[str]
) -> None:
    if policy.protected_deletions and aliases:
        raise errors.ProtectedResource(
            errors.MODEL_VERSION_DELETE_PROTECTED.format(
                name=name, version=str(version), aliases=list(aliases), alias=aliases[0]
            )
        )


def check_registered_model_delete(policy: Policy, name: str, aliases: Sequence[str]) -> None:
    if policy.protected_deletions and aliases:
        raise errors.ProtectedResource(
            errors.REGISTERED_MODEL_DELETE_PROTECTED.format(
                name=name, aliases=list(aliases), alias=aliases[0]
            )
        )


def check_version_source_run(policy: Policy, name: str, run_id: str, run_deleted: bool) -> None:
    if policy.protected_deletions and run_deleted:
        raise errors.ProtectedResource(
            errors.VERSION_FROM_DELETED_RUN.format(name=name, run_id=run_id)
        )
