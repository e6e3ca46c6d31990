from __future__ import annotations

import pytest

from tests.helpers import BACKENDS


@pytest.fixture(params=BACKENDS, ids=["-".join(b) for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Every integration test runs on uvloop and the stdlib loop, with the epoll reactor
    and with the transport fallback."""
    value: tuple[str, str] = request.param
    return value
