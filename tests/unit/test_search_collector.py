"""The accelerated search pauses Python's garbage collector while it builds a page, and leaves it
as it found it."""

from __future__ import annotations

import gc
import threading

import pytest
from mlflow.entities import RunTag, ViewType

from mlflow_team.store import search
from mlflow_team.store.tracking import TeamSqlAlchemyStore


@pytest.fixture
def store(tmp_path):
    team = TeamSqlAlchemyStore(f"team+sqlite:///{tmp_path}/m.db", tmp_path.as_uri())
    assert team._search_path
    experiment_id = team.create_experiment("search/collector")
    for i in range(30):
        team.create_run(experiment_id, "bo", i, [RunTag("model", "xgboost")], f"r{i}")
    return team, experiment_id


def test_the_collector_is_paused_during_the_page_and_on_again_after(store, monkeypatch):
    team, experiment_id = store
    seen = []
    hydrate = search._hydrate
    monkeypatch.setattr(search, "_hydrate", lambda *a: seen.append(gc.isenabled()) or hydrate(*a))
    assert gc.isenabled()
    assert len(team.search_runs([experiment_id], "", ViewType.ALL, 100)) == 30
    assert seen == [False] and gc.isenabled()


def test_a_collector_the_user_turned_off_stays_off(store):
    team, experiment_id = store
    gc.disable()
    try:
        team.search_runs([experiment_id], "", ViewType.ALL, 100)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_searches_in_many_threads_leave_the_collector_on(store):
    team, experiment_id = store
    errors = []

    def searching():
        try:
            for _ in range(20):
                assert len(team.search_runs([experiment_id], "tags.model = 'xgboost'", ViewType.ALL, 10)) == 10
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=searching) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and gc.isenabled()
