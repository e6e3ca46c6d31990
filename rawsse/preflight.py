"""What a configuration needs from this machine, checked before anything starts: the
optional packages (extras) some options need, the event loop, the stream backend, and the
token key files (readable, and holding keys rawsse accepts; the keys read here are the
ones the server starts with, and SIGHUP reads the files again, rawsse.auth.keys.KeyRing).

It runs once in each process that starts something: `Server.start` (every server, a
worker included) and the supervisor of `--workers`, before it binds the port or forks.

Each missing piece is one ConfigError that says what to install or choose, so
`rawsse serve` can print one line and exit 2 instead of a traceback from deep inside.
"""

from __future__ import annotations

import importlib
import sys

from rawsse.auth.keys import load_keys
from rawsse.auth.tokens import Key
from rawsse.config import Config
from rawsse.errors import ConfigError

EXTRAS = {"broker": ("redis", "redis")}
"""Option -> (module it needs, the extra that installs it), for options that need one."""


def missing_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return True
    return False


def check_environment(config: Config) -> tuple[Key, ...]:
    """Raise ConfigError (named by the option's field) for the first thing `config` needs
    that this machine lacks; returns the token keys its files hold."""
    if config.broker != "memory" and missing_module(EXTRAS["broker"][0]):
        extra = EXTRAS["broker"][1]
        scheme = config.broker.partition(":")[0]
        raise ConfigError("broker", f"{scheme}:// needs the {extra} extra: pip install 'rawsse[{extra}]'")
    if config.loop == "uvloop" and missing_module("uvloop"):
        raise ConfigError("loop", "uvloop is not installed: pip install uvloop, or use auto")
    if config.streams == "epoll" and sys.platform != "linux":
        raise ConfigError("streams", "epoll exists only on Linux; use auto or transport")
    if config.streams == "kqueue" and (sys.platform == "linux" or sys.platform == "win32"):
        raise ConfigError("streams", "kqueue exists only on BSD and macOS; use auto or transport")
    return load_keys(config.key_sources())  # ConfigError for an unreadable file or an unusable key
