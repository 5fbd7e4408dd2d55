"""One contract, every database: where the policy allows an operation, the team store returns
exactly what stock MLflow's store returns.

Each scenario runs twice against the same database, once through MLflow's client on the plain URL
(stock store) and once on ``team+<URL>`` with every policy rule on, and the two results are
compared after replacing generated ids and clock times by placeholders.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Callable

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from tests.conftest import unique

pytestmark = pytest.mark.usefixtures("policy_file")

REQUIRED = {"team.project": "contract", "team.name": "vision"}  # what the policy asks for
# The one deliberate difference: the team store stamps the author (tests/unit/test_identity*.py).
AUTHOR_TAGS = ("mlflow.user", "team.author", "team.author_verified")


def unstamped(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k not in AUTHOR_TAGS}


class Normalizer:
    """Replaces ids with stable placeholders in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def id(self, value: str | None, kind: str) -> str | None:
        if value is None:
            return None
        if value not in self.ids:
            self.ids[value] = f"<{kind}{len(self.ids)}>"
        return self.ids[value]

    def text(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        for raw, placeholder in self.ids.items():
            value = value.replace(raw, placeholder)
        return value


def both(db_url: str, scenario: Callable[[MlflowClient, str, Normalizer], Any]) -> tuple[Any, Any]:
    results = []
    for uri in (db_url, f"team+{db_url}"):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        results.append(scenario(client, uri, Normalizer()))
    return results[0], results[1]


def _metric_value(value: float) -> Any:
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def _run(client: MlflowClient, run_id: str, norm: Normalizer) -> dict[str, Any]:
    run = client.get_run(run_id)
    tags = {k: norm.text(v) for k, v in unstamped(run.data.tags).items()}
    return {
        "id": norm.id(run.info.run_id, "run"),
        "name": run.info.run_name,
        "status": run.info.status,
        "stage": run.info.lifecycle_stage,
        "params": run.data.params,
        "metrics": {k: _metric_value(v) for k, v in run.data.metrics.items()},
        "tags": tags,
        "datasets": [
            (d.dataset.name, d.dataset.digest, d.dataset.source_type, [t.key for t in d.tags])
            for d in run.inputs.dataset_inputs
        ],
        "ended": run.info.end_time is not None,
    }


# --- scenarios -------------------------------------------------------------------------------


def experiments_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    prefix = unique("contract/exp")
    experiment_id = client.create_experiment(prefix, tags={"owner": "vision"})
    norm.id(experiment_id, "exp")
    client.set_experiment_tag(experiment_id, "stage", "dev")
    client.rename_experiment(experiment_id, prefix + "-renamed")
    experiment = client.get_experiment(experiment_id)
    found = client.search_experiments(filter_string=f"name LIKE '{prefix}%'")
    client.delete_experiment(experiment_id)
    deleted = client.get_experiment(experiment_id).lifecycle_stage
    client.restore_experiment(experiment_id)
    return {
        "name": norm.text(experiment.name.replace(prefix, "<prefix>")),
        "tags": experiment.tags,
        "stage": experiment.lifecycle_stage,
        "found": [norm.id(e.experiment_id, "exp") for e in found],
        "deleted": deleted,
        "restored": client.get_experiment(experiment_id).lifecycle_stage,
        "artifact_location_ends": experiment.artifact_location.endswith(str(experiment_id)),
    }


def runs_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    experiment_id = client.create_experiment(unique("contract/runs"))
    run = client.create_run(experiment_id, tags={**REQUIRED, "model": "xgb"}, run_name="first")
    run_id = run.info.run_id
    norm.id(run_id, "run")
    client.log_param(run_id, "alpha", "0.1")
    for step in range(5):
        client.log_metric(run_id, "rmse", 1.0 / (step + 1), timestamp=1000 + step, step=step)
    client.log_metric(run_id, "diverged", math.nan, timestamp=2000, step=0)
    client.log_batch(
        run_id,
        metrics=[Metric("mae", 0.25, 3000, 0), Metric("mae", 0.2, 3001, 1)],
        params=[Param("depth", "6"), Param("booster", "gbtree")],
        tags=[RunTag("note", "batch"), RunTag("mlflow.note.content", "# hello")],
    )
    client.set_tag(run_id, "temp", "x")
    client.delete_tag(run_id, "temp")
    client.log_param(run_id, "long", "v" * 6000)  # exactly at the limit: allowed, kept whole
    client.set_terminated(run_id, "FINISHED")
    second = client.create_run(experiment_id, tags=REQUIRED, run_name="second")
    client.log_metric(second.info.run_id, "rmse", 0.05, timestamp=1, step=0)
    client.delete_run(second.info.run_id)
    client.restore_run(second.info.run_id)
    history = [(m.value, m.step, m.timestamp) for m in client.get_metric_history(run_id, "rmse")]
    searched = client.search_runs(
        [experiment_id], filter_string="metrics.rmse < 1 and tags.`team.project` = 'contract'",
        order_by=["metrics.rmse ASC"],
    )
    assert len(history) == 5 and searched
    return {
        "run": _run(client, run_id, norm),
        "second": _run(client, second.info.run_id, norm),
        "history": history,
        "searched": [norm.id(r.info.run_id, "run") for r in searched],
    }


def search_pages_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    experiment_id = client.create_experiment(unique("contract/pages"))
    for i in range(23):
        run = client.create_run(experiment_id, tags={**REQUIRED, "parity": str(i % 2)}, run_name=f"r{i:02d}")
        client.log_batch(run.info.run_id, metrics=[Metric("score", float(i % 7), 0, 0)], params=[Param("i", str(i))])
    names, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string="tags.parity = '1'",
            order_by=["metrics.score DESC", "params.i ASC"], max_results=4, page_token=token,
        )
        names.extend(r.info.run_name for r in page)
        token = page.token
        if not token:
            break
    deleted_view = client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)
    return {"names": names, "deleted": len(deleted_view)}


