"""The dashboard's parts without a browser: the $stats figures, the static file table, the
routes, --no-dashboard, and $stats over real sockets."""

from __future__ import annotations

import json

import pytest

from rawsse.config import Config
from rawsse.core.effects import Publish, Respond
from rawsse.core.history import History
from rawsse.core.hub import Hub
from rawsse.core.metrics import Metrics
from rawsse.core.publish import parse_publish
from rawsse.core.static import CONTENT_TYPES, StaticFiles
from rawsse.core.subscriptions import Subscriptions
from rawsse.core.topics import STATS_TOPIC
from rawsse.dashboard.files import load_dashboard
from rawsse.dashboard.stats import COUNTERS, StatsPublisher, snapshot, worker_figures
from rawsse.errors import HttpError, RawsseError
from rawsse.reactor.server import Server
from tests.helpers import StreamClient, get, post, run_with_server
from tests.parts import effect_runner, memory_broker
from tests.test_api import make_api, request

KIND = "integration"


def make_hub() -> tuple[Hub, Metrics]:
    metrics = Metrics()
    return Hub(Subscriptions(8), History(), metrics), metrics


# The figures


def test_snapshot_sums_the_workers_and_keeps_them() -> None:
    one, two = Metrics(), Metrics()
    one.streams_open, one.deliveries, one.resumes = 3, 10, 1
    two.streams_open, two.deliveries, two.slow_consumers = 4, 5, 2
    workers = [worker_figures(one, 0, 100, 5.0), worker_figures(two, 1, 101, 4.5)]
    document = snapshot(workers, 5.0)
    assert (document["streams_open"], document["deliveries"]) == (7, 15)
    assert (document["resumes"], document["slow_consumers"]) == (1, 2)
    assert [w["pid"] for w in document["workers"]] == [100, 101]
    assert set(COUNTERS) <= set(document["workers"][0])
    assert document["uptime"] == 5.0 and document["version"]


def test_stats_are_published_only_while_someone_subscribes_and_are_not_counted() -> None:
    hub, metrics = make_hub()
    broker = memory_broker(hub)
    publisher = StatsPublisher(broker, hub.subscriptions, metrics, started=100.0)
    assert publisher.publish(101.0) is None
    assert not hub.has_queued  # nobody subscribes: nothing built, nothing queued
    items = parse_publish("", "application/x-www-form-urlencoded", b"topic=a&data=x").items
    # A publisher's event, published as a request's are (counted once accepted).
    runner = effect_runner(broker, hub, metrics, lambda topics: 0)
    runner.run(Publish(items, lambda ids: Respond(b"")), lambda answer: None)
    hub.subscriptions.add(3, (STATS_TOPIC,))
    metrics.streams_open = 1
    assert publisher.publish(102.5) is not None
    (delivery,) = hub.take_batch().deliveries
    assert list(delivery.slots) == [3]
    data = delivery.data.decode().split("data: ", 1)[1].split("\n", 1)[0]
    figures = json.loads(data)
    assert (figures["uptime"], figures["streams_open"], figures["events_published"]) == (2.5, 1, 1)
    assert metrics.events_published == 1  # the publisher's event only, not the $stats one


def test_publishers_may_not_write_to_system_topics() -> None:
    for body in (b"topic=%24stats&data=x", b"topic=a&topic=$stats&data=x"):
        with pytest.raises(RawsseError, match="reserved for the server"):
            parse_publish("", "application/x-www-form-urlencoded", body)
    with pytest.raises(RawsseError, match="reserved"):
        parse_publish("", "application/json", b'{"topic": "$stats", "data": "x"}')
    with pytest.raises(RawsseError) as caught:
        make_api().handle(request("POST", "/publish", "topic=$stats", b"x"), True)
    assert caught.value.status == 400 and "reserved" in caught.value.message
    with pytest.raises(HttpError):  # only the known system topics may be subscribed to
        make_api().handle(request("GET", "/events", "topic=$other"), True)


# The static files


def test_static_table_serves_only_shipped_files_with_their_types() -> None:
    files = load_dashboard()
    for name, content_type in CONTENT_TYPES.items():
        path = "/" if name == "index.html" else f"/static/{name}"
        answer = files.answer(request("GET", path))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert f"Content-Type: {content_type}\r\n".encode() in answer
        assert b"Cache-Control: no-cache\r\n" in answer
        assert b"Content-Security-Policy: default-src 'none'; script-src 'self';" in answer
    for bad in ("/static/", "/static/../config.py", "/static/app.js.map", "/static/static.py", "/index.html"):
        with pytest.raises(HttpError) as caught:
            files.answer(request("GET", bad))
        assert caught.value.status == 404
    with pytest.raises(HttpError) as caught:
        files.answer(request("POST", "/"))
    assert caught.value.status == 405


def test_head_and_revalidation() -> None:
    files = StaticFiles({"app.js": b"console.log(1);\n"})
    full = files.answer(request("GET", "/static/app.js"))
    head = files.answer(request("HEAD", "/static/app.js"))
    assert full == head + b"console.log(1);\n"
    assert b"Content-Length: 16\r\n" in head
    etag = full.split(b"ETag: ", 1)[1].split(b"\r\n", 1)[0].decode()
    again = files.answer(request("GET", "/static/app.js", if_none_match=etag))
    assert again.startswith(b"HTTP/1.1 304 Not Modified\r\n") and again.endswith(b"\r\n\r\n")


def test_the_page_loads_only_its_own_files() -> None:
    page = load_dashboard().answer(request("GET", "/")).decode()
    assert '<script src="/static/app.js" defer></script>' in page
    assert "<style" not in page and "style=" not in page and "<script>" not in page  # CSP: none inline
    assert "http://" not in page and "https://" not in page  # no CDN


def test_no_dashboard_means_404_and_no_stats() -> None:
    api = make_api(dashboard=False)
    for path in ("/", "/static/app.js"):
        with pytest.raises(HttpError) as caught:
            api.handle(request("GET", path), True)
        assert caught.value.status == 404
    assert isinstance(make_api().handle(request("GET", "/"), True), bytes)


def test_dashboard_option_from_environment_and_command_line() -> None:
    assert Config.from_env({}).dashboard is True
    assert Config.from_env({"RAWSSE_DASHBOARD": "off"}).dashboard is False
    with pytest.raises(ValueError, match="RAWSSE_DASHBOARD"):
        Config.from_env({"RAWSSE_DASHBOARD": "maybe"})
    from rawsse.cli import build_parser

    args = build_parser().parse_args(["serve", "--no-dashboard"])
    assert args.dashboard is False
    assert build_parser().parse_args(["serve"]).dashboard is None  # the environment decides


# Over sockets


def test_stats_stream_gets_figures_every_second(backend: tuple[str, str]) -> None:
    async def scenario(server: Server) -> None:
        assert (await get(server.port, "/")).status == 200
        stream = await StreamClient.open(server.port, "topic=%24stats&topic=news")
        first = json.loads((await stream.next_event()).data)
        await post(server.port, "/publish", b"topic=news&data=hi")
        assert (await stream.next_event()).data == "hi"
        second = json.loads((await stream.next_event()).data)
        assert second["uptime"] > first["uptime"]
        assert second["events_published"] == first["events_published"] + 1
        assert second["streams_open"] == 1 and len(second["workers"]) == 1
        stream.close()

    run_with_server(backend, scenario)


def test_no_dashboard_server_publishes_no_stats() -> None:
    async def scenario(server: Server) -> None:
        assert server.stats is None
        assert (await get(server.port, "/")).status == 404

    run_with_server(("asyncio", "epoll"), scenario, dashboard=False)
