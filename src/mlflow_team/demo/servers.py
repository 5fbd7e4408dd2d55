"""`mlflow-team demo --server`: moto's S3 server and `mlflow server` on 127.0.0.1, for the demo.

Both run as child processes on free ports, each in a process group of its own, and are stopped
by their own PIDs when the demo ends, fails or is interrupted (Ctrl-C).

moto keeps S3 in memory and has no on-disk backend (its recorder logs and replays requests, which
breaks multipart uploads, whose ids change, and appends from concurrent threads unlocked). So the
bucket is mirrored beside ``server.db``: written to ``<workdir>/s3-bucket/`` (objects, and their
metadata and tags in ``manifest.json``) when the servers stop, after `mlflow server` and before
moto, and put back into moto before `mlflow server` starts again in that folder. The runs the
database lists keep their artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

BUCKET = "mlflow-demo"
#: The bucket's copy on disk, beside server.db.
MIRROR = "s3-bucket"
MANIFEST = "manifest.json"
#: moto accepts any credentials; these only keep boto3 from looking for real ones.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def process(
    command: list[str], log: Path, ready_url: str, env: dict | None, cwd: Path, what: str, timeout: float = 120
) -> Iterator[int]:
    """Start ``command`` in a process group of its own, wait until ``ready_url`` answers, and
    stop the group by its PID at exit (SIGTERM, then SIGKILL after 15 s). Yields the PID."""
    with open(log, "w") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if child.poll() is not None:
                tail = Path(log).read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{what} exited with code {child.returncode}; its log ({log}):\n{tail}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer {ready_url} within {timeout:g} s; its log: {log}")
            time.sleep(0.3)
        yield child.pid
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


@contextmanager
def team_server(workdir: Path) -> Iterator[dict]:
    """moto S3 + `mlflow server` (team+sqlite store, team+s3 artifacts proxied by the server).

    The bucket is restored from ``<workdir>/s3-bucket`` first if it is there, and saved there when
    both stop (``restored``/``saved``: object counts; ``saved`` is set once the mirror is written).
    """
    import boto3

    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    s3_port, mlflow_port = free_port(), free_port()
    s3_url = f"http://127.0.0.1:{s3_port}"
    env = {**os.environ, **CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_url}
    env.pop("MLFLOW_TRACKING_URI", None)
    with ExitStack() as stack:
        moto_pid = stack.enter_context(
            process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                    logs / "moto.log", f"{s3_url}/moto-api/", env, workdir, "moto's S3 server")
        )
        s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="demo",
                          aws_secret_access_key="demo", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        mirror = workdir / MIRROR
        running = {"s3_url": s3_url, "s3": s3, "moto_pid": moto_pid, "logs": logs, "mirror": mirror,
                   "restored": restore_bucket(s3, mirror), "saved": None, "save_error": None}

        def save() -> None:  # runs after `mlflow server` stops, before moto does
            try:
                running["saved"] = save_bucket(s3, mirror)
            except Exception as exc:  # moto gone: say so, without hiding why the demo stopped
                running["save_error"] = f"{type(exc).__name__}: {exc}"

        stack.callback(save)
        tracking_url = f"http://127.0.0.1:{mlflow_port}"
        backend = f"team+sqlite:///{workdir / 'server.db'}"
        # Job execution needs a plain database URL; the team+ store has no use for it here.
        server_env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        running["mlflow_pid"] = stack.enter_context(
            process(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                 "--artifacts-destination", f"team+s3://{BUCKET}/artifacts",
                 "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "2"],
                logs / "mlflow-server.log", f"{tracking_url}/health", server_env, workdir, "mlflow server",
            )
        )
        running.update(tracking_url=tracking_url, backend=backend)
        yield running


def _keys(s3) -> list[str]:
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]


def save_bucket(s3, mirror: Path) -> int:
    """Write every object of the bucket under ``mirror`` (a new copy swapped in whole), with its
    metadata, content type and tags in ``manifest.json``. Returns how many objects."""
    partial = mirror.with_name(mirror.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    manifest = {}
    for key in _keys(s3):
        target = partial / "objects" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        response = s3.get_object(Bucket=BUCKET, Key=key)
        with open(target, "wb") as out:
            shutil.copyfileobj(response["Body"], out)
        tags = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
        manifest[key] = {
            "Metadata": response.get("Metadata", {}),
            "ContentType": response.get("ContentType"),
            "ContentEncoding": response.get("ContentEncoding"),
            "Tags": {t["Key"]: t["Value"] for t in tags},
        }
    partial.mkdir(parents=True, exist_ok=True)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    old = mirror.with_name(mirror.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if mirror.exists():
        mirror.rename(old)
    partial.rename(mirror)
    shutil.rmtree(old, ignore_errors=True)
    return len(manifest)


def restore_bucket(s3, mirror: Path) -> int:
    """Put the objects saved under ``mirror`` back into the bucket. Returns how many (0: none saved)."""
    import hashlib
    from urllib.parse import urlencode

    from mlflow_team.artifacts.s3 import META_PART_SIZE, META_SHA256

    manifest_file = mirror / MANIFEST
    if not manifest_file.exists():
        return 0
    manifest = json.loads(manifest_file.read_text())
    for key, saved in manifest.items():
        body = (mirror / "objects" / key).read_bytes()
        # One request each: the file's own SHA-256 is what team+s3 checks on download.
        metadata = {k: v for k, v in saved["Metadata"].items() if k != META_PART_SIZE}
        if META_SHA256 in metadata or META_PART_SIZE in saved["Metadata"]:
            metadata[META_SHA256] = hashlib.sha256(body).hexdigest()
        args = {k: saved[k] for k in ("ContentType", "ContentEncoding") if saved.get(k)}
        if saved["Tags"]:
            args["Tagging"] = urlencode(saved["Tags"])
        s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=metadata, **args)
    return len(manifest)


def tagged_objects(s3) -> tuple[int, dict[str, str]]:
    """How many objects the bucket holds, and the tags of the first one."""
    keys = _keys(s3)
    if not keys:
        return 0, {}
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=keys[0])["TagSet"]
    return len(keys), {t["Key"]: t["Value"] for t in tags}
