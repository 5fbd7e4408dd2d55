"""Stock `s3://`, `team+s3://` and raw boto3, side by side in one run, against one S3 server.

    python benchmarks/bench_artifacts.py            # full run (about three minutes on 2 cores)
    python benchmarks/bench_artifacts.py --quick    # 100 files, 50 MB, 2 repetitions

The S3 server is moto's (`python -m moto.server`), started as its own process on a free port of
127.0.0.1 and stopped by its PID at the end (`--in-process` runs `ThreadedMotoServer` in this
process instead); the three clients reach it through `MLFLOW_S3_ENDPOINT_URL`:

- stock: MLflow's `S3ArtifactRepository` on `s3://bench/<prefix>/<experiment>/<run>/artifacts`;
- team: `TeamS3ArtifactRepository` on `team+s3://...` (default settings, no policy file), with
  the tracking URI on a `team+sqlite:///` database that holds the run, so objects get tagged
  with the run's values as in real use;
- raw: boto3 alone (`Config(max_pool_connections=20)`), the ceiling a repository can approach.

Figures (medians; the three clients' repetitions interleaved, in a rotating order, because the
machine is noisy; every upload repetition writes under a fresh key prefix):

1. upload a directory of 300 files of 4 KB (`log_artifacts`), files/s;
   raw: a pool of 16 threads, `upload_file` per file;
2. upload one 200 MB file (`log_artifact`), MB/s; raw: `upload_file`, default TransferConfig;
3. download that file (`download_artifacts("big.bin", dst)`; team checks S3's composite SHA-256
   of its parts, hashing each range as it arrives), MB/s;
   raw: `download_file`. All three read the same object (uploaded by team, so it has a digest);
4. download the 300-file directory (`download_artifacts("", dst)`; team checks every file),
   files/s; raw: one listing, then a pool of 16 threads, `download_file` per key;
5. figure 1 again on 100 files with 20 ms added to every S3 request (a botocore `before-send`
   handler on each client that sleeps), to show what a real bucket's round trips do.

Targets: 300 x 4 KB upload, team >= 2x stock and >= 0.8x raw; one large upload, team >= 1.0x
stock and >= 0.8x raw; downloads (checksum included), team >= 0.8x raw. The script never
asserts timings and never exits non-zero over a missed target; it fails only if a transfer
fails or comes back wrong.

Read the figures knowing that the server shares the machine's two cores with the clients:
every byte is also parsed and stored by moto, so throughput here is CPU-bound and far below
what a real bucket gives; ratios are the figures to compare, and figure 5 shows the round-trip
cost that a local server hides. With `--in-process` the server also shares the clients' GIL,
which caps any client's parallelism near 1.3x.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

BUCKET = "bench"
IMPLS = ("stock", "team", "raw")
SMALL = 4 * 1024
MB = 1024 * 1024
LATENCY_S = 0.020
LATENCY_ID = "bench-artifacts-latency"


def quiet() -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for name in ("mlflow", "alembic", "werkzeug", "botocore", "boto3", "s3transfer", "urllib3", "moto"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Left at WARNING on purpose: a failed run lookup (objects tagged by path only) shows.
    logging.getLogger("mlflow_team").setLevel(logging.WARNING)


@contextlib.contextmanager
def moto_server(port: int, in_process: bool, workdir: Path) -> Iterator[None]:
    """moto's S3 on 127.0.0.1:port: its own process (stopped by its PID), or this one's threads."""
    if in_process:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield
        finally:
            server.stop()
        return
    from mlflow_team.demo.servers import process

    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(command, workdir / "moto.log", f"http://127.0.0.1:{port}/moto-api/", None, workdir, "moto's S3 server"):
        yield


def write_small_dir(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"part-{i:04d}.bin").write_bytes(os.urandom(SMALL))


def write_big_file(path: Path, size_mb: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.writelines(os.urandom(MB) for _ in range(size_mb))


def rotated(rep: int) -> tuple[str, ...]:
    shift = rep % len(IMPLS)
    return IMPLS[shift:] + IMPLS[:shift]


class Bench:
    def __init__(self, work: Path, raw_client, admin_client, experiment_id: str, run_id: str) -> None:
        self.work = work
        self.raw = raw_client  # measured
        self.admin = admin_client  # listings, checks and clean-up between measurements
        self.experiment_id = experiment_id
        self.run_id = run_id

    # --- the three clients ---------------------------------------------------------------

    def root(self, prefix: str) -> str:
        """A run's artifact root under ``prefix``, laid out as MLflow lays out run artifacts."""
        return f"{prefix}/{self.experiment_id}/{self.run_id}/artifacts"

    def repo(self, impl: str, root: str):
        if impl == "stock":
            from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

            return S3ArtifactRepository(f"s3://{BUCKET}/{root}")
        from mlflow_team.artifacts.s3 import TeamS3ArtifactRepository

        return TeamS3ArtifactRepository(f"team+s3://{BUCKET}/{root}")

    def raw_upload_dir(self, local_dir: Path, root: str) -> None:
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        with ThreadPoolExecutor(max_workers=16) as pool:
            for future in [
                pool.submit(self.raw.upload_file, str(p), BUCKET, f"{root}/{p.relative_to(local_dir).as_posix()}")
                for p in files
            ]:
                future.result()

    def raw_download_dir(self, root: str, dst: Path) -> None:
        keys = self.keys(root, self.raw)

        def fetch(key: str) -> None:
            target = dst / key[len(root) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.raw.download_file(BUCKET, key, str(target))

        with ThreadPoolExecutor(max_workers=16) as pool:
            for future in [pool.submit(fetch, key) for key in keys]:
                future.result()

    # --- bookkeeping (never timed) -------------------------------------------------------

    def keys(self, root: str, client=None) -> list[str]:
        paginator = (client or self.admin).get_paginator("list_objects_v2")
        return [o["Key"] for page in paginator.paginate(Bucket=BUCKET, Prefix=root + "/") for o in page.get("Contents", [])]

    def delete(self, root: str) -> None:
        keys = self.keys(root)
        for start in range(0, len(keys), 1000):
            self.admin.delete_objects(
                Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True}
            )

    def expect_objects(self, root: str, count: int, what: str) -> None:
        found = len(self.keys(root))
        if found != count:
            raise RuntimeError(f"{what}: {found} objects under {root}, expected {count}")

    def scratch(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.work / "downloads"))

    # --- scenarios: each returns {impl: [seconds per repetition]} ------------------------

    def upload_dir(self, label: str, local_dir: Path, count: int, reps: int, hook=None) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        for rep in range(reps):
            for impl in rotated(rep):
                root = self.root(f"{label}/{impl}/r{rep}")
                repo = None if impl == "raw" else self.repo(impl, root)
                if hook is not None:
                    hook(impl, repo)
                started = time.perf_counter()
                if repo is None:
                    self.raw_upload_dir(local_dir, root)
                else:
                    repo.log_artifacts(str(local_dir))
                samples[impl].append(time.perf_counter() - started)
                if repo is not None:
                    repo.thread_pool.shutdown(wait=True)
                self.expect_objects(root, count, f"{impl} {label} upload")
        return samples

    def upload_big(self, big: Path, reps: int, keep: str) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        size = big.stat().st_size
        for rep in range(reps):
            for impl in rotated(rep):
                root = self.root(f"big/{impl}/r{rep}")
                repo = None if impl == "raw" else self.repo(impl, root)
                started = time.perf_counter()
                if repo is None:
                    self.raw.upload_file(str(big), BUCKET, f"{root}/{big.name}")
                else:
                    repo.log_artifact(str(big))
                samples[impl].append(time.perf_counter() - started)
                if repo is not None:
                    repo.thread_pool.shutdown(wait=True)
                stored = self.admin.head_object(Bucket=BUCKET, Key=f"{root}/{big.name}")["ContentLength"]
                if stored != size:
                    raise RuntimeError(f"{impl} big upload stored {stored} bytes, expected {size}")
                if root != keep:
                    self.delete(root)  # keep the server's disk and memory flat
        return samples

    def download_big(self, root: str, name: str, size: int, reps: int) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        for rep in range(reps):
            for impl in rotated(rep):
                dst = self.scratch()
                repo = None if impl == "raw" else self.repo(impl, root)
                started = time.perf_counter()
                if repo is None:
                    self.raw.download_file(BUCKET, f"{root}/{name}", str(dst / name))
                else:
                    repo.download_artifacts(name, str(dst))
                samples[impl].append(time.perf_counter() - started)
                if repo is not None:
                    repo.thread_pool.shutdown(wait=True)
                got = (dst / name).stat().st_size
                if got != size:
                    raise RuntimeError(f"{impl} big download wrote {got} bytes, expected {size}")
                shutil.rmtree(dst)
        return samples

    def download_dir(self, root: str, count: int, reps: int) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        for rep in range(reps):
            for impl in rotated(rep):
                dst = self.scratch()
                repo = None if impl == "raw" else self.repo(impl, root)
                started = time.perf_counter()
                if repo is None:
                    self.raw_download_dir(root, dst)
                else:
                    repo.download_artifacts("", str(dst))
                samples[impl].append(time.perf_counter() - started)
                if repo is not None:
                    repo.thread_pool.shutdown(wait=True)
                got = [p for p in dst.rglob("*") if p.is_file()]
                if len(got) != count or any(p.stat().st_size != SMALL for p in got):
                    raise RuntimeError(f"{impl} directory download: {len(got)} files, expected {count} of {SMALL} bytes")
                shutil.rmtree(dst)
        return samples


