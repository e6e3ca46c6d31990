"""Every option of `rawsse serve`: its default, the precedent the default follows, and the
environment variable that sets it (`RAWSSE_` + the name in capitals)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from rawsse.broker.ring import MAX_WORKERS
from rawsse.hub.history import HISTORY_AGE, HISTORY_BYTES, HISTORY_PER_TOPIC
from rawsse.hub.hub import MAX_QUEUED_BYTES
from rawsse.proto.cors import parse_origins
from rawsse.proto.http import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_URL_BYTES
from rawsse.proto.topics import MAX_TOPIC_LENGTH

FANOUT_SLICE = 2048
"""Writes per slice: at the ~5-8 us of a loopback write, about 10-15 ms, short enough that
accepting, publishing and /metrics stay responsive during a large broadcast."""

MAX_PENDING_BYTES = 1024 * 1024
"""Per-stream bytes a slow reader may hold before it is disconnected (Centrifugo closes a
"slow" client at 1 MiB of queued data). It can resume with Last-Event-ID."""

SEND_TIMEOUT = 60.0
"""A stream whose pending bytes make no progress for this long is closed (nginx's
send_timeout)."""

HEARTBEAT = 15.0
"""WHATWG's advice: a comment every 15 s keeps proxies from dropping idle streams."""

RETRY_MS = 3000
"""What browsers wait before reconnecting when the server says nothing (about 3 s)."""

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
"""File descriptors kept back from --max-connections for the listener, pollers and logs."""


def _option(default: Any, help_text: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass(frozen=True)
class Config:
    host: str = _option("127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
    port: int = _option(8080, "TCP port to listen on (0 picks a free one)")
    history: int = _option(HISTORY_PER_TOPIC, "events kept per topic for resume")
    history_age: float = _option(HISTORY_AGE, "seconds an event is kept for resume")
    history_bytes: int = _option(HISTORY_BYTES, "bytes of history kept across all topics")
    heartbeat: float = _option(HEARTBEAT, "seconds between heartbeat comments on every stream")
    retry: int = _option(RETRY_MS, "reconnection delay (ms) sent to clients in the retry: field")
    max_connections: int = _option(
        0, "open connections (streams and requests) before new ones get 503; 0: the fd limit less a reserve"
    )
    max_pending_bytes: int = _option(
        MAX_PENDING_BYTES, "unsent bytes a slow stream may hold before it is disconnected"
    )
    send_timeout: float = _option(
        SEND_TIMEOUT, "seconds a blocked stream may make no progress before it is closed"
    )
    max_header_bytes: int = _option(MAX_HEADER_BYTES, "request head size limit (431 beyond)")
    max_url_bytes: int = _option(MAX_URL_BYTES, "request URL size limit (414 beyond)")
    max_body_bytes: int = _option(MAX_BODY_BYTES, "request body size limit (413 beyond)")
    header_timeout: float = _option(HEADER_TIMEOUT, "seconds to receive a request head (408 after)")
    body_timeout: float = _option(BODY_TIMEOUT, "seconds to receive a request body (408 after)")
    keepalive_timeout: float = _option(KEEPALIVE_TIMEOUT, "seconds an idle kept-alive connection stays open")
    max_topics: int = _option(MAX_TOPICS_PER_STREAM, "topics one stream may subscribe to")
    max_topic_length: int = _option(MAX_TOPIC_LENGTH, "characters in a topic name")
    max_queued_bytes: int = _option(
        MAX_QUEUED_BYTES, "published bytes awaiting fan-out before publishers get 503"
    )
    fanout_slice: int = _option(FANOUT_SLICE, "stream writes per slice of a fan-out pass")
    publish_token: str | None = _option(
        None,
        "bearer token required to publish; without one, only loopback clients may publish",
        secret=True,
    )
    shutdown_grace: float = _option(
        SHUTDOWN_GRACE, "seconds to flush pending bytes on SIGTERM before closing streams"
    )
    backlog: int = _option(BACKLOG, "listen backlog")
    loop: str = _option(
        "auto",
        "event loop: auto (uvloop if installed), uvloop or asyncio",
        choices=("auto", "uvloop", "asyncio"),
    )
    streams: str = _option(
        "auto",
        "stream backend: auto (epoll or kqueue if present), epoll, kqueue, or transport "
        "(the loop's transports, the portable fallback)",
        choices=("auto", "epoll", "kqueue", "transport"),
    )
    log_level: str = _option("info", "log level", choices=("debug", "info", "warning", "error"))
    workers: str = _option("1", "worker processes sharing the port (SO_REUSEPORT); auto: one per core")
    broker: str = _option(
        "memory",
        "where events are ordered: memory (this machine), or redis://host:port/db to make "
        "this server a node of a cluster",
    )
    broker_history: int = _option(BROKER_HISTORY, "events the Redis stream keeps for resume")
    dashboard: bool = _option(
        True, "serve the live dashboard page at / and publish the server's figures on $stats"
    )
    cors_origin: str | None = _option(
        None,
        "page origins (scheme://host:port, comma-separated, or *) allowed to open streams "
        "and publish from a browser; other origins get 403",
    )

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            choices = spec.metadata.get("choices")
            if choices and value not in choices:
                raise ValueError(f"{spec.name} must be one of {', '.join(choices)}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{spec.name} must not be negative")
        parse_origins(self.cors_origin)  # raises CorsError, a ValueError, when malformed
        if self.workers != "auto" and not (self.workers.isdigit() and 0 < int(self.workers) <= MAX_WORKERS):
            raise ValueError(f"workers must be auto or a number from 1 to {MAX_WORKERS}")
        if self.broker != "memory" and not self.broker.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("broker must be memory or a redis:// URL")

    def worker_count(self) -> int:
        return min(os.cpu_count() or 1, MAX_WORKERS) if self.workers == "auto" else int(self.workers)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Config:
        """Defaults, then RAWSSE_* environment variables, then `overrides`."""
        environ = dict(os.environ) if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            text = environ.get(env_name(spec.name))
            if text is not None:
                values[spec.name] = parse_value(spec, text)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def connection_limit(self, fd_limit: int) -> int:
        automatic = max(fd_limit - FD_RESERVE, 1)
        return min(self.max_connections, automatic) if self.max_connections else automatic


def env_name(name: str) -> str:
    return "RAWSSE_" + name.upper()


def parse_value(spec: dataclasses.Field[Any], text: str) -> Any:
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", "str")
    if kind == "bool":
        return parse_bool(env_name(spec.name), text)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ValueError(f"{env_name(spec.name)}: expected a number, got {text!r}") from None
    return text


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"{name}: expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, got {text!r}")
    return word in TRUE_WORDS