def datasets_and_models_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    import pandas as pd

    experiment_id = client.create_experiment(unique("contract/data"))
    run_id = client.create_run(experiment_id, tags=REQUIRED, run_name="data").info.run_id
    frame = pd.DataFrame({"trip_distance": [1.0, 2.5], "duration": [7.0, 12.0]})
    dataset = mlflow.data.from_pandas(frame, name="green-2021-01", targets="duration")
    from mlflow.entities import DatasetInput, InputTag

    client.log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", "training")])])
    model = client.create_logged_model(experiment_id, source_run_id=run_id, name="xgb", params={"depth": "6"}, tags={"k": "v"})
    norm.id(model.model_id, "model")
    client.log_metric(run_id, "rmse", 5.5, timestamp=10, step=0, model_id=model.model_id)
    client.finalize_logged_model(model.model_id, "READY")
    found = client.search_logged_models([experiment_id])
    got = client.get_logged_model(model.model_id)
    return {
        "run": _run(client, run_id, norm),
        "model": {
            "name": got.name, "status": str(got.status), "params": got.params, "tags": got.tags,
            "metrics": [(m.key, m.value) for m in got.metrics or []],
            "source_run": norm.id(got.source_run_id, "run"),
        },
        "found": [norm.id(m.model_id, "model") for m in found],
    }


def registry_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    experiment_id = client.create_experiment(unique("contract/registry"))
    run_id = client.create_run(experiment_id, tags=REQUIRED, run_name="train").info.run_id
    norm.id(run_id, "run")
    name = f"contract.{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name, tags={"task": "regression"}, description="taxi")
    v1 = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={"data": "jan"})
    v2 = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", v1.version)
    client.set_registered_model_alias(name, "challenger", v2.version)
    client.update_model_version(name, v2.version, description="second")
    client.set_model_version_tag(name, v2.version, "checked", "yes")
    by_alias = client.get_model_version_by_alias(name, "champion")
    client.delete_registered_model_alias(name, "challenger")
    client.delete_model_version(name, v2.version)
    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "model": (model.description, model.tags, model.aliases),
        "by_alias": (by_alias.version, unstamped(by_alias.tags), norm.id(by_alias.run_id, "run"), norm.text(by_alias.source)),
        "versions": sorted((v.version, v.description, unstamped(v.tags), v.status) for v in versions),
    }


