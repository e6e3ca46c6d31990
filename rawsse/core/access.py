"""Who may subscribe and publish to what: the decisions, without I/O.

Once a token option is set (a JWT key, or --auth-url), a topic needs a credential that
allows it, unless `--public-topics` lists it. A credential allows a topic when

- its `subscribe` patterns match it (see rawsse.auth.rules), or
- the topic is the user's own: a name with an `@` is private to the `sub` after its first
  `@` (`notifications@42`, `chat@42`, `@42` all belong to user 42), and only a credential
  of that `sub` (or with a pattern that matches the topic) may subscribe to it.

A client brings its credential in `Authorization: Bearer`, in the cookie named by
--token-cookie, or, where --token-query allows it, in a `token` query parameter.
Refusals are 401 (no credential, or one that cannot be used) and 403 (a valid one that
does not allow a topic), with a one-line reason; the per-user and per-address stream
limits answer 429.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar, Union

from rawsse.auth.app import AnswerCache, AppCall, AppUnavailable, app_call
from rawsse.auth.ledger import NO_ACCESS, Ledger, StreamAccess
from rawsse.auth.rules import NO_TOPICS, USER_MARK, TopicRules
from rawsse.auth.tokens import AuthError, Forbidden, Grant, TokenVerifier
from rawsse.core.http import Request, query_values
from rawsse.core.slots import Framing
from rawsse.core.topics import PRESENCE_PREFIX
from rawsse.errors import HttpError, RawsseError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # noqa: UP007 (a runtime alias)


Decided = TypeVar("Decided")
"""What the application's answer decides (Asking)."""

MAX_FORWARDED_HOPS = 16
"""X-Forwarded-For entries read, from the right: a chain of proxies is short."""


class TooMany(HttpError):
    """A per-user or per-address stream limit: 429, to try again once streams close."""

    def __init__(self, reason: str) -> None:
        super().__init__(429, reason, [("Retry-After", "10")])


@dataclass(frozen=True)
class AccessOptions:
    public_topics: TopicRules = NO_TOPICS
    token_cookie: str | None = None
    token_query: bool = False
    max_streams_per_user: int = 0
    max_streams_per_ip: int = 0
    trusted_proxies: tuple[Network, ...] = ()
    app_fallback_public: bool = False
    """When the application cannot answer, open streams of public topics only (instead
    of 503)."""
    max_topic_length: int = 255


class Asking(NamedTuple, Generic[Decided]):
    """The decision waits for the application: put `call`, then `finish(answer)` gives it
    (what a stream holds, who a credential names) or raises why not."""

    call: AppCall
    finish: Callable[[Grant | RawsseError], Decided]


def owner_of(topic: str) -> str | None:
    """The user a topic is private to (`chat@42` -> `42`), or None for a shared topic (and
    for the server's `$` topics, which a user's `sub` never opens)."""
    if topic.startswith("$"):
        return None
    _, mark, sub = topic.partition(USER_MARK)
    return sub if mark and sub else None


