"""What the parts of a server may read of its life: one small object, built first and
handed to every part that reads it (uvicorn's ServerState), so none needs the server."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerState:
    draining: bool = False
    """Set when the server begins to stop: /readyz answers 503, publishing (over HTTP or a
    WebSocket) is refused, and stream requests are told to come back later."""