def traces_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    experiment_id = client.create_experiment(unique("contract/traces"))
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment_id=experiment_id)
        with mlflow.start_span("predict") as root:
            root.set_inputs({"x": 1})
            with mlflow.start_span("featurize") as child:
                child.set_outputs({"features": [1, 2]})
            root.set_outputs({"y": 2})
        traces = mlflow.search_traces(locations=[experiment_id], return_type="list", flush=True)
    finally:
        mlflow.set_tracking_uri(None)
    assert len(traces) == 1 and len(traces[0].data.spans) == 2
    return [
        (
            str(t.info.state),
            sorted((s.name, str(s.inputs), str(s.outputs), str(s.status.status_code)) for s in t.data.spans),
        )
        for t in traces
    ]


def metric_edges_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    """Per-call metric logging: duplicates, out-of-order steps, NaN, and the errors stock gives."""
    experiment_id = client.create_experiment(unique("contract/metric-edges"))
    run_id = client.create_run(experiment_id, tags=REQUIRED, run_name="edges").info.run_id
    norm.id(run_id, "run")
    calls = [
        ("loss", 0.9, 100, 3), ("loss", 0.9, 100, 3),  # the same metric twice
        ("loss", 0.5, 50, 1),  # an older step arrives later: latest stays at step 3
        ("loss", 0.7, 100, 3),  # same step and time, other value: both kept, larger wins latest
        ("acc", math.nan, 10, 0), ("acc", 0.8, 10, 0),  # NaN then a number at the same point
        ("lr", -1e-3, 5, 2**40),  # big step
    ]
    for key, value, timestamp, step in calls:
        client.log_metric(run_id, key, value, timestamp=timestamp, step=step)
    history = {
        key: sorted((str(_metric_value(m.value)), m.timestamp, m.step) for m in client.get_metric_history(run_id, key))
        for key in ("loss", "acc", "lr")
    }
    errors = []
    other = client.create_run(experiment_id, tags=REQUIRED).info.run_id
    norm.id(other, "run")
    client.delete_run(other)
    for target in (other, "0" * 32):
        try:
            client.log_metric(target, "loss", 1.0, timestamp=1, step=0)
        except Exception as exc:  # the message and code a user sees
            errors.append((type(exc).__name__, getattr(exc, "error_code", None), norm.text(str(exc))))
    for bad in (
        lambda: client.log_metric(run_id, "", 1.0, timestamp=1),
        lambda: client.log_metric(run_id, "x", "nope", timestamp=1),
    ):
        try:
            bad()
        except Exception as exc:
            errors.append((type(exc).__name__, getattr(exc, "error_code", None), norm.text(str(exc))))
    assert len(errors) == 4
    return {"run": _run(client, run_id, norm), "history": history, "errors": errors}


def _error(action) -> tuple | None:
    try:
        action()
    except Exception as exc:  # the type, code and message a user sees
        return type(exc).__name__, getattr(exc, "error_code", None), str(exc)
    return None


