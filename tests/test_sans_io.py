"""The protocol core and the hub are plain code: importing them loads no I/O module."""

from __future__ import annotations

import subprocess
import sys

SANS_IO_MODULES = [
    "rawsse.core.sse",
    "rawsse.core.http",
    "rawsse.core.ids",
    "rawsse.core.topics",
    "rawsse.core.publish",
    "rawsse.core.hub",
    "rawsse.core.history",
    "rawsse.core.subscriptions",
    "rawsse.core.api",
    "rawsse.config",
    "rawsse.core.metrics",
]


def test_sans_io_modules_import_neither_asyncio_nor_socket() -> None:
    code = (
        "import sys\n"
        f"for name in {SANS_IO_MODULES!r}: __import__(name)\n"
        "print(','.join(m for m in ('asyncio', 'socket', 'selectors', 'select') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
