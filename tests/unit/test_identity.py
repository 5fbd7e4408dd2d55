"""Author identity without a server: who the author is, the keyring, and direct-mode stamping."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from mlflow_team import config, errors, identity
from mlflow_team.identity import signing
from tests.conftest import EVERY_RULE_TOML, unique

KEY = "k" * 40


@pytest.fixture
def no_git_identity(monkeypatch, tmp_path):
    """Outside any repository, with empty global git config."""
    empty = tmp_path / "empty.gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    work = tmp_path / "nogit"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


# --- who is the author -----------------------------------------------------------------------


def test_author_comes_from_the_env_var_first(monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alexa@example.com")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    assert identity.author() == identity.Author("alexa@example.com", "MLFLOW_TEAM_AUTHOR")


def test_author_then_comes_from_the_repositorys_git_email(no_git_identity, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=no_git_identity, check=True)
    subprocess.run(["git", "config", "user.email", "repo@example.com"], cwd=no_git_identity, check=True)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "tracking-user")
    assert identity.author() == identity.Author("repo@example.com", "git config user.email")


def test_author_then_comes_from_the_tracking_username(no_git_identity, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "tracking-user")
    assert identity.author() == identity.Author("tracking-user", "MLFLOW_TRACKING_USERNAME")


def test_author_falls_back_to_user_at_host(no_git_identity):
    found = identity.author()
    assert found.source == "the operating system"
    assert "@" in found.name


def test_author_never_raises_even_without_a_working_directory(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    os.chdir(gone)
    gone.rmdir()
    try:
        assert "@" in identity.author().name
    finally:
        os.chdir(tmp_path)


def test_key_comes_from_env_or_file_and_never_shows(monkeypatch, tmp_path):
    assert identity.signing_key() is None
    key_file = tmp_path / "author.key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_KEY_FILE", str(key_file))
    assert identity.signing_key().secret == KEY.encode()
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR_KEY", "e" * 40)
    key = identity.signing_key()
    assert key.secret == b"e" * 40
    assert "eeee" not in repr(key)


# --- the [identity] policy table -------------------------------------------------------------


def write_policy(tmp_path: Path, identity_table: str, keyring: str | None = None) -> Path:
    if keyring is not None:
        (tmp_path / "keyring.toml").write_text(keyring)
    path = tmp_path / "mlflow-team.toml"
    path.write_text("[identity]\n" + identity_table)
    return path


def test_keyring_is_read_relative_to_the_policy_file(tmp_path):
    path = write_policy(tmp_path, 'keyring = "keyring.toml"\n', f'[keys]\n"alice@example.com" = "{KEY}"\n')
    rule = config.load_policy_file(path).identity
    assert rule.keyring == {"alice@example.com": KEY.encode()}
    assert rule.allow_unsigned is False  # a keyring means signatures are required by default
    assert KEY not in repr(config.load_policy_file(path))


def test_short_key_is_rejected_naming_the_author_not_the_key(tmp_path):
    path = write_policy(tmp_path, 'keyring = "keyring.toml"\n', '[keys]\n"alice@example.com" = "short-secret"\n')
    expected = r"keyring .*keyring.toml: the key of 'alice@example.com' must be a string of at least 32"
    with pytest.raises(errors.PolicyFileError, match=expected) as info:
        config.load_policy_file(path)
    assert "short-secret" not in info.value.message


def test_missing_keyring_is_rejected(tmp_path):
    path = write_policy(tmp_path, 'keyring = "nowhere.toml"\n')
    with pytest.raises(errors.PolicyFileError, match=r"nowhere.toml: does not exist"):
        config.load_policy_file(path)


def test_signatures_required_without_a_keyring_is_rejected(tmp_path):
    path = write_policy(tmp_path, "allow-unsigned = false\n")
    with pytest.raises(errors.PolicyFileError, match=r"allow-unsigned = false needs a keyring"):
        config.load_policy_file(path)


def test_verified_authors_are_not_required_by_default(tmp_path):
    assert config.load_policy_file(write_policy(tmp_path, "")).identity.require_verified is False
    assert config.default_policy().identity.require_verified is False


def test_require_verified_refuses_unsigned_with_or_without_a_keyring(tmp_path):
    """Without a keyring the server can still verify: MLflow's login (--app-name basic-auth)."""
    rule = config.load_policy_file(write_policy(tmp_path, "require-verified = true\n")).identity
    assert (rule.require_verified, rule.allow_unsigned) == (True, False)
    keyring = f'[keys]\n"alice@example.com" = "{KEY}"\n'
    path = write_policy(tmp_path, 'keyring = "keyring.toml"\nrequire-verified = true\n', keyring)
    rule = config.load_policy_file(path).identity
    assert (rule.require_verified, rule.allow_unsigned) == (True, False)


