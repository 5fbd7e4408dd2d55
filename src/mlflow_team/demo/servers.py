"""`mlflow-team demo --server`: moto's S3 server and `mlflow server` on 127.0.0.1, for the demo.

Both run as child processes on free ports, each in a process group of its own, and are stopped
by their own PIDs when the demo ends, fails or is interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
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
    """moto S3 + `mlflow server` (team+sqlite store, team+s3 artifacts proxied by the server)."""
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
        tracking_url = f"http://127.0.0.1:{mlflow_port}"
        backend = f"team+sqlite:///{workdir / 'server.db'}"
        mlflow_pid = stack.enter_context(
            process(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                 "--artifacts-destination", f"team+s3://{BUCKET}/artifacts",
                 "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "2"],
                logs / "mlflow-server.log", f"{tracking_url}/health", env, workdir, "mlflow server",
            )
        )
        yield {
            "tracking_url": tracking_url, "s3_url": s3_url, "s3": s3, "backend": backend,
            "moto_pid": moto_pid, "mlflow_pid": mlflow_pid, "logs": logs,
        }


def tagged_objects(s3) -> tuple[int, dict[str, str]]:
    """How many objects the bucket holds, and the tags of the first one."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    if not keys:
        return 0, {}
    tags = s3.get_object_tagging(Bucket=BUCKET, Key=keys[0])["TagSet"]
    return len(keys), {t["Key"]: t["Value"] for t in tags}
