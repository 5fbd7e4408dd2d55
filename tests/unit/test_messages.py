"""The messages of issue 16, word for word, and the required-tags refusal as a client meets it."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from mlflow_team import errors


def test_missing_dependency_message_names_what_needs_it_the_package_and_the_command():
    assert errors.MISSING_DEPENDENCY.format(
        needed_for="The store for 'team+postgresql://mlflow@db/mlflow'",
        what="the PostgreSQL driver psycopg 3",
        reason="No module named 'psycopg'",
        install='pip install "mlflow-team[postgres]"',
    ) == (
        "The store for 'team+postgresql://mlflow@db/mlflow' needs the PostgreSQL driver psycopg 3, which is not "
        "installed here (No module named 'psycopg'). Install it with: pip install \"mlflow-team[postgres]\""
    )


def test_degraded_missing_dependency_message_also_says_what_does_not_happen():
    assert errors.MISSING_DEPENDENCY_DEGRADED.format(
        needed_for="mlflow_team.hyperopt.autolog()",
        what="hyperopt",
        reason="No module named 'hyperopt'",
        consequence="hyperopt searches are not logged",
        install='pip install "mlflow-team[hyperopt]"',
    ) == (
        "mlflow_team.hyperopt.autolog() needs hyperopt, which is not installed here (No module named 'hyperopt'), "
        "so hyperopt searches are not logged. Install it with: pip install \"mlflow-team[hyperopt]\""
    )


def test_near_miss_message_names_the_file_found_the_file_read_and_the_variable():
    assert errors.POLICY_NEAR_MISS.format(
        found="mlflow_team.toml", cwd="/home/me/proj", default="mlflow-team.toml", env="MLFLOW_TEAM_POLICY",
        source="built-in defaults (identity stamping only)", path="/home/me/proj/mlflow_team.toml",
    ) == (
        "The file 'mlflow_team.toml' in /home/me/proj looks like a policy file but is not read: mlflow-team reads "
        "'mlflow-team.toml' in the working directory, or the file MLFLOW_TEAM_POLICY names, and the policy in force "
        "comes from built-in defaults (identity stamping only). Rename it to mlflow-team.toml (the policy is TOML), "
        "or point MLFLOW_TEAM_POLICY at it, for example: export MLFLOW_TEAM_POLICY=/home/me/proj/mlflow_team.toml"
    )


def test_required_tags_messages_name_the_experiment_and_the_autologging_fix():
    assert errors.REQUIRED_TAGS_MISSING.format(
        experiment="'taxi/duration' (id '1')", missing=["team.project"], example={"team.project": "..."}
    ) == (
        "Run in experiment 'taxi/duration' (id '1') was rejected: runs must carry the tag(s) ['team.project']. Set "
        "them when starting the run, for example mlflow.start_run(tags={'team.project': '...'}), or give them a "
        "default under [required-tags.defaults] in the policy file. [rule: required-tags]"
    )
    call = errors.AUTOLOG_CALL_MLFLOW.format(example={"team.project": "..."}, flavor="xgboost")
    assert errors.REQUIRED_TAGS_MISSING_AUTOLOGGED.format(
        experiment="'taxi/duration' (id '1')", autologger="'xgboost'", missing=["team.project"], call=call
    ) == (
        "Run in experiment 'taxi/duration' (id '1'), started by 'xgboost' autologging, was rejected: runs must carry "
        "the tag(s) ['team.project']. Give them to autologging, for example "
        "mlflow.autolog(extra_tags={'team.project': '...'}) (mlflow.xgboost.autolog takes extra_tags too), or give "
        "them a default under [required-tags.defaults] in the policy file. [rule: required-tags]"
    )
    assert errors.AUTOLOG_CALL_HYPEROPT.format(example={"team.project": "..."}) == (
        "mlflow_team.hyperopt.autolog(extra_tags={'team.project': '...'})"
    )


@pytest.fixture
def client(tmp_path, policy_file):
    uri = f"team+sqlite:///{tmp_path}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_store_names_the_experiment_of_a_refused_run_by_name(client):
    experiment_id = client.create_experiment("taxi/duration")
    with pytest.raises(
        MlflowException,
        match=rf"^Run in experiment 'taxi/duration' \(id '{experiment_id}'\) was rejected: runs must carry the tag",
    ):
        client.create_run(experiment_id)
    assert client.search_runs([experiment_id], run_view_type=ViewType.ALL) == []


@pytest.mark.parametrize(
    "flavor, fix",
    [("hyperopt", "mlflow_team.hyperopt.autolog(extra_tags="), ("sklearn", "mlflow.autolog(extra_tags=")],
)
def test_the_store_tells_an_autologged_run_to_get_its_tags_from_autologging(client, flavor, fix):
    experiment_id = client.create_experiment("taxi/duration")
    with pytest.raises(MlflowException, match=rf"started by '{flavor}' autologging, was rejected") as info:
        client.create_run(experiment_id, tags={"mlflow.autologging": flavor})
    assert f"for example {fix}{{'team.project': '...'}})" in info.value.message
    assert info.value.get_http_status_code() == 400


def test_a_run_with_its_required_tags_is_created_as_before(client):
    experiment_id = client.create_experiment("taxi/duration")
    run = client.create_run(experiment_id, tags={"team.project": "p", "mlflow.autologging": "sklearn"})
    assert run.data.tags["team.name"] == "vision"


def test_spark_without_java_says_what_is_missing_and_how_to_install_it(monkeypatch, tmp_path):
    pytest.importorskip("pyspark")
    from mlflow_team.hyperopt import spark

    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(RuntimeError) as raised:
        spark.local_session()
    assert str(raised.value) == spark.NO_JAVA == (
        "mlflow-team: Spark needs a Java runtime (17 or newer) and none was found (no `java` on PATH, no JAVA_HOME). "
        "Install one (Debian/Ubuntu: `apt-get install default-jre-headless`; macOS: `brew install openjdk@17`) "
        "or set JAVA_HOME, then run again."
    )


def test_executors_out_of_reach_message_says_what_is_kept_what_is_not_and_the_fix():
    from mlflow_team.hyperopt.spark import NOT_CAPTURED

    assert NOT_CAPTURED.format(uri="http://mlflow:5000", why="ConnectionError: refused") == (
        "mlflow-team: the Spark executors could not reach the tracking store http://mlflow:5000 "
        "(ConnectionError: refused). Each trial run is still written by the driver: its params, loss, results and "
        "status, and the params, metrics and tags the objective logged; its artifacts and models stayed on the "
        "executor. Give the executors a tracking URI they can reach (an `mlflow server` URL, a database host "
        "rather than a local file) to capture everything."
    )


def test_team_app_error_bodies_lose_database_text_and_server_paths(tmp_path):
    """The team server app's scrub of an error body's message (mlflow_team.server.requests)."""
    from mlflow_team.server.requests import _scrubbed

    (tmp_path / "mlflow.db").write_text("")
    hidden = _scrubbed("(sqlite3.IntegrityError) UNIQUE constraint failed: runs.run_uuid", "BAD_REQUEST")
    reference = hidden.split("under reference ")[1].split(",")[0]
    assert hidden == errors.SERVER_ERROR_HIDDEN.format(code="BAD_REQUEST", reference=reference)
    assert _scrubbed(f"Could not open '{tmp_path}/mlflow.db' for reading", "X") == "Could not open '<server path>' for reading"
    # a path this machine does not have (an S3 key, a URL's path) is the client's own text
    assert _scrubbed("No such artifact: '/models/taxi/1/model.pkl'", "X") == "No such artifact: '/models/taxi/1/model.pkl'"


# --- the team server app's guards -------------------------------------------------------------


def test_proxy_deletion_refusal_names_the_path_the_rule_and_how_to_delete_a_run():
    assert errors.PROXY_DELETE_REFUSED.format(path=errors.preview("%2E")) == (
        "Deleting the artifacts at '%2E' through the artifact proxy was refused: a deletion may cover one run's, "
        "logged model's or trace's artifacts and nothing wider ('<experiment>/<run id>/artifacts/...', "
        "'<experiment>/models/<model id>/artifacts/...' or '<experiment>/traces/<trace id>/artifacts/...'), so the "
        "artifact root, an experiment's folder and paths with '..' (also percent-encoded) are never deleted. "
        "Nothing was deleted. To remove a run's artifacts, delete the run and collect it: mlflow.delete_run(run_id), "
        "then mlflow gc --backend-store-uri URL --run-ids RUN_ID. [rule: artifact-deletions]"
    )


def test_proxy_deletion_guard_unavailable_names_the_route_and_the_supported_releases():
    assert errors.PROXY_DELETE_GUARD_UNAVAILABLE.format(
        version="3.18", route="/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}", tested="3.12 to 3.17",
    ) == (
        "The mlflow-team server app was not started: on MLflow 3.18 the artifact proxy answers DELETE "
        "/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path} outside the Flask app where mlflow-team checks "
        "deletions, so an experiment's or the whole root's artifacts could be deleted in one request. Install an "
        "MLflow release mlflow-team supports (3.12 to 3.17), or run without the proxy (--no-serve-artifacts). "
        "[rule: artifact-deletions]"
    )


def test_nested_repetition_refusal_names_the_pattern_the_group_and_a_rewrite():
    reason = errors.REGEX_REASON_NESTED.format(found=errors.preview("(a+)+"))
    assert errors.SEARCH_REGEX_REFUSED.format(pattern=errors.preview("(a+)+$"), reason=reason) == (
        "The regular expression '(a+)+$' in the search filter was refused: it repeats a group that itself contains "
        "a repetition ('(a+)+'), which can backtrack for seconds or hours on one short value and stall the server "
        "for everyone. Repeat a character class instead, for example '^xgb-[0-9.]+$' rather than "
        "'^xgb-([0-9]+\\.)+$', or use LIKE, for example tags.model LIKE 'xgb-%'. [rule: search-regex]"
    )


def test_backreference_refusal_names_the_backreference_and_a_rewrite():
    reason = errors.REGEX_REASON_BACKREFERENCE.format(found=errors.preview("\\1"))
    assert errors.SEARCH_REGEX_REFUSED.format(pattern=errors.preview("(xgb)-\\1"), reason=reason) == (
        "The regular expression '(xgb)-\\\\1' in the search filter was refused: it uses a backreference ('\\\\1'), "
        "which can take exponential time on one short value and stall the server for everyone. Spell the repeated "
        "text out, for example 'xgb-xgb' rather than '(xgb)-\\1', or use LIKE, for example tags.model LIKE 'xgb-%'. "
        "[rule: search-regex]"
    )


def test_regex_cut_off_names_the_pattern_the_budget_and_its_setting():
    assert errors.SEARCH_REGEX_CUT_OFF.format(pattern=errors.preview("(x|xg)*b"), budget_ms=100) == (
        "The search was stopped: matching its regular expression '(x|xg)*b' took longer than this server's budget "
        "of 100 ms ([server] regex-budget-ms in the policy file), so no result was returned. Anchor the pattern and "
        "avoid alternatives that overlap, for example '^xgb' rather than '(x|xg)*b', use LIKE, for example "
        "tags.model LIKE 'xgb%', or narrow the search with other filters. [rule: search-regex]"
    )
