"""Policy files: where they come from and every way they can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_team import config, errors
from tests.conftest import EVERY_RULE_TOML


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_without_a_file_the_safe_rules_are_on():
    """What the README promises without any set-up: no deleting what a registered model depends
    on, no silently changed values, stamped authors."""
    policy = config.load_policy()
    assert policy.enabled_rules() == ["protected-deletions", "lossless-values", "identity"]
    assert policy.source.startswith("built-in defaults")


def test_a_file_can_turn_the_safe_rules_off(tmp_path):
    (tmp_path / "mlflow-team.toml").write_text(
        "[protected-deletions]\nenabled = false\n[lossless-values]\nenabled = false\n"
    )
    assert config.load_policy().enabled_rules() == ["identity"]


def test_file_in_the_working_directory_is_used(tmp_path):
    (tmp_path / "mlflow-team.toml").write_text("[lossless-values]\nenabled = false\n")
    policy = config.load_policy()
    assert policy.enabled_rules() == ["protected-deletions", "identity"]
    assert policy.source == str(tmp_path / "mlflow-team.toml")


def test_env_var_wins_over_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "mlflow-team.toml").write_text("[lossless-values]\nenabled = false\n")
    other = tmp_path / "other.toml"
    other.write_text("[protected-deletions]\nenabled = false\n")
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(other))
    assert config.load_policy().enabled_rules() == ["lossless-values", "identity"]


def test_env_var_naming_a_missing_file_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(tmp_path / "nope.toml"))
    with pytest.raises(errors.PolicyFileError, match=r"MLFLOW_TEAM_POLICY='.*nope.toml' names a file that does not exist"):
        config.load_policy()


def test_every_rule_file_parses(tmp_path):
    policy = config.load_policy_file(write(tmp_path, EVERY_RULE_TOML))
    assert policy.required_tags == ("team.project", "team.name")
    assert policy.tag_defaults == {"team.name": "vision"}
    assert policy.reserved_tags == ("team.author", "team.author_verified")


def test_enabled_false_switches_a_rule_off(tmp_path):
    policy = config.load_policy_file(
        write(tmp_path, "[lossless-values]\nenabled = false\n[identity]\nenabled = false\n"
                        "[protected-deletions]\nenabled = false\n")
    )
    assert policy.enabled_rules() == []


def test_reserved_tags_take_extra_keys(tmp_path):
    policy = config.load_policy_file(write(tmp_path, '[reserved-tags]\nextra = ["team.cost-center"]\n'))
    assert "team.cost-center" in policy.reserved_tags


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[experiment-name\n", r"is not valid TOML"),
        ("[experiment_name]\n", r"unknown rule \[experiment_name\]\. Known rules: experiment-name"),
        ("[lossless-values]\nstrict = true\n", r"unknown key 'strict' in \[lossless-values\]"),
        ("[lossless-values]\nenabled = 'yes'\n", r"\[lossless-values\] enabled = 'yes' must be true or false"),
        ("lossless-values = true\n", r"lossless-values = True must be a table"),
        (
            "[experiment-name]\npattern = '^[a-z'\nexample = 'a'\n",
            r"\[experiment-name\] pattern = '\^\[a-z' is not a valid regular expression",
        ),
        ("[experiment-name]\npattern = '^a$'\n", r"\[experiment-name\] needs 'example'"),
        (
            "[experiment-name]\npattern = '^[a-z]+/[a-z]+$'\nexample = 'Nope'\n",
            r"example = 'Nope' does not match its own pattern",
        ),
        ("[required-tags]\ntags = 'team.name'\n", r"\[required-tags\] tags = 'team.name' must be a list of tag keys"),
        ("[required-tags]\ndefaults = { a = 1 }\n", r"\[required-tags\] defaults = \{'a': 1\} must be a table"),
        (
            "[required-tags]\ntags = ['team.author']\n[reserved-tags]\n",
            r"\[required-tags\] lists \['team.author'\], which \[reserved-tags\] forbids",
        ),
    ],
)
def test_invalid_policy_file_names_file_key_and_value(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(errors.PolicyFileError, match=expected) as info:
        config.load_policy_file(path)
    assert info.value.message.startswith(f"Policy file {path}: ")


def test_missing_policy_file_is_reported(tmp_path):
    with pytest.raises(errors.PolicyFileError, match=r"does not exist"):
        config.load_policy_file(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", ["MLFLOW_TEAM_SQLITE_BUSY_TIMEOUT_MS", "MLFLOW_TEAM_LOCK_RETRIES"])
def test_bad_numeric_settings_fail_naming_the_variable(monkeypatch, name):
    monkeypatch.setenv(name, "soon")
    with pytest.raises(errors.TeamStoreConfigError, match=rf"{name}='soon' was rejected: it must be a whole number"):
        config.sqlite_busy_timeout_ms() if "BUSY" in name else config.lock_retries()


# --- files that look like the policy file but are not read --------------------------------------


@pytest.mark.parametrize(
    "name",
    ["mlflow_team.toml", "mlflow-team.yaml", "mlflow-team.yml", ".mlflow-team.toml", "mlflow-team.toml.txt",
     "MLflow-Team.toml", "mlflowteam.toml", "mlflow-team-policy.toml", "mlflow-team.json"],
)
def test_names_that_look_like_the_policy_file_are_near_misses(name):
    assert config.is_near_miss(name)


@pytest.mark.parametrize(
    "name", ["mlflow-team.toml", "mlflow-team.db", "mlflow.db", "pyproject.toml", "mlflow-team-demo", "team.toml"]
)
def test_the_policy_file_itself_and_unrelated_files_are_not_near_misses(name):
    assert not config.is_near_miss(name)


def near_miss_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mlflow_team.config"]


def test_a_near_miss_in_the_working_directory_is_warned_about_once_naming_what_is_read(tmp_path, caplog):
    (tmp_path / "mlflow_team.toml").write_text("[lossless-values]\n")
    (tmp_path / "mlflow-team.yaml").write_text("lossless-values: {}\n")
    with caplog.at_level("WARNING", logger="mlflow_team.config"):
        assert config.load_policy().source.startswith("built-in defaults")
        config.load_policy()  # a second store in the same process: no second warning
    assert near_miss_warnings(caplog) == [
        f"mlflow-team: The file '{name}' in {tmp_path} looks like a policy file but is not read: mlflow-team reads "
        "'mlflow-team.toml' in the working directory, or the file MLFLOW_TEAM_POLICY names, and the policy in force "
        f"comes from {config.DEFAULT_SOURCE}. Rename it to mlflow-team.toml (the policy is TOML), "
        f"or point MLFLOW_TEAM_POLICY at it, for example: export MLFLOW_TEAM_POLICY={tmp_path / name}"
        for name in ("mlflow-team.yaml", "mlflow_team.toml")
    ]


def test_a_near_miss_beside_the_policy_file_names_the_file_that_is_read(tmp_path, caplog):
    (tmp_path / "mlflow-team.toml").write_text("[protected-deletions]\n")
    (tmp_path / ".mlflow-team.toml").write_text("[lossless-values]\n")
    with caplog.at_level("WARNING", logger="mlflow_team.config"):
        config.load_policy()
    [message] = near_miss_warnings(caplog)
    assert f"The file '.mlflow-team.toml' in {tmp_path} looks like a policy file but is not read" in message
    assert f"the policy in force comes from {tmp_path / 'mlflow-team.toml'}." in message


def test_no_near_miss_warning_when_mlflow_team_policy_points_at_the_policy(tmp_path, monkeypatch, caplog):
    (tmp_path / "mlflow_team.toml").write_text("[lossless-values]\n")
    chosen = tmp_path / "chosen.toml"
    chosen.write_text("[protected-deletions]\n")
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(chosen))
    with caplog.at_level("WARNING", logger="mlflow_team.config"):
        config.load_policy()
    assert near_miss_warnings(caplog) == []


def test_pattern_errors_quote_the_pattern_as_written_in_the_file(tmp_path):
    path = write(tmp_path, "[registered-model-name]\npattern = '^[a-z]+\\.[a-z]+$'\nexample = 'Nope'\n")
    with pytest.raises(errors.PolicyFileError, match=r"does not match its own pattern") as info:
        config.load_policy_file(path)
    assert info.value.message.endswith(
        "[registered-model-name] example = 'Nope' does not match its own pattern '^[a-z]+\\.[a-z]+$'. "
        "Give an example name that the pattern accepts."
    )
    path = write(tmp_path, "[experiment-name]\npattern = '\\.(['\nexample = 'a'\n")
    with pytest.raises(errors.PolicyFileError, match=r"is not a valid regular expression") as info:
        config.load_policy_file(path)
    assert "[experiment-name] pattern = '\\.([' is not a valid regular expression" in info.value.message
