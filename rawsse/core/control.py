"""Word from one process of the server to all of them, carried in the event order itself:
an event on the reserved `$control` topic, which no stream may subscribe to and no
publisher may write. Every process's hub takes it as it takes events — from memory, the
workers' shared log or the Redis stream — so a word reaches every worker and every node,
in order with the events around it, with no channel of its own.

    {"disconnect": "<sub>"}   close every stream of that user
"""

from __future__ import annotations

import json
from typing import Any

from rawsse.core.publish import PublishItem

CONTROL_TOPIC = "$control"


def disconnect_item(sub: str) -> PublishItem:
    return PublishItem((CONTROL_TOPIC,), json.dumps({"disconnect": sub}))


def is_control(topics: tuple[str, ...]) -> bool:
    return topics[0] == CONTROL_TOPIC


def control_word(wire: bytes) -> dict[str, Any]:
    """The word of a control event, from its SSE encoding (one `data:` line of JSON, as
    `disconnect_item` makes it); {} for anything else."""
    start = wire.find(b"data: ")
    if start < 0:
        return {}
    end = wire.find(b"\n", start)
    try:
        word = json.loads(wire[start + 6 : end])
    except ValueError:
        return {}
    return word if isinstance(word, dict) else {}
