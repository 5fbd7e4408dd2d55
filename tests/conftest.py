"""Shared fixtures: policies, and a fresh database on each server the machine offers.

PostgreSQL (127.0.0.1:5432, trust) and MariaDB (127.0.0.1:3306, root, no password) are used when
they answer; without them those tests skip, except under CI=true, where a missing database is a
failure.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from mlflow_team.config import parse_policy

EVERY_RULE = {
    "experiment-name": {"pattern": r"^[a-z0-9-]+/[a-z0-9-]+$", "example": "vision/resnet-ablation"},
    "registered-model-name": {"pattern": r"^[a-z0-9-]+\.[a-z0-9-]+$", "example": "vision.resnet"},
    "required-tags": {"tags": ["team.project"], "defaults": {"team.name": "vision"}},
    "protected-deletions": {},
    "lossless-values": {},
    "reserved-tags": {},
}

EVERY_RULE_TOML = """\
[experiment-name]
pattern = '^[a-z0-9-]+/[a-z0-9-]+$'
example = "vision/resnet-ablation"

[registered-model-name]
pattern = '^[a-z0-9-]+\\.[a-z0-9-]+$'
example = "vision.resnet"

[required-tags]
tags = ["team.project"]
defaults = { "team.name" = "vision" }

[protected-deletions]
[lossless-values]
[reserved-tags]
"""

# New team+sqlite files are copies of a schema template (mlflow_team.store.db): the suite keeps its
# own, outside the user's cache; servers and notebooks the tests start inherit the setting.
os.environ.setdefault("MLFLOW_TEAM_CACHE_DIR", str(Path(tempfile.gettempdir()) / "mlflow-team-tests-cache"))

PG_ADMIN = dict(host="127.0.0.1", port=5432, user="root", dbname="test")
MYSQL_ADMIN = dict(host="127.0.0.1", port=3306, user="root", password="")


#: The slowest modules (servers, Spark, whole workflows), slowest first, by the sums of their tests'
#: durations (``--junitxml``). xdist's ``--dist loadfile`` (with ``--no-loadscope-reorder``) hands
#: out whole files in collection order, so these go first and the short ones fill in around them.
SLOWEST_MODULES = (
    "integration/test_demo.py", "integration/test_team_server_reaper.py", "unit/test_hyperopt_spark.py",
    "integration/test_team_server_guards.py", "integration/test_eject.py", "integration/test_search_differential.py",
    "integration/test_artifacts_server.py", "integration/test_team_server.py", "integration/test_readme.py",
    "unit/test_examples.py", "contract/test_contract.py", "integration/test_identity_workers.py",
    "unit/test_store_sqlite.py", "integration/test_identity_server.py", "integration/test_artifacts_half_directory.py",
    "integration/test_crash_and_concurrency.py", "integration/test_browser.py",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0].removeprefix("tests/")
        return SLOWEST_MODULES.index(path) if path in SLOWEST_MODULES else len(SLOWEST_MODULES)

    items.sort(key=rank)  # stable: each module's own order is kept


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str):
    if in_ci():
        pytest.fail(f"{reason}; under CI=true a missing database is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture
def every_rule():
    return parse_policy(EVERY_RULE, source="tests: every rule on")


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch) -> Path:
    """A policy file with every rule on, in force through MLFLOW_TEAM_POLICY."""
    path = tmp_path / "mlflow-team.toml"
    path.write_text(EVERY_RULE_TOML)
    monkeypatch.setenv("MLFLOW_TEAM_POLICY", str(path))
    return path


@pytest.fixture(autouse=True)
def _no_policy_leaks(monkeypatch, tmp_path):
    """Each test starts with no policy, a clean working directory, and stores built anew.

    MLflow caches one store per URI for the whole process; a store reads the policy when it is
    built, so a cached store would carry the previous test's policy.
    """
    for name in (
        "MLFLOW_TEAM_POLICY", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TEAM_AUTHOR",
        "MLFLOW_TEAM_AUTHOR_KEY", "MLFLOW_TEAM_AUTHOR_KEY_FILE", "MLFLOW_TEAM_AUTHOR_HOSTS",
        "MLFLOW_TEAM_IDENTITY", "MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    _clear_store_caches()
    yield
    _clear_store_caches()
    # MLflow's own setters also write the environment (for subprocesses) and never unset it: a
    # variable this fixture removed that is back now was put there by the test. Removed here,
    # because monkeypatch only restores what it recorded, and it recorded nothing for an unset
    # variable; a leaked MLFLOW_EXPERIMENT_ID would send a later test's clients to an experiment
    # id of another database.
    for name in _SET_BY_MLFLOW:
        os.environ.pop(name, None)


@pytest.fixture(autouse=True, scope="module")
def _no_uri_leaks_between_modules():
    """``mlflow.set_tracking_uri``/``set_registry_uri``/``set_experiment`` also set
    MLFLOW_TRACKING_URI/REGISTRY_URI/EXPERIMENT_ID (for subprocesses) and never unset them; a
    module-scoped fixture's calls would otherwise reach the next module's subprocesses (servers,
    the demo) through the environment."""
    yield
    for name in _SET_BY_MLFLOW:
        os.environ.pop(name, None)


# set_tracking_uri, set_registry_uri and set_experiment write these (mlflow/tracking/fluent.py)
_SET_BY_MLFLOW = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def _clear_store_caches():
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry.utils import _get_store_registry

    from mlflow_team import identity

    identity.clear_cache()
    while mlflow.active_run() is not None:
        mlflow.end_run()
    # The fluent API remembers the last set_experiment for the whole process; an id from another
    # test's database would point at nothing (or at the wrong experiment) in this one.
    fluent._active_experiment_id = None
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    _get_store_registry()._get_store_with_resolved_uri.cache_clear()


def _postgres_database():
    try:
        import psycopg2
    except ImportError:
        unavailable("psycopg2 is not installed")
    try:
        admin = psycopg2.connect(connect_timeout=3, **PG_ADMIN)
    except Exception as exc:
        unavailable(f"PostgreSQL at 127.0.0.1:5432 does not answer ({exc})")
    admin.autocommit = True
    name = f"mlflow_team_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    return admin, name


def _mysql_database():
    try:
        import pymysql
    except ImportError:
        unavailable("pymysql is not installed")
    try:
        admin = pymysql.connect(connect_timeout=3, autocommit=True, **MYSQL_ADMIN)
    except Exception as exc:
        unavailable(f"MariaDB/MySQL at 127.0.0.1:3306 does not answer ({exc})")
    name = f"mlflow_team_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    return admin, name


@pytest.fixture(scope="session")
def postgresql_url():
    admin, name = _postgres_database()
    yield f"postgresql://{PG_ADMIN['user']}@127.0.0.1:5432/{name}"
    _dispose_engines()
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(scope="session")
def mysql_url():
    admin, name = _mysql_database()
    yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    _dispose_engines()
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.close()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/mlflow.db"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def fresh_db(request, tmp_path):
    """The plain URL of a database of its own on each backend, for a test that needs a whole
    database (eject rewrites one; the search indexes are per database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/mlflow.db"
        return
    if request.param == "postgresql":
        admin, name = _postgres_database()
        url, drop = f"postgresql://root@127.0.0.1:5432/{name}", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    else:
        admin, name = _mysql_database()
        url, drop = f"mysql+pymysql://root@127.0.0.1:3306/{name}", f"DROP DATABASE IF EXISTS {name}"
    yield url
    _dispose_engines()
    with admin.cursor() as cursor:
        cursor.execute(drop)
    admin.close()


@pytest.fixture
def old_database(tmp_path):
    """A database one migration behind MLflow's head, as an older MLflow would leave it."""
    from alembic import command
    from mlflow.store.db.utils import (
        _get_alembic_config, _get_latest_schema_revision, _get_schema_version, create_sqlalchemy_engine,
    )

    from mlflow_team.store import db

    url = f"sqlite:///{tmp_path}/old.db"
    db.upgrade(url)  # create it at head with MLflow's own migrations
    engine = create_sqlalchemy_engine(url)
    config = _get_alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    assert _get_schema_version(engine) != _get_latest_schema_revision()
    engine.dispose()
    return url


def _dispose_engines():
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from mlflow_team.store import db

    for engine in [*db._engines.values(), *SqlAlchemyStore._engine_map.values()]:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def db_url(request):
    """The plain SQLAlchemy URL of a shared test database on each backend."""
    marks = {"postgresql": "postgres", "mysql": "mysql"}
    if request.param in marks:
        request.applymarker(getattr(pytest.mark, marks[request.param]))
    return request.getfixturevalue(f"{request.param}_url")


def unique(prefix: str) -> str:
    """A name no other test uses, valid under every rule's pattern."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- stock MLflow without mlflow-team, for the colleagues who do not install it ---------------

STOCK_PYTHON_ENV = "MLFLOW_TEAM_STOCK_PYTHON"


def stock_env() -> dict[str, str]:
    """This environment without MLflow's settings or a PYTHONPATH that could reach this checkout."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}


@pytest.fixture(scope="session")
def stock_python() -> str:
    """A python with stock MLflow, of this MLflow's version, and without mlflow-team."""
    import mlflow

    python = os.environ.get(STOCK_PYTHON_ENV, "").strip()
    if not python:
        reason = (f"{STOCK_PYTHON_ENV} is not set: point it at the python of a virtual environment with "
                  f"mlflow=={mlflow.__version__}, psycopg2-binary, pymysql, scikit-learn and without mlflow-team")
        if in_ci():
            pytest.fail(f"{reason}; under CI=true this is a failure, not a skip")
        pytest.skip(reason)
    probe = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('mlflow')); import mlflow_team"],
        capture_output=True, text=True, env=stock_env(), timeout=60,
    )
    version = probe.stdout.strip()
    assert version == mlflow.__version__, (
        f"{STOCK_PYTHON_ENV}={python} has mlflow {version!r}, this environment {mlflow.__version__}; "
        f"they must match (a schema newer or older than the stock MLflow is refused). {probe.stderr[-500:]}"
    )
    assert probe.returncode != 0 and "No module named 'mlflow_team'" in probe.stderr, (
        f"{STOCK_PYTHON_ENV}={python} can import mlflow_team: it must be stock MLflow alone"
    )
    return python


@pytest.fixture(scope="session")
def spark():
    """A real local[2] Spark session for SparkTrials (Java and pyspark needed; under CI=true their
    absence fails). Its executors run this Python, with the repository importable (the tests'
    objectives are pickled by reference), under MLFLOW_AUTOLOGGING_TESTING."""
    import shutil

    if shutil.which("java") is None:
        _missing("Spark needs a Java runtime (`java` is not on PATH; Debian: default-jre-headless)")
    try:
        import pyspark  # noqa: F401
    except ImportError:
        _missing("pyspark is not installed (pip install -e '.[spark]')")
    from mlflow_team.hyperopt.spark import local_session

    root = str(Path(__file__).resolve().parent.parent)
    # Executors autolog as MLflow tests its own integrations: an error of ours fails the trial.
    session = local_session(2, {"spark.executorEnv.PYTHONPATH": root,
                                "spark.executorEnv.MLFLOW_AUTOLOGGING_TESTING": "true"}, imports=("xgboost", "sklearn"))
    yield session
    session.stop()


def _missing(reason: str):
    if in_ci():
        pytest.fail(f"{reason}; under CI=true this is a failure, not a skip")
    pytest.skip(reason)
