"""How an option is declared, and how its values are read and checked: one dataclass
field each (`option`), whose metadata holds its help, range, unit and choices, from which
the flag (`--name`), the environment variable (`RAWSSE_NAME`), the `--help` line and the
one-line refusal of a bad value all come. The options themselves are rawsse.config's."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any

from rawsse.errors import ConfigError

KIB, MIB, GIB = 1024, 1024 * 1024, 1024 * 1024 * 1024
DAY = 86_400.0


def option(
    default: Any,
    help_text: str,
    *,
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
    off: float | None = None,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
) -> Any:
    """A field with its range: numbers from `low` to `high` in `unit`, plus `off` (a value
    outside the range with a meaning of its own, like 0 for "automatic")."""
    metadata: dict[str, Any] = {"help": help_text, "low": low, "high": high, "unit": unit, "off": off}
    metadata.update(choices=choices, secret=secret)
    return field(default=default, metadata=metadata)


def env_name(name: str) -> str:
    return "RAWSSE_" + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_kind(spec: dataclasses.Field[Any]) -> str:
    """'int', 'float', 'bool' or 'str' (annotations are strings here)."""
    kind = str(spec.type)
    return kind if kind in ("int", "float", "bool") else "str"


def describe_range(spec: dataclasses.Field[Any]) -> str:
    """`an integer from 0 to 65535`, `a number from 1 to 3600 s`, `one of a, b`, ..."""
    meta = spec.metadata
    if meta["choices"]:
        return "one of " + ", ".join(meta["choices"])
    kind = field_kind(spec)
    if kind == "bool":
        return "one of " + ", ".join(TRUE_WORDS + FALSE_WORDS)
    if meta["low"] is None:
        return "a string"
    noun = "an integer" if kind == "int" else "a number"
    unit = f" {meta['unit']}" if meta["unit"] else ""
    text = f"{noun} from {number_text(meta['low'])} to {number_text(meta['high'])}{unit}"
    if meta["off"] is not None:
        text += f", or {number_text(meta['off'])}"
    return text


def number_text(value: float) -> str:
    if not float(value).is_integer():
        return f"{value:g}"
    return f"{int(value):,}" if value >= 100_000 else str(int(value))


def check_field(spec: dataclasses.Field[Any], value: Any) -> None:
    meta = spec.metadata
    kind = field_kind(spec)
    if meta["choices"] is not None:
        if value not in meta["choices"]:
            raise ConfigError(spec.name, f"must be {describe_range(spec)}, got {value!r}")
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(spec.name, f"must be true or false, got {value!r}")
        return
    if meta["low"] is None:
        if value is not None and not isinstance(value, str):
            raise ConfigError(spec.name, f"must be a string, got {value!r}")
        return
    wrong_type = isinstance(value, bool) or not isinstance(value, (int, float) if kind == "float" else int)
    if wrong_type or not math.isfinite(value):
        raise ConfigError(spec.name, f"must be {describe_range(spec)}, got {value!r}")
    if value == meta["off"]:
        return
    if not meta["low"] <= value <= meta["high"]:
        raise ConfigError(spec.name, f"must be {describe_range(spec)}, got {number_text(value)}")


def parse_value(spec: dataclasses.Field[Any], text: str) -> Any:
    """A value from its text (a flag or an environment variable); raises ConfigError."""
    kind = field_kind(spec)
    if kind == "bool":
        return parse_bool(spec.name, text)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError(spec.name, f"must be {describe_range(spec)}, got {text[:100]!r}") from None
    return text


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise ConfigError(name, f"must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, got {text[:100]!r}")
    return word in TRUE_WORDS
