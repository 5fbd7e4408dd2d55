"""``mlflow-team``: check the set-up, migrate the database, check a policy file."""

from __future__ import annotations

import os
import sys
import time

import click

from mlflow_team import errors


@click.group()
@click.version_option(package_name="mlflow-team")
def cli() -> None:
    """Team conventions for MLflow: the tools around the mlflow-team plugins."""


# --- doctor ----------------------------------------------------------------------------------


def _plugin_registries() -> dict[str, object]:
    """MLflow's own registry for each entry-point group a plugin package can fill."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry
    from mlflow.tracking._model_registry.utils import _get_store_registry
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    from mlflow.tracking.context.registry import _run_context_provider_registry
    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry
    from mlflow.tracking.request_header.registry import _request_header_provider_registry

    return {
        "mlflow.tracking_store": _tracking_store_registry,
        "mlflow.model_registry_store": _get_store_registry(),
        "mlflow.artifact_repository": _artifact_repository_registry,
        "mlflow.request_header_provider": _request_header_provider_registry,
        "mlflow.run_context_provider": _run_context_provider_registry,
        "mlflow.request_auth_provider": _request_auth_provider_registry,
    }


def _registered(registry: object, name: str, target: object) -> bool:
    entries = getattr(registry, "_registry", None)
    if isinstance(entries, dict):  # stores and artifact repositories: scheme -> builder
        return entries.get(name) is target
    # providers: a list of instances of the registered classes
    return any(type(provider) is target for provider in entries or ())


def plugin_status() -> list[tuple[str, str, bool, str]]:
    """(group, name, loaded, detail) for every MLflow entry point of the installed package."""
    from importlib.metadata import distribution

    import mlflow  # noqa: F401  - importing MLflow is what registers the entry points

    registries = _plugin_registries()
    rows = []
    for entry_point in sorted(
        distribution("mlflow-team").entry_points, key=lambda e: (e.group, e.name)
    ):
        if not entry_point.group.startswith("mlflow."):
            continue
        if entry_point.group == "mlflow.app":  # no registry: `mlflow server --app-name` reads the entry points
            entry_point.load()
            rows.append((entry_point.group, entry_point.name, True, f"mlflow server --app-name {entry_point.name}"))
            continue
        registry = registries.get(entry_point.group)
        if registry is None:
            rows.append((entry_point.group, entry_point.name, False, "no MLflow registry known"))
            continue
        loaded = _registered(registry, entry_point.name, entry_point.load())
        detail = entry_point.value if loaded else "MLflow did not register it (see warnings above)"
        rows.append((entry_point.group, entry_point.name, loaded, detail))
    return rows


@cli.command()
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="Store to check (default: $MLFLOW_TRACKING_URI).",
)
def doctor(tracking_uri: str | None) -> None:
    """Show which plugins MLflow loaded, the policy in force, and whether the store answers."""
    from mlflow_team.store import compat

    healthy = True
    click.echo("Plugins (as loaded by MLflow's own registries):")
    if compat.use("cli"):
        for group, name, loaded, detail in plugin_status():
            healthy &= loaded
            click.echo(f"  [{'ok' if loaded else 'MISSING'}] {group}: {name} -> {detail}")
    else:
        click.echo("  not listed: this MLflow's plugin registries are not the ones doctor knows")

    version = "%d.%d" % compat.probe().version
    click.echo(f"MLflow {version} internals (mlflow_team.store.compat):")
    for group, kind, ok, detail in compat.report():
        # A failed accelerator is slower, not broken; a failed guard stops protecting stores.
        mark = "ok" if ok else ("OFF" if kind != "guard" else "ERROR")
        click.echo(f"  [{mark}] {group} ({kind}): {detail}")

    click.echo("Policy:")
    from mlflow_team import config

    try:
        policy = config.load_policy()
    except errors.PolicyFileError as exc:
        healthy = False
        click.echo(f"  [ERROR] {exc.message}")
    else:
        rules = policy.enabled_rules()
        click.echo(f"  from: {policy.source}")
        click.echo(f"  rules on: {', '.join(rules) if rules else 'none (nothing is rejected)'}")

    click.echo("Store:")
    if not tracking_uri:
        click.echo("  no tracking URI given (--tracking-uri or MLFLOW_TRACKING_URI): not checked")
    else:
        healthy &= _check_store(tracking_uri)
    if not healthy:
        sys.exit(1)


def _missing_sqlite_file(tracking_uri: str) -> str | None:
    """Why the SQLite file of ``tracking_uri`` is missing, or None (it exists, or not SQLite)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    db = tracking_uri.removeprefix("team+")
    if not db.startswith("sqlite:"):
        return None
    try:
        url = make_url(db)
    except Exception:  # noqa: BLE001 - the store reports what is wrong with it
        return None
    if url.database in (None, "", ":memory:") or url.query.get("uri"):
        return None  # in memory, or a file: URI SQLite resolves itself
    path = Path(url.database)
    if path.exists():
        return None
    folder = path.parent
    what = "no such file" if folder.is_dir() else f"nor does its folder {folder}"
    return errors.SQLITE_DATABASE_MISSING.format(path=path, uri=tracking_uri, what=what, cwd=Path.cwd())


