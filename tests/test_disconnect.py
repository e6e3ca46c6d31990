"""POST /disconnect: an admin closes the streams of a topic; their clients resume."""

from __future__ import annotations

import pytest

from rawsse.errors import HttpError
from rawsse.reactor.server import Server
from tests.helpers import StreamClient, post, publish, run_with_server, wait_for
from tests.test_api import make_api, request

KIND = "integration"


def test_disconnect_is_authorized_like_publish_and_names_topics() -> None:
    harness = make_api()
    answer = harness.handle(request("POST", "/disconnect", "topic=a&topic=b&topic=a&topic=$stats"), True)
    assert harness.closed == [("a", "b", "$stats")]
    assert isinstance(answer, bytes) and answer.endswith(b'\r\n\r\n{"closed": 3}')
    for api, loopback, status in ((make_api(), False, 403), (make_api(publish_token="t"), True, 401)):
        with pytest.raises(HttpError) as caught:
            api.handle(request("POST", "/disconnect", "topic=a"), loopback)
        assert caught.value.status == status
    for query in ("", "topic=a/b", "x=1"):
        with pytest.raises(HttpError) as caught:
            make_api().handle(request("POST", "/disconnect", query), True)
        assert caught.value.status == 400
    with pytest.raises(HttpError) as caught:
        make_api().handle(request("GET", "/disconnect", "topic=a"), True)
    assert caught.value.status == 405


def test_disconnect_closes_the_topics_streams_and_they_resume(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        port = server.port
        first = await StreamClient.open(port, "topic=a")
        both = await StreamClient.open(port, "topic=a&topic=b")
        other = await StreamClient.open(port, "topic=b")
        await wait_for(lambda: server.metrics.streams_open == 3, "three streams")
        seen = await publish(port, ["a", "b"], "before")
        for stream in (first, both, other):
            assert (await stream.next_event()).id == seen
        answer = await post(port, "/disconnect?topic=a", b"")
        assert (answer.status, answer.json()) == (200, {"closed": 2})
        assert await first.until_closed() == [] and await both.until_closed() == []
        await publish(port, "a", "missed")
        await publish(port, "b", "live")
        assert (await other.next_event()).data == "live"  # streams of other topics carry on
        resumed = await StreamClient.open(port, "topic=a&topic=b", {"Last-Event-ID": seen})
        assert [e.data for e in await resumed.events(2)] == ["missed", "live"]
        again = await post(port, "/disconnect?topic=nobody", b"")
        assert again.json() == {"closed": 0}
        for stream in (first, both, other, resumed):
            stream.close()

    server = run_with_server(backend, scenario)
    assert server.metrics.streams_closed >= 2 and server.metrics.resumes == 1