class Latency:
    """Sleeps before every S3 request a client sends, and counts the requests."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.requests = {impl: 0 for impl in IMPLS}
        self.clients: list = []
        self._lock = threading.Lock()

    def handler_for(self, impl: str):
        def before_send(**kwargs):
            with self._lock:
                self.requests[impl] += 1
            time.sleep(self.seconds)
            # Returns None: anything else would stand in for the response.

        return before_send

    def attach(self, impl: str, client) -> None:
        # Stock's and team's clients are cached for five minutes, then rebuilt: attach before
        # every repetition (idempotent thanks to unique_id) so a rebuilt client gets it too.
        client.meta.events.register("before-send.s3", self.handler_for(impl), unique_id=f"{LATENCY_ID}-{impl}")
        if client not in self.clients:
            self.clients.append(client)

    def detach(self) -> None:
        for client in self.clients:
            for impl in IMPLS:
                client.meta.events.unregister("before-send.s3", unique_id=f"{LATENCY_ID}-{impl}")


def median_rate(samples: list[float], amount: float) -> float:
    return amount / statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--in-process", action="store_true", help="moto in this process (shares the GIL)")
    args = parser.parse_args()
    quiet()
    sizes = (
        dict(reps=2, files=100, big_mb=50, latency_files=100)
        if args.quick
        else dict(reps=5, files=300, big_mb=200, latency_files=100)
    )
    reps = sizes["reps"]

    work = Path(tempfile.mkdtemp(prefix="mlflow-team-bench-s3-"))
    previous_cwd = os.getcwd()
    os.chdir(work)  # no mlflow-team.toml from the caller's directory
    from mlflow_team.demo.servers import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.pop("MLFLOW_TEAM_POLICY", None)
    os.environ.pop("MLFLOW_TEAM_ARTIFACT_WORKERS", None)
    os.environ.pop("MLFLOW_S3_UPLOAD_EXTRA_ARGS", None)
    os.environ.pop("MLFLOW_S3_EXPECTED_BUCKET_OWNER", None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        MLFLOW_S3_ENDPOINT_URL=endpoint,
        MLFLOW_TRACKING_URI=f"team+sqlite:///{work / 'bench.db'}",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)

    servers = contextlib.ExitStack()
    try:
        import boto3
        import botocore
        import mlflow
        import moto
        from botocore.config import Config

        from mlflow_team import config as team_config

        print(
            f"mlflow {mlflow.__version__} | boto3 {boto3.__version__} | botocore {botocore.__version__} | "
            f"moto {moto.__version__} | Python {platform.python_version()} | {os.cpu_count()} CPUs"
        )
        print(
            f"moto S3 {'in this process' if args.in_process else 'in its own process'} at {endpoint} | "
            f"team workers {team_config.artifact_workers()} | "
            f"reps {reps} | work dir {work}{' (--quick)' if args.quick else ''}\n"
        )

        servers.enter_context(moto_server(port, args.in_process, work))
        raw = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=20))
        admin = boto3.client("s3", endpoint_url=endpoint)
        admin.create_bucket(Bucket=BUCKET)

        quiet()  # again: importing mlflow set its own loggers' levels
        client = mlflow.MlflowClient()
        experiment_id = client.create_experiment("bench-artifacts")
        run_id = client.create_run(
            experiment_id, tags={"team.name": "bench", "team.project": "artifacts"}
        ).info.run_id
        bench = Bench(work, raw, admin, experiment_id, run_id)
        (work / "downloads").mkdir()

        started = time.perf_counter()
        small_dir = work / "data" / "small"
        latency_dir = work / "data" / "latency"
        big = work / "data" / "big" / "big.bin"
        write_small_dir(small_dir, sizes["files"])
        write_small_dir(latency_dir, sizes["latency_files"])
        write_big_file(big, sizes["big_mb"])
        print(
            f"(wrote {sizes['files']} + {sizes['latency_files']} x 4 KB and 1 x {sizes['big_mb']} MB "
            f"in {time.perf_counter() - started:.1f} s)"
        )

        # Warm-up, not measured: clients built, connection pools filled, the run looked up once.
        warm = work / "data" / "warm"
        write_small_dir(warm, 20)
        for impl in IMPLS:
            root = bench.root(f"warm/{impl}")
            if impl == "raw":
                bench.raw_upload_dir(warm, root)
            else:
                repo = bench.repo(impl, root)
                repo.log_artifacts(str(warm))
                repo.thread_pool.shutdown(wait=True)
        team_tags = admin.get_object_tagging(Bucket=BUCKET, Key=f"{bench.root('warm/team')}/part-0000.bin")["TagSet"]
        print("team object tags: " + (", ".join(f"{t['Key']}={t['Value']}" for t in team_tags) or "none"))

        results: dict[str, dict[str, list[float]]] = {}
        files = sizes["files"]
        big_bytes = big.stat().st_size

        def step(title: str) -> float:
            print(f"... {title}", flush=True)
            return time.perf_counter()

        t = step(f"1/5 upload {files} x 4 KB")
        results["small_up"] = bench.upload_dir("small", small_dir, files, reps)
        t = step(f"2/5 upload 1 x {sizes['big_mb']} MB  (previous {time.perf_counter() - t:.0f} s)")
        big_source = bench.root("big/team/r0")
        results["big_up"] = bench.upload_big(big, reps, keep=big_source)
        t = step(f"3/5 download 1 x {sizes['big_mb']} MB  (previous {time.perf_counter() - t:.0f} s)")
        head = admin.head_object(Bucket=BUCKET, Key=f"{big_source}/big.bin")
        if not {"sha256", "sha256-part-size"} & set(head.get("Metadata") or {}):
            print("!! the team-uploaded large object records no SHA-256: team will not verify it")
        results["big_down"] = bench.download_big(big_source, big.name, big_bytes, reps)
        t = step(f"4/5 download {files} x 4 KB  (previous {time.perf_counter() - t:.0f} s)")
        results["small_down"] = bench.download_dir(bench.root("small/team/r0"), files, reps)
        t = step(
            f"5/5 upload {sizes['latency_files']} x 4 KB, +{LATENCY_S * 1000:.0f} ms per request  "
            f"(previous {time.perf_counter() - t:.0f} s)"
        )

        latency = Latency(LATENCY_S)
        counts: dict[str, list[int]] = {impl: [] for impl in IMPLS}

        def add_latency(impl: str, repo) -> None:
            latency.attach(impl, raw if repo is None else repo._get_s3_client())
            counts[impl].append(latency.requests[impl])

        try:
            results["latency_up"] = bench.upload_dir("latency", latency_dir, sizes["latency_files"], reps, hook=add_latency)
        finally:
            latency.detach()
        # Requests each repetition sent: counter after it minus counter before it.
        marks = {impl: counts[impl] + [latency.requests[impl]] for impl in IMPLS}
        per_rep = {impl: [b - a for a, b in zip(marks[impl], marks[impl][1:])] for impl in IMPLS}
        print(f"(previous {time.perf_counter() - t:.0f} s)\n")

        rows = []

        def row(figure: str, key: str, amount: float, unit_fmt: str, targets: list[tuple[str, str, float]]) -> None:
            rates = {impl: median_rate(results[key][impl], amount) for impl in IMPLS}
            vs_stock, vs_raw = rates["team"] / rates["stock"], rates["team"] / rates["raw"]
            notes = []
            for label, against, floor in targets:
                ratio = vs_stock if against == "stock" else vs_raw
                notes.append(f"{label} [{'met' if ratio >= floor else 'MISSED'}]")
            rows.append(
                (
                    figure,
                    format(rates["stock"], unit_fmt),
                    format(rates["team"], unit_fmt),
                    format(rates["raw"], unit_fmt),
                    f"{vs_stock:.3f}",
                    f"{vs_raw:.3f}",
                    "; ".join(notes) if notes else "(no target)",
                )
            )

        mb = big_bytes / MB
        row(f"upload {files} x 4 KB, files/s", "small_up", files, ".0f",
            [(">= 2x stock", "stock", 2.0), (">= 0.8x raw", "raw", 0.8)])
        row(f"upload 1 x {mb:.0f} MB, MB/s", "big_up", mb, ".1f",
            [(">= 1.0x stock", "stock", 1.0), (">= 0.8x raw", "raw", 0.8)])
        row(f"download 1 x {mb:.0f} MB, MB/s", "big_down", mb, ".1f", [(">= 0.8x raw", "raw", 0.8)])
        row(f"download {files} x 4 KB, files/s", "small_down", files, ".0f", [(">= 0.8x raw", "raw", 0.8)])
        row(f"upload {sizes['latency_files']} x 4 KB +{LATENCY_S * 1000:.0f} ms/req, files/s", "latency_up",
            sizes["latency_files"], ".0f", [])

        header = ("figure", "stock", "team", "raw", "team/stock", "team/raw", "target")
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        for r in rows:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())

        print("\nseconds per repetition (in order run):")
        for key, title in (
            ("small_up", "upload small"), ("big_up", "upload big"), ("big_down", "download big"),
            ("small_down", "download small"), ("latency_up", "upload +latency"),
        ):
            cells = "  ".join(f"{impl} " + " ".join(f"{s:.2f}" for s in results[key][impl]) for impl in IMPLS)
            print(f"  {title:<16} {cells}")
        print(
            "S3 requests per repetition in the latency run: "
            + ", ".join(f"{impl} {'/'.join(str(n) for n in per_rep[impl])}" for impl in IMPLS)
        )
        if any(n == 0 for impl in IMPLS for n in per_rep[impl]):
            print("!! a repetition sent no delayed request (its client was rebuilt mid-run): figure 5 is off")
    finally:
        os.chdir(previous_cwd)
        servers.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