class Access:
    def __init__(
        self,
        options: AccessOptions,
        verifier: TokenVerifier | None,
        ledger: Ledger,
        wall: Callable[[], float] = time.time,
        app_cache: AnswerCache | None = None,
    ) -> None:
        """`app_cache` is given with --auth-url: the application decides for credentials
        that are no token, and its answers are kept there."""
        self.options, self.verifier, self.ledger, self.wall = options, verifier, ledger, wall
        self.app_cache = app_cache

    @property
    def enabled(self) -> bool:
        """Whether topics need credentials at all (a token key or --auth-url is set)."""
        return self.verifier is not None or self.app_cache is not None

    # Credentials

    def credential(self, request: Request) -> str | None:
        """The token a request carries (header, then cookie, then URL); raises AuthError
        for a URL token where --token-query does not allow one, whatever else the request
        carries, so that a token put in a URL (and so in logs) is noticed."""
        url_tokens = [value for value in query_values(request, "token") if value]
        if url_tokens and not self.options.token_query:
            raise AuthError("tokens in the URL are not accepted here (see --token-query)")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        cookie_name = self.options.token_cookie
        if cookie_name is not None:
            cookie = _cookie(request.headers.get("cookie", ""), cookie_name)
            if cookie:
                return cookie
        return url_tokens[0] if url_tokens else None

    def grant(self, request: Request) -> Grant | None:
        """The verified grant of the request's credential, None without one."""
        if self.verifier is None:
            return None
        token = self.credential(request)
        return None if token is None else self.verifier.verify(token, self.wall())

    def user(self, request: Request, topics: tuple[str, ...]) -> Grant | Asking[Grant] | None:
        """Who the request's credential names, for a request about `topics` that is no
        stream (acknowledging, counting unacknowledged events): its verified grant, None
        without a credential, or the question for the application (--auth-url) with
        `finish` giving the grant. Raises 401 for a credential that cannot be used."""
        grant = self.grant(request)
        if grant is not None:
            return self._current(grant)
        cookie, authorization = request.headers.get("cookie", ""), request.headers.get("authorization", "")
        if self.app_cache is None or not (cookie or authorization):
            return None

        def decided(answer: Grant | RawsseError) -> Grant:
            if isinstance(answer, RawsseError):
                raise answer.with_traceback(None) from None
            return self._current(answer)

        return self._ask(app_call(cookie, authorization, topics, Framing.SSE.transport), decided)

    def _ask(
        self, call: AppCall, then: Callable[[Grant | RawsseError], Decided]
    ) -> Decided | Asking[Decided]:
        """`then` of the application's answer to `call` (--auth-url): at once if its cache
        holds one, else once asked, its answer cached."""
        cache = self.app_cache
        assert cache is not None
        cached = cache.get(call.key, self.wall())
        if cached is not None:
            return then(cached)

        def finish(answer: Grant | RawsseError) -> Decided:
            cache.put(call.key, answer, self.wall())
            return then(answer)

        return Asking(call, finish)

    def _current(self, grant: Grant) -> Grant:
        if grant.expires <= self.wall():
            raise AuthError("the grant has ended (its exp or until is past)")
        return grant

    # Streams

    def for_stream(
        self, request: Request, topics: tuple[str, ...], peer: str | None, framing: Framing = Framing.SSE
    ) -> StreamAccess | Asking[StreamAccess]:
        """Whether a stream on `topics` may open, and what it holds if so; raises 401,
        403, 429, or 503 when the application cannot answer. Asking when the application
        must be asked first."""
        options = self.options
        address = self.client_address(request, peer) if options.max_streams_per_ip else None
        self._check_address(address)
        cache = self.app_cache
        if cache is not None and (self.verifier is None or self.credential(request) is None):
            cookie, authorization = (
                request.headers.get("cookie", ""),
                request.headers.get("authorization", ""),
            )
            if cookie or authorization:
                kept = (cookie, authorization) if framing == Framing.WS else None  # for later subscribes

                def granted(answer: Grant | RawsseError) -> StreamAccess:
                    return self._granted(answer, topics, address)._replace(credential=kept)

                return self._ask(app_call(cookie, authorization, topics, framing.transport), granted)
            return self._granted(None, topics, address)
        return self._granted(self.grant(request), topics, address)

    def _granted(
        self, grant: Grant | RawsseError | None, topics: tuple[str, ...], address: str | None
    ) -> StreamAccess:
        fallback = isinstance(grant, AppUnavailable) and self.options.app_fallback_public
        if fallback and all(self._public(topic) for topic in topics):
            grant = None  # public topics only, then; others are told to come back later
        if isinstance(grant, RawsseError):  # a cached refusal too: a fresh traceback each time
            raise grant.with_traceback(None) from None
        if grant is not None:
            self._current(grant)
        self._check_address(address)  # again, after a wait for the application
        self.check_subscribe(topics, grant)
        if grant is None:
            return NO_ACCESS if address is None else NO_ACCESS._replace(address=address)
        sub = grant.sub
        limit = self.options.max_streams_per_user
        if sub is not None and limit and self.ledger.held_by_user(sub) >= limit:
            raise TooMany(f"at most {limit} streams per user")
        return StreamAccess(grant, address)

    def _check_address(self, address: str | None) -> None:
        limit = self.options.max_streams_per_ip
        if address is not None and self.ledger.held_by_address(address) >= limit:
            raise TooMany(f"at most {limit} streams per client address")

    def check_subscribe(self, topics: Iterable[str], grant: Grant | None) -> None:
        """Raise 401 (no credential) or 403 for the first topic `grant` does not allow."""
        if grant is None:
            self._check_topics(topics, None, NO_TOPICS, held=False)
        else:
            self._check_topics(topics, grant.sub, grant.subscribe, held=True)

    def check_stream_subscribe(self, slot: int, topics: tuple[str, ...]) -> Asking[StreamAccess] | None:
        """A WebSocket's later subscribe, by what its stream was granted at its start;
        raises 401 or 403. For a stream --auth-url authorized, topics beyond its grant are
        asked about (Asking; `finish` raises, or updates the stream's grant)."""
        try:
            self._check_granted(slot, topics)
            return None
        except (AuthError, Forbidden):
            credential = self.ledger.credentials.get(slot)
            cache = self.app_cache
            if credential is None or cache is None:
                raise

        def regranted(answer: Grant | RawsseError) -> StreamAccess:
            if isinstance(answer, RawsseError):
                raise answer.with_traceback(None) from None
            if answer.sub != self.ledger.sub[slot]:
                raise Forbidden("the application named another user for this connection")
            if answer.expires <= self.wall():
                raise AuthError("the grant has ended (its until is past)")
            self.check_subscribe(topics, answer)
            self.ledger.regrant(slot, answer.subscribe, answer.publish, answer.expires)
            return NO_ACCESS  # what the stream holds now is in the ledger

        # From the cache at once (raising if it does not allow them either), or once asked.
        asking = self._ask(app_call(*credential, topics, Framing.WS.transport), regranted)
        return asking if isinstance(asking, Asking) else None

    def _check_granted(self, slot: int, topics: Iterable[str]) -> None:
        sub, rules = self.ledger.sub[slot], self.ledger.subscribe[slot]
        self._check_topics(topics, sub, rules, held=sub is not None or bool(rules))

    def _check_topics(self, topics: Iterable[str], sub: str | None, rules: TopicRules, held: bool) -> None:
        """Raise 401 (`held`: whether there is a credential at all) or 403 for the first
        topic that is neither public nor allowed to `sub` by `rules`."""
        if not self.enabled:
            return
        for topic in topics:
            if self._public(topic):
                continue
            if not held:
                raise AuthError(f"topic {topic[:64]!r} needs a token")
            if not self._allows(sub, rules, topic):
                raise Forbidden(f"the token does not allow subscribing to {topic[:64]!r}")

    def _public(self, topic: str) -> bool:
        """Public patterns never open a user's own topic, nor a `$presence:` one."""
        if topic.startswith(PRESENCE_PREFIX) or owner_of(topic) is not None:
            return False
        return self.options.public_topics.allows(topic)

    @staticmethod
    def _allows(sub: str | None, rules: TopicRules, topic: str) -> bool:
        owner = owner_of(topic)
        if owner is not None and owner == sub:
            return True
        return rules.allows(topic, sub)

    # Publishing

    @staticmethod
    def check_publish(topics: Iterable[str], sub: str | None, rules: TopicRules) -> None:
        """Raise 403 for the first topic the publish patterns do not allow."""
        for topic in topics:
            if not rules.allows(topic, sub):
                raise Forbidden(f"the token does not allow publishing to {topic[:64]!r}")

    # Client addresses

    def client_address(self, request: Request, peer: str | None) -> str | None:
        """The client's address: the peer's, or, when the peer is a --trusted-proxy, the
        nearest X-Forwarded-For entry that is not a trusted proxy itself."""
        if peer is None:
            return None
        proxies = self.options.trusted_proxies
        if not proxies or not _within(peer, proxies):
            return peer
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",")[-MAX_FORWARDED_HOPS:]]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain: count the proxy, not a made-up client
            if not _within(hop, proxies):
                return hop
        return peer


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.removeprefix("::ffff:"))
    except ValueError:
        return False
    return any(ip in network for network in networks)


_LOOPBACK = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("::ffff:127.0.0.0/104"),
)


def reaches_loopback(network: Network) -> bool:
    """Whether `network` holds a loopback address (a proxy on this machine)."""
    return any(network.version == loopback.version and network.overlaps(loopback) for loopback in _LOOPBACK)


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """`--trusted-proxy`: addresses or CIDR networks, comma-separated; raises ValueError."""
    if not text:
        return ()
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None