def run_lifecycle_edges_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    """A run's own writes (create, batch, end) at their edges: names, conflicts, refusals."""
    from mlflow.entities import RunStatus

    experiment_id = client.create_experiment(unique("contract/run-edges"))
    named_by_tag = client.create_run(experiment_id, tags={**REQUIRED, "mlflow.runName": "by-tag"})
    unnamed = client.create_run(experiment_id, tags=REQUIRED)
    run_id = named_by_tag.info.run_id
    norm.id(run_id, "run")
    norm.id(unnamed.info.run_id, "run")
    returned = {
        "name": named_by_tag.info.run_name,
        "status": named_by_tag.info.status,
        "in_experiment": named_by_tag.info.experiment_id == experiment_id,
        "artifacts_end": named_by_tag.info.artifact_uri.endswith(f"/{run_id}/artifacts"),
        "tags": unstamped(named_by_tag.data.tags),
        "params": named_by_tag.data.params,
        "metrics": named_by_tag.data.metrics,
        "unnamed_has_generated_name": bool(unnamed.info.run_name)
        and unnamed.data.tags.get("mlflow.runName") == unnamed.info.run_name,
    }
    client.log_batch(run_id, params=[Param("depth", "6")])
    client.log_batch(  # the same param again with its value: accepted; tag keys twice: last wins
        run_id,
        params=[Param("depth", "6"), Param("eta", "0.3")],
        tags=[RunTag("stage", "a"), RunTag("stage", "b"), RunTag("mlflow.runName", "renamed")],
        metrics=[Metric("loss", 0.5, 10, 0), Metric("loss", 0.5, 10, 0), Metric("loss", 0.4, 11, 1)],
    )
    deleted_experiment = client.create_experiment(unique("contract/run-edges-gone"))
    client.delete_experiment(deleted_experiment)
    errors = [
        _error(lambda: client.log_batch(run_id, params=[Param("depth", "7"), Param("new", "1")])),
        _error(lambda: client.create_run(experiment_id, tags={**REQUIRED, "mlflow.runName": "a"}, run_name="b")),
        _error(lambda: client.create_run("987654", tags=REQUIRED)),
        _error(lambda: client.create_run(deleted_experiment, tags=REQUIRED)),
    ]
    client.log_batch(run_id, tags=[RunTag("mlflow.runName", "")])  # an empty name changes nothing
    client.log_metric(run_id, "big", 2**70, timestamp=5, step=0)  # an int past 64 bits: a float
    client.log_batch(run_id, metrics=[Metric("bigger", 2**70, 5, 0)])
    store = client._tracking_client.store
    runs_before = len(client.search_runs([experiment_id], run_view_type=ViewType.ALL))
    errors.append(_error(lambda: store.create_run(
        experiment_id, "someone", None, [RunTag(k, v) for k, v in REQUIRED.items()], "no-start",
    )))
    nothing_written = len(client.search_runs([experiment_id], run_view_type=ViewType.ALL)) == runs_before
    info = store.update_run_info(run_id, RunStatus.RUNNING, None, "again")
    renamed = {"name": info.run_name, "status": info.status, "ended": info.end_time is not None}
    client.set_terminated(run_id, "KILLED", end_time=123)
    ended = client.get_run(run_id).info
    gone = client.create_run(experiment_id, tags=REQUIRED).info.run_id
    norm.id(gone, "run")
    client.delete_run(gone)
    errors += [
        _error(lambda: client.set_terminated(gone, "FINISHED")),
        _error(lambda: client.set_terminated("0" * 32, "FINISHED")),
        _error(lambda: client.log_batch(gone, params=[Param("a", "1")])),
        _error(lambda: client.log_batch("f" * 32, tags=[RunTag("a", "1")])),
    ]
    assert all(errors), errors
    return {
        "returned": returned,
        "nothing_written": nothing_written,
        "renamed": renamed,
        "ended": (ended.status, ended.end_time, ended.run_name),
        "run": _run(client, run_id, norm),
        "history": sorted((m.value, m.timestamp, m.step) for m in client.get_metric_history(run_id, "loss")),
        "errors": [
            (kind, code, norm.text(message).replace(f"experiment {deleted_experiment} ", "experiment <gone> "))
            for kind, code, message in errors
        ],
    }


