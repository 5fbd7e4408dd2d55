"""What team+s3 keeps beside the objects: the manifest of digests (:mod:`.manifest`) and the
markers of unfinished folder uploads (:mod:`.incomplete`), written, read and checked.

A mixin of :class:`~mlflow_team.artifacts.s3.TeamS3ArtifactRepository`: it uses the repository's
client, keys and error mapping (``_get_s3_client``, ``_key``, ``_fail``, ``_bucket_owner_params``).
"""

from __future__ import annotations

import base64
import hashlib
import posixpath

from mlflow_team import errors
from mlflow_team.artifacts import incomplete, integrity, manifest


class S3RecordsMixin:
    """Manifest records and folder markers of a team+s3 repository."""

    def _record(self, bucket: str, records: dict[str, str | None], args: dict) -> None:
        """Write one manifest record per owner for ``{key: record}`` just uploaded."""
        extra = {k: v for k, v in args.items() if k in ("ServerSideEncryption", "SSEKMSKeyId", "Tagging", "ExpectedBucketOwner")}
        for owner_folder, files in manifest.by_owner(records).items():
            key = f"{manifest.folder_of(owner_folder)}/{manifest.new_name()}"
            body = manifest.encode(files)
            try:
                self._get_s3_client().put_object(
                    Bucket=bucket, Key=key, Body=body, ContentType="application/json", ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(), **extra,
                )
            except Exception as exc:
                raise self._fail(exc, "upload", key) from exc

    def _leftover_markers(self, bucket: str, base: str, marker: str, names: set[str]) -> list[str]:
        """Markers already in the folder (not ``marker``) whose files are all among ``names``.

        Read as the upload starts, beside its first files: a marker that appears later belongs to
        an upload that is still running, and stays.
        """
        client = self._get_s3_client()
        prefix = (base + "/" if base else "") + incomplete.PREFIX
        found = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/", **self._bucket_owner_params
            ):
                for item in page.get("Contents", []):
                    if item["Key"] == marker or not incomplete.is_marker(item["Key"]):
                        continue
                    body = client.get_object(Bucket=bucket, Key=item["Key"], **self._bucket_owner_params)["Body"].read()
                    if incomplete.listed(body) <= names:
                        found.append(item["Key"])
        except Exception as exc:
            raise self._fail(exc, "upload", marker) from exc
        return found

    def _finish_folder(self, bucket: str, marker: str, leftovers: list[str]) -> None:
        """Remove this upload's marker, and the leftover ones whose files this upload all stored."""
        try:
            self._get_s3_client().delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in [marker, *leftovers]], "Quiet": True},
                **self._bucket_owner_params,
            )
        except Exception as exc:
            raise self._fail(exc, "upload", marker) from exc

    def _refuse_incomplete(self, artifact_path: str | None) -> None:
        """Raise ``ArtifactIncomplete`` for a folder an unfinished directory upload writes to."""
        path = integrity.safe_relative_path(artifact_path)
        if incomplete.is_marker(path):
            return  # the marker itself says what happened: it may be read
        bucket, key = self._key(path)
        root = self.parse_s3_compliant_uri(self.artifact_uri)[1].strip("/")
        client = self._get_s3_client()

        def relative(found: str) -> str:
            return found[len(root) + 1:] if root else found

        try:
            is_folder = False
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=key + "/" if key else "", **self._bucket_owner_params
            ):
                for item in page.get("Contents", []):
                    is_folder = True
                    if incomplete.is_marker(item["Key"]):
                        marker = relative(item["Key"])
                        raise incomplete_error(artifact_path, posixpath.dirname(marker), posixpath.basename(marker))
            if not is_folder:
                return  # one file (or nothing): each file is stored whole
            for folder in incomplete.ancestors(path):
                folder_key = self._key(folder)[1]
                prefix = (folder_key + "/" if folder_key else "") + incomplete.PREFIX
                listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/", **self._bucket_owner_params)
                for item in listing.get("Contents", []):
                    body = client.get_object(Bucket=bucket, Key=item["Key"], **self._bucket_owner_params)["Body"].read()
                    if incomplete.affects(folder, incomplete.listed(body), path):
                        raise incomplete_error(artifact_path, folder, posixpath.basename(item["Key"]))
        except errors.ArtifactIncomplete:
            raise
        except Exception as exc:
            raise self._fail(exc, "list", key) from exc

    def _verify_against_manifest(self, bucket, key, temp_path, digests, artifact, destination, part_size: int) -> None:
        """Check an artifact that carries no digest of its own against the owner's manifest.

        ``digests`` are the SHA-256s of its ``part_size`` ranges, taken as they came in.
        """
        found = manifest.split(key)
        if found is None or not found[1]:
            return
        owner_folder, path = found
        records = self._manifests.recorded(owner_folder, path, lambda o: self._read_manifest(bucket, o))
        if not records:
            return  # never written by mlflow-team: nothing to compare with
        actual = {}
        for attempt in range(2):
            for record in records:
                kind, _, value = record.partition(":")
                if kind == "sha256":
                    if "sha256" not in actual:
                        actual["sha256"] = digests[0].hex() if len(digests) == 1 else integrity.sha256_of_file(temp_path)
                    got = actual["sha256"]
                elif kind == "parts":
                    size, _, value = value.partition(":")
                    got = composite(digests if int(size) == part_size else part_digests(temp_path, int(size)))
                else:
                    continue
                if got == value:
                    return
            if attempt == 0:  # records read a while ago: read them again before calling it damage
                self._manifests.forget(owner_folder)
                records = self._manifests.recorded(owner_folder, path, lambda o: self._read_manifest(bucket, o))
        kind, _, expected = records[-1].partition(":")
        if kind == "parts":
            expected = expected.partition(":")[2]
            got = composite(digests)
        else:
            got = actual.get("sha256") or integrity.sha256_of_file(temp_path)
        raise integrity.mismatch(artifact, got, expected, destination)

    def _read_manifest(self, bucket: str, owner_folder: str) -> list[tuple[str, dict[str, str]]]:
        client = self._get_s3_client()
        prefix = manifest.folder_of(owner_folder) + "/"
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, **self._bucket_owner_params
        ):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=item["Key"], **self._bucket_owner_params)["Body"].read()
                found.append((item["Key"], manifest.decode(body, item["Key"])))
        return found

    def _delete_prefix(self, bucket: str, prefix: str) -> None:
        client = self._get_s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, **self._bucket_owner_params
        ):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys}, **self._bucket_owner_params)


def incomplete_error(path: str | None, folder: str, marker: str) -> errors.ArtifactIncomplete:
    return errors.ArtifactIncomplete(
        errors.ARTIFACT_UPLOAD_INCOMPLETE.format(path=path or "", folder=folder, marker=marker)
    )


def composite(digests: list[bytes]) -> str:
    """S3's composite checksum of a multipart object: SHA-256 of the parts' SHA-256s."""
    return f"{base64.b64encode(hashlib.sha256(b''.join(digests)).digest()).decode()}-{len(digests)}"


def part_digests(path: str, part_size: int) -> list[bytes]:
    digests = []
    with open(path, "rb") as handle:
        while part := handle.read(part_size):
            digests.append(hashlib.sha256(part).digest())
    return digests
