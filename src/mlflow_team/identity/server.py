"""Who the author of a new run or model version is, as the store sees the call.

Under ``mlflow server`` (a request of MLflow's own Flask app is being served) the author comes
from, in order: the user MLflow's auth app authenticated (``--app-name basic-auth``), a signed
author header that verifies against the policy's keyring, then, where the policy allows unsigned
identities, the unsigned author header or the client's own ``mlflow.user`` claim. With
``[identity] require-verified = true`` a request with neither login nor signature is a 401 that
says how to identify on this server. A signature is accepted once across every server process
on the database (:mod:`mlflow_team.identity.replay`). Outside a server (the store opened
directly on a database) the author is this process's :func:`mlflow_team.identity.author`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from mlflow_team import errors, policy
from mlflow_team.identity import signing, whoami
from mlflow_team.policy import Policy, Stamp
from mlflow_team.store import compat

_logger = logging.getLogger(__name__)

_G_ATTR = "_mlflow_team_stamp"
#: ``create_run`` in this experiment only reports the identity the server accepts: nothing is made.
PROBE_EXPERIMENT_ID = "mlflow-team-identity-probe"


def current_stamp(team_policy: Policy, claimed: str | None, store: Any = None) -> Stamp | None:
    """The stamp for a create call, None when identity stamping is off. Raises ``IdentityRejected``.

    ``store`` is the team store making the call: a signature's first use is recorded in its
    database. Left out, it is the team store method that called this one (found on the stack).
    Call it before the store's own write transaction (the record commits on its own; it is
    dropped again if the request fails, see :func:`_forget_unless_written`).
    """
    if team_policy.identity is None:
        return None
    request, g = _server_request()
    if request is None:
        return Stamp(whoami.author().name, False, "direct")
    # One request, one decision: the store retries a call on lock errors, and a signature is
    # accepted once.
    memo = getattr(g, _G_ATTR, None)
    if memo is None:
        store = store if store is not None else _calling_store(sys._getframe(1))
        memo = _request_stamp(team_policy, request, g, claimed, store)
        setattr(g, _G_ATTR, memo)
    return memo


def _calling_store(frame) -> Any:
    """The team store whose method is on the stack above ``frame`` (None if there is none)."""
    from mlflow_team.store.db import TeamStoreHooks

    for _ in range(8):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, TeamStoreHooks):
            return candidate
        frame = frame.f_back
    return None


def _server_request():
    """``(flask.request, flask.g)`` while MLflow's server app serves a request, else ``(None, None)``."""
    try:
        import flask
    except ImportError:  # pragma: no cover - flask ships with mlflow
        return None, None
    if not flask.has_request_context():
        return None, None
    if not flask.current_app.import_name.startswith("mlflow.server"):
        return None, None  # some other Flask app uses the store directly: that is direct mode
    return flask.request, flask.g


def _basic_auth_user(request) -> str | None:
    """The user MLflow's basic-auth app let in, on minors whose app does not record it in
    ``flask.g`` (3.12): its before-request hook has checked the credentials of this request."""
    if not _basic_auth_app() or request.authorization is None:
        return None
    return request.authorization.username or None


def _basic_auth_app() -> bool:
    """Whether this server runs MLflow's basic-auth app (its before-request hook is installed)."""
    import flask

    hook = compat.get("mlflow.server.auth:_before_request")
    return hook is not None and hook in flask.current_app.before_request_funcs.get(None, ())


def _request_stamp(team_policy: Policy, request, g, claimed: str | None, store: Any = None) -> Stamp:
    rule = team_policy.identity
    assert rule is not None
    user = getattr(g, "mlflow_authenticated_user", None) or _basic_auth_user(request)
    if user:
        return Stamp(user, True, "mlflow-auth")
    header_author = request.headers.get(signing.AUTHOR_HEADER)
    header_author = signing.decode_author(header_author) if header_author else None
    if rule.keyring:
        try:
            claim = signing.read_claim(request.headers)
        except signing.Malformed as exc:
            raise errors.IdentityRejected(errors.SIGNATURE_MALFORMED.format(problem=exc)) from None
        if claim is not None:
            _verify(rule, claim, request, store)
            return Stamp(claim.author, True, "signature")
    if rule.require_verified:
        raise errors.IdentityRejected(
            errors.UNVERIFIED_REJECTED.format(
                author=errors.preview(header_author or claimed) if header_author or claimed else "none named",
                how=_how_to_identify(rule),
            )
        )
    return policy.unsigned_stamp(team_policy, header_author, claimed)