def _check_store(tracking_uri: str) -> bool:
    """Build the store and ask it one question; create nothing, echo no password."""
    from mlflow.tracking._tracking_service.utils import _get_store

    from mlflow_team import redact
    from mlflow_team.store import search, uri

    shown = redact.mask_url(tracking_uri)
    if tracking_uri.startswith(uri.PREFIX) and tracking_uri.split(":", 1)[0] not in uri.TEAM_SCHEMES:
        click.echo(f"  [ERROR] {errors.UNSUPPORTED_SCHEME.format(uri=shown, supported=', '.join(uri.TEAM_SCHEMES))}")
        return False
    missing = _missing_sqlite_file(tracking_uri)
    if missing is not None:  # building the store would create the file and its folders
        click.echo(f"  [ERROR] {missing}")
        return False
    started = time.perf_counter()
    try:
        store = _get_store(tracking_uri)
        store.search_experiments(max_results=1)
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc)
        # mlflow-team's own messages say what to do; a Python class name adds nothing to them.
        kind = "" if isinstance(exc, errors.TeamStoreConfigError) else f"{type(exc).__name__}: "
        click.echo(redact.mask_secrets(f"  [ERROR] {shown}: {kind}{message}", tracking_uri))
        return False
    elapsed_ms = (time.perf_counter() - started) * 1000
    click.echo(f"  [ok] {shown} answers ({type(store).__name__}, {elapsed_ms:.0f} ms)")
    if hasattr(store, "_search_path") and (lacking := search.missing_indexes(store.engine)):
        click.echo(f"  [slow] search_runs takes MLflow's own path: the database lacks {', '.join(lacking)}; "
                   f"run mlflow-team db upgrade {shown}")
    return True


# --- db --------------------------------------------------------------------------------------


@cli.group("db")
def db_group() -> None:
    """Database commands (`mlflow db` cannot parse team+ URLs)."""


@db_group.command("upgrade")
@click.argument("url")
def db_upgrade(url: str) -> None:
    """Migrate the database behind URL (team+... or a plain SQLAlchemy URL) to MLflow's schema."""
    from mlflow_team.store import db, search, uri

    try:
        real = uri.db_url(url) if url.startswith(uri.PREFIX) else url
        before, after = db.upgrade(real)
    except errors.TeamStoreConfigError as exc:
        raise click.ClickException(exc.message) from None
    if before is None:
        click.echo(f"{url}: created at schema revision {after}.")
    elif before == after:
        click.echo(f"{url}: already at schema revision {after}.")
    else:
        click.echo(f"{url}: migrated from schema revision {before} to {after}.")
    click.echo(f"mlflow-team's search indexes are in place: {', '.join(search.index_names(real))}.")


# --- policy ----------------------------------------------------------------------------------


@cli.group("policy")
def policy_group() -> None:
    """Policy file commands."""


