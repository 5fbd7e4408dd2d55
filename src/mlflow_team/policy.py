"""The team policy: a plain description of the rules and pure functions that apply them.

Nothing here touches a database or MLflow's server: each check takes plain values and either
returns (the request is allowed, possibly with defaults filled in) or raises a
:class:`~mlflow_team.errors.PolicyViolation` whose message follows ``errors``' templates.
Every rule is off unless the policy file turns it on.
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
    """What the team enforces. ``Policy()`` rejects nothing."""

    experiment_name: NameRule | None = None
    registered_model_name: NameRule | None = None
    required_tags: tuple[str, ...] = ()
    tag_defaults: Mapping[str, str] = field(default_factory=dict)
    protected_deletions: bool = False
    lossless_values: bool = False
    reserved_tags: tuple[str, ...] = ()
    identity: IdentityRule | None = field(default_factory=IdentityRule)
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
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


def check_tag_delete(policy: Policy, run_id: str, key: str) -> None:
    check_author_tag_write(policy, key, None)
    if key in policy.required_tags:
        raise errors.PolicyViolation(
            errors.REQUIRED_TAG_DELETE.format(
                key=key, run_id=run_id, required=list(policy.required_tags)
            ),
            rule="required-tags",
        )
    check_client_tag_write(policy, key, None)


def check_client_tag_write(policy: Policy, key: str, value: str | None) -> None:
    """A client sets, changes or deletes ``key``: refuse it when the store owns that tag."""
    if key in policy.reserved_tags:
        raise errors.ReservedTag(
            errors.RESERVED_TAG_REJECTED.format(
                key=key, value=errors.preview(value), reserved=list(policy.reserved_tags)
            )
        )


# --- author identity -------------------------------------------------------------------------


def check_author_tag_write(policy: Policy, key: str, value: str | None) -> None:
    """A client sets or deletes a tag after creation: the author tags are the store's."""
    if policy.identity is not None and key in AUTHOR_TAGS:
        raise errors.ReservedTag(
            errors.AUTHOR_TAG_REJECTED.format(
                key=key, value=errors.preview(value), tags=list(AUTHOR_TAGS)
            ),
            rule="identity",
        )


def stamp_new_tags(policy: Policy, stamp: Stamp | None, tags: Mapping[str, str]) -> dict[str, str]:
    """The tags of a new run or version once the author is stamped on them.

    A client's ``mlflow.user`` never wins over the stamp. A client's ``team.author`` or
    ``team.author_verified`` that differs from the stamp is a forgery attempt: refused while
    ``reserved-tags`` is on, overwritten otherwise.
    """
    if stamp is None:
        return dict(tags)
    stamped = stamp.tags()
    for key in STAMPED_TAGS:
        if key in tags and tags[key] != stamped[key]:
            check_client_tag_write(policy, key, tags[key])
    return {**tags, **stamped}


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


def check_tags(policy: Policy, tags: Iterable[tuple[str, str]]) -> None:
    """Run tags written by a client: reserved keys and, with lossless-values, their length."""
    _, tag_limit = _limits()
    for key, value in tags:
        check_author_tag_write(policy, key, value)
        check_client_tag_write(policy, key, value)
        if policy.lossless_values:
            _check_length("Tag", key, None if value is None else str(value), tag_limit)


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
