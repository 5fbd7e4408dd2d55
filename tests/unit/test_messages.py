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