def tags_scenario(client: MlflowClient, uri: str, norm: Normalizer):
    """Tags of one's own on every entity, created, set and deleted (the tag rule allows them), and
    the errors stock gives for deleting a tag that is not there."""
    experiment_id = client.create_experiment(unique("contract/tags"), tags={"owner": "vision", "temp": "x"})
    client.set_experiment_tag(experiment_id, "stage", "dev")
    client.delete_experiment_tag(experiment_id, "temp")
    run_id = client.create_run(experiment_id, tags={**REQUIRED, "temp": "x"}, run_name="tags").info.run_id
    norm.id(run_id, "run")
    client.set_tag(run_id, "stage", "dev")
    client.delete_tag(run_id, "temp")
    name = f"contract.{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name, tags={"task": "regression", "temp": "x"})
    client.set_registered_model_tag(name, "stage", "dev")
    client.delete_registered_model_tag(name, "temp")
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={"data": "jan", "temp": "x"})
    client.set_model_version_tag(name, version.version, "stage", "dev")
    client.delete_model_version_tag(name, version.version, "temp")
    errors = [
        _error(lambda: client.delete_experiment_tag(experiment_id, "missing")),
        _error(lambda: client.delete_tag(run_id, "missing")),
        _error(lambda: client.delete_registered_model_tag(name, "missing")),
        _error(lambda: client.delete_model_version_tag(name, version.version, "missing")),
    ]
    return {
        "experiment": client.get_experiment(experiment_id).tags,
        "run": _run(client, run_id, norm)["tags"],
        "model": client.get_registered_model(name).tags,
        "version": unstamped(client.get_model_version(name, version.version).tags),
        "errors": [
            error and (error[0], error[1], error[2].replace(run_id, "<run>").replace(f"id {experiment_id}", "id <exp>"))
            for error in errors
        ],
    }


SCENARIOS = [
    metric_edges_scenario,
    run_lifecycle_edges_scenario,
    experiments_scenario,
    runs_scenario,
    search_pages_scenario,
    datasets_and_models_scenario,
    registry_scenario,
    tags_scenario,
    traces_scenario,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__.removesuffix("_scenario"))
def test_team_store_returns_what_stock_returns(db_url, scenario):
    stock, team = both(db_url, scenario)
    assert team == stock


def test_finish_run_lands_a_runs_last_values_and_its_end_together_or_not_at_all(db_url):
    """The team store's own ``finish_run`` (how autologging ends an in-process trial run)."""
    from mlflow.entities import RunStatus
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=f"team+{db_url}")
    store = client._tracking_client.store
    experiment_id = client.create_experiment(unique("contract/finish"))
    run_id = client.create_run(experiment_id, tags=REQUIRED).info.run_id
    client.log_param(run_id, "depth", "6")
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        store.finish_run(
            run_id, [Metric("loss", 0.5, 0, 0)], [Param("depth", "7")], [RunTag("note", "x")],
            RunStatus.FINISHED, 1234,
        )
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.end_time is None
    assert run.data.metrics == {} and "note" not in run.data.tags

    info = store.finish_run(
        run_id, [Metric("loss", 0.5, 0, 0)], [Param("eta", "0.3")], [RunTag("note", "x")],
        RunStatus.FAILED, 1234,
    )
    run = client.get_run(run_id)
    assert (info.status, info.end_time) == ("FAILED", 1234) == (run.info.status, run.info.end_time)
    assert run.data.metrics == {"loss": 0.5} and run.data.params == {"depth": "6", "eta": "0.3"}
    assert run.data.tags["note"] == "x"


def test_the_store_runs_the_paths_its_probe_allows(db_url, accelerators):
    from mlflow_team.store import db
    from mlflow_team.store.tracking import TeamSqlAlchemyStore

    store = TeamSqlAlchemyStore(f"team+{db_url}")
    accelerated = accelerators == "accelerated"
    assert isinstance(store.ManagedSessionMaker, db.ManagedSessions) is accelerated
    assert store._lean_path is (accelerated and db_url.startswith("sqlite"))


def test_a_version_given_as_text_works_on_every_database(db_url):
    """MLflow 3.12 compares the integer column with the text as given, which PostgreSQL through
    psycopg 3 refuses; the team store hands MLflow the number."""
    uri = f"team+{db_url}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = unique("contract.text-version")
    run = client.create_run("0", tags={"team.project": "contract"})
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_model_version_tag(name, "1", "stage", "checked")
    assert client.get_model_version(name, "1").tags["stage"] == "checked"
    assert client.get_model_version_by_alias(name, "champion").version in (1, "1")
