"""Client tokens for the tests of private topics, signed with the tests' HS256 secret."""

from __future__ import annotations

import time
from typing import Any

import jwt

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def token(sub: str | None = None, ttl: float = 600, secret: str = SECRET, **claims: Any) -> str:
    body: dict[str, Any] = {"exp": int(time.time() + ttl), **claims}
    if sub is not None:
        body["sub"] = sub
    return jwt.encode(body, secret, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}
