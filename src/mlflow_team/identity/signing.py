"""HMAC-SHA256 author signatures: what the client signs and how the server checks it.

Standard library only. The client signs::

    mlflow-team-v1 \\n author \\n unix-seconds \\n METHOD \\n path \\n query \\n sha256(body)

with the author's personal key, and sends the author, the time, the body digest and the signature
in the headers below. The server recomputes the digest from the body it received, rebuilds the
string from the request it received, and compares in constant time. Keys and signatures are never
put into a message, a log line or a tag.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, unquote

VERSION = "mlflow-team-v1"
AUTHOR_HEADER = "X-MLflow-Team-Author"
TIMESTAMP_HEADER = "X-MLflow-Team-Timestamp"
CONTENT_HEADER = "X-MLflow-Team-Content-SHA256"
SIGNATURE_HEADER = "X-MLflow-Team-Signature"
#: A body the client could not hash without consuming it (a streamed upload).
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def encode_author(author: str) -> str:
    """Header-safe form of an author (HTTP headers are Latin-1; names need not be)."""
    return quote(author, safe="@.+-_")


def decode_author(value: str) -> str:
    return unquote(value)


def body_digest(body: bytes | str | None) -> str:
    if body is None:
        body = b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        return UNSIGNED_PAYLOAD
    return hashlib.sha256(body).hexdigest()


def string_to_sign(
    author: str, timestamp: str, method: str, path: str, query: str, digest: str
) -> bytes:
    return "\n".join((VERSION, author, timestamp, method.upper(), path, query, digest)).encode()


def signature(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_headers(
    key: bytes, author: str, now: float, method: str, path: str, query: str, body
) -> dict[str, str]:
    """The headers that carry a signed author for one request."""
    timestamp = str(int(now))
    digest = body_digest(body)
    sig = signature(key, string_to_sign(author, timestamp, method, path, query, digest))
    return {
        AUTHOR_HEADER: encode_author(author),
        TIMESTAMP_HEADER: timestamp,
        CONTENT_HEADER: digest,
        SIGNATURE_HEADER: sig,
    }


@dataclass(frozen=True)
class Claim:
    """A signed author as received, before it is checked."""

    author: str
    timestamp: int
    digest: str
    signature: str


class Malformed(ValueError):
    """The signature headers are there but cannot be read; the text names what is wrong."""


def read_claim(headers) -> Claim | None:
    """The signed claim in a request's headers, None when it carries no signature."""
    sig = headers.get(SIGNATURE_HEADER)
    if not sig:
        return None
    author = headers.get(AUTHOR_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    digest = headers.get(CONTENT_HEADER)
    missing = [
        name
        for name, value in ((AUTHOR_HEADER, author), (TIMESTAMP_HEADER, timestamp), (CONTENT_HEADER, digest))
        if not value
    ]
    if missing:
        raise Malformed(f"{SIGNATURE_HEADER} came without {', '.join(missing)}")
    try:
        when = int(timestamp)
    except ValueError:
        raise Malformed(f"{TIMESTAMP_HEADER} must be whole Unix seconds") from None
    if len(sig) != 64:
        raise Malformed(f"{SIGNATURE_HEADER} must be 64 hexadecimal characters")
    return Claim(decode_author(author), when, digest, sig)


def matches(key: bytes, claim: Claim, method: str, path: str, query: str) -> bool:
    expected = signature(
        key, string_to_sign(claim.author, str(claim.timestamp), method, path, query, claim.digest)
    )
    return hmac.compare_digest(expected, claim.signature)