@policy_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def policy_check(path: str) -> None:
    """Validate a policy file and show the rules it turns on."""
    from mlflow_team import config

    try:
        policy = config.load_policy_file(path)
    except errors.PolicyFileError as exc:
        raise click.ClickException(exc.message) from None
    rules = policy.enabled_rules()
    click.echo(f"{path}: valid. Rules on: {', '.join(rules) if rules else 'none'}.")
    # Patterns as written in the file (a repr would double every backslash).
    if policy.experiment_name:
        click.echo(f"  experiment-name: {policy.experiment_name.pattern.pattern}")
    if policy.registered_model_name:
        click.echo(f"  registered-model-name: {policy.registered_model_name.pattern.pattern}")
    if policy.required_tags:
        click.echo(f"  required-tags: {list(policy.required_tags)} defaults {policy.tag_defaults}")
    if policy.reserved_tags:
        click.echo(f"  reserved-tags: {list(policy.reserved_tags)}")


# --- identity --------------------------------------------------------------------------------


@cli.group("identity", invoke_without_command=True)
@click.option("--server", default=None, help="An http(s) tracking server to ask whether it accepts you.")
@click.pass_context
def identity_group(ctx: click.Context, server: str | None) -> None:
    """Show who you are to MLflow, whether a key is set, and whether SERVER accepts you."""
    if ctx.invoked_subcommand is not None:
        return
    from mlflow_team import config, identity

    me = identity.author()
    click.echo(f"author: {me.name} (from {me.source})")
    key = identity.signing_key()
    click.echo(f"key: {'configured (' + key.source + ')' if key else 'none'}")
    signing_on = os.environ.get("MLFLOW_TRACKING_AUTH") == "team"
    click.echo(f"signing: {'on' if signing_on else 'off'} (MLFLOW_TRACKING_AUTH=team turns it on)")
    if not config.client_identity_on():
        click.echo(f"identity plugins: off ({config.IDENTITY_ENV})")
    if key is not None and not signing_on:
        click.echo("  note: a key is configured but requests are not signed without MLFLOW_TRACKING_AUTH=team")
    if server:
        accepted, message = probe_server(server)
        click.echo(f"server {server}: {message}")
        if not accepted:
            sys.exit(1)


@identity_group.command("new-key")
def identity_new_key() -> None:
    """Print a new random personal key (give it to the author and to the server's keyring)."""
    import secrets

    click.echo(secrets.token_hex(32))


@cli.group("artifacts")
def artifacts_group() -> None:
    """Look after team+s3 artifact storage."""


@artifacts_group.command("clean-up")
@click.argument("uri")
@click.option(
    "--older-than-hours", default=24.0, show_default=True, type=click.FloatRange(min=0),
    help="Abort only multipart uploads started longer ago than this (0: all unfinished ones).",
)
def artifacts_clean_up(uri: str, older_than_hours: float) -> None:
    """Abort unfinished multipart uploads under URI (team+s3://bucket/prefix).

    A process killed while uploading a large artifact leaves its parts in the bucket, invisible
    but billed; nothing of them ever shows up as an artifact.
    """
    from datetime import timedelta

    from mlflow.exceptions import MlflowException

    if not uri.startswith("team+s3://"):
        raise click.BadParameter(f"{uri!r} is not a team+s3:// URI, for example team+s3://my-bucket/mlflow")
    from mlflow_team.entrypoints import s3_artifact_repository

    try:  # through the entry point: a missing boto3 names the extra that installs it
        aborted = s3_artifact_repository(uri).clean_up(timedelta(hours=older_than_hours))
    except MlflowException as exc:
        click.echo(f"[ERROR] {exc.message}", err=True)
        sys.exit(1)
    click.echo(f"aborted {aborted} unfinished multipart upload(s) under {uri}")


def probe_server(server: str) -> tuple[bool, str]:
    """Ask SERVER's team store which author it would stamp on a request from here."""
    import mlflow
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    from mlflow_team.identity import server as stamping

    mlflow.set_tracking_uri(server)  # the author headers go only to the tracking server in use
    try:
        response = http_request(
            get_default_host_creds(server),
            "/api/2.0/mlflow/runs/create",
            "POST",
            json={"experiment_id": stamping.PROBE_EXPERIMENT_ID, "start_time": int(time.time() * 1000)},
            max_retries=0,
        )
    except Exception as exc:  # noqa: BLE001
        return False, f"not reachable ({exc})"
    try:
        message = response.json().get("message", response.text)
    except ValueError:
        message = response.text[:300]
    if response.status_code == 400 and "identity probe" in message:
        return True, message
    if response.status_code == 401:
        return False, f"rejected (401): {message}"
    if response.status_code == 403:
        return False, f"denied by the server's own authorization (403): {message}"
    return False, f"did not answer as an mlflow-team server ({response.status_code}): {message[:300]}"


