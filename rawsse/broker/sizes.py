"""Sizes of the workers' shared log that the options are checked against (kept apart from
the log itself, which needs POSIX modules, so that the options can be read anywhere)."""

from __future__ import annotations

MAX_WORKERS = 64
"""Worker processes at most: the workers' shared log has a reader's cursor for each."""
