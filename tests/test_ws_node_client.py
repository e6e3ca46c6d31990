"""Our WebSocket transport read by a client we did not write: Node's `ws` package (the one
most Node applications use). `.ci/run` installs it into `.node/`; without Node or the
package the test skips, saying so."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from rawsse.reactor.server import Server
from tests.helpers import TIMEOUT, post, publish, run_with_server

KIND = "integration"

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / ".node" / "node_modules"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (NODE_MODULES / "ws").is_dir(),
    reason="needs node and the ws package (npm install --prefix .node ws; .ci/run does)",
)


def test_node_ws_subscribes_receives_changes_topics_and_is_told_to_reconnect() -> None:
    async def scenario(server: Server) -> None:
        assert NODE is not None
        url = f"ws://127.0.0.1:{server.port}/ws?topic=first"
        child = await asyncio.create_subprocess_exec(
            NODE, str(ROOT / "tests" / "node" / "ws_subscriber.js"), url, "3",
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )  # fmt: skip
        assert child.stdout is not None

        async def line() -> dict[str, Any]:
            raw = await asyncio.wait_for(child.stdout.readline(), TIMEOUT)  # type: ignore[union-attr]
            assert raw, "the node client ended early"
            result: dict[str, Any] = json.loads(raw)
            return result

        try:
            assert await line() == {"open": True}
            ids = [await publish(server.port, "first", f"ünïcode {n}\nline") for n in range(3)]
            for n, event_id in enumerate(ids):
                got = await line()
                assert got["isBinary"] is False  # events are text frames
                assert (got["message"]["id"], got["message"]["data"]) == (event_id, f"ünïcode {n}\nline")
            assert (await line())["message"] == {
                "type": "subscribed",
                "topics": ["first", "second"],
                "ref": "s",
            }
            second = await publish(server.port, "second", "on the new topic")
            assert (await line())["message"] == {
                "id": second, "topic": "second", "event": None, "data": "on the new topic",
            }  # fmt: skip
            await post(server.port, "/disconnect?topic=second", b"")
            assert await line() == {"close": 1012, "reason": "reconnect and resume"}
            assert await asyncio.wait_for(child.wait(), TIMEOUT) == 0
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()

    run_with_server(("uvloop", "epoll"), scenario)
