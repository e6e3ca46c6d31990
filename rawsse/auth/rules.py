"""Topic rules: which topics a token (or `--public-topics`) allows, as a short list of
patterns in one simple syntax, matched without regular expressions:

    news            exactly the topic `news`
    news:*          every topic that starts with `news:` (a `*` only at the end)
    orders:{sub}    the token's own subject in its place (`orders:42` for sub 42);
    team:{sub}:*    at most one `{sub}`, which may be followed by a trailing `*`
    *               every topic

A match is a set lookup, then one `startswith` per prefix pattern: linear in the number
of patterns, no backtracking whatever a token holds. The patterns themselves are bounded
(MAX_PATTERNS, and each as long as a topic name plus its `{sub}`), so a token cannot buy
work by being large.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from rawsse.errors import RuleError

MAX_PATTERNS = 64
"""Patterns per list (a token's `subscribe`, its `publish`, `--public-topics`): as many
as the topics a stream may hold (--max-topics' default)."""

SUB = "{sub}"
"""The placeholder for the token's subject."""

USER_MARK = "@"
"""What binds a topic to a user (see rawsse.core.access): wildcards reach such topics only
when they name an `@` themselves."""

_PATTERN = re.compile(r"[A-Za-z0-9_.:@$-]*(\{sub\}[A-Za-z0-9_.:@-]*)?\*?")
"""Checked once per pattern when a rule list is built; never used to match a topic."""


class TopicRules:
    """An immutable, hashable list of compiled patterns; build one with `parse_rules`."""

    __slots__ = ("_exact", "_prefixes", "_templates", "text")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.text = patterns
        exact: set[str] = set()
        prefixes: list[str] = []
        templates: list[tuple[str, str, bool]] = []
        for pattern in patterns:
            wild = pattern.endswith("*")
            stem = pattern[:-1] if wild else pattern
            if SUB in stem:
                before, _, after = stem.partition(SUB)
                templates.append((before, after, wild))
            elif wild:
                prefixes.append(stem)
            else:
                exact.add(stem)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._templates = tuple(templates)

    def allows(self, topic: str, sub: str | None = None) -> bool:
        """Whether one of the patterns matches `topic`; `{sub}` patterns match only for a
        subject (and never for an empty one). The server's `$` topics are matched only by
        patterns that name them (`*` is not one)."""
        if topic in self._exact:
            return True
        system = topic.startswith("$")
        owned = not system and USER_MARK in topic
        for prefix in self._prefixes:
            if topic.startswith(prefix) and _reaches(prefix, system, owned):
                return True
        if sub:
            for before, after, wild in self._templates:
                own = before + sub + after
                if (topic == own or (wild and topic.startswith(own))) and _reaches(
                    before + after, system, owned
                ):
                    return True
        return False

    def __bool__(self) -> bool:
        return bool(self.text)

    def __repr__(self) -> str:
        return f"TopicRules({list(self.text)!r})"


def _reaches(stem: str, system: bool, owned: bool) -> bool:
    """Whether a wildcard pattern's literal text may match a server topic (it names `$`)
    or a user's topic (it names an `@`): `*` and `news:*` open neither."""
    if system:
        return stem.startswith("$")
    return USER_MARK in stem if owned else True


NO_TOPICS = TopicRules(())


def parse_rules(patterns: Iterable[object], max_length: int) -> TopicRules:
    """Rules from a list of patterns (a token's claim, or an option split at commas);
    raises RuleError naming the first pattern that is not one."""
    items = tuple(patterns)
    if len(items) > MAX_PATTERNS:
        raise RuleError(f"at most {MAX_PATTERNS} topic patterns, got {len(items)}")
    names = tuple(item for item in items if isinstance(item, str))
    if len(names) != len(items):
        raise RuleError("topic patterns must be strings")
    return _compiled(names, max_length)


@functools.lru_cache(maxsize=1024)
def _compiled(patterns: tuple[str, ...], max_length: int) -> TopicRules:
    """Tokens of one kind carry the same lists: each is compiled once, and its rules are
    shared by every stream that holds one."""
    for pattern in patterns:
        if not pattern or len(pattern) > max_length + len(SUB):
            raise RuleError(f"a topic pattern must be 1 to {max_length} characters: {pattern[:64]!r}")
        if SUB + "*" in pattern:  # `notes@{sub}*` for sub 4 would match user 42's topics
            raise RuleError(f"a * may not follow {SUB} directly: {pattern[:64]!r}")
        if not _PATTERN.fullmatch(pattern):
            raise RuleError(
                f"not a topic pattern (letters, digits, _ . : @ -, one {{sub}}, a final *): {pattern[:64]!r}"
            )
    return TopicRules(patterns)


def parse_rule_text(text: str | None, max_length: int) -> TopicRules:
    """Rules from an option's comma-separated text (spaces around names ignored)."""
    if not text:
        return NO_TOPICS
    return parse_rules([part.strip() for part in text.split(",") if part.strip()], max_length)
