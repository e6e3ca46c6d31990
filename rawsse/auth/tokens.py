"""Signed tokens (JWTs, checked by PyJWT) turned into grants: who the client is and what
it may subscribe and publish to.

The claims rawsse reads:

    sub         the user (a string); binds the user's private topics to it
    exp         required: a stream is closed when its token expires
    subscribe   topic patterns the token may subscribe to (see rawsse.auth.rules)
    publish     topic patterns the token may publish to
    nbf         checked when present
    iss, aud    checked when --jwt-issuer / --jwt-audience say so (required then)

A failure is a 401 with a one-line reason that never says which key was tried.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from rawsse.auth.cache import ExpiringCache
from rawsse.auth.rules import NO_TOPICS, TopicRules, parse_rules
from rawsse.errors import HttpError, RuleError

LEEWAY = 5.0
"""Seconds of clock skew forgiven on exp and nbf (PyJWT's default is none; a few seconds
covers hosts kept by NTP)."""

MAX_TOKEN_BYTES = 8192
"""A token travels in a header, a cookie or a URL: larger is no token a client sends."""

MAX_SUB_LENGTH = 255

CACHE_SIZE = 256
"""Verified tokens remembered, by a digest of each (a user's tabs and a client that
reconnects bring the same token back within seconds); bounded, oldest out first, and each
one's expiry checked again on every use. About 200 bytes an entry: kept small, since a
wave of distinct users gains nothing from it and it counts against idle memory."""


@dataclass(frozen=True)
class Key:
    key: Any
    """What PyJWT verifies with: the secret's bytes, or a public key object."""
    algorithm: str
    """The one algorithm this key verifies (see rawsse.auth.keys)."""
    kid: str | None = None


class Keys(Protocol):
    """Where the keys come from (rawsse.auth.keys.KeyRing reads them from files)."""

    def candidates(self, token: str) -> list[Key]: ...

    def reload(self) -> None: ...


class UnknownKeyId(jwt.InvalidTokenError):
    """A token names a `kid` that no key of its algorithm has."""


class AuthError(HttpError):
    """No token, or one that cannot be used: 401, with the reason on one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(401, reason, [("WWW-Authenticate", 'Bearer realm="rawsse"')])


class Forbidden(HttpError):
    """A valid client that may not do what it asked: 403."""

    def __init__(self, reason: str) -> None:
        super().__init__(403, reason)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one credential allows, until `expires` (wall-clock seconds, a token's exp and
    the leeway; inf for never)."""

    sub: str | None
    subscribe: TopicRules
    publish: TopicRules
    expires: float


@dataclass(frozen=True)
class TokenOptions:
    issuer: str | None = None
    audience: str | None = None
    leeway: float = LEEWAY
    max_topic_length: int = 255


_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (UnknownKeyId, "token names a key id this server does not know"),
    (jwt.InvalidAudienceError, "token is for another audience"),
    (jwt.InvalidIssuerError, "token is from another issuer"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim (exp, iss or aud)"),
    (jwt.exceptions.InvalidSubjectError, "token sub must be a string"),
)


class TokenVerifier:
    def __init__(self, keys: Keys, options: TokenOptions) -> None:
        self.keys = keys
        self._options = options
        self._cache: ExpiringCache[bytes, Grant] = ExpiringCache(CACHE_SIZE)

    def reload(self) -> None:
        """New keys (SIGHUP): tokens verified with the old ones are verified again."""
        self.keys.reload()
        self._cache.clear()

    def verify(self, token: str, now: float) -> Grant:
        """The grant of `token` at wall-clock time `now`; raises AuthError."""
        key = hashlib.blake2b(token.encode(), digest_size=16).digest()  # not the token itself
        cached = self._cache.get(key, now)
        if cached is not None:
            return cached
        grant = self._decode(token, now)  # an expired one is refused here, cached or not
        self._cache.put(key, grant, grant.expires)
        return grant

    def _decode(self, token: str, now: float) -> Grant:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("token too large")
        options = self._options
        require = ["exp"] + (["iss"] if options.issuer else []) + (["aud"] if options.audience else [])
        # PyJWT checks the signature, iss and aud; the times are checked below, from the
        # same reading of each claim that the grant's expiry comes from (PyJWT's own time
        # checks take any string int() reads as a time).
        checks = {
            "require": require,
            "verify_aud": options.audience is not None,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        }
        try:
            keys = self.keys.candidates(token)
            if not keys:
                raise AuthError("token algorithm not accepted")
            claims: dict[str, Any] | None = None
            for index, key in enumerate(keys):
                try:
                    claims = jwt.decode(
                        token,
                        key.key,
                        algorithms=[key.algorithm],
                        audience=options.audience,
                        issuer=options.issuer,
                        options=checks,  # type: ignore[arg-type]
                    )
                    break
                except jwt.InvalidSignatureError:
                    if index == len(keys) - 1:
                        raise
        except jwt.PyJWTError as exc:
            raise AuthError(_reason(exc)) from None
        except RecursionError:  # claims nested deeper than json reads
            raise AuthError("token signature or format is invalid") from None
        assert claims is not None
        expires = check_times(claims, now, options.leeway)
        # Accepted up to `leeway` past its exp, so kept that long too: a stream closed any
        # sooner would reconnect with the same token, be accepted, and be closed again.
        return grant_from_claims(claims, expires + options.leeway, options.max_topic_length)


def numeric_date(value: object) -> float | None:
    """A NumericDate (RFC 7519 2): a JSON number of Unix seconds, as a finite float; None
    for anything else (a string, a bool, null, a list, NaN, an infinity, an integer
    beyond any float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return seconds if math.isfinite(seconds) else None


def check_times(claims: dict[str, Any], now: float, leeway: float) -> float:
    """A token's exp, after checking it and nbf and iat (each a NumericDate when present)
    at wall-clock time `now`, forgiving `leeway` seconds; raises AuthError."""
    times: dict[str, float] = {}
    for claim in ("exp", "nbf", "iat"):
        if claim in claims:
            seconds = numeric_date(claims[claim])
            if seconds is None:
                raise AuthError(f"token {claim} must be a number of Unix seconds (RFC 7519 NumericDate)")
            times[claim] = seconds
    expires = times.get("exp")
    if expires is None:
        raise AuthError("token lacks a required claim (exp, iss or aud)")
    if expires <= now - leeway:
        raise AuthError("token expired")
    if times.get("nbf", -math.inf) > now + leeway or times.get("iat", -math.inf) > now + leeway:
        raise AuthError("token not valid yet")
    return expires


def grant_from_claims(
    claims: dict[str, Any], expires: float, max_topic_length: int, source: str = "token"
) -> Grant:
    """A grant, until `expires`, from verified claims (a token's, or an --auth-url
    answer's, as `source` says); raises AuthError for claims of the wrong shape."""
    sub = claims.get("sub")
    if sub is not None and (not isinstance(sub, str) or not 0 < len(sub) <= MAX_SUB_LENGTH):
        raise AuthError(f"{source} sub must be a string of 1 to {MAX_SUB_LENGTH} characters")
    rules = []
    for claim in ("subscribe", "publish"):
        value = claims.get(claim)
        if value is None:
            rules.append(NO_TOPICS)
            continue
        if not isinstance(value, list):
            raise AuthError(f"{source} {claim} claim must be a list of topic patterns")
        try:
            rules.append(parse_rules(value, max_topic_length))
        except RuleError as exc:
            raise AuthError(f"{source} {claim} claim: {exc}") from None
    return Grant(sub, rules[0], rules[1], expires)


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "token signature or format is invalid"