def test_require_verified_with_allow_unsigned_true_is_rejected_as_a_contradiction(tmp_path):
    path = write_policy(tmp_path, "require-verified = true\nallow-unsigned = true\n")
    with pytest.raises(errors.PolicyFileError, match=r"keep one of the two lines") as info:
        config.load_policy_file(path)
    assert info.value.message == f"Policy file {path}: {errors.POLICY_REQUIRE_VERIFIED_CONFLICT}"


def test_require_verified_must_be_true_or_false(tmp_path):
    path = write_policy(tmp_path, 'require-verified = "yes"\n')
    with pytest.raises(errors.PolicyFileError, match=r"\[identity\] require-verified = 'yes' must be true or false"):
        config.load_policy_file(path)


def test_require_verified_conflict_message():
    assert errors.POLICY_REQUIRE_VERIFIED_CONFLICT == (
        "[identity] require-verified = true refuses unsigned authors and allow-unsigned = true accepts "
        "them: keep one of the two lines, for example require-verified = true alone."
    )


def test_unverified_message_says_how_to_identify_on_a_server_with_a_keyring():
    assert errors.UNVERIFIED_REJECTED.format(author="'bob'", how=errors.UNVERIFIED_HOW_SIGN) == (
        "The request (author: 'bob') was rejected: this server accepts only verified authors ([identity] "
        "require-verified = true), and the request was neither signed nor logged in. Sign your requests with "
        "the personal key the server's keyring holds for you: pip install mlflow-team, then export "
        "MLFLOW_TRACKING_AUTH=team MLFLOW_TEAM_AUTHOR=<your name in the keyring> MLFLOW_TEAM_AUTHOR_KEY=<your key> "
        "(no key yet: `mlflow-team identity new-key` makes one for the admin to add). `mlflow-team identity "
        "--server URL` checks the set-up. [rule: identity]"
    )


def test_unverified_message_says_how_to_identify_with_a_login_both_or_neither():
    assert errors.UNVERIFIED_HOW_LOGIN == (
        "Log in: export MLFLOW_TRACKING_USERNAME=<your user> MLFLOW_TRACKING_PASSWORD=<your password>."
    )
    assert errors.UNVERIFIED_HOW_SIGN_OR_LOGIN == (
        "Log in (export MLFLOW_TRACKING_USERNAME=<your user> MLFLOW_TRACKING_PASSWORD=<your password>), or sign "
        "your requests with the personal key the server's keyring holds for you: pip install mlflow-team, then "
        "export MLFLOW_TRACKING_AUTH=team MLFLOW_TEAM_AUTHOR=<your name in the keyring> MLFLOW_TEAM_AUTHOR_KEY=<your key>."
    )
    assert errors.UNVERIFIED_HOW_NONE == (
        "This server has no way to verify anyone yet: its admin must add a keyring ([identity] keyring = "
        "'keyring.toml') or run it with --app-name basic-auth."
    )


def test_clock_skew_must_be_a_sane_number(tmp_path):
    path = write_policy(tmp_path, "max-clock-skew-seconds = 0\n")
    with pytest.raises(errors.PolicyFileError, match=r"max-clock-skew-seconds = 0 must be a whole number"):
        config.load_policy_file(path)


# --- signatures ------------------------------------------------------------------------------


def test_signature_covers_author_time_method_path_query_and_body():
    headers = signing.sign_headers(KEY.encode(), "alice@example.com", 1000, "POST", "/api/x", "a=1", b"{}")
    claim = signing.read_claim(headers)
    assert signing.matches(KEY.encode(), claim, "POST", "/api/x", "a=1")
    assert not signing.matches(KEY.encode(), claim, "POST", "/api/y", "a=1")
    assert not signing.matches(KEY.encode(), claim, "GET", "/api/x", "a=1")
    assert not signing.matches(KEY.encode(), claim, "POST", "/api/x", "a=2")
    assert not signing.matches(b"x" * 40, claim, "POST", "/api/x", "a=1")
    forged = signing.Claim("mallory@example.com", claim.timestamp, claim.digest, claim.signature)
    assert not signing.matches(KEY.encode(), forged, "POST", "/api/x", "a=1")
    assert claim.digest == signing.body_digest(b"{}") != signing.body_digest(b"{ }")


def test_non_ascii_author_survives_the_header():
    headers = signing.sign_headers(KEY.encode(), "zoë@example.com", 1, "GET", "/", "", None)
    headers[signing.AUTHOR_HEADER].encode("latin-1")
    assert signing.read_claim(headers).author == "zoë@example.com"


# --- direct mode: the tracking URI is a database ---------------------------------------------


@pytest.fixture
def team_uri(tmp_path, monkeypatch):
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alexa@example.com")
    return uri


