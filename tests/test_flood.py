"""The flooder: its counting without sockets, and short real runs against rawsse."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from rawsse.cli import main
from rawsse.flood.options import FloodOptions, parse_sources
from rawsse.flood.publisher import PublishResult, PublishTemplate, publish_all
from rawsse.flood.run import format_result, run_flood
from rawsse.flood.tally import LatencyHistogram, StreamTally, Summary, make_payload
from rawsse.flood.worker import PAYLOAD
from rawsse.reactor.server import Server
from tests.helpers import run_with_server
from tests.tokens import SECRET

KIND = "integration"
FORM = "application/x-www-form-urlencoded"


def test_payloads_are_found_by_the_worker_and_others_are_not() -> None:
    data = make_payload("topic-7", 42, 123456789, 128)
    assert len(data) == 128
    body = f"id: x\ndata: {data}\n\n".encode()
    assert PAYLOAD.findall(b"\n" + body) == [(b"topic-7", b"42", b"123456789")]
    assert PAYLOAD.findall(b"\ndata: not ours\n\ndata: a:b:c\n\n") == []


def test_tally_finds_loss_duplicates_and_disorder() -> None:
    tally = StreamTally()
    for sequence in (0, 1, 3, 2, 3, 5):
        tally.add("k", sequence)
    assert (tally.received, tally.duplicates, tally.out_of_order) == (5, 1, 1)
    assert tally.missing({"k": 7}) == 2  # 4 and 6 never came


@pytest.mark.parametrize(
    "reads",
    [
        [[0, 1, 2], [3, 4]],  # in-order runs: the whole-read path
        [[0, 1], [3, 2], [2, 4]],  # a gap filled late, then a duplicate: event by event
        [[1, 2], [0, 3]],  # the first event late
    ],
)
def test_a_read_is_counted_as_event_by_event_counting_would(reads: list[list[int]]) -> None:
    whole, single = StreamTally(), StreamTally()
    for read in reads:
        found = [(b"k", str(n).encode(), b"%d" % (1000 + n)) for n in read]
        new = list(whole.add_read(found))
        assert new == [stamp for key, n, stamp in found if single.add(key, int(n))]
    assert (whole.received, whole.duplicates, whole.out_of_order) == (
        single.received,
        single.duplicates,
        single.out_of_order,
    )
    assert whole.missing({b"k": 6}) == single.missing({b"k": 6})


def test_latencies_of_a_read_are_those_of_its_events() -> None:
    batch, one_by_one = LatencyHistogram(), LatencyHistogram()
    stamps = [b"1000", b"999000", b"5"]
    batch.add_since(2_000_000, stamps)
    for stamp in stamps:
        one_by_one.add(2_000_000 - int(stamp))
    assert batch.counts == one_by_one.counts
    assert (batch.total, batch.max_ns) == (one_by_one.total, one_by_one.max_ns)


def test_latency_percentiles_and_merge() -> None:
    fast, slow = LatencyHistogram(), LatencyHistogram()
    for _ in range(99):
        fast.add(1_000_000)  # 1 ms
    slow.add(500_000_000)  # 500 ms
    fast.merge(slow)
    assert 0.00095 < fast.percentile(0.5) < 0.00106
    assert fast.percentile(0.995) == pytest.approx(0.5, rel=0.05)
    assert fast.max_ns == 500_000_000
    assert LatencyHistogram.from_json(fast.to_json()).percentile(0.5) == fast.percentile(0.5)


def test_summaries_merge_across_workers() -> None:
    one, two = Summary(streams=3, received=10, lost=1), Summary(streams=2, received=5, duplicates=2)
    one.merge(Summary.from_json(two.to_json()))
    assert (one.streams, one.received, one.lost, one.duplicates) == (5, 15, 1, 2)


def test_source_address_ranges() -> None:
    assert parse_sources("127.0.0.2-127.0.0.4") == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert parse_sources("127.0.0.2,127.0.1.9") == ["127.0.0.2", "127.0.1.9"]
    assert parse_sources("127.0.0.255-127.0.1.1") == ["127.0.0.255", "127.0.1.0", "127.0.1.1"]


@pytest.mark.parametrize("text", ["foo", "127.0.0.256", "127.0.0.9-127.0.0.2", "127.0.0.2-x", "10.0.0.1"])
def test_source_addresses_that_could_not_be_bound_are_refused_at_start(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError):
        parse_sources(text)
    assert main(["flood", "idle", "http://127.0.0.1:1/events", "--source-addresses", text]) == 2
    assert "--source-addresses" in capsys.readouterr().err


def flood_rawsse(
    server_options: dict[str, Any], stream_url: str = "http://127.0.0.1:{port}/events", **flood: Any
) -> dict[str, Any]:
    """Run the flooder (blocking, so on an executor thread) against a rawsse server on
    the same loop; `flood` may use {port} in its URL templates."""
    results: list[dict[str, Any]] = []

    async def scenario(server: Server) -> None:
        for name in ("publish_url",):
            if name in flood:
                flood[name] = flood[name].format(port=server.port)
        options = FloodOptions(url=stream_url.format(port=server.port), progress=False, **flood)
        results.append(await asyncio.get_running_loop().run_in_executor(None, run_flood, options))

    run_with_server(("uvloop", "epoll"), scenario, **server_options)
    return results[0]


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("idle", {"seconds": 0.5}),
        ("storm", {}),
        ("broadcast", {"events": 50}),
        ("broadcast", {"events": 20, "rate": 200.0}),
        ("unicast", {"events": 120, "publish_connections": 2}),
    ],
)
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:{port}/events", "ws://127.0.0.1:{port}/ws"], ids=["sse", "ws"]
)
def test_short_flood_against_rawsse_loses_nothing(mode: str, extra: dict[str, Any], url: str) -> None:
    result = flood_rawsse({}, url, mode=mode, streams=60, settle=5, connect_window=8, **extra)
    summary = result["summary"]
    assert result["opening"]["streams"] == 60
    assert result["opening"]["errors"] == 0
    client = result["client"]  # what the flooder itself cost, for the results to say
    assert client["processes"] >= 1
    assert 0 < client["opening_cpu_seconds"] <= client["cpu_seconds"]
    assert summary["disconnects"] == 0
    if mode in ("broadcast", "unicast"):
        assert summary["received"] == result["expected_deliveries"] > 0
        assert summary["lost"] == summary["duplicates"] == 0
        assert result["latency"]["max"] > 0


def test_websocket_flood_answers_the_keepalive_pings() -> None:
    # Held for 4.5 heartbeats: a client that did not answer the pings would be dropped at the
    # fourth (the first pings go out at the first; MISSED_PINGS more are let pass).
    result = flood_rawsse(
        {"heartbeat": 1.0}, "ws://127.0.0.1:{port}/ws", mode="idle", streams=20, seconds=4.5
    )
    assert result["opening"]["streams"] == 20
    assert result["summary"]["disconnects"] == 0


def test_flood_reports_loss_when_the_server_drops_events() -> None:
    """A server that never delivers (we publish to another topic): all counted lost."""
    result = flood_rawsse(
        {},
        mode="broadcast",
        streams=10,
        events=5,
        settle=0.5,
        publish_url="http://127.0.0.1:{port}/publish?topic=elsewhere",
        publish_body="{data}",
        publish_type="text/plain",
    )
    assert result["summary"]["lost"] == 50


def test_events_the_server_refuses_are_reported_not_lost() -> None:
    # Payloads larger than the server's event limit: 413 for each.
    result = flood_rawsse(
        {"max_pending_bytes": 4096}, mode="broadcast", streams=10, events=5, size=5000, settle=0.5
    )
    assert result["publish"]["errors"] == 5
    assert result["summary"]["lost"] == 0
    assert result["expected_deliveries"] == 0


def test_a_fixed_rate_stamps_each_event_with_the_time_it_was_due() -> None:
    """At a fixed rate each payload carries the time it was due, not the time it went
    out: a server that answers late holds back the next request of its connection, and
    that wait must count in its latency (coordinated omission)."""
    rate = 2000.0
    stamps: list[int] = []

    async def scenario() -> PublishResult:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while head := await reader.readuntil(b"\r\n\r\n"):
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                    stamps.append(int(body.decode().split("data=")[1].split(":")[2]))
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            except asyncio.IncompleteReadError:  # the publisher is done
                writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        template = PublishTemplate(f"http://127.0.0.1:{port}/publish", "topic={topic}&data={data}", FORM)
        async with server:
            events = [("t", "k", sequence) for sequence in range(40)]
            return await publish_all(template, events, 64, rate=rate)

    result = asyncio.run(scenario())
    assert result.sent == len(stamps) == 40
    # Exactly the schedule (to the nanosecond it was rounded to), whenever each was sent.
    assert [stamp - stamps[0] for stamp in stamps] == [round(n / rate * 1e9) for n in range(40)]


def test_every_stream_asked_for_is_counted_open_refused_failed_or_not_tried() -> None:
    """A stream the opening's time limit came before is reported as not tried, never as
    missing from the count; one the server answered with another status is refused."""
    # Streams whose topics need a token the flood does not bring: each is refused (401).
    refused = flood_rawsse({"jwt_secret": SECRET}, "http://127.0.0.1:{port}/events", mode="idle", streams=30,
                           seconds=0.1, connect_window=4)  # fmt: skip
    opening = refused["opening"]
    assert (opening["asked"], opening["streams"], opening["refused"], opening["not_tried"]) == (30, 0, 30, 0)
    # A time limit too short for the streams asked for: the rest are not tried.
    cut = flood_rawsse({}, "http://127.0.0.1:{port}/events", mode="idle", streams=5000, seconds=0.1,
                       connect_window=1, open_timeout=0.3, processes=1)  # fmt: skip
    opening = cut["opening"]
    assert opening["not_tried"] > 0
    assert opening["streams"] + opening["errors"] + opening["refused"] + opening["not_tried"] == 5000
    assert "not tried within the 0.3 s opening limit" in format_result(cut)


def test_processes_that_share_a_source_address_share_its_ports_without_overlap() -> None:
    from rawsse.flood.run import port_slice
    from rawsse.flood.worker import SOURCE_PORTS

    assert port_slice(0, 4, 8) == SOURCE_PORTS  # an address of its own: every port
    slices = [port_slice(worker, 6, 2) for worker in range(6)]  # three processes on each
    for source in range(2):
        mine = sorted(slices[worker] for worker in range(source, 6, 2))
        assert all(a[1] < b[0] for a, b in itertools.pairwise(mine))
        assert SOURCE_PORTS[0] <= mine[0][0] and mine[-1][1] <= SOURCE_PORTS[1]


def test_more_streams_than_source_ports_are_refused_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    from rawsse.flood.worker import SOURCE_PORTS

    ports = SOURCE_PORTS[1] - SOURCE_PORTS[0] + 1
    url = "http://127.0.0.1:1/events"
    given = ["--source-addresses", "127.0.0.2", "--streams", str(ports + 1), "--processes", "1"]
    assert main(["flood", "idle", url, *given]) == 2  # one address: one range of ports
    assert "source ports" in capsys.readouterr().err
    given = ["--source-addresses", "127.0.0.2", "--streams", str(ports + 2), "--processes", "2"]
    assert main(["flood", "idle", url, *given]) == 2  # two processes share it: half each