def _how_to_identify(rule: policy.IdentityRule) -> str:
    """The ways this server offers to prove an author: its keyring, MLflow's login, both, none."""
    login = _basic_auth_app()
    if rule.keyring:
        return errors.UNVERIFIED_HOW_SIGN_OR_LOGIN if login else errors.UNVERIFIED_HOW_SIGN
    return errors.UNVERIFIED_HOW_LOGIN if login else errors.UNVERIFIED_HOW_NONE


def _verify(rule: policy.IdentityRule, claim: signing.Claim, request, store: Any = None) -> None:
    key = rule.keyring.get(claim.author)
    if key is None:
        raise errors.IdentityRejected(errors.AUTHOR_UNKNOWN.format(author=claim.author))
    age = int(time.time()) - claim.timestamp
    if abs(age) > rule.max_clock_skew_s:
        raise errors.IdentityRejected(
            errors.SIGNATURE_STALE.format(author=claim.author, age=age, skew=rule.max_clock_skew_s)
        )
    if claim.digest != signing.body_digest(request.get_data(cache=True)):
        raise errors.IdentityRejected(errors.SIGNATURE_MISMATCH.format(author=claim.author))
    query = request.query_string.decode("latin-1")
    if not signing.matches(key, claim, request.method, request.path, query):
        raise errors.IdentityRejected(errors.SIGNATURE_MISMATCH.format(author=claim.author))
    if not _first_use(store, claim, rule.max_clock_skew_s):
        raise errors.IdentityRejected(errors.SIGNATURE_REPLAYED.format(author=claim.author))


def _first_use(store: Any, claim: signing.Claim, skew_s: int) -> bool:
    """Record the signature's first use in the store's database, seen by every server process on
    it (:mod:`mlflow_team.identity.replay`); False when it was used before."""
    import sqlalchemy

    from mlflow_team.identity import replay

    until = claim.timestamp + skew_s
    engine = getattr(store, "engine", None)
    if engine is None:
        if not _SEEN.warned:
            _SEEN.warned = True
            _logger.warning(
                "mlflow-team: no team store found for a signed request; signatures are remembered "
                "by this process only, and another worker would accept a replay"
            )
        return _SEEN.first_use(claim.signature, until)
    try:
        accepted = replay.first_use(engine, claim.signature, until, skew_s)
    except sqlalchemy.exc.DBAPIError as exc:
        # The driver's first line only: the statement's parameters would show the signature.
        original = exc.orig if exc.orig is not None else exc
        lines = str(original).strip().splitlines()
        raise errors.PolicyViolation(
            errors.REPLAY_RECORD_FAILED.format(
                author=claim.author, reason=f"{type(original).__name__}: {lines[0] if lines else ''}"
            ),
            rule="identity",
            error_code=errors.TEMPORARILY_UNAVAILABLE,
        ) from exc
    if accepted:
        _forget_unless_written(engine, claim.signature)
    return accepted


def _forget_unless_written(engine: Any, signature: str) -> None:
    """Drop the record of ``signature`` when its request fails: the store's writes are
    all-or-nothing, so a failed request wrote nothing, and MLflow's client resends a request
    answered 5xx with the same headers. A signature is used up by a request that succeeded."""
    import flask

    from mlflow_team.identity import replay

    @flask.after_this_request
    def _forget(response):
        if response.status_code >= 400:
            try:
                replay.forget(engine, signature)
            except Exception:  # noqa: BLE001 - the retry is then refused as a replay, nothing worse
                _logger.warning("mlflow-team: could not drop the record of a failed signed request", exc_info=True)
        return response


class _SeenSignatures:
    """Signatures accepted by this server process, kept until they would be stale anyway: the
    fallback where no team store's database can hold them."""

    def __init__(self) -> None:
        self.warned = False
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def first_use(self, sig: str, until: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._until) > 10_000:
                self._until = {s: t for s, t in self._until.items() if t >= now}
            if self._until.get(sig, 0) >= now:
                return False
            self._until[sig] = until
            return True


_SEEN = _SeenSignatures()


def answer_probe(stamp: Stamp) -> None:
    """Report the accepted identity to `mlflow-team identity --server` and create nothing."""
    raise errors.IdentityProbeAnswer(
        errors.PROBE_ANSWER.format(author=stamp.author, verified=stamp.verified, source=stamp.source)
    )
