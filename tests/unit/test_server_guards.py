"""The team app's guards as plain functions: which deletions stay inside one run's, logged model's
or trace's artifacts, which regular expressions are refused, and the budget on a real SQLite and
PostgreSQL connection (the server tests run them through `mlflow server --app-name team`)."""

from __future__ import annotations

import pytest
import sqlalchemy
from mlflow.exceptions import MlflowException

from mlflow_team.server import regex_budget
from mlflow_team.server.guards import deletion_allowed
from mlflow_team.server.regex_budget import Budget, hazard, patterns_in

RUN = "0123456789abcdef0123456789abcdef"
#: Exponential in every backtracking engine, `regex` included, yet no nested repetition.
EXPONENTIAL = "(a|a)" * 22 + "b"


@pytest.mark.parametrize("path", [
    f"1/{RUN}/artifacts",
    f"1/{RUN}/artifacts/model/MLmodel",
    f"1/{RUN}/artifacts/%2E",  # the run's own root
    f"1/models/m-{RUN}/artifacts",
    f"1/traces/tr-{RUN}/artifacts/traces.json",
    f"team/vision/{RUN}/artifacts/notes.txt",  # an experiment created with its own location
    f"workspaces/vision/1/{RUN}/artifacts",
])
def test_a_deletion_inside_one_owners_artifacts_is_allowed(path):
    assert deletion_allowed(path)


@pytest.mark.parametrize("path", [
    "", ".", "%2E", "%252E", "./", "1", "1/", "1/models", "1/traces", f"1/{RUN}", f"1/{RUN}/",
    f"1/{RUN}/artifacts/..", f"1/{RUN}/artifacts/../..", f"1/{RUN}/artifacts/%2e%2e/%2e%2e",
    f"1/{RUN}/artifacts/%252e%252e/%252e%252e", f"1/{RUN}/artifacts/..%2f..", f"1/{RUN}/artifacts\\..\\..",
    f"/1/{RUN}/artifacts", f"%2F1/{RUN}/artifacts", f"file:/srv/1/{RUN}/artifacts",
    f"1/x/m-{RUN}/artifacts", f"1/models/{RUN[:31]}/artifacts", f"1/{RUN}x/artifacts",
    f"1/{RUN}/artifacts/a\x00", f"1/{RUN}/artifacts#x",
])
def test_a_deletion_wider_than_one_owner_or_leaving_the_root_is_refused(path):
    assert not deletion_allowed(path)


def test_rlike_operands_are_read_as_mlflow_reads_the_filter():
    text = ("tags.model RLIKE '^xgb' AND trace.name rlike \"(a+)+\" AND tags.note = \"RLIKE '(b+)+'\" "
            "AND tags.x RLIKE 'it''s' AND tags.y LIKE '%RLIKE%'")
    assert patterns_in(text) == ["^xgb", "(a+)+", "it''s"]


@pytest.mark.parametrize("pattern", [
    "^xgb", "xgb-[0-9.]+$", "(lgbm|xgb)-v[0-9]+", "(ab{2})+", "(a{3}){1,}", "(a*)?", "[(a+)]+",
    r"\(a+\)+", "(?i)^XGB", "(?:abc)+", "[[:alpha:]]+", "(a|aa)*b", "(",
])
def test_ordinary_patterns_pass_the_shape_check(pattern):
    assert hazard(pattern) is None


@pytest.mark.parametrize("pattern, expected", [
    ("(a+)+$", ("nested", "(a+)+")),
    (r"^(\w+\s?)*$", ("nested", r"(\w+\s?)*")),
    ("((a+))*", ("nested", "((a+))*")),
    ("(?:a+){2,}", ("nested", "(?:a+){2,}")),
    ("(.*a){12}", ("nested", "(.*a){12}")),
    ("(?<n>x*y?)+", ("nested", "(?<n>x*y?)+")),
    (r"(a*)b\1", ("backreference", r"\1")),
    ("(?P<x>a)(?P=x)", ("backreference", "(?P=x)")),
    (r"(?<x>a)\k<x>", ("backreference", r"\k")),
])
def test_catastrophic_shapes_are_named(pattern, expected):
    assert hazard(pattern) == expected


@pytest.fixture
def hooks():
    regex_budget.install_database_hooks()
    yield
    regex_budget.remove_database_hooks()


@pytest.fixture
def budget():
    current = Budget(limit_s=0.05, patterns=[EXPONENTIAL])
    token = regex_budget.CURRENT.set(current)
    yield current
    regex_budget.CURRENT.reset(token)


def _regexp(engine, pattern: str, value: str) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(sqlalchemy.text("SELECT :value REGEXP :pattern"),
                                       {"value": value, "pattern": pattern}).scalar())


def test_sqlite_matches_as_stock_within_the_budget(hooks, budget, tmp_path):
    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(f"sqlite:///{tmp_path}/budget.db")
    assert _regexp(engine, "^xgb", "xgb-1") and not _regexp(engine, "^xgb", "my-xgb")
    assert not _regexp(engine, "(", "x")  # an invalid pattern matches nothing, as stock
    assert budget.exceeded is None
    assert not _regexp(engine, EXPONENTIAL, "a" * 40)
    assert budget.exceeded == EXPONENTIAL
    engine.dispose()


def test_outside_a_request_sqlite_matches_as_stock(hooks, tmp_path):
    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(f"sqlite:///{tmp_path}/budget.db")
    assert _regexp(engine, "^xgb", "xgb-1") and not _regexp(engine, "(", "x")
    engine.dispose()


@pytest.mark.postgres
def test_postgresql_cancels_a_regex_statement_past_the_budget_and_resets_the_timeout(hooks, postgresql_url):
    engine = sqlalchemy.create_engine(postgresql_url)
    current = Budget(limit_s=0.001, patterns=["(?=a*b)(?=a*c)(?=a*d)a*"])
    token = regex_budget.CURRENT.set(current)
    try:
        with engine.connect() as connection:
            with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
                connection.execute(sqlalchemy.text(
                    "SELECT repeat('a', 8000) ~ '(?=a*b)(?=a*c)(?=a*d)a*' FROM generate_series(1, 50)")).all()
        assert current.exceeded == "(?=a*b)(?=a*c)(?=a*d)a*"
        ordinary = Budget(limit_s=5.0)
        regex_budget.CURRENT.reset(token)
        token = regex_budget.CURRENT.set(ordinary)
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT 'xgb-1' ~ '^xgb'")).scalar() is True
            assert connection.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "0"
        assert ordinary.exceeded is None
    finally:
        regex_budget.CURRENT.reset(token)
        engine.dispose()


def test_the_app_refuses_to_start_where_mlflow_would_answer_deletes_outside_flask(monkeypatch):
    """A future MLflow that moved the proxy's DELETE to its FastAPI router would bypass the hook."""
    from mlflow.server.artifact_router import artifact_router

    from mlflow_team.config import parse_policy
    from mlflow_team.server import guards

    monkeypatch.setenv("_MLFLOW_SGI_NAME", "uvicorn")
    before = list(artifact_router.routes)
    artifact_router.add_api_route("/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
                                  lambda artifact_path: None, methods=["DELETE"])
    try:
        with pytest.raises(MlflowException, match=r"The mlflow-team server app was not started: .* answers DELETE "
                                                  r"/api/2.0/mlflow-artifacts/artifacts/\{artifact_path:path\} outside"):
            guards.install(None, parse_policy({}, source="tests"))
    finally:
        artifact_router.routes[:] = before
