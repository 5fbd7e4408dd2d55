"""``team+s3://bucket/prefix``: MLflow's S3 repository, parallel, verified, tagged, encrypted.

Reads the same settings as stock MLflow's S3 repository, when called, never at import:
``MLFLOW_S3_ENDPOINT_URL``, ``MLFLOW_S3_IGNORE_TLS``, ``MLFLOW_S3_UPLOAD_EXTRA_ARGS``,
``MLFLOW_S3_EXPECTED_BUCKET_OWNER``, ``MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE`` and the standard AWS
credential chain; plus ``MLFLOW_TEAM_ARTIFACT_WORKERS`` (parallel transfers, default 16) and the
policy's ``[artifacts]`` table (object tags, encryption).

- Uploads: the files of a directory go up in parallel; a file over ``PART_SIZE`` goes up in
  parallel parts. A single-request upload carries its SHA-256 in its metadata
  (``x-amz-meta-sha256``) and as S3's own ``ChecksumSHA256``, which S3 checks on receipt. A
  multipart upload sends each part's SHA-256 (computed as the part goes up, so no pass over the
  whole file comes first) and S3 keeps the composite checksum (SHA-256 of the parts' digests,
  ``<base64>-<parts>``); the part size goes in the metadata (``x-amz-meta-sha256-part-size``).
- Downloads: one ranged request for a small file; a large one in parallel ranges, each range
  hashed by the thread that fetched it. The bytes are checked against the recorded SHA-256 (or
  the composite checksum) before the file appears at its destination.
- A multipart upload that was killed is aborted by the next upload of the same key, or by
  ``mlflow-team artifacts clean-up``.
- Beside the objects (:mod:`.s3_records`): every upload's digests in the run's manifest, checked
  when an object comes down without a digest of its own; a marker in a folder while an upload
  into it runs, and a refusal to download a folder that still holds one.
- An upload whose run cannot be read is refused (:mod:`.owner`); presigned URLs that would skip
  the checks are not handed out.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import posixpath
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from mimetypes import guess_type

from mlflow.exceptions import MlflowException
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

from mlflow_team import config, errors
from mlflow_team.artifacts import incomplete, integrity, manifest, owner
from mlflow_team.artifacts.s3_records import S3RecordsMixin
from mlflow_team.artifacts.s3_records import composite as _composite
from mlflow_team.artifacts.s3_records import part_digests as _part_digests
from mlflow_team.artifacts.settings import artifact_settings

_logger = logging.getLogger(__name__)

SCHEME = "team+s3"
MB = 1024 * 1024
#: Files up to this size go up in one request and come down in one; larger ones in parts.
PART_SIZE = 16 * MB
META_SHA256 = "sha256"
#: Part size of a multipart upload whose composite SHA-256 S3 keeps.
META_PART_SIZE = "sha256-part-size"
_TEMP_PREFIX = ".artifact.downloading."
#: Bodies up to this size go up without ``Expect: 100-continue`` (botocore asks for it on every
#: PUT with a body), saving a round trip per small file; larger ones keep it, so that a refusal
#: comes before the body is sent. The AWS SDK for Go does the same, with the same 2 MB threshold
#: (``ContinueHeaderThresholdBytes``).
CONTINUE_THRESHOLD = 2 * MB


@lru_cache(maxsize=32)
def _client(endpoint, verify, addressing_style, signature_version, pool, credentials, epoch):
    import boto3
    from botocore.config import Config

    if signature_version.lower() == "unsigned":
        from botocore import UNSIGNED

        signature_version = UNSIGNED
    access_key, secret_key, token = credentials
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        verify=verify,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        config=Config(
            signature_version=signature_version,
            s3={"addressing_style": addressing_style},
            max_pool_connections=pool,
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=120,
        ),
    )
    # After botocore's own `before-call.s3` handler, which adds the header.
    client.meta.events.register_last("before-call.s3", _no_continue_for_small_bodies)
    return client


def _no_continue_for_small_bodies(model, params, **kwargs) -> None:
    """Drop ``Expect: 100-continue`` from a request whose body is at most ``CONTINUE_THRESHOLD``."""
    headers = params.get("headers") or {}
    if headers.get("Expect") != "100-continue":
        return
    from botocore.utils import determine_content_length

    size = determine_content_length(params.get("body"))
    if size is not None and size <= CONTINUE_THRESHOLD:
        del headers["Expect"]


class TeamS3ArtifactRepository(S3RecordsMixin, S3ArtifactRepository):
    """Parallel, checksummed, tagged and encrypted artifacts on S3."""

    def __init__(
        self,
        artifact_uri: str,
        access_key_id=None,
        secret_access_key=None,
        session_token=None,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        **kwargs,
    ) -> None:
        integrity.require_download_checks(SCHEME, artifact_uri)
        super().__init__(
            artifact_uri,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            tracking_uri=tracking_uri,
            registry_uri=registry_uri,
        )
        self._settings = artifact_settings()  # [artifacts] only: never the server's keyring
        self._manifests = manifest.Cache()

    # --- plumbing ------------------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        return config.artifact_workers()

    def parse_s3_compliant_uri(self, uri):
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme not in ("s3", SCHEME):
            raise MlflowException(f"Not a team+s3:// or s3:// URI: {uri!r}")
        return parsed.netloc, parsed.path.removeprefix("/")

    def _get_s3_client(self):
        from mlflow.environment_variables import (
            MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE,
            MLFLOW_S3_ENDPOINT_URL,
            MLFLOW_S3_IGNORE_TLS,
        )

        return _client(
            MLFLOW_S3_ENDPOINT_URL.get(),
            None if not MLFLOW_S3_IGNORE_TLS.get() else False,
            MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE.get(),
            os.environ.get("MLFLOW_EXPERIMENTAL_S3_SIGNATURE_VERSION", "s3v4"),
            max(10, self.max_workers + 4),
            (self._access_key_id, self._secret_access_key, self._session_token),
            int(time.time() // 300),  # a fresh client (and credentials) every five minutes
        )

    def _key(self, *parts: str | None) -> tuple[str, str]:
        bucket, root = self.parse_s3_compliant_uri(self.artifact_uri)
        clean = [integrity.safe_relative_path(p) for p in parts if p]
        return bucket, posixpath.join(root, *[p for p in clean if p])

    def _fail(self, exc: Exception, operation: str, key: str = "") -> MlflowException:
        """An S3/botocore error as an MlflowException that says what to do."""
        from botocore.exceptions import ClientError, NoCredentialsError

        bucket = self.parse_s3_compliant_uri(self.artifact_uri)[0]
        uri = f"{SCHEME}://{bucket}/{key}".rstrip("/")
        if isinstance(exc, MlflowException):
            return exc
        cause = _root_cause(exc)  # boto3's upload_file wraps S3's answer in S3UploadFailedError
        codes = errors.ARTIFACT_ERROR_CODES
        if isinstance(cause, NoCredentialsError):
            return errors.ArtifactStorageError(errors.S3_NO_CREDENTIALS.format(uri=uri), codes["credentials"])
        if isinstance(cause, ClientError):
            code = cause.response.get("Error", {}).get("Code", "")
            detail = cause.response.get("Error", {}).get("Message", "") or code
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code == "NoSuchBucket":
                return errors.ArtifactStorageError(
                    errors.S3_BUCKET_MISSING.format(bucket=bucket, uri=uri), codes["missing"]
                )
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
                return errors.ArtifactStorageError(
                    errors.S3_BAD_CREDENTIALS.format(uri=uri, operation=operation, detail=detail),
                    codes["credentials"],
                )
            if code in ("AccessDenied", "403"):
                return errors.ArtifactStorageError(
                    errors.S3_ACCESS_DENIED.format(uri=uri, operation=operation, detail=detail),
                    codes["denied"],
                )
            if code in ("NoSuchKey", "404"):
                return errors.ArtifactStorageError(f"No such artifact: {uri!r}.", codes["missing"])
            return errors.ArtifactStorageError(
                errors.S3_REQUEST_FAILED.format(operation=operation, uri=uri, detail=exc),
                codes["rejected"] if 400 <= status < 500 else codes["unavailable"],
            )
        return errors.ArtifactStorageError(
            errors.S3_REQUEST_FAILED.format(operation=operation, uri=uri, detail=exc), codes["unavailable"]
        )

    # --- what every object carries -------------------------------------------------------

    def _object_args(self, key: str, file_name: str) -> dict:
        args: dict = {}
        guessed_type, guessed_encoding = guess_type(file_name)
        if guessed_type:
            args["ContentType"] = guessed_type
        if guessed_encoding:
            args["ContentEncoding"] = guessed_encoding
        args.update(self._bucket_owner_params)
        args.update(self.get_s3_file_upload_extra_args() or {})
        bucket = self.parse_s3_compliant_uri(self.artifact_uri)[0]
        run = owner.owner_of(key, self.tracking_uri, shown=f"{SCHEME}://{bucket}/{key}")  # raises, never guesses
        tags = _object_tags(self._settings.object_tags, run.values())
        if tags:
            args["Tagging"] = tags
        args.update(self._settings.encryption_for(run.experiment_name))
        return args

    # --- uploads -------------------------------------------------------------------------

    def _upload(self, local_file: str, bucket: str, key: str, args: dict) -> str | None:
        """Upload one file; return the manifest record of what S3 now holds (None: S3 kept no
        checksum to record)."""
        client = self._get_s3_client()
        size = os.path.getsize(local_file)
        try:
            if size <= PART_SIZE:
                with open(local_file, "rb") as handle:
                    body = handle.read()
                digest = _sha256(body)
                client.put_object(
                    Bucket=bucket, Key=key, Body=body,
                    Metadata={**args.pop("Metadata", {}), META_SHA256: digest.hex()},
                    ChecksumAlgorithm="SHA256", ChecksumSHA256=base64.b64encode(digest).decode(), **args,
                )
                return manifest.sha256_record(digest.hex())
            from boto3.s3.transfer import TransferConfig

            self._abort_stale_uploads(bucket, key, older_than=None)
            client.upload_file(
                Filename=local_file, Bucket=bucket, Key=key,
                ExtraArgs={
                    **args,
                    "ChecksumAlgorithm": "SHA256",  # per part; S3 composes them
                    "Metadata": {**args.get("Metadata", {}), META_PART_SIZE: str(PART_SIZE)},
                },
                Config=TransferConfig(
                    multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                    max_concurrency=self.max_workers, use_threads=True,
                ),
            )
            head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED", **self._bucket_owner_params)
            stored = head.get("ChecksumSHA256") or ""
            if not stored:
                return None
            parts = -(-size // PART_SIZE)
            return manifest.parts_record(PART_SIZE, stored if "-" in stored else f"{stored}-{parts}")
        except Exception as exc:
            raise self._fail(exc, "upload", key) from exc

    def _upload_file(self, s3_client, local_file, bucket, key):  # stock's hook, kept for mixins
        args = self._object_args(key, local_file)
        self._record(bucket, {key: self._upload(local_file, bucket, key, args)}, args)

    def log_artifact(self, local_file, artifact_path=None):
        bucket, key = self._key(artifact_path, os.path.basename(local_file))
        args = self._object_args(key, local_file)
        self._record(bucket, {key: self._upload(local_file, bucket, key, args)}, args)

    def log_artifacts(self, local_dir, artifact_path=None):
        bucket, base = self._key(artifact_path)
        local_dir = os.path.abspath(local_dir)
        jobs = []
        for folder, _, files in os.walk(local_dir):
            relative = os.path.relpath(folder, local_dir)
            prefix = base if relative == "." else posixpath.join(base, relative.replace(os.sep, "/"))
            jobs.extend((os.path.join(folder, f), posixpath.join(prefix, f)) for f in files)
        if not jobs:
            return
        common = self._object_args(jobs[0][1], "")  # tags and encryption are per run
        for name in ("ContentType", "ContentEncoding"):
            common.pop(name, None)
        names = {posixpath.relpath(key, base) if base else key for _, key in jobs}
        marker = None
        if len(jobs) > 1:  # one file is stored whole or not at all; a folder needs a marker
            marker = posixpath.join(base, incomplete.new_name())
            folder = integrity.safe_relative_path(artifact_path)
            try:
                self._get_s3_client().put_object(
                    Bucket=bucket, Key=marker, Body=incomplete.text(folder, sorted(names)),
                    ContentType="text/plain", **common,
                )
            except Exception as exc:
                raise self._fail(exc, "upload", marker) from exc
        records: dict[str, str | None] = {}
        leftovers: list[str] = []

        def upload(job: tuple[str, str] | None) -> None:
            if job is None:  # the folder's leftover markers, listed beside the first files
                leftovers.extend(self._leftover_markers(bucket, base, marker, names))
                return
            args = dict(common)
            guessed_type, guessed_encoding = guess_type(job[0])
            if guessed_type:
                args["ContentType"] = guessed_type
            if guessed_encoding:
                args["ContentEncoding"] = guessed_encoding
            records[job[1]] = self._upload(job[0], bucket, job[1], args)

        try:
            integrity.run_all(upload, jobs if marker is None else [None, *jobs], self.max_workers)
        except BaseException:
            try:  # what did go up is recorded, even on a failure, which stays the error raised
                self._record(bucket, records, common)
            except Exception as exc:
                _logger.warning("mlflow-team: the manifest record of a failed upload was not written: %s", exc)
            raise
        self._record(bucket, records, common)
        if marker is not None:
            self._finish_folder(bucket, marker, leftovers)

    def upload_archived_trace_data_bytes(self, data: bytes) -> None:
        from mlflow.tracing.otel.otel_archival import TRACE_ARCHIVAL_FILENAME

        bucket, key = self._key(TRACE_ARCHIVAL_FILENAME)
        args = self._object_args(key, "")
        digest = _sha256(data)
        try:
            self._get_s3_client().put_object(
                Bucket=bucket, Key=key, Body=data, ContentType="application/octet-stream",
                Metadata={META_SHA256: digest.hex()},
                ChecksumAlgorithm="SHA256", ChecksumSHA256=base64.b64encode(digest).decode(), **args,
            )
        except Exception as exc:
            raise self._fail(exc, "upload", key) from exc
        self._record(bucket, {key: manifest.sha256_record(digest.hex())}, args)

    # --- downloads -----------------------------------------------------------------------

    def list_artifacts(self, path=None):
        if path:
            integrity.safe_relative_path(path)  # raises for a path that leaves the root
        try:
            infos = super().list_artifacts(path)
        except Exception as exc:
            raise self._fail(exc, "list", self._key(path)[1]) from exc
        return [info for info in infos if posixpath.basename(info.path) != manifest.FOLDER]

    def download_artifacts(self, artifact_path, dst_path=None):
        self._refuse_incomplete(artifact_path)
        return integrity.download_checked(super().download_artifacts, artifact_path, dst_path)

    def _download_file(self, remote_file_path, local_path):
        bucket, key = self._key(remote_file_path)
        client = self._get_s3_client()
        folder = os.path.dirname(os.path.abspath(local_path))
        fd, temp_path = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX)
        try:
            try:
                first = client.get_object(
                    Bucket=bucket, Key=key, Range=f"bytes=0-{PART_SIZE - 1}",
                    **self._bucket_owner_params,
                )
            except Exception as exc:
                if _is_empty_object_range_error(exc):
                    first = client.get_object(Bucket=bucket, Key=key, **self._bucket_owner_params)
                else:
                    raise
            total = _total_size(first)
            metadata = first.get("Metadata") or {}
            with os.fdopen(fd, "wb") as out:
                fd = None
                head = first["Body"].read()
                out.write(head)
                digests = [hashlib.sha256(head).digest()]
                if total > PART_SIZE:
                    out.truncate(total)
                    digests += self._fetch_ranges(client, bucket, key, out.fileno(), total, first.get("ETag"))
            self._verify(client, bucket, key, metadata, temp_path, digests, remote_file_path, local_path)
            os.replace(temp_path, local_path)
        except Exception as exc:
            if fd is not None:
                os.close(fd)
            try:
                os.remove(temp_path)
            except OSError:
                pass
            raise self._fail(exc, "download", key) from exc

    def _verify(self, client, bucket, key, metadata, temp_path, digests, artifact, destination) -> None:
        """Check a downloaded file against the object's recorded SHA-256, whichever kind it has.

        ``digests`` are the SHA-256s of the file's ``PART_SIZE`` ranges, taken as they came in.
        """
        expected = metadata.get(META_SHA256)
        if expected:  # the whole file's SHA-256 (single-request uploads, proxied multipart)
            actual = digests[0].hex() if len(digests) == 1 else integrity.sha256_of_file(temp_path)
        elif metadata.get(META_PART_SIZE):  # S3's composite checksum of a multipart upload
            head = client.head_object(
                Bucket=bucket, Key=key, ChecksumMode="ENABLED", **self._bucket_owner_params
            )
            stored = head.get("ChecksumSHA256") or ""
            if not stored:
                return  # the endpoint kept no checksum: nothing to compare with
            part_size = int(metadata[META_PART_SIZE])
            if part_size != PART_SIZE:
                digests = _part_digests(temp_path, part_size)
            actual = _composite(digests)
            # S3 writes `<base64>-<parts>`; some endpoints (moto's HEAD) leave the count off.
            expected = stored if "-" in stored else f"{stored}-{len(digests)}"
        else:  # no digest of its own: stock MLflow wrote it, or a copy that dropped ours replaced it
            self._verify_against_manifest(bucket, key, temp_path, digests, artifact, destination, PART_SIZE)
            return
        if actual != expected:
            raise integrity.mismatch(artifact, actual, expected, destination)

    def _fetch_ranges(self, client, bucket, key, fileno, total, etag) -> list[bytes]:
        """Fetch ``PART_SIZE`` ranges after the first in parallel; return their SHA-256s in order."""
        ranges = [(start, min(start + PART_SIZE, total) - 1) for start in range(PART_SIZE, total, PART_SIZE)]

        def fetch(span: tuple[int, int]) -> bytes:
            extra = {"IfMatch": etag} if etag else {}  # all parts of one version of the object
            response = client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={span[0]}-{span[1]}",
                **extra, **self._bucket_owner_params,
            )
            body, offset, digest = response["Body"], span[0], hashlib.sha256()
            while chunk := body.read(integrity.CHUNK):
                os.pwrite(fileno, chunk, offset)
                digest.update(chunk)
                offset += len(chunk)
            return digest.digest()

        return _part_pool(self.max_workers).map_all(fetch, ranges)

    # --- deletion and clean-up -----------------------------------------------------------

    def delete_artifacts(self, artifact_path=None):
        bucket, key = self._key(artifact_path)
        integrity.check_deletion_scope(key, artifact_path or self.artifact_uri)
        try:
            super().delete_artifacts(integrity.safe_relative_path(artifact_path) or None)
            found = manifest.split(key)
            if found is not None and not found[1]:  # all of one run's artifacts: their record too
                self._delete_prefix(bucket, manifest.folder_of(found[0]) + "/")
                self._manifests.forget(found[0])
        except Exception as exc:
            raise self._fail(exc, "delete", key) from exc

    def _abort_stale_uploads(self, bucket: str, prefix: str, older_than: timedelta | None) -> int:
        """Abort unfinished multipart uploads under ``prefix`` (for one key: any of them)."""
        client = self._get_s3_client()
        aborted = 0
        cutoff = None if older_than is None else datetime.now(timezone.utc) - older_than
        paginator = client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if older_than is None and upload["Key"] != prefix:
                    continue
                if cutoff is not None and upload["Initiated"] > cutoff:
                    continue
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
        return aborted

    def clean_up(self, older_than: timedelta) -> int:
        """Abort multipart uploads under this root left unfinished for longer than ``older_than``."""
        bucket, root = self.parse_s3_compliant_uri(self.artifact_uri)
        try:
            return self._abort_stale_uploads(bucket, root, older_than)
        except Exception as exc:
            raise self._fail(exc, "clean-up", root) from exc

    # --- presigned uploads: refused ------------------------------------------------------

    def create_presigned_upload_url(self, artifact_path, expiration=900):
        """Refused: stock's URL lets a client PUT any bytes with no checksum, tags or encryption
        (S3 cannot check a digest the server does not know when it signs the URL)."""
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        raise MlflowException(
            errors.PRESIGNED_UPLOAD_REFUSED.format(path=artifact_path, scheme=SCHEME), INVALID_PARAMETER_VALUE
        )

    def get_download_presigned_url(self, artifact_path, expiration=300):
        """No URL that skips the download check.

        ``mlflow server`` offers presigned downloads to its clients whenever the repository
        inherits stock's mixin, as this one does. Asked by MLflow's client for a proxied artifact
        (``/mlflow-artifacts/presigned/...``), the answer carries no size, and that client then
        downloads through the server, which checks the file; any other caller is refused.
        """
        if _serving_proxied_presigned_request():
            from mlflow.entities.presigned_download import PresignedDownloadUrlResponse

            return PresignedDownloadUrlResponse(url="", headers={}, file_size=None)
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        raise MlflowException(
            errors.PRESIGNED_DOWNLOAD_REFUSED.format(path=artifact_path, scheme=SCHEME), INVALID_PARAMETER_VALUE
        )

    # --- multipart uploads proxied by `mlflow server` ------------------------------------

    def create_multipart_upload(self, local_file, num_parts=1, artifact_path=None):
        bucket, key = self._key(artifact_path, os.path.basename(local_file))
        self._abort_stale_uploads(bucket, key, older_than=None)
        args = self._object_args(key, local_file)
        client = self._get_s3_client()
        response = client.create_multipart_upload(Bucket=bucket, Key=key, **args)
        from mlflow.entities.multipart_upload import (
            CreateMultipartUploadResponse,
            MultipartUploadCredential,
        )

        credentials = [
            MultipartUploadCredential(
                url=client.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": bucket, "Key": key, "PartNumber": number,
                        "UploadId": response["UploadId"], **self._bucket_owner_params,
                    },
                ),
                part_number=number,
                headers={},
            )
            for number in range(1, num_parts + 1)
        ]
        return CreateMultipartUploadResponse(credentials=credentials, upload_id=response["UploadId"])

    def complete_multipart_upload(self, local_file, upload_id, parts=None, artifact_path=None):
        super().complete_multipart_upload(local_file, upload_id, parts, artifact_path)
        # The parts came straight from the client: record the whole object's SHA-256 now.
        bucket, key = self._key(artifact_path, os.path.basename(local_file))
        self._record_digest(bucket, key)

    def _record_digest(self, bucket: str, key: str) -> None:
        """Give a completed multipart object its whole SHA-256, in its metadata and the manifest."""
        client = self._get_s3_client()
        tag_set = client.get_object_tagging(Bucket=bucket, Key=key, **self._bucket_owner_params)["TagSet"]
        response = client.get_object(Bucket=bucket, Key=key, **self._bucket_owner_params)
        digest = hashlib.sha256()
        for chunk in response["Body"].iter_chunks(integrity.CHUNK):
            digest.update(chunk)
        extra = {
            "Metadata": {**(response.get("Metadata") or {}), META_SHA256: digest.hexdigest()},
            "MetadataDirective": "REPLACE",
        }
        for name in ("ContentType", "ContentEncoding"):
            if response.get(name):
                extra[name] = response[name]
        if response.get("ServerSideEncryption"):
            extra["ServerSideEncryption"] = response["ServerSideEncryption"]
        if response.get("SSEKMSKeyId"):
            extra["SSEKMSKeyId"] = response["SSEKMSKeyId"]
        client.copy({"Bucket": bucket, "Key": key}, bucket, key, ExtraArgs=extra)
        if tag_set:  # a large copy goes part by part, and parts carry no tags
            client.put_object_tagging(
                Bucket=bucket, Key=key, Tagging={"TagSet": tag_set}, **self._bucket_owner_params
            )
        encryption = {k: v for k, v in extra.items() if k in ("ServerSideEncryption", "SSEKMSKeyId")}
        self._record(bucket, {key: manifest.sha256_record(digest.hexdigest())}, encryption)


# --- helpers ---------------------------------------------------------------------------------

_TAG_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-=._:/@")


def _tag_text(value: str, limit: int) -> str:
    return "".join(c if c in _TAG_CHARS or c.isalnum() else "_" for c in value)[:limit]


def _object_tags(keys: tuple[str, ...], values: dict[str, str]) -> str:
    """``Tagging`` for an upload: the named run values S3 can hold (128/256 chars, its charset)."""
    pairs = [(_tag_text(k, 128), _tag_text(values[k], 256)) for k in keys if values.get(k)]
    return urllib.parse.urlencode(pairs)


def _serving_proxied_presigned_request() -> bool:
    """Whether this runs inside ``mlflow server``'s ``/mlflow-artifacts/presigned/...`` handler."""
    try:
        import flask
    except ImportError:
        return False
    return flask.has_request_context() and "/mlflow-artifacts/presigned/" in flask.request.path


def _root_cause(exc: BaseException) -> BaseException:
    """The S3/botocore error under wrappers such as boto3's ``S3UploadFailedError``."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen = exc
    while seen is not None:
        if isinstance(seen, (ClientError, BotoCoreError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _total_size(response: dict) -> int:
    content_range = response.get("ContentRange") or ""
    if "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    return int(response.get("ContentLength") or 0)


def _is_empty_object_range_error(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "InvalidRange"


class _PartPool:
    """Threads for the parts of large downloads, apart from the pool that runs whole files
    (a file's task waiting on parts in its own pool could starve it)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlflow-team-part")

    def map_all(self, function, items) -> list:
        futures = [self._pool.submit(function, item) for item in items]
        failure, results = None, []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return results


_POOLS: dict[int, _PartPool] = {}
_POOLS_LOCK = threading.Lock()


def _part_pool(workers: int) -> _PartPool:
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = _PartPool(workers)
        return _POOLS[workers]
