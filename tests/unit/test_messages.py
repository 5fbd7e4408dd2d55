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
