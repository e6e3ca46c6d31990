"""Running a flood: worker processes for the streams, the publisher in this process,
live progress on the terminal, and the final result."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import jwt
import uvloop

from rawsse.flood.options import FloodOptions
from rawsse.flood.publisher import PublishResult, publish_all
from rawsse.flood.tally import LatencyHistogram, Summary
from rawsse.flood.worker import SOURCE_PORTS, WorkerSpec, worker_entry

BROADCAST_KEY = "b"


def stream_token(options: FloodOptions, stream: int) -> str:
    """Stream `stream`'s own token: a user of its own, allowed the flood's topics, for an hour."""
    claims = {"sub": f"flood-{stream}", "subscribe": [f"{options.topic}*"], "exp": int(time.time()) + 3600}
    return jwt.encode(claims, options.token_secret, algorithm="HS256")


def run_flood(options: FloodOptions, out: TextIO = sys.stderr) -> dict[str, Any]:
    """Run one flood to the end and return its result (also printed as a summary)."""
    servers = [urlsplit(url) for url in options.urls]
    context = multiprocessing.get_context("spawn")
    links = []
    processes = []
    workers = min(options.processes, options.streams)
    for worker in range(options.processes):
        indices = list(range(worker, options.streams, options.processes))
        if not indices:
            continue
        server = servers[worker % len(servers)]
        spec = WorkerSpec(
            host=server.hostname or "127.0.0.1",
            port=server.port or 80,
            source=options.sources[worker % len(options.sources)],
            ports=port_slice(worker, options.processes, len(options.sources)),
            paths=[options.stream_path(options.topic_of(n)) for n in indices],
            keys=[BROADCAST_KEY if options.mode != "unicast" else options.topic_of(n) for n in indices],
            tokens=[stream_token(options, n) for n in indices] if options.token_secret else [],
            headers={} if options.websocket else {"Accept": "text/event-stream"},
            connect_window=max(options.connect_window // workers, 1),
            open_timeout=options.opening_limit,
            websocket=options.websocket,
        )
        ours, theirs = context.Pipe()
        process = context.Process(target=worker_entry, args=(spec, theirs, os.getpid()), daemon=True)
        process.start()
        links.append(ours)
        processes.append(process)
    try:
        opened = Summary()
        for link in links:
            opened.merge(Summary.from_json(_expect(link, "ready")[1]))
        # The result may be shared: it says whether a secret signed the tokens, never which.
        shown = {**asdict(options), "token_secret": "(set)" if options.token_secret else ""}
        result: dict[str, Any] = {"mode": options.mode, "options": shown}
        result["opening"] = {
            "asked": options.streams,
            "streams": opened.streams,
            "errors": opened.connect_errors,
            "refused": opened.refused,
            "not_tried": opened.not_tried,
            "limit_seconds": options.opening_limit,
            "seconds": opened.opening_ended - opened.opening_started,
            "streams_per_second": opened.streams / max(opened.opening_ended - opened.opening_started, 1e-9),
            "first_byte_p50": _median(opened.first_byte_seconds),
            "ended_at": opened.opening_ended,  # wall-clock time (time.time()) the opening ended
        }
        _say(out, options, opening_line(result["opening"]))
        published: PublishResult | None = None
        expected: dict[str, int] = {}
        refused: dict[str, int] = {}
        publisher_cpu = 0.0
        if options.mode in ("idle", "storm"):
            _watch(links, options, out, options.hold_seconds)
        elif options.mode in ("broadcast", "unicast"):
            if options.pause:  # the streams held idle first (their memory measured, say)
                _watch(links, options, out, options.pause)
            events = _events(options)
            cpu_before = time.thread_time()  # this thread runs the publisher's loop
            published = _publish_watching(options, links, out, events)
            publisher_cpu = time.thread_time() - cpu_before
            expected = published.sent_per_key  # what was sent is what every stream should see
            refused = published.refused_per_key
        settle = options.settle if published is not None else 0.0
        for link in links:
            link.send(("finish", expected, refused, settle, options.max_wait))
        final = Summary()
        for link in links:
            final.merge(Summary.from_json(_expect(link, "done")[1]))
        result["summary"] = final.to_json()
        for name in ("first_byte_seconds", "by_worker", "cpu_opening", "cpu"):
            result["summary"].pop(name)
        result["client"] = {
            "processes": len(processes),
            "opening_cpu_seconds": opened.cpu_opening,
            "cpu_seconds": final.cpu + publisher_cpu,
            "publisher_cpu_seconds": publisher_cpu,
        }
        result["latency"] = _percentiles(final.all_latency())
        if final.by_worker:
            result["latency_by_worker"] = {w: _percentiles(h) for w, h in sorted(final.by_worker.items())}
        if published is not None:
            span = max(final.last_event_at - published.started, 1e-9)
            result["publish"] = asdict(published)
            result["deliveries_per_second"] = final.received / span
            keys = [
                options.topic_of(n) if options.mode == "unicast" else BROADCAST_KEY
                for n in range(options.streams)
            ]
            result["expected_deliveries"] = sum(expected.get(k, 0) - refused.get(k, 0) for k in keys)
        _say(out, options, format_result(result), final=True)
        return result
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()


def check_source_ports(options: FloodOptions) -> None:
    """Raise ValueError when a process would be asked for more streams than it has source
    ports (each stream takes one of its slice: see `port_slice`)."""
    first, last = port_slice(0, options.processes, len(options.sources))
    per_process = -(-options.streams // options.processes)
    if per_process > last - first + 1:
        raise ValueError(
            f"{per_process} streams per process, but each has {last - first + 1} source ports: "
            f"add --source-addresses (each gives {SOURCE_PORTS[1] - SOURCE_PORTS[0] + 1} ports) "
            "and --processes to match"
        )


def port_slice(worker: int, processes: int, sources: int) -> tuple[int, int]:
    """The source ports of flood process `worker`: the whole range when it has its source
    address to itself, its share of it when several processes take turns on one."""
    sharing = -(-processes // sources)
    first, last = SOURCE_PORTS
    width = (last - first + 1) // sharing
    start = first + (worker // sources) * width
    return start, start + width - 1


def _events(options: FloodOptions) -> Iterator[tuple[str, str, int]]:
    """(topic, payload key, sequence) of every event to publish, in order."""
    if options.mode == "broadcast":
        return ((options.topic, BROADCAST_KEY, n) for n in range(options.events))
    topics = [options.topic_of(n) for n in range(options.streams)]
    return (
        (topics[n % len(topics)], topics[n % len(topics)], n // len(topics)) for n in range(options.events)
    )


def _publish_watching(
    options: FloodOptions,
    links: list[multiprocessing.connection.Connection],
    out: TextIO,
    events: Iterator[tuple[str, str, int]],
) -> PublishResult:
    async def main() -> PublishResult:
        task = asyncio.ensure_future(
            publish_all(
                options.template(),
                events,
                options.size,
                options.publish_connections,
                options.rate,
                options.max_publish_seconds,
                options.pipeline,
            )
        )
        while not task.done():
            await asyncio.wait([task], timeout=0.5)
            _progress(links, options, out)
        return task.result()

    return uvloop.run(main())


def _watch(links: list[Any], options: FloodOptions, out: TextIO, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
        _progress(links, options, out)


def _progress(links: list[Any], options: FloodOptions, out: TextIO) -> None:
    if not options.progress:
        return
    streams = received = 0
    for link in links:
        link.send(("progress",))
    for link in links:
        _, count, got = _expect(link, "progress")
        streams += count
        received += got
    _say(out, options, f"streams {streams}, events received {received}", live=True)


def _expect(link: Any, kind: str) -> Any:
    message = link.recv()
    if message[0] == "error":
        raise RuntimeError(f"flood worker failed: {message[1]}")
    if message[0] != kind:
        raise RuntimeError(f"flood worker said {message[0]!r}, expected {kind!r}")
    return message


def _say(out: TextIO, options: FloodOptions, text: str, live: bool = False, final: bool = False) -> None:
    if not options.progress and not final:
        return
    if live and out.isatty():
        out.write(f"\r\x1b[K{text}")
    else:
        out.write(("\n" if out.isatty() and final else "") + text + "\n")
    out.flush()


def _percentiles(histogram: LatencyHistogram) -> dict[str, float]:
    return {
        "p50": histogram.percentile(0.5),
        "p99": histogram.percentile(0.99),
        "max": histogram.max_ns / 1e9,
    }


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


def opening_line(opening: dict[str, Any]) -> str:
    """How the opening went, every stream asked for counted: open, failed, refused by the
    server, or never tried before the time limit."""
    line = f"{opening['streams']} of {opening['asked']} streams open ({opening['errors']} failed"
    if opening["refused"]:
        line += f", {opening['refused']} refused"
    if opening["not_tried"]:
        line += f", {opening['not_tried']} not tried within the {opening['limit_seconds']:g} s opening limit"
    return line + ")"


def format_result(result: dict[str, Any]) -> str:
    summary = result["summary"]
    opening = result["opening"]
    lines = [
        f"mode {result['mode']}: {opening_line(opening)} in {opening['seconds']:.2f} s "
        f"({opening['streams_per_second']:.0f}/s), {summary['disconnects']} dropped",
    ]
    if "publish" in result:
        publish = result["publish"]
        lines.append(
            f"published {publish['sent']} events in {publish['seconds']:.2f} s "
            f"({publish['errors']} refused, {publish['unsent']} unsent when time ran out); "
            f"received {summary['received']} of {result['expected_deliveries']} "
            f"({result['deliveries_per_second']:.0f}/s); lost {summary['lost']}, "
            f"duplicates {summary['duplicates']}, out of order {summary['out_of_order']}"
        )
        latency = result["latency"]
        lines.append(
            f"latency p50 {latency['p50'] * 1000:.1f} ms, p99 {latency['p99'] * 1000:.1f} ms, "
            f"max {latency['max'] * 1000:.1f} ms"
        )
        for worker, figures in result.get("latency_by_worker", {}).items():
            lines.append(
                f"  worker {worker}: p50 {figures['p50'] * 1000:.1f} ms, "
                f"p99 {figures['p99'] * 1000:.1f} ms, max {figures['max'] * 1000:.1f} ms"
            )
    client = result["client"]
    lines.append(
        f"client CPU {client['cpu_seconds']:.2f} s: {client['processes']} reader processes "
        f"(opening {client['opening_cpu_seconds']:.2f} s of it) and the publisher "
        f"({client['publisher_cpu_seconds']:.2f} s)"
    )
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
