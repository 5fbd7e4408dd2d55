"""The messages of issue 16, word for word, and the required-tags refusal as a client meets it."""

from __future__ import annotations

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
