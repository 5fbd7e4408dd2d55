"""Start a real `mlflow server` on a free loopback port and stop it by its own PID."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mlflow_team.demo.servers import free_port, process

__all__ = ["DEFAULT_WORKERS", "free_port", "mlflow_server", "run_server_expecting_failure"]


#: ``mlflow_server(..., workers=DEFAULT_WORKERS)``: no ``--workers``, so the server runs its own
#: default count (4 on MLflow 3), as a team runs it: for behaviour that could differ by worker.
DEFAULT_WORKERS = None


@contextmanager
def mlflow_server(
    backend_uri: str, workdir: Path, env: dict[str, str] | None = None, extra: list[str] | None = None,
    workers: int | None = 1,
) -> Iterator[str]:
    """``workers=None`` starts the server with MLflow's default worker count, as a team runs it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(workdir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
        *([] if workers is DEFAULT_WORKERS else ["--workers", str(workers)]),
        *(extra or []),
    ]
    with process(command, workdir / f"server-{port}.log", f"{url}/health", {**os.environ, **(env or {})},
                 workdir, "mlflow server", timeout=90):
        yield url


def run_server_expecting_failure(backend_uri: str, workdir: Path, timeout: float = 120) -> tuple[int, str]:
    """Start a server that should refuse to start; return its exit code and output."""
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=workdir, capture_output=True, text=True, timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr
