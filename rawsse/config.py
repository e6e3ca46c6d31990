"""Every option of `rawsse serve`: its default, the precedent the default follows, the
range of values it accepts, and the environment variable that sets it (`RAWSSE_` + the
name in capitals).

A value outside its range is refused when the configuration is built, with one line that
names the option as it was given (`--port` or `RAWSSE_PORT`), the range and the value:
a server never starts with an option that would quietly break it. Building it reads no
file: what the options need from this machine (extras, a loop, key files that can be read
and used) is rawsse.preflight's to check, before anything starts. How an option is
declared and its values read is rawsse.options.

One piece, though long: the table of every option, one field each with its default and
its precedent, is the reference that `rawsse serve --help` and the README's table follow,
read top to bottom; split by layer it would scatter one list. Each layer gets only its
part of it (`api_options`, `access_options`, `token_options`).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from rawsse.auth.keys import KeySources, check_secret
from rawsse.auth.rules import SUB, TopicRules, parse_rule_text
from rawsse.auth.tokens import LEEWAY, TokenOptions
from rawsse.broker.sizes import MAX_WORKERS
from rawsse.core.access import AccessOptions, Network, parse_networks, reaches_loopback
from rawsse.core.api import ApiOptions
from rawsse.core.cors import parse_origins
from rawsse.core.history import HISTORY_AGE, HISTORY_BYTES, HISTORY_PER_TOPIC
from rawsse.core.http import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_URL_BYTES
from rawsse.core.hub import FANOUT_SLICE, MAX_QUEUED_BYTES
from rawsse.core.slots import MAX_PENDING_BYTES, SEND_TIMEOUT
from rawsse.core.topics import MAX_TOPIC_LENGTH
from rawsse.errors import ConfigError, RuleError
from rawsse.options import (
    DAY,
    GIB,
    KIB,
    MIB,
    check_field,
    env_name,
    flag_name,
    option,
    parse_value,
)
from rawsse.store.events import FSYNC_INTERVAL, STORE_AGE, STORE_BYTES, Fsync

HEARTBEAT_INTERVAL = 15.0
"""WHATWG's advice: a comment every 15 s keeps proxies from dropping idle streams."""

RETRY_MS = 3000
"""What browsers wait before reconnecting when the server says nothing (about 3 s)."""

RETRY_SPREAD = 10.0
"""Seconds over which the reconnects of a drain or an overload are spread: each stream is
told a delay drawn from [--retry, --retry + this], so clients told to go at the same
moment do not all come back at the same moment (the self-inflicted wave that the
long-connection push systems warn about)."""

HEADER_TIMEOUT = 10.0
"""Time to send a request head. nginx allows 60 s; real clients send a head in one go, and
a short limit is what makes slowloris expensive."""

BODY_TIMEOUT = 30.0
"""Time to send a request body once the head is in (nginx: 60 s between reads)."""

KEEPALIVE_TIMEOUT = 60.0
"""Idle time between requests on a kept-alive connection (nginx: 75 s)."""

MAX_TOPICS_PER_STREAM = 64
"""A page rarely needs more; the cap bounds the work one GET can ask for."""

SHUTDOWN_GRACE = 10.0
"""Time to flush pending bytes on SIGTERM, well inside Kubernetes' 30 s grace period."""

BACKLOG = 4096
"""Listen backlog: Linux's somaxconn default since 5.4, so connection storms queue
instead of being refused."""

BROKER_HISTORY = 100_000
"""Entries the Redis stream keeps (`XADD MAXLEN ~`): what a node loads at start and what
a resume on any node can reach back to."""

FD_RESERVE = 64
"""File descriptors kept back from --max-connections for the listener, pollers, logs and
the few connections that are answered "come back later" at the limit."""

AUTH_TIMEOUT = 2.0
"""Time the application has to answer --auth-url: a login check is a few ms, and a client
that waits longer is better told 503 to come back (nchan's auth requests default to 5 s)."""

AUTH_CONNECTIONS = 16
"""Connections to the application per worker: enough for thousands of checks a second at
a few ms each, few enough that a reconnect wave cannot swamp it."""

AUTH_CACHE = 10.0
"""Seconds an answer is reused for the same credential: a page's reconnects do not each
reach the application."""

TIMER_GRANULARITY = 1.0
"""Timeouts are checked by one sweep a second (rawsse.reactor.server), so shorter ones
could not be kept; the timeout options start here."""

_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")
"""A bearer token travels in a header: visible ASCII, no spaces."""


class Parsed(NamedTuple):
    """The options written as text, parsed once (by `Config.parsed`, on construction):
    every part is handed these values, never the text to parse again."""

    cors_origins: frozenset[str]
    public_topics: TopicRules
    presence_events: TopicRules
    trusted_proxies: tuple[Network, ...]


@dataclass(frozen=True)
class Config:
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
    port: int = option(8080, "TCP port to listen on (0 picks a free one)", low=0, high=65535)
    history: int = option(
        HISTORY_PER_TOPIC, "events kept per topic for resume (0: none)", low=0, high=1_000_000, unit="events"
    )
    history_age: float = option(
        HISTORY_AGE, "how long an event is kept for resume", low=1, high=365 * DAY, unit="s"
    )
    history_bytes: int = option(
        HISTORY_BYTES, "history kept across all topics", low=0, high=64 * GIB, unit="bytes"
    )
    data_dir: str | None = option(
        None,
        "directory of the durable event log (SQLite): events, ids and resume outlive a restart; "
        "without it, events live in memory only",
    )
    fsync: str = option(
        "interval",
        "when a publish is answered with --data-dir: always (on disk), interval (written, on disk "
        "within --fsync-interval), never (written, on disk when the system flushes it)",
        choices=tuple(mode.value for mode in Fsync),
    )
    fsync_interval: float = option(
        FSYNC_INTERVAL,
        "longest time an answered publish waits to be on disk with --fsync interval",
        low=TIMER_GRANULARITY,
        high=3600,
        unit="s",
    )
    store_age: float = option(
        STORE_AGE, "how long the durable log keeps an event", low=60, high=10 * 365 * DAY, unit="s"
    )
    store_bytes: int = option(
        STORE_BYTES,
        "events the durable log keeps (their data and topics), the oldest dropped first",
        low=MIB,
        high=1 << 50,
        unit="bytes",
    )
    heartbeat: float = option(
        HEARTBEAT_INTERVAL,
        "time between heartbeat comments on every stream",
        low=TIMER_GRANULARITY,
        high=DAY,
        unit="s",
    )
    retry: int = option(
        RETRY_MS,
        "reconnection delay sent to clients in the retry: field",
        low=100,
        high=DAY * 1000,
        unit="ms",
    )
    retry_spread: float = option(
        RETRY_SPREAD,
        "on drain and under overload, streams are told to reconnect after a delay drawn from "
        "[retry, retry + this]",
        low=0,
        high=3600,
        unit="s",
    )
    max_connections: int = option(
        0,
        "open connections (streams and requests) before new ones are turned away; "
        "0: the fd limit less a reserve",
        low=1,
        high=1 << 20,
        off=0,
    )
    max_accept_rate: float = option(
        0.0,
        "new streams taken per second (a burst of one second's worth); the excess is told to come back "
        "later; 0: no limit",
        low=1,
        high=1_000_000,
        off=0,
        unit="streams/s",
    )
    max_pending_bytes: int = option(
        MAX_PENDING_BYTES,
        "unsent bytes a slow stream may hold before it is disconnected (also the largest event)",
        low=4 * KIB,
        high=GIB,
        unit="bytes",
    )
    send_timeout: float = option(
        SEND_TIMEOUT,
        "time a blocked stream may make no progress before it is closed",
        low=TIMER_GRANULARITY,
        high=DAY,
        unit="s",
    )
    max_header_bytes: int = option(
        MAX_HEADER_BYTES, "request head size limit (431 beyond)", low=KIB, high=MIB, unit="bytes"
    )
    max_url_bytes: int = option(
        MAX_URL_BYTES, "request URL size limit (414 beyond)", low=64, high=MIB, unit="bytes"
    )
    max_body_bytes: int = option(
        MAX_BODY_BYTES, "request body size limit (413 beyond)", low=64, high=GIB, unit="bytes"
    )
    header_timeout: float = option(
        HEADER_TIMEOUT,
        "time to receive a request head (408 after)",
        low=TIMER_GRANULARITY,
        high=3600,
        unit="s",
    )
    body_timeout: float = option(
        BODY_TIMEOUT, "time to receive a request body (408 after)", low=TIMER_GRANULARITY, high=3600, unit="s"
    )
    keepalive_timeout: float = option(
        KEEPALIVE_TIMEOUT,
        "time an idle kept-alive connection stays open",
        low=TIMER_GRANULARITY,
        high=DAY,
        unit="s",
    )
    max_topics: int = option(MAX_TOPICS_PER_STREAM, "topics one stream may subscribe to", low=1, high=1024)
    max_topic_length: int = option(
        MAX_TOPIC_LENGTH, "length of a topic name", low=1, high=1024, unit="characters"
    )
    max_queued_bytes: int = option(
        MAX_QUEUED_BYTES,
        "published bytes awaiting fan-out before publishers get 503",
        low=4 * KIB,
        high=64 * GIB,
        unit="bytes",
    )
    fanout_slice: int = option(
        FANOUT_SLICE, "stream writes per slice of a fan-out pass", low=1, high=1_000_000, unit="writes"
    )
    publish_token: str | None = option(
        None,
        "bearer token required to publish; without one, only loopback clients may publish",
        secret=True,
    )
    shutdown_grace: float = option(
        SHUTDOWN_GRACE,
        "time to flush pending bytes on SIGTERM before closing streams",
        low=0,
        high=3600,
        unit="s",
    )
    backlog: int = option(BACKLOG, "listen backlog", low=1, high=65535, unit="connections")
    loop: str = option(
        "auto",
        "event loop: auto (uvloop if installed), uvloop or asyncio",
        choices=("auto", "uvloop", "asyncio"),
    )
    streams: str = option(
        "auto",
        "stream backend: auto (epoll or kqueue if present), epoll, kqueue, or transport "
        "(the loop's transports, the portable fallback)",
        choices=("auto", "epoll", "kqueue", "transport"),
    )
    log_level: str = option("info", "log level", choices=("debug", "info", "warning", "error"))
    workers: str = option("1", f"worker processes sharing the port, 1 to {MAX_WORKERS}; auto: one per core")
    broker: str = option(
        "memory",
        "where events are ordered: memory (this machine), or redis://host:port/db to make "
        "this server a node of a cluster",
    )
    broker_history: int = option(
        BROKER_HISTORY, "events the Redis stream keeps for resume", low=1, high=1_000_000_000, unit="events"
    )
    dashboard: bool = option(
        True, "serve the live dashboard page at / and publish the server's figures on $stats"
    )
    cors_origin: str | None = option(
        None,
        "page origins (scheme://host:port, comma-separated, or *) allowed to open streams "
        "and publish from a browser; other origins get 403",
    )
    jwt_secret: str | None = option(
        None,
        "HS256 secret that signs client tokens (at least 32 bytes); set it in the environment, "
        "not on the command line",
        secret=True,
    )
    jwt_secret_file: str | None = option(None, "file holding the HS256 secret (read again on SIGHUP)")
    jwt_key_file: str | None = option(
        None, "PEM public key (RSA for RS256, P-256 EC for ES256) of client tokens (read again on SIGHUP)"
    )
    jwt_jwks_file: str | None = option(
        None, "JWKS file of the RS256/ES256 public keys of client tokens (read again on SIGHUP)"
    )
    jwt_issuer: str | None = option(None, "the iss every client token must have")
    jwt_audience: str | None = option(None, "the aud every client token must have")
    jwt_leeway: float = option(
        LEEWAY, "clock skew forgiven on a token's exp and nbf", low=0, high=300, unit="s"
    )
    token_cookie: str | None = option(
        None, "name of the cookie that carries a browser's token (EventSource sends it itself)"
    )
    token_query: bool = option(
        False, "also accept a token in the URL's token parameter (URLs end up in logs: see SECURITY.md)"
    )
    public_topics: str | None = option(
        None,
        "topic patterns anyone may subscribe to once tokens are on (comma-separated: name, prefix:*, *)",
    )
    max_streams_per_user: int = option(
        0, "streams one user (a token's sub) may hold; 0: no limit", low=1, high=1 << 20, off=0
    )
    max_streams_per_ip: int = option(
        0, "streams one client address may hold; 0: no limit", low=1, high=1 << 20, off=0
    )
    presence_events: str | None = option(
        None,
        "topic patterns (comma-separated) whose streams' joins and leaves are published on "
        "$presence:<topic>, for tokens that allow it",
    )
    auth_url: str | None = option(
        None,
        "the application's URL that rawsse POSTs a new stream's topics and Cookie/Authorization "
        "to; its JSON answer says what the client may subscribe to",
    )
    auth_timeout: float = option(
        AUTH_TIMEOUT, "time the application has to answer", low=0.05, high=60, unit="s"
    )
    auth_connections: int = option(
        AUTH_CONNECTIONS,
        "keep-alive connections to the application at most (per worker)",
        low=1,
        high=1024,
        unit="connections",
    )
    auth_cache: float = option(
        AUTH_CACHE,
        "how long an answer is reused for the same credential (0: never)",
        low=0,
        high=3600,
        unit="s",
    )
    auth_fallback: str = option(
        "refuse",
        "when the application cannot answer: refuse new streams (503), or open their public topics only",
        choices=("refuse", "public"),
    )
    trusted_proxy: str | None = option(
        None,
        "addresses or networks (comma-separated) of proxies whose X-Forwarded-For names the "
        "client, for --max-streams-per-ip",
    )

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            check_field(spec, getattr(self, spec.name))
        _check_host(self.host)
        parsed = self.parsed  # raises ConfigError for a malformed one
        digits = self.workers.isascii() and self.workers.isdigit()
        if self.workers != "auto" and not (digits and 0 < int(self.workers) <= MAX_WORKERS):
            raise ConfigError(
                "workers", f"must be auto or a number from 1 to {MAX_WORKERS}, got {self.workers!r}"
            )
        _check_broker(self.broker)
        if self.data_dir is not None and not self.data_dir.strip():
            raise ConfigError("data_dir", "must name a directory")
        if self.data_dir is not None and self.broker != "memory":
            raise ConfigError(
                "data_dir",
                "keeps the events of the memory broker: with --broker redis:// Redis is the store "
                "(run it with AOF: see docs/scaling.md)",
            )

        if self.publish_token is not None and not _TOKEN.fullmatch(self.publish_token):
            raise ConfigError("publish_token", "must be 1 to 4096 visible ASCII characters, without spaces")
        self._check_access(parsed)

    @functools.cached_property
    def parsed(self) -> Parsed:
        try:
            public_topics = parse_rule_text(self.public_topics, self.max_topic_length)
        except RuleError as exc:
            raise ConfigError("public_topics", str(exc)) from None
        try:
            presence_events = parse_rule_text(self.presence_events, self.max_topic_length)
        except RuleError as exc:
            raise ConfigError("presence_events", str(exc)) from None
        try:
            proxies = parse_networks(self.trusted_proxy)
        except ValueError:
            raise ConfigError(
                "trusted_proxy", f"must be addresses or networks, comma-separated, got {self.trusted_proxy!r}"
            ) from None
        return Parsed(parse_origins(self.cors_origin), public_topics, presence_events, proxies)

    def _check_access(self, parsed: Parsed) -> None:
        """The rules between options (each option's own range and form is checked by its
        entry in the table, and by `parsed`)."""
        if self.jwt_secret is not None and self.jwt_secret_file is not None:
            raise ConfigError("jwt_secret", "and --jwt-secret-file are two ways to give one secret: pick one")
        if self.jwt_secret is not None:
            check_secret(self.jwt_secret, "jwt_secret")
        if self.public_topics and SUB in self.public_topics:
            raise ConfigError("public_topics", f"are the same for everyone: {SUB} has no meaning there")
        if self.token_cookie is not None and not _COOKIE_NAME.fullmatch(self.token_cookie):
            name = self.token_cookie[:64]
            raise ConfigError("token_cookie", f"must be a cookie name (letters, digits, _ -), got {name!r}")
        if self.publish_token is None and any(reaches_loopback(net) for net in parsed.trusted_proxies):
            # A proxy on this machine connects from loopback with every client's request,
            # so loopback can no longer stand for the operator who may publish.
            raise ConfigError(
                "trusted_proxy",
                "names a proxy on this machine: every request it forwards comes from loopback, "
                "so publishing needs --publish-token (RAWSSE_PUBLISH_TOKEN)",
            )
        if (self.token_cookie or self.auth_url) and "*" in parsed.cors_origins:
            raise ConfigError(
                "cors_origin",
                "cannot be '*' when a cookie carries the credential (--token-cookie, --auth-url): "
                "every web site could use a visitor's cookie; list the page origins",
            )
        if self.auth_url is not None:
            parts = urlsplit(self.auth_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                url = self.auth_url[:100]
                raise ConfigError("auth_url", f"must be an http:// or https:// URL, got {url!r}")
            try:
                _ = parts.port
            except ValueError:
                raise ConfigError("auth_url", f"has an invalid port: {self.auth_url[:100]!r}") from None
        keys = "--jwt-secret (RAWSSE_JWT_SECRET), --jwt-secret-file, --jwt-key-file, --jwt-jwks-file"
        for name in ("token_cookie", "token_query"):  # where a JWT is found: nothing without keys
            if getattr(self, name) and not self.tokens_on:
                raise ConfigError(name, f"needs a key to check tokens with: {keys}")
        needing = ("public_topics", "max_streams_per_user", "presence_events")
        needs_credentials = [name for name in needing if getattr(self, name)]
        if needs_credentials and not self.tokens_on and self.auth_url is None:
            raise ConfigError(needs_credentials[0], f"needs a way to check credentials: {keys} or --auth-url")

    @property
    def tokens_on(self) -> bool:
        """Whether topics need credentials (a way to check them is set)."""
        return self.key_sources().configured

    def key_sources(self) -> KeySources:
        return KeySources(self.jwt_secret, self.jwt_secret_file, self.jwt_key_file, self.jwt_jwks_file)

    def access_options(self) -> AccessOptions:
        return AccessOptions(
            public_topics=self.parsed.public_topics,
            token_cookie=self.token_cookie,
            token_query=self.token_query,
            max_streams_per_user=self.max_streams_per_user,
            max_streams_per_ip=self.max_streams_per_ip,
            trusted_proxies=self.parsed.trusted_proxies,
            app_fallback_public=self.auth_fallback == "public",
            max_topic_length=self.max_topic_length,
        )

    def token_options(self) -> TokenOptions:
        return TokenOptions(self.jwt_issuer, self.jwt_audience, self.jwt_leeway, self.max_topic_length)

    def worker_count(self) -> int:
        return min(os.cpu_count() or 1, MAX_WORKERS) if self.workers == "auto" else int(self.workers)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Defaults, then RAWSSE_* environment variables, then `overrides` (values, or
        the text of a command-line flag). A bad value raises ConfigError naming the
        variable or the flag (`--port`) it came from."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for spec in dataclasses.fields(cls):
            given = overrides.get(spec.name)
            if given is not None:
                source, raw = flag_name(spec.name), given
            elif env_name(spec.name) in environ:
                source, raw = env_name(spec.name), environ[env_name(spec.name)]
            else:
                continue
            sources[spec.name] = source
            try:
                values[spec.name] = parse_value(spec, raw) if isinstance(raw, str) else raw
            except ConfigError as exc:
                raise ConfigError(source, exc.problem) from None
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(sources.get(exc.name, exc.name), exc.problem) from None

    def api_options(self) -> ApiOptions:
        return ApiOptions(
            retry=self.retry,
            retry_spread=self.retry_spread,
            max_topics=self.max_topics,
            max_topic_length=self.max_topic_length,
            max_pending_bytes=self.max_pending_bytes,
            publish_token=self.publish_token,
            cors_origins=self.parsed.cors_origins,
            # Each worker takes its share (the kernel spreads connections evenly over them).
            accept_rate=self.max_accept_rate / self.worker_count(),
            cors_credentials=self.token_cookie is not None or self.auth_url is not None,
        )

    def connection_limit(self, fd_limit: int) -> int:
        automatic = max(fd_limit - FD_RESERVE, 1)
        return min(self.max_connections, automatic) if self.max_connections else automatic


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ConfigError("host", f"must be an IP address or a host name, got {host[:100]!r}")


def _check_broker(url: str) -> None:
    if url == "memory":
        return
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("broker", f"must be memory or a redis://host:port/db URL, got {url[:100]!r}")
    try:
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        raise ConfigError("broker", f"has an invalid port: {url[:100]!r}") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError("broker", f"names no host: {url[:100]!r}")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError("broker", f"names no socket path: {url[:100]!r}")
    database = parts.path.strip("/") if parts.scheme != "unix" else ""
    if database and not database.isdigit():
        raise ConfigError("broker", f"database must be a number, got {database[:20]!r}")
