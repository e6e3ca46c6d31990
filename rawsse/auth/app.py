"""Authorization by the application (`--auth-url`), the decisions without I/O: what rawsse
asks, how the answer becomes a grant, and the brief cache of answers per credential.

For a new stream whose client brings a `Cookie` or an `Authorization` that is not a token
rawsse checks itself, rawsse POSTs to the application, with those two headers:

    {"topics": ["notes@42", "news"], "transport": "sse"}

and the application answers 200 with the client's grant, in the claims' syntax:

    {"sub": "42", "subscribe": ["news", "chat:*"], "publish": [], "until": 1767225600}

(`sub`, `subscribe`, `publish` and `until` all optional; `until` is when the grant ends,
in Unix seconds, as a token's `exp`). A 401 or 403 answer refuses the client with that
status. Anything else — another status, a malformed answer, a timeout, a connection
refused — means the application cannot answer now: the stream gets 503 with Retry-After
(or, with --auth-fallback public, only its public topics).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import NamedTuple

from rawsse.auth.cache import ExpiringCache
from rawsse.auth.tokens import AuthError, Forbidden, Grant, grant_from_claims, numeric_date
from rawsse.errors import HttpError, RawsseError

CACHE_ENTRIES = 10_000
"""Answers remembered at once (oldest dropped first): a reconnect wave of that many clients
costs the application one call each, not one per reconnect."""

MAX_ANSWER_BYTES = 64 * 1024


class AppUnavailable(HttpError):
    """The application did not answer in time, or not sensibly: 503, come back soon."""

    def __init__(self, reason: str) -> None:
        super().__init__(503, f"authorization unavailable: {reason}", [("Retry-After", "2")])


class AppCall(NamedTuple):
    """One question to the application: the body, and the client's headers to pass on."""

    key: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


def app_call(cookie: str, authorization: str, topics: tuple[str, ...], transport: str) -> AppCall:
    """The question about a credential and the topics it asks for; its cache key is a
    digest of both (the cache holds no session secrets, and an answer the application
    tailored to some topics is never reused for others)."""
    headers = tuple(
        (name, value) for name, value in (("Cookie", cookie), ("Authorization", authorization)) if value
    )
    body = json.dumps({"topics": list(topics), "transport": transport}).encode()
    key = hashlib.blake2b(b"%s\n%s\n%s" % (cookie.encode(), authorization.encode(), body), digest_size=16)
    return AppCall(key.hexdigest(), body, headers)


def grant_from_answer(status: int, body: bytes, max_topic_length: int) -> Grant | RawsseError:
    """What an application's answer means: a grant, a refusal (401, 403), or AppUnavailable."""
    if status in (401, 403):
        reason = "the application refused the credential"
        return AuthError(reason) if status == 401 else Forbidden(reason)
    if status != 200:
        return AppUnavailable(f"the application answered {status}")
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return AppUnavailable("the application's answer is not JSON")
    if not isinstance(answer, dict):
        return AppUnavailable("the application's answer is not a JSON object")
    until = math.inf if answer.get("until") is None else numeric_date(answer["until"])
    if until is None:
        return AppUnavailable("until must be a finite number of Unix seconds")
    try:
        return grant_from_claims(answer, until, max_topic_length, source="answer")
    except AuthError as error:
        return AppUnavailable(error.message)


def answer_of(outcome: tuple[int, bytes] | str, max_topic_length: int) -> Grant | RawsseError:
    """A call's outcome (the status and body, or why there was none) as a grant or error."""
    if isinstance(outcome, str):
        return AppUnavailable(outcome)
    return grant_from_answer(*outcome, max_topic_length)


class AnswerCache:
    """Answers by the key of their question (credential and topics), each kept `ttl`
    seconds (and never past its grant's end); refusals too, so a wave of clients without
    rights does not reach the application either. The application's unavailability is
    never cached."""

    def __init__(self, ttl: float, entries: int = CACHE_ENTRIES) -> None:
        self.ttl = ttl
        self._answers: ExpiringCache[str, Grant | RawsseError] = ExpiringCache(entries)

    def get(self, key: str, now: float) -> Grant | RawsseError | None:
        return self._answers.get(key, now)

    def put(self, key: str, answer: Grant | RawsseError, now: float) -> None:
        if isinstance(answer, AppUnavailable) or not self.ttl:
            return
        until = now + self.ttl
        if isinstance(answer, Grant):
            until = min(until, answer.expires)
        self._answers.put(key, answer, until)
