"""Database URLs and error texts with the password taken out, for every message a user sees.

A database URL may carry its password (``team+postgresql://user:pw@host/db``) and a driver's
error text may quote the URL or the password. Anything that echoes either goes through here:

* :func:`mask_url` shows a URL with ``***`` for its password (also ``?password=...``);
* :func:`mask_secrets` takes the secrets of a URL out of any text, wherever they appear.

Stdlib and SQLAlchemy only: the store, the CLI and the server can all use it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"
PREFIX = "team+"

#: Query parameters that hold a password for the drivers the store supports (libpq, PyMySQL).
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword"})

# scheme://user:password@ in any text, for URLs SQLAlchemy cannot parse and for other URLs a
# driver's message quotes; the password runs to the last '@' of the token.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>\S*)(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:%s)=)(?P<secret>[^&\s#'\"]*)" % "|".join(sorted(SECRET_QUERY_KEYS)),
    re.IGNORECASE,
)


def _split(url: str) -> tuple[str, str]:
    return (PREFIX, url[len(PREFIX) :]) if url.startswith(PREFIX) else ("", url)


def _regex_mask(text: str) -> str:
    text = _USERINFO.sub(lambda m: m["head"] + MASK, text)
    return _QUERY_SECRET.sub(lambda m: m["head"] + MASK, text)


def mask_url(url: str) -> str:
    """``url`` with its password shown as ``***`` (a ``team+`` prefix is kept).

    ``team+postgresql://root:pw@db:5432/mlflow`` -> ``team+postgresql://root:***@db:5432/mlflow``.
    A URL without a password comes back unchanged; one SQLAlchemy cannot parse is masked by
    pattern (``scheme://user:...@``, ``?password=...``).
    """
    prefix, db = _split(url)
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(db)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL: mask by pattern
        return _regex_mask(url)
    secret_keys = [k for k in parsed.query if k.lower() in SECRET_QUERY_KEYS]
    if parsed.password is None and not secret_keys:
        return url
    shown = parsed.render_as_string(hide_password=True)
    return prefix + _QUERY_SECRET.sub(lambda m: m["head"] + MASK, shown)


def _secrets_of(url: str) -> list[str]:
    """The password(s) in ``url``, decoded and as written, longest first."""
    _, db = _split(url)
    found: set[str] = set()
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(db)
    except Exception:  # noqa: BLE001
        parsed = None
    if parsed is not None:
        if parsed.password:
            found.add(str(parsed.password))
        for key, value in parsed.query.items():
            if key.lower() in SECRET_QUERY_KEYS:
                found.update([value] if isinstance(value, str) else value)
    for pattern in (_USERINFO, _QUERY_SECRET):
        for match in pattern.finditer(url):
            found.add(match["secret"])
    for secret in list(found):
        found.update({unquote(secret), quote(secret, safe=""), quote(secret)})
    return sorted((s for s in found if s), key=len, reverse=True)


def mask_secrets(text: str, url: str) -> str:
    """``text`` (a message, a driver's error) with every secret of ``url`` replaced by ``***``.

    The URL itself becomes :func:`mask_url`'s form; the password is then replaced wherever it
    still appears (decoded or percent-encoded), and any other ``scheme://user:pw@`` is masked too.
    A short password may mask parts of unrelated words: a readable message matters less.
    """
    if url:
        text = text.replace(url, mask_url(url))
        for secret in _secrets_of(url):
            text = text.replace(secret, MASK)
    return _regex_mask(text)
