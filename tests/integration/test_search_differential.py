"""The search accelerator answers exactly what MLflow's own ``search_runs`` answers.

One generated experiment per database (written by stock MLflow: parents with nested trials, NaN and
infinite metrics, missing keys, runs started in the same millisecond, deleted runs, values that
LIKE and case-sensitivity treat differently), then a battery of filters and orders through stock's
``SqlAlchemyStore`` and the team store on the same database, compared field by field: the runs,
their order, every page and page token, and the errors.
"""

from __future__ import annotations

import math
import random

import pytest
from mlflow.entities import (
    Dataset, DatasetInput, InputTag, LoggedModelOutput, Metric, Param, RunStatus, RunTag, ViewType,
)
from mlflow.exceptions import MlflowException

from tests.conftest import unique

pytestmark = pytest.mark.slow

DEVELOPERS = ("Alexa", "alexa", "Bo", "Chen_1", "dana%")
START = 1_760_000_000_000


def _generate(store, experiment_id: str, other_id: str, rng: random.Random) -> None:
    """About 130 runs: 4 searches of 30 trials, odd values, legacy runs; written by stock."""
    t = START
    for search in range(4):
        t += 1_000
        parent = store.create_run(experiment_id, "alexa", t, [RunTag("model", "xgboost")], f"search-{search}")
        pid = parent.info.run_id
        store.log_batch(pid, [Metric("best_rmse", 5.0 + search / 10, t, 0)], [Param("algo", "tpe")], [])
        if search == 1:  # values longer than PostgreSQL's ordered param/tag indexes take
            store.log_batch(pid, [], [Param("objective", "reg:" + "x" * 3000)], [RunTag("note", "long " * 700)])
        for trial in range(30):
            t += rng.choice((0, 0, 1, 7, 1_000))  # ties on purpose
            tags = [RunTag("mlflow.parentRunId", pid), RunTag("developer", rng.choice(DEVELOPERS)),
                    RunTag("model", rng.choice(("xgboost", "XGBoost", "lasso", "ridge")))]
            if rng.random() < 0.2:
                tags.append(RunTag("note", rng.choice(("baseline", "retry 50%", "with_snow", "C:\\data", ""))))
            run = store.create_run(experiment_id, rng.choice(("alexa", "bo")), t, tags, f"trial-{trial}")
            rid = run.info.run_id
            params = [Param("max_depth", str(rng.randint(3, 12))), Param("learning_rate", repr(round(rng.random(), 3)))]
            if rng.random() < 0.8:
                params.append(Param("objective", rng.choice(("reg:linear", "reg:squarederror", "Reg:Linear"))))
            metrics = []
            roll = rng.random()
            if roll < 0.08:
                metrics.append(Metric("rmse", float("nan"), t, 0))
            elif roll < 0.12:
                metrics.append(Metric("rmse", rng.choice((math.inf, -math.inf)), t, 0))
            elif roll < 0.92:
                metrics.append(Metric("rmse", round(rng.uniform(4.5, 7.5), 3), t, 0))
            if rng.random() < 0.7:
                metrics.append(Metric("training_time", round(rng.uniform(0.0, 9.0), 2), t, 0))
            store.log_batch(rid, metrics, params, [])
            status = rng.choice(("FINISHED", "FINISHED", "FINISHED", "FAILED", "KILLED", "RUNNING"))
            if status != "RUNNING":
                store.update_run_info(rid, RunStatus.from_string(status), t + rng.randint(0, 5_000), None)
            if trial % 9 == 4:  # a dataset input, with its context tag
                dataset = Dataset(f"taxi-{search}", f"d{trial}", "local", "file:///data.parquet", schema="{}")
                store.log_inputs(rid, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
            if trial % 11 == 5 and status != "RUNNING":  # a logged model, as mlflow.<flavor>.log_model makes
                store.update_run_info(rid, RunStatus.RUNNING, None, None)
                model = store.create_logged_model(experiment_id, f"model-{trial}", rid)
                store.log_outputs(rid, [LoggedModelOutput(model.model_id, trial)])
                store.update_run_info(rid, RunStatus.from_string(status), t + 1, None)
            if rng.random() < 0.05:
                store.delete_run(rid)
    # Runs logged by MLflow <= 1.29 have no name in the runs table, only the mlflow.runName tag.
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET name = NULL WHERE experiment_id = :e AND name LIKE 'trial-1%'"),
                     {"e": int(experiment_id)})
    for i in range(10):  # another experiment: a search of one experiment never sees these
        run = store.create_run(other_id, "bo", START + i, [RunTag("model", "xgboost")], f"other-{i}")
        store.log_batch(run.info.run_id, [Metric("rmse", 1.0 + i, 0, 0)], [Param("objective", "reg:linear")], [])


