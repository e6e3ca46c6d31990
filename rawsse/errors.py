"""Every error rawsse raises on purpose, in one family.

Each knows how a request that meets it is answered: `status` and `headers` are the HTTP
status and extra headers of the error response (None for errors no request causes: a
bad option, a port in use). Code that answers requests catches RawsseError and answers
with what the error says; anything else is a bug, answered 500 and logged.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

RETRY_AFTER = (("Retry-After", "1"),)


class RawsseError(Exception):
    status: int | None = 500
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def message(self) -> str:
        return str(self)


class HttpError(RawsseError):
    """A request refused with `status`; the connection is closed after the answer."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = tuple(headers)


class RuleError(RawsseError, ValueError):
    """A topic pattern list that cannot be used (a token's claim, --public-topics): the
    message says which pattern and why. Where a request brings it, the request is a 401
    (rawsse.auth.tokens.AuthError); an option is refused at start."""

    status = 400


class TopicError(RawsseError, ValueError):
    """A topic name that is not allowed."""

    status = 400


class FieldError(RawsseError, ValueError):
    """An `id` or `event` value that cannot be one SSE field line."""

    status = 400


class EventTooLarge(RawsseError, ValueError):
    """An event whose encoding exceeds the per-stream pending cap: a stream could never
    hold it while behind, and a resume page could not carry it."""

    status = 413


class UnusableId(RawsseError, ValueError):
    """A Last-Event-ID that names no position in the order. It never fails a request:
    the stream opens with a reset that gives `reason`."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Overloaded(RawsseError):
    """Publishing is refused for now: the fan-out queue (or the workers' log) is full."""

    status = 503
    headers = RETRY_AFTER


class BrokerUnavailable(RawsseError):
    """The broker cannot take events now (its server is unreachable); publishers get 503
    and retry, nothing is accepted half-way."""

    status = 503
    headers = RETRY_AFTER


class ConfigError(RawsseError, ValueError):
    """An option value that cannot be used; `name` is the option (its field name, or the
    flag or variable it came from)."""

    status = None

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem


class PortInUse(RawsseError, OSError):
    """Another server (a second rawsse, or any other program) listens on the port."""

    status = None

    def __init__(self, host: str, port: int) -> None:
        text = f"{host}:{port} is already in use by another server (a second rawsse, or another program)"
        OSError.__init__(self, errno.EADDRINUSE, text)

    def __str__(self) -> str:
        return str(self.strerror)


class WorkersFailed(RawsseError):
    """Workers could not be started: the server stopped; the message says why."""

    status = None


class StoreUnusable(RawsseError):
    """The data directory cannot be used (another server holds it, it is not ours, it
    cannot be read, its format is newer): the server does not start; the message says
    why in one line."""

    status = None


class StoreUnavailable(RawsseError):
    """The store cannot take events now (the disk is full, a write failed): publishers
    get 503 and retry; nothing is accepted that was not written."""

    status = 503
    headers = RETRY_AFTER