def test_fluent_run_gets_the_author(team_uri):
    mlflow.set_tracking_uri(team_uri)
    with mlflow.start_run() as run:
        pass
    got = MlflowClient(team_uri).get_run(run.info.run_id)
    assert got.info.user_id == "alexa@example.com"
    assert (got.data.tags["mlflow.user"], got.data.tags["team.author"]) == ("alexa@example.com",) * 2
    assert got.data.tags["team.author_verified"] == "false"


def test_client_create_run_is_stamped_and_a_claimed_user_does_not_win(team_uri):
    client = MlflowClient(team_uri)
    run = client.create_run("0", tags={"mlflow.user": "root"})
    assert run.info.user_id == "alexa@example.com"
    assert run.data.tags["mlflow.user"] == "alexa@example.com"
    assert run.data.tags["team.author"] == "alexa@example.com"


def test_client_forging_team_author_is_refused_with_reserved_tags(team_uri, policy_file):
    client = MlflowClient(team_uri)
    experiment_id = client.create_experiment(unique("identity/forge"))
    with pytest.raises(MlflowException, match=r"Tag 'team.author' \(value 'mallory'\).*\[rule: reserved-tags\]"):
        client.create_run(experiment_id, tags={"team.author": "mallory", "team.project": "p"})
    assert client.search_runs([experiment_id]) == []


def test_client_forging_team_author_is_overwritten_without_reserved_tags(team_uri):
    run = MlflowClient(team_uri).create_run("0", tags={"team.author": "mallory", "team.author_verified": "true"})
    assert run.data.tags["team.author"] == "alexa@example.com"
    assert run.data.tags["team.author_verified"] == "false"


def test_stock_store_gets_author_tags_from_the_run_context(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alexa@example.com")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/stock.db")
    with mlflow.start_run() as run:
        pass
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert (tags["mlflow.user"], tags["team.author"]) == ("alexa@example.com",) * 2


def test_model_version_is_stamped_and_its_author_tags_are_the_stores(team_uri):
    client = MlflowClient(team_uri, registry_uri=team_uri)
    run = client.create_run("0")
    client.create_registered_model("taxi")
    version = client.create_model_version("taxi", f"runs:/{run.info.run_id}/m", run.info.run_id,
                                          tags={"team.author": "alexa@example.com", "data": "jan"})
    assert version.tags == {"data": "jan", "team.author": "alexa@example.com", "team.author_verified": "false"}
    with pytest.raises(MlflowException, match=r"Tag 'team.author'.*\[rule: identity\]"):
        client.set_model_version_tag("taxi", version.version, "team.author", "mallory")
    with pytest.raises(MlflowException, match=r"Tag 'team.author_verified'.*\[rule: identity\]"):
        client.delete_model_version_tag("taxi", version.version, "team.author_verified")
    assert client.get_model_version("taxi", version.version).tags["team.author"] == "alexa@example.com"


def test_author_tags_cannot_be_changed_later(team_uri):
    client = MlflowClient(team_uri)
    run_id = client.create_run("0").info.run_id
    for attempt in (
        lambda: client.set_tag(run_id, "mlflow.user", "mallory"),
        lambda: client.log_batch(run_id, tags=[RunTag("team.author", "mallory")]),
        lambda: client.delete_tag(run_id, "team.author"),
    ):
        with pytest.raises(MlflowException, match=r"\[rule: identity\]") as info:
            attempt()
        assert info.value.get_http_status_code() == 403
    assert client.get_run(run_id).data.tags["team.author"] == "alexa@example.com"


def test_identity_off_in_the_policy_stamps_nothing(team_uri, tmp_path):
    (tmp_path / "mlflow-team.toml").write_text("[identity]\nenabled = false\n")
    client = MlflowClient(team_uri)
    run = client.create_run("0", tags={"mlflow.user": "root"})
    assert run.data.tags["mlflow.user"] == "root"
    assert "team.author" not in run.data.tags
    client.set_tag(run.info.run_id, "mlflow.user", "someone")


def test_identity_off_on_the_client_adds_no_tags(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TEAM_IDENTITY", "off")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/stock.db")
    with mlflow.start_run() as run:
        pass
    assert "team.author" not in mlflow.get_run(run.info.run_id).data.tags


def test_every_rule_policy_file_still_parses_with_identity_on(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(EVERY_RULE_TOML)
    assert config.load_policy_file(path).identity is not None


def test_a_model_version_records_its_author_as_its_creator(tmp_path, monkeypatch):
    """The stock UI shows a version's own user_id as "Created by"; stock MLflow leaves it empty."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TEAM_AUTHOR", "alexa@example.com")
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run("0")
    client.create_registered_model("vision.authors")
    created = client.create_model_version("vision.authors", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    assert created.user_id == "alexa@example.com"
    [found] = client.search_model_versions("name = 'vision.authors'")
    assert found.user_id == "alexa@example.com" and found.tags["team.author"] == "alexa@example.com"
