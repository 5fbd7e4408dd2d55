"""The policy's rule functions, one rejection message each (every template in errors.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from mlflow_team import errors, policy
from mlflow_team.policy import Policy


def run_tags(*pairs):
    """Tags a client sets on run 'r1' later (set_tag, log_batch)."""
    return policy.tag_write(policy.RUN, policy.SET, ["r1"], pairs)


def test_default_policy_rejects_nothing_but_author_tag_writes():
    none = Policy()
    assert none.enabled_rules() == ["identity"]
    policy.check_experiment_name(none, "Anything Goes 1")
    policy.check_registered_model_name(none, "whatever")
    assert policy.fill_required_tags(none, "0", {}) == {}
    policy.decide_tag_write(none, run_tags(("x", "y" * 10_000)))
    with pytest.raises(errors.ReservedTag, match=r"\[rule: identity\]"):
        policy.decide_tag_write(none, run_tags(("team.author", "me")))
    policy.check_params(none, [("p", "v" * 10_000)])
    policy.check_metrics(none, [("m", math.inf, 0, 0.5)])
    policy.check_run_delete(none, "r", [("m", "1")])
    policy.check_model_version_delete(none, "m", "1", ["champion"])


def test_every_rule_is_listed_when_on(every_rule):
    assert every_rule.enabled_rules() == list(policy.RULE_IDS)


def test_bad_experiment_name_names_value_pattern_example_and_rule(every_rule):
    with pytest.raises(errors.PolicyViolation, match=r"Experiment name 'test1' was rejected") as info:
        policy.check_experiment_name(every_rule, "test1")
    message = info.value.message
    assert "^[a-z0-9-]+/[a-z0-9-]+$" in message
    assert "mlflow.set_experiment('vision/resnet-ablation')" in message
    assert message.endswith("[rule: experiment-name]")
    assert info.value.rule == "experiment-name"
    assert info.value.get_http_status_code() == 400


def test_good_experiment_name_passes(every_rule):
    policy.check_experiment_name(every_rule, "vision/resnet-ablation")


def test_bad_registered_model_name_is_rejected_with_example(every_rule):
    with pytest.raises(
        errors.PolicyViolation, match=r"Registered model name 'MyModel' was rejected.*'vision.resnet'"
    ) as info:
        policy.check_registered_model_name(every_rule, "MyModel")
    assert info.value.message.endswith("[rule: registered-model-name]")


def test_long_names_are_shortened_in_messages(every_rule):
    with pytest.raises(errors.PolicyViolation, match=r"Experiment name 'xxxx.*\.\.\.' was rejected"):
        policy.check_experiment_name(every_rule, "x" * 500)


def test_required_tag_defaults_are_filled(every_rule):
    added = policy.fill_required_tags(every_rule, "1", {"team.project": "resnet"})
    assert added == {"team.name": "vision"}


def test_client_value_of_a_defaulted_tag_wins(every_rule):
    added = policy.fill_required_tags(every_rule, "1", {"team.project": "p", "team.name": "nlp"})
    assert added == {}


def test_missing_required_tag_without_default_is_rejected(every_rule):
    with pytest.raises(
        errors.PolicyViolation,
        match=r"Run in experiment '7' was rejected: runs must carry the tag\(s\) \['team.project'\]",
    ) as info:
        policy.fill_required_tags(every_rule, "7", {})
    assert "mlflow.start_run(tags={'team.project': '...'})" in info.value.message
    assert info.value.rule == "required-tags"


def test_deleting_a_required_tag_is_rejected(every_rule):
    with pytest.raises(errors.PolicyViolation, match=r"Deleting tag 'team.project' from run 'r1'"):
        policy.decide_tag_write(every_rule, policy.tag_write(policy.RUN, policy.DELETE, ["r1"], [("team.project", None)]))


def test_reserved_tag_write_is_forbidden_with_403(every_rule):
    # With identity stamping off, reserved-tags alone still guards the stamped tags.
    no_identity = dataclasses.replace(every_rule, identity=None)
    with pytest.raises(errors.ReservedTag, match=r"Tag 'team.author' \(value 'mallory'\) on run 'r1' was rejected") as info:
        policy.decide_tag_write(no_identity, run_tags(("team.author", "mallory")))
    assert info.value.get_http_status_code() == 403
    assert info.value.message.endswith("[rule: reserved-tags]")


def test_author_tag_write_is_forbidden_while_identity_is_on(every_rule):
    for key in ("mlflow.user", "team.author", "team.author_verified"):
        with pytest.raises(errors.ReservedTag, match=rf"Tag '{key}' \(value 'mallory'\) on run 'r1' was rejected") as info:
            policy.decide_tag_write(every_rule, run_tags((key, "mallory")))
        assert info.value.get_http_status_code() == 403
        assert info.value.message.endswith("[rule: identity]")


def test_reserved_tag_delete_is_forbidden(every_rule):
    with pytest.raises(errors.ReservedTag, match=r"Tag 'team.author_verified' \(deleted\) on run 'r1'"):
        policy.decide_tag_write(
            every_rule, policy.tag_write(policy.RUN, policy.DELETE, ["r1"], [("team.author_verified", None)])
        )


def test_param_over_the_limit_is_rejected_not_truncated(every_rule):
    with pytest.raises(
        errors.PolicyViolation,
        match=r"Param 'config' value 'aaaa.*' \(6001 characters\) was rejected: param values are "
        r"limited to 6000 characters",
    ) as info:
        policy.check_params(every_rule, [("config", "a" * 6001)])
    assert "mlflow.log_text(value, 'params/config.txt')" in info.value.message
    assert info.value.rule == "lossless-values"


def test_param_at_the_limit_passes(every_rule):
    policy.check_params(every_rule, [("config", "a" * 6000)])


def test_tag_over_the_limit_is_rejected(every_rule):
    with pytest.raises(errors.PolicyViolation, match=r"Tag 'notes' value .* \(8001 characters\)"):
        policy.decide_tag_write(every_rule, run_tags(("notes", "b" * 8001)))


@pytest.mark.parametrize("value", [float("1e309"), -math.inf])
def test_infinite_metric_is_rejected(every_rule, value):
    with pytest.raises(errors.PolicyViolation, match=r"Metric 'loss' value -?inf was rejected: metric values must be finite"):
        policy.check_metrics(every_rule, [("loss", value, 0, 0)])


def test_nan_metric_round_trips_so_it_is_allowed(every_rule):
    policy.check_metrics(every_rule, [("loss", math.nan, 0, 0)])


def test_fractional_step_is_rejected_with_what_stock_would_store(every_rule):
    with pytest.raises(
        errors.PolicyViolation,
        match=r"Metric 'loss' step 2.5 was rejected: metric steps must be whole numbers "
        r"\(stock MLflow would store 2\). Pass an integer, for example step=2",
    ):
        policy.check_metrics(every_rule, [("loss", 1.0, 0, 2.5)])


def test_whole_float_step_passes(every_rule):
    policy.check_metrics(every_rule, [("loss", 1.0, 1000, 3.0)])


def test_run_backing_a_version_is_protected(every_rule):
    with pytest.raises(
        errors.ProtectedResource,
        match=r"Run 'abc' cannot be deleted: it backs the registered model version\(s\) "
        r"'vision.resnet' v2\. .*delete_model_version\('vision.resnet', '2'\)",
    ) as info:
        policy.check_run_delete(every_rule, "abc", [("vision.resnet", "2")])
    assert info.value.get_http_status_code() == 403


def test_experiment_backing_a_version_is_protected(every_rule):
    versions = [("m.a", str(v)) for v in range(1, 8)]
    with pytest.raises(errors.ProtectedResource, match=r"Experiment '3' cannot be deleted: .* and 2 more"):
        policy.check_experiment_delete(every_rule, "3", versions)


def test_logged_model_backing_a_version_is_protected(every_rule):
    with pytest.raises(errors.ProtectedResource, match=r"Logged model 'm-1' cannot be deleted"):
        policy.check_logged_model_delete(every_rule, "m-1", [("m.a", "1")])


def test_version_holding_an_alias_is_protected(every_rule):
    with pytest.raises(
        errors.ProtectedResource,
        match=r"Version '1' of registered model 'm.a' cannot be deleted: it holds the alias\(es\) "
        r"\['champion'\].*delete_registered_model_alias\('m.a', 'champion'\)",
    ):
        policy.check_model_version_delete(every_rule, "m.a", "1", ["champion"])


def test_registered_model_with_aliases_is_protected(every_rule):
    with pytest.raises(errors.ProtectedResource, match=r"Registered model 'm.a' cannot be deleted"):
        policy.check_registered_model_delete(every_rule, "m.a", ["champion"])


def test_version_from_a_deleted_run_is_rejected(every_rule):
    with pytest.raises(errors.ProtectedResource, match=r"from run 'r9' was rejected: that run is deleted"):
        policy.check_version_source_run(every_rule, "m.a", "r9", run_deleted=True)
    policy.check_version_source_run(every_rule, "m.a", "r9", run_deleted=False)


# --- required tags: the experiment by name, and the fix for a run an autologger created ----------


def test_a_required_tags_refusal_names_the_experiment_by_name_and_id(every_rule):
    with pytest.raises(
        errors.PolicyViolation,
        match=r"^Run in experiment 'vision/resnet' \(id '7'\) was rejected: runs must carry the tag\(s\) \['team.project'\]",
    ):
        policy.fill_required_tags(every_rule, "7", {}, experiment_name="vision/resnet")


def test_only_tags_without_a_default_make_a_run_refused(every_rule):
    assert policy.missing_required_tags(every_rule, {}) == ["team.project"]
    assert policy.missing_required_tags(every_rule, {"team.project": "p"}) == []


def test_a_run_hyperopt_autologging_created_is_told_to_pass_extra_tags_to_it(every_rule):
    with pytest.raises(errors.PolicyViolation, match=r"started by 'hyperopt' autologging, was rejected") as info:
        policy.fill_required_tags(every_rule, "7", {"mlflow.autologging": "hyperopt"}, experiment_name="vision/resnet")
    assert info.value.message == (
        "Run in experiment 'vision/resnet' (id '7'), started by 'hyperopt' autologging, was rejected: runs must "
        "carry the tag(s) ['team.project']. Give them to autologging, for example "
        "mlflow_team.hyperopt.autolog(extra_tags={'team.project': '...'}), or give them a default under "
        "[required-tags.defaults] in the policy file. [rule: required-tags]"
    )


def test_a_run_mlflow_autologging_created_is_told_to_pass_extra_tags_to_mlflow_autolog(every_rule):
    with pytest.raises(errors.PolicyViolation, match=r"started by 'sklearn' autologging") as info:
        policy.fill_required_tags(every_rule, "7", {"mlflow.autologging": "sklearn"})
    assert (
        "for example mlflow.autolog(extra_tags={'team.project': '...'}) (mlflow.sklearn.autolog takes extra_tags too)"
    ) in info.value.message
    assert info.value.message.startswith("Run in experiment '7', started by")


def test_the_autologging_tag_is_the_one_mlflow_and_the_hyperopt_integration_set():
    from mlflow.utils.mlflow_tags import MLFLOW_AUTOLOGGING

    from mlflow_team.hyperopt import FLAVOR_NAME, trial

    assert policy.AUTOLOGGING_TAG == MLFLOW_AUTOLOGGING == trial.TAG_AUTOLOGGING
    assert policy.HYPEROPT_AUTOLOGGER == FLAVOR_NAME


def test_a_name_rejection_shows_the_pattern_as_written(every_rule):
    with pytest.raises(errors.PolicyViolation, match=r"registered model names must match") as info:
        policy.check_registered_model_name(every_rule, "MyModel")
    assert "must match '^[a-z0-9-]+\\.[a-z0-9-]+$'. " in info.value.message  # one backslash, as in the file


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        (errors.VALUE_TOO_LONG, "lossless-values"), (errors.METRIC_NOT_FINITE, "lossless-values"),
        (errors.METRIC_NOT_INTEGRAL, "lossless-values"), (errors.RUN_DELETE_PROTECTED, "protected-deletions"),
        (errors.EXPERIMENT_DELETE_PROTECTED, "protected-deletions"),
        (errors.LOGGED_MODEL_DELETE_PROTECTED, "protected-deletions"),
        (errors.MODEL_VERSION_DELETE_PROTECTED, "protected-deletions"),
        (errors.REGISTERED_MODEL_DELETE_PROTECTED, "protected-deletions"),
        (errors.VERSION_FROM_DELETED_RUN, "protected-deletions"),
    ],
)
def test_a_refusal_by_a_default_rule_says_how_the_team_opts_out(template, rule):
    """Both rules are on without a policy file: every refusal says how to turn them off."""
    assert f"[{rule}] enabled = false in the policy" in " ".join(template.split())
    assert template.endswith(f"[rule: {rule}]")


# --- one rule for every tag write: runs, experiments, registered models, model versions ----------

ALICE = policy.Stamp("alice@example.com", True, "signature")
#: What each kind of write is on, as the stores give it: a new entity's parent or name, else its ids.
WRITES = [
    (policy.RUN, policy.CREATE, ["7"]), (policy.RUN, policy.SET, ["r1"]), (policy.RUN, policy.DELETE, ["r1"]),
    (policy.EXPERIMENT, policy.CREATE, ["vision/new"]), (policy.EXPERIMENT, policy.SET, ["7"]),
    (policy.EXPERIMENT, policy.DELETE, ["7"]),
    (policy.REGISTERED_MODEL, policy.CREATE, ["vision.taxi"]), (policy.REGISTERED_MODEL, policy.SET, ["vision.taxi"]),
    (policy.REGISTERED_MODEL, policy.DELETE, ["vision.taxi"]),
    (policy.MODEL_VERSION, policy.CREATE, ["vision.taxi"]), (policy.MODEL_VERSION, policy.SET, ["vision.taxi", "2"]),
    (policy.MODEL_VERSION, policy.DELETE, ["vision.taxi", "2"]),
]


def tag_write(entity, action, ids, key, value="mallory"):
    return policy.tag_write(entity, action, ids, [(key, None if action == policy.DELETE else value)])


@pytest.fixture
def reserved_extra():
    from mlflow_team.config import parse_policy

    return parse_policy({"reserved-tags": {"extra": ["team.cost-center"]}}, source="tests: reserved extra")


def test_every_kind_of_tag_write_is_covered():
    assert {(entity, action) for entity, action, _ in WRITES} == {
        (entity, action) for entity in policy.TAG_ENTITIES for action in policy.TAG_ACTIONS
    }


@pytest.mark.parametrize(("entity", "action", "ids"), WRITES)
@pytest.mark.parametrize("key", policy.AUTHOR_TAGS)
def test_an_author_tag_write_by_a_client_is_refused_on_every_entity(entity, action, ids, key):
    with pytest.raises(errors.ReservedTag, match=rf"^Tag '{key}' .* was rejected: the author tags") as info:
        policy.decide_tag_write(Policy(), tag_write(entity, action, ids, key))
    assert info.value.rule == "identity" and info.value.get_http_status_code() == 403


@pytest.mark.parametrize(("entity", "action", "ids"), WRITES)
def test_a_reserved_tag_write_is_refused_on_every_entity(reserved_extra, entity, action, ids):
    with pytest.raises(errors.ReservedTag, match=r"^Tag 'team.cost-center' .* \[rule: reserved-tags\]$") as info:
        policy.decide_tag_write(reserved_extra, tag_write(entity, action, ids, "team.cost-center"))
    assert info.value.get_http_status_code() == 403


@pytest.mark.parametrize(("entity", "action", "ids"), WRITES)
def test_a_tag_of_the_clients_own_is_written_as_given_on_every_entity(reserved_extra, entity, action, ids):
    write = tag_write(entity, action, ids, "note", "ok")
    assert policy.decide_tag_write(reserved_extra, write) == dict(write.tags)


@pytest.mark.parametrize(("entity", "action", "ids"), WRITES)
def test_without_identity_stamping_the_author_tags_are_ordinary_tags(entity, action, ids):
    write = tag_write(entity, action, ids, "mlflow.user", "root")
    assert policy.decide_tag_write(Policy(identity=None), write) == dict(write.tags)


@pytest.mark.parametrize(("entity", "action", "ids"), WRITES)
def test_without_identity_stamping_reserved_tags_still_keep_the_author_tags_from_clients(entity, action, ids):
    from mlflow_team.config import parse_policy

    reserved_only = parse_policy({"identity": {"enabled": False}, "reserved-tags": {}})
    with pytest.raises(errors.ReservedTag, match=r"^Tag 'team.author' .* \[rule: reserved-tags\]$"):
        policy.decide_tag_write(reserved_only, tag_write(entity, action, ids, "team.author"), ALICE)
    policy.decide_tag_write(reserved_only, tag_write(entity, action, ids, "mlflow.user"), ALICE)


@pytest.mark.parametrize(("entity", "action", "ids"), WRITES)
def test_every_refusal_names_the_target_and_a_call_that_works(reserved_extra, entity, action, ids):
    import ast

    with pytest.raises(errors.ReservedTag) as info:
        policy.decide_tag_write(reserved_extra, tag_write(entity, action, ids, "team.cost-center"))
    write = tag_write(entity, action, ids, "team.cost-center")
    assert f" on {write.on()} was rejected" in info.value.message
    fix = info.value.message.split("for example ", 1)[1].rsplit(". [rule", 1)[0]
    ast.parse(fix.replace("source", "'s'"))  # a call a user can paste
    assert "'note'" in fix and all(repr(i) in fix for i in ids)


def test_a_new_run_is_stamped_and_a_client_claim_of_mlflow_user_does_not_win():
    write = policy.tag_write(policy.RUN, policy.CREATE, ["7"], {"mlflow.user": "root", "model": "xgb"})
    assert policy.decide_tag_write(Policy(), write, ALICE) == {
        "mlflow.user": "alice@example.com", "model": "xgb",
        "team.author": "alice@example.com", "team.author_verified": "true",
    }


def test_a_new_model_version_gets_the_stamped_tags_and_keeps_a_matching_claim():
    write = policy.tag_write(policy.MODEL_VERSION, policy.CREATE, ["m"], {"team.author": "alice@example.com", "data": "jan"})
    assert policy.decide_tag_write(Policy(), write, ALICE) == {
        "team.author": "alice@example.com", "data": "jan", "team.author_verified": "true",
    }


@pytest.mark.parametrize("entity", [policy.RUN, policy.MODEL_VERSION])
def test_a_forged_author_at_creation_is_refused_with_reserved_tags_and_overwritten_without(every_rule, entity):
    write = policy.tag_write(entity, policy.CREATE, ["7"], {"team.author": "mallory"})
    with pytest.raises(errors.ReservedTag, match=r"^Tag 'team.author' \(value 'mallory'\) on a new .* \[rule: reserved-tags\]$"):
        policy.decide_tag_write(every_rule, write, ALICE)
    assert policy.decide_tag_write(Policy(), write, ALICE)["team.author"] == "alice@example.com"


@pytest.mark.parametrize("entity", [policy.EXPERIMENT, policy.REGISTERED_MODEL])
def test_entities_the_store_does_not_stamp_take_no_author_tags_even_with_a_stamp(entity):
    write = policy.tag_write(entity, policy.CREATE, ["vision.x"], {"team.author": "alice@example.com"})
    with pytest.raises(errors.ReservedTag, match=r"\[rule: identity\]"):
        policy.decide_tag_write(Policy(), write, ALICE)


def test_required_tags_and_lossless_values_are_rules_of_run_tags_only(every_rule):
    for entity, ids in ((policy.EXPERIMENT, ["7"]), (policy.REGISTERED_MODEL, ["m"]), (policy.MODEL_VERSION, ["m", "1"])):
        policy.decide_tag_write(every_rule, tag_write(entity, policy.DELETE, ids, "team.project"))
        policy.decide_tag_write(every_rule, tag_write(entity, policy.SET, ids, "notes", "b" * 8001))
    with pytest.raises(errors.PolicyViolation, match=r"\(8001 characters\) was rejected"):
        policy.decide_tag_write(every_rule, tag_write(policy.RUN, policy.CREATE, ["7"], "notes", "b" * 8001))


def test_an_unknown_kind_of_tag_write_is_a_programming_error():
    with pytest.raises(ValueError, match=r"unknown tag write: 'trace' 'set'"):
        policy.tag_write("trace", policy.SET, ["t"], [])


def test_the_author_tag_refusal_word_for_word():
    with pytest.raises(errors.ReservedTag) as info:
        policy.decide_tag_write(Policy(), tag_write(policy.MODEL_VERSION, policy.SET, ["vision.taxi", 2], "team.author"))
    assert info.value.message == errors.AUTHOR_TAG_REJECTED.format(
        key="team.author", change="value 'mallory'", on="version '2' of registered model 'vision.taxi'",
        tags=["mlflow.user", "team.author", "team.author_verified"],
        fix="MlflowClient().set_model_version_tag('vision.taxi', '2', 'reviewer', 'bob@example.com')",
    ) == (
        "Tag 'team.author' (value 'mallory') on version '2' of registered model 'vision.taxi' was rejected: the "
        "author tags ['mlflow.user', 'team.author', 'team.author_verified'] are stamped by the mlflow-team store "
        "from the request's identity when a run or model version is created, and clients cannot set, change or "
        "delete them on runs, experiments, registered models or model versions. Record other people under a key of "
        "your own, for example MlflowClient().set_model_version_tag('vision.taxi', '2', 'reviewer', "
        "'bob@example.com'). [rule: identity]"
    )


def test_the_reserved_tag_refusal_word_for_word(reserved_extra):
    with pytest.raises(errors.ReservedTag) as info:
        policy.decide_tag_write(reserved_extra, tag_write(policy.EXPERIMENT, policy.DELETE, ["7"], "team.cost-center"))
    assert info.value.message == (
        "Tag 'team.cost-center' (deleted) on experiment '7' was rejected: the tags ['team.author', "
        "'team.author_verified', 'team.cost-center'] are reserved by the team policy, written only by the "
        "mlflow-team store, and clients cannot set, change or delete them on runs, experiments, registered models "
        "or model versions. Use a key of your own, for example MlflowClient().delete_experiment_tag('7', 'note'). "
        "[rule: reserved-tags]"
    )