_GENERATED: dict[str, tuple[str, str]] = {}


@pytest.fixture
def searched(db_url, tmp_path_factory, monkeypatch):
    """(stock store, team store, experiment ids) on one database with the accelerator's indexes;
    the experiment is generated once per database. Its ~130 runs are far fewer than the ordered
    walk waits for (2,000): here it walks any experiment, so that every ordered search below
    takes it."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from mlflow_team.store import compat, db, search
    from mlflow_team.store.tracking import TeamSqlAlchemyStore

    compat.reset()
    monkeypatch.setattr(search, "_WALK_MIN_RUNS", 1)
    monkeypatch.setattr(search, "_WALK_MIN_SHARE", 10**9)
    monkeypatch.setattr(search, "_WALK_PAYS", {})
    artifacts = tmp_path_factory.getbasetemp().joinpath("search-artifacts").as_uri()
    stock = SqlAlchemyStore(db_url, artifacts)
    search.create_indexes(stock.engine)
    if db_url not in _GENERATED:
        experiment_id = stock.create_experiment(unique("search/differential"))
        other_id = stock.create_experiment(unique("search/other"))
        _generate(stock, experiment_id, other_id, random.Random(17))
        _GENERATED[db_url] = experiment_id, other_id
    team = TeamSqlAlchemyStore(f"team+{db_url}", artifacts)
    assert team._search_path, "the team store must take the accelerated search on this database"
    assert isinstance(team.ManagedSessionMaker, db.ManagedSessions)
    yield (stock, team, *_GENERATED[db_url])
    compat.reset()


FILTERS = [
    "",
    "params.objective = 'reg:linear'",
    "params.objective != 'reg:linear'",
    "params.objective LIKE 'reg:%'",
    "params.objective ILIKE 'reg:linear'",
    "params.max_depth = '7'",
    "tags.model = 'xgboost'",
    "tags.model != 'xgboost'",
    "tags.developer LIKE 'a%'",
    "tags.developer ILIKE 'ALEXA'",
    "tags.developer LIKE '%\\%'",
    "tags.developer LIKE 'Chen_%'",
    "tags.note = ''",
    "tags.note LIKE '%50\\%%'",
    "tags.note IS NULL",
    "tags.note IS NOT NULL",
    "params.objective IS NULL",
    "metrics.rmse < 6",
    "metrics.rmse >= 6.5",
    "metrics.rmse != 5.5",
    "metrics.rmse = 0",
    "metrics.rmse > -1e308",
    "metrics.training_time <= 3 and metrics.rmse > 5",
    "attributes.status = 'FINISHED'",
    "attributes.status != 'RUNNING'",
    "attributes.status LIKE 'F%'",
    "attributes.user_id = 'bo'",
    "attributes.run_name = 'trial-3'",
    "attributes.run_name LIKE 'search-%'",
    "attributes.run_name ILIKE 'TRIAL-1%'",
    "attributes.start_time > 1760000005000",
    "attributes.end_time < 1760000010000",
    "attributes.created > 1760000002000",
    "params.objective = 'reg:linear' and tags.model = 'xgboost' and metrics.rmse < 7",
    "tags.developer = 'Alexa' and attributes.status = 'FINISHED' and params.max_depth != '3'",
    "metrics.training_time > 0",
    "run_name = 'trial-0'",
    "status = 'FAILED'",
]
ORDERS = [
    None,
    ["metrics.rmse ASC"],
    ["metrics.rmse DESC"],
    ["params.learning_rate DESC"],
    ["params.objective"],
    ["tags.model DESC", "metrics.training_time"],
    ["attributes.start_time DESC"],
    ["attributes.start_time ASC"],
    ["attributes.end_time"],
    ["attributes.run_name DESC"],
    ["start_time"],
    ["created DESC"],
    ["attribute.start_time DESC"],
    ["metrics.training_time DESC", "params.max_depth ASC", "attributes.status"],
    ["tags.developer"],
    ["tags.note DESC"],
]


def _view(run) -> tuple:
    """Everything a client sees of a run (metric order aside, which no store promises)."""
    metrics = sorted(
        (m.key, "nan" if math.isnan(m.value) else m.value, m.timestamp, m.step) for m in run.data._metric_objs
    )
    return (
        run.info.to_proto().SerializeToString(deterministic=True), tuple(metrics),
        tuple(sorted(run.data.params.items())), tuple(sorted(run.data.tags.items())),
        run.inputs.to_proto().SerializeToString(deterministic=True),
        run.outputs.to_proto().SerializeToString(deterministic=True) if run.outputs else None,
    )


def _walk(store, experiment_ids, filter_string, view, max_results, order_by) -> list:
    """Every page of the search, as (runs, token) pairs."""
    pages, token = [], None
    while True:
        found = store.search_runs(experiment_ids, filter_string, view, max_results, order_by, token)
        pages.append(([_view(r) for r in found], found.token))
        token = found.token
        if not token or len(pages) > 60:
            return pages


def _outcome(call):
    try:
        return ("ok", call())
    except MlflowException as exc:
        return ("error", exc.error_code, exc.message)


def test_every_filter_and_order_answers_what_stock_answers(searched):
    stock, team, experiment_id, _ = searched
    for i, filter_string in enumerate(FILTERS):
        for order_by in (ORDERS[i % len(ORDERS)], ORDERS[(i * 5 + 3) % len(ORDERS)]):
            for max_results in (1000, 10):  # every run; a first page (read off an index where one fits)
                args = ([experiment_id], filter_string, ViewType.ACTIVE_ONLY, max_results, order_by, None)
                want = stock.search_runs(*args)
                got = team.search_runs(*args)
                assert [_view(r) for r in got] == [_view(r) for r in want], (filter_string, order_by, max_results)
                assert got.token == want.token


@pytest.mark.parametrize("max_results", [1, 7, 50])
def test_pages_and_their_tokens_are_stocks(searched, max_results):
    stock, team, experiment_id, _ = searched
    for filter_string, order_by in [("", None), ("", ["attributes.start_time DESC"]), ("metrics.rmse < 7", ["metrics.rmse"]),
                                    ("tags.model = 'xgboost'", ["params.max_depth DESC", "start_time"]),
                                    # pages from the runs with a number into NaN, then runs without rmse
                                    ("", ["metrics.rmse DESC"]), ("", ["params.learning_rate DESC"]),
                                    ("", ["tags.developer"]), ("", ["params.objective"]), ("", ["tags.note DESC"])]:
        args = ([experiment_id], filter_string, ViewType.ACTIVE_ONLY, max_results, order_by)
        assert _walk(team, *args) == _walk(stock, *args), (filter_string, order_by)


def test_a_page_read_in_several_statements_is_stocks(searched, monkeypatch):
    """A page of more runs than one statement names (450 on SQLite, 1,000 on MySQL): in chunks of 7."""
    from mlflow_team.store import search

    monkeypatch.setattr(search, "_CHUNK", {"sqlite": 7, "mysql": 7, "postgresql": 7})
    stock, team, experiment_id, _ = searched
    for filter_string, order_by in [("", None), ("metrics.rmse < 7", ["metrics.rmse"])]:
        args = ([experiment_id], filter_string, ViewType.ACTIVE_ONLY, 100, order_by)
        assert _walk(team, *args) == _walk(stock, *args), (filter_string, order_by)


@pytest.mark.parametrize("view", [ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL])
def test_view_types_and_several_experiments_are_stocks(searched, view):
    stock, team, experiment_id, other_id = searched
    for ids in ([experiment_id], [experiment_id, other_id], [other_id]):
        for filter_string, order_by in [("", None), ("", ["start_time DESC"]),
                                        ("params.objective = 'reg:linear'", ["metrics.rmse DESC"])]:
            args = (ids, filter_string, view, 100, order_by)
            assert _walk(team, *args) == _walk(stock, *args), (ids, filter_string, view)


def test_a_parents_trials_are_found_by_its_id(searched):
    """What the UI asks to expand a parent run: its nested runs, by their mlflow.parentRunId."""
    stock, team, experiment_id, _ = searched
    parent = stock.search_runs([experiment_id], "attributes.run_name = 'search-2'", ViewType.ALL)[0]
    args = ([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", ViewType.ACTIVE_ONLY, 100, None)
    found = team.search_runs(*args)
    assert len(found) >= 25 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in found)
    assert [_view(r) for r in found] == [_view(r) for r in stock.search_runs(*args)]


def test_run_id_in_and_not_in_lists_are_stocks(searched):
    """``IN`` and ``NOT IN`` (MLflow takes a list for ``run_id`` only): SQLAlchemy renders the
    list's values as it runs the statement, so these searches take its execution, not the driver's
    cursor; asked twice, the second time from the kept statement."""
    stock, team, experiment_id, _ = searched
    ids = [r.info.run_id for r in stock.search_runs([experiment_id], "", ViewType.ALL, 1000)][::9]
    listed = ", ".join(f"'{run_id}'" for run_id in ids)
    for filter_string in (f"attributes.run_id IN ({listed})", f"attributes.run_id NOT IN ({listed})",
                          f"run_id IN ('{ids[0]}')"):
        for order_by in (None, ["metrics.rmse"], ["attributes.start_time DESC"]):
            args = ([experiment_id], filter_string, ViewType.ALL, 4, order_by)
            want = _walk(stock, *args)
            assert want[0][0], filter_string
            assert _walk(team, *args) == want, (filter_string, order_by)
            assert _walk(team, *args) == want, (filter_string, order_by)


@pytest.mark.parametrize("filter_string, order_by, max_results, token", [
    ("params.objective = reg:linear", None, 10, None),
    ("metrics.rmse < 'x'", None, 10, None),
    ("params.objective > 'a'", None, 10, None),
    ("nope.x = 'y'", None, 10, None),
    ("", ["metrics.rmse", "metrics.rmse DESC"], 10, None),
    ("", ["foo.bar"], 10, None),
    ("", None, 0, None),
    ("", None, 50_001, None),
    ("", None, 10, "not-a-token"),
])
def test_bad_searches_get_stocks_errors(searched, filter_string, order_by, max_results, token):
    stock, team, experiment_id, _ = searched
    args = ([experiment_id], filter_string, ViewType.ACTIVE_ONLY, max_results, order_by, token)
    want = _outcome(lambda: stock.search_runs(*args))
    assert want[0] == "error"
    assert _outcome(lambda: team.search_runs(*args)) == want
    assert _outcome(lambda: team.search_runs(*args)) == want  # a filter refused once is refused again


def test_a_dataset_filter_keeps_mlflows_own_path(searched):
    stock, team, experiment_id, _ = searched
    for filter_string in ("dataset.name = 'taxi-1'", "dataset.context = 'training'"):
        args = ([experiment_id], filter_string, ViewType.ACTIVE_ONLY, 100, None, None)
        found = team.search_runs(*args)
        assert found and [_view(r) for r in found] == [_view(r) for r in stock.search_runs(*args)]


def test_runs_carry_stocks_dataset_inputs_and_logged_model_outputs(searched):
    stock, team, experiment_id, _ = searched
    args = ([experiment_id], "", ViewType.ALL, 1000, None, None)
    found = team.search_runs(*args)
    assert sum(1 for r in found if r.inputs.dataset_inputs) >= 8
    assert sum(1 for r in found if r.outputs and r.outputs.model_outputs) >= 4
    assert [_view(r) for r in found] == [_view(r) for r in stock.search_runs(*args)]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresqls_page_is_stocks_through_either_driver(searched, db_url):
    """PostgreSQL's page is read through the driver's own cursor: psycopg's and psycopg2's
    (``team+postgresql+psycopg://``, ``team+postgresql+psycopg2://``) answer what stock answers."""
    from mlflow_team.store.tracking import TeamSqlAlchemyStore

    stock, _, experiment_id, _ = searched
    address = db_url.split("://", 1)[1]
    teams = [TeamSqlAlchemyStore(f"team+postgresql+{driver}://{address}", stock.artifact_root_uri)
             for driver in ("psycopg", "psycopg2")]
    assert [team.engine.dialect.driver for team in teams] == ["psycopg", "psycopg2"]
    for filter_string, order_by in [("", None), ("metrics.rmse < 7", ["metrics.rmse"]),
                                    ("tags.developer LIKE 'a%'", ["params.learning_rate DESC"])]:
        args = ([experiment_id], filter_string, ViewType.ALL, 20, order_by)
        want = _walk(stock, *args)
        assert [_walk(team, *args) for team in teams] == [want, want], (filter_string, order_by)


def _statements(engine) -> list[str]:
    import sqlalchemy as sa

    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_a_small_share_of_the_database_keeps_stocks_order_and_a_large_one_is_walked(searched, monkeypatch):
    """The ordered walk reads every experiment's values of the key: an experiment holding a small
    share of the database's runs is answered by stock's order instead (the walk read 100,000
    values for a page of a 1,000-run experiment), a large one by the walk; both answer what stock
    answers. (MySQL and MariaDB have no walk.)"""
    from mlflow_team.store import search

    stock, team, experiment_id, other_id = searched
    monkeypatch.setattr(search, "_WALK_MIN_RUNS", 20)  # the other experiment has 10 runs, this one ~130
    monkeypatch.setattr(search, "_WALK_MIN_SHARE", 10**9)
    monkeypatch.setattr(search, "_WALK_PAYS", {})
    seen = _statements(team.engine)
    for ids, walked in (([other_id], False), ([experiment_id], team.db_type != "mysql")):  # MySQL: never
        for filter_string, order_by in [("", ["metrics.rmse"]), ("tags.model LIKE 'xg%'", ["params.objective DESC"])]:
            seen.clear()
            args = (ids, filter_string, ViewType.ACTIVE_ONLY, 5, order_by)
            assert _walk(team, *args) == _walk(stock, *args), (ids, filter_string, order_by)
            assert any("team_order" in sql for sql in seen) == walked, (ids, filter_string, order_by)