def main() -> None:  # pragma: no cover - console entry
    cli(prog_name=os.path.basename(sys.argv[0]) or "mlflow-team")


@cli.command()
@click.option("--workdir", type=click.Path(file_okay=False), default="mlflow-team-demo", show_default=True,
              help="Where the database, artifacts and generated data go (reused by a rerun).")
@click.option("--trials", type=int, default=20, show_default=True, help="hyperopt trials for xgboost.")
@click.option("--train", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A green-taxi parquet file to train on (default: generated).")
@click.option("--valid", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A green-taxi parquet file to validate on (default: generated).")
@click.option("--rows", type=int, default=20_000, show_default=True, help="Trips in a generated training file.")
@click.option("--max-train-seconds", type=float, default=10.0, show_default=True,
              help="Selection budget: a model must train within this.")
@click.option("--max-model-mb", type=float, default=5.0, show_default=True,
              help="Selection budget: a logged model (its artifact files as stored) must be at most this big.")
@click.option("--server", "with_server", is_flag=True,
              help="Run it through HTTP: moto's S3 and `mlflow server` (team store, team+s3) on 127.0.0.1.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="With --server: keep both servers up for you to browse until Ctrl-C.")
@click.option("--spark", is_flag=True,
              help="Tune on a local Spark session with hyperopt's SparkTrials (needs the spark extra and Java).")
@click.option("--parallelism", type=click.IntRange(min=1), default=2, show_default=True,
              help="With --spark: trials evaluated at once (one Spark task each).")
def demo(workdir, trials, train, valid, rows, max_train_seconds, max_model_mb, with_server, wait, spark,
         parallelism) -> None:
    """The course's NYC taxi workflow end to end, on team+sqlite and team+file.

    Baselines, xgboost tuned with hyperopt (autologged), selection by RMSE within a training-time
    and size budget (a table and a plot), the pick registered as @champion and loaded back to predict.
    """
    from pathlib import Path

    if (train is None) != (valid is None):
        raise click.UsageError("give both --train and --valid, or neither (to use generated data)")
    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # The demo's output is its progress bar and its summary: no "View run ..." line per run
    # (MLflow prints them for HTTP tracking URIs), no download bar when the champion loads.
    os.environ.update(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")

    import mlflow

    from mlflow_team.demo import workflow

    disk_before = workflow.folder_bytes(folder)

    def disk_summary(outcome) -> None:
        added = workflow.folder_bytes(folder) - disk_before
        models = (f" ({outcome.logged_models} logged models: {outcome.logged_bytes / 1e6:.1f} MB)"
                  if outcome is not None else "")
        click.echo(f"Disk: this run added {added / 1e6:.1f} MB to {folder}{models}; "
                   f"{workflow.folder_bytes(folder) / 1e6:.1f} MB there in all.")

    settings = workflow.Settings(
        workdir=folder, trials=trials, train=train, valid=valid, train_rows=rows, valid_rows=max(rows // 2, 100),
        max_training_time_s=max_train_seconds, max_model_size_mb=max_model_mb, spark=parallelism if spark else 0,
    )
    if spark:
        from mlflow_team import extras

        extras.require("pyspark", "mlflow-team demo --spark")
    if not with_server:
        tracking_uri = f"team+sqlite:///{folder / 'mlflow.db'}"
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)  # not a registry an MLFLOW_REGISTRY_URI names
        click.echo(f"tracking: {tracking_uri} (artifacts: {folder / 'mlruns'})")
        outcome = workflow.run(settings, echo=click.echo)
        click.echo(f"\nSee it all in the stock UI:\n  mlflow ui --backend-store-uri {tracking_uri}")
        disk_summary(outcome)
        return

    from mlflow_team.demo import servers

    had_database = (folder / "server.db").exists()
    running, outcome = None, None
    try:
        with servers.team_server(folder) as running:
            url = running["tracking_url"]
            click.echo(f"moto S3 at {running['s3_url']} (pid {running['moto_pid']}); "
                       f"mlflow server at {url} (pid {running['mlflow_pid']}), store {running['backend']}"
                       + ("" if wait else "; both stop when the workflow ends (--no-wait)"))
            if running["restored"]:
                click.echo(f"S3: {running['restored']} objects of earlier runs put back from {running['mirror']}")
            elif had_database:
                click.echo(f"S3: no copy of the bucket in {running['mirror']}: earlier runs in server.db have no artifacts")
            mlflow.set_tracking_uri(url)
            mlflow.set_registry_uri(url)
            outcome = workflow.run(settings, echo=click.echo)
            count, tags = servers.tagged_objects(running["s3"])
            click.echo(f"\nS3: {count} objects in team+s3://{servers.BUCKET}/artifacts; tags of one: "
                       + ", ".join(f"{k}={v}" for k, v in tags.items()))
            if wait:  # only a URL that stays up is worth printing
                click.echo(f"Open {url} in a browser (the stock MLflow UI). Logs: {running['logs']}")
                click.echo("Both servers stay up until Ctrl-C.")
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("\nInterrupted.")
    click.echo("Both servers stopped.")
    if running is not None and running["saved"] is not None:
        click.echo(f"Kept: {folder / 'server.db'} and the bucket's {running['saved']} objects in {running['mirror']}; "
                   f"`mlflow-team demo --server --workdir {folder}` puts them back into S3 before its servers start "
                   "(and runs the workflow again), so every run there keeps its artifacts.")
    elif running is not None:
        click.echo(f"The bucket was not saved ({running['save_error']}): the runs in {folder / 'server.db'} "
                   "have no artifacts any more.")
    disk_summary(outcome)


# --- eject -----------------------------------------------------------------------------------


@cli.command("eject")
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="The database: team+sqlite:///..., team+postgresql://..., or its plain URL (default: $MLFLOW_TRACKING_URI).",
)
@click.option("--apply", is_flag=True, help="Rewrite, in one transaction (default: a dry run that only counts).")
def eject_command(tracking_uri: str | None, apply: bool) -> None:
    """Rewrite team+file/team+s3 artifact locations to file/s3, so stock MLflow reads the database.

    Without --apply nothing is written: it shows what would change. Stop every writer that uses
    the team+ URL first; running it again is safe (it then changes nothing).
    """
    from mlflow_team.store import eject as ejecting

    if not tracking_uri:
        raise click.ClickException(errors.EJECT_NO_TRACKING_URI)
    try:
        report = ejecting.eject(tracking_uri, apply=apply)
    except ejecting.EjectError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{'Ejecting' if apply else 'Dry run (nothing is written)'}: {report.url}")
    click.echo(report.table())
    if report.absent:
        click.echo(f"(not in this database's schema: {', '.join(report.absent)})")
    if report.team_tables:
        click.echo(f"mlflow-team's own table(s) {'dropped' if apply else 'to drop'}: {', '.join(report.team_tables)}")
    if report.team_indexes:
        click.echo(f"mlflow-team's index(es) on runs {'dropped' if apply else 'to drop'}: {', '.join(report.team_indexes)}")
    if not apply:
        click.echo(
            f"{report.rows} location(s) would change. Run again with --apply to rewrite them in one transaction."
            if report.rows else "Nothing to rewrite: stock MLflow already reads every location."
        )
        return
    click.echo(f"Rewrote {report.rows} location(s) in one transaction." if report.rows
               else "Nothing to rewrite: stock MLflow already reads every location.")
    click.echo(
        "Next, with stock MLflow alone (mlflow-team not needed):\n"
        f"  export MLFLOW_TRACKING_URI={report.stock_url}\n"
        f"  mlflow ui --backend-store-uri {report.stock_url}\n"
        "Artifacts are now plain file: and s3: URIs, which stock MLflow reads as they are. The "
        "checksums team+file kept beside them (.<name>.mlflow-team-sha256 files, extended "
        "attributes) are ignored by stock MLflow and harmless.\n"
        "The way back in: the team+ URL keeps working on this database (it reads plain file: and "
        "s3: locations); new artifacts then go to team+ locations again."
    )


if __name__ == "__main__":  # pragma: no cover
    main()
