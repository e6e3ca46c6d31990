"""A million streams on one machine (issue 23): one script that starts `rawsse serve
--workers N`, opens the streams with `rawsse flood` from as many processes and loopback
source addresses, broadcasts to all of them, sends a unicast sample, measures, then does
the same with WebSocket streams, and cleans up everything it started.

    .venv/bin/python bench/million.py                          # 1,000,000 SSE, then WebSocket
    .venv/bin/python bench/million.py --streams 200000 --ws-streams 0

A process may hold 20,000 open files here, so N = streams / 17,000 workers (about 59 for a
million) and as many flood processes, each connecting from its own source address
(127.0.0.2 on), whose ports it may use up to the machine's ephemeral range. Not part of
the tests; its output is recorded in bench/RESULTS.md.

Measured for each transport: how long the streams took to open (and how many did not),
the broadcast's deliveries/s and latency (p50, p99) with every event checked (lost,
duplicated, out of order), the resident memory of every rawsse process against its
baseline before the first stream (and per worker), what each further stream costs (the
slope of the processes' proportional memory against the streams they hold, sampled while
the streams open), the kernel's slab and TCP memory, and how fast `/healthz` and
`/metrics` answered in each phase (opening, held, broadcast, unicast sample).

The flood's processes run at a lower priority (`nice` 10): where the server and its load
client both want the two cores, the server gets about nine tenths of them, nearer what it
would have with its clients on machines of their own. Not the same: the flood (its
readers and its publisher, which time every figure) then runs slower, so its opening
times and latencies are longer than with both at one priority.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import PAGE, RAWSSE, free_port, process_tree, rss_bytes, stop_process, tcp_kernel_memory  # noqa: E402

STREAMS_PER_PROCESS = 17_000
"""Streams per worker and per flood process: under the 20,000 open files a process may
hold here, with room for its listening socket, pollers and the connections it answers."""
PAUSE = 8
"""Seconds the flood holds its streams idle once open, before publishing: their memory is
measured then (during a broadcast each stream also holds the events it has not read)."""
CLIENT_NICE = 10
"""The flood's priority below the server's (see the module's doc)."""
SAMPLE_EVERY = 5.0
"""Seconds between two samples of the server's memory and streams while they open."""


def rss_of(pids: list[int]) -> int:
    return sum(rss_bytes(pid) for pid in pids)


PRIVATE_KINDS = ("Pss_Anon:", "Pss_Shmem:")
"""The pages counted as the server's own: its heap and the workers' shared log. File pages
(the interpreter's and the libraries' code) are left out: every Python process on the
machine shares them, the load client's included, so their proportional share falls as
the flood's processes start, and they are a fixed cost per worker anyway."""


def pss_of(pids: list[int]) -> int:
    """Proportional set size of the anonymous and shared-memory pages: each page shared
    by the supervisor and its forked workers divided among them, so the sum is what the
    processes take from the machine (RSS counts a shared page once per worker)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(PRIVATE_KINDS):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def kernel_memory() -> dict[str, int]:
    """Slab (reclaimable and not) and TCP buffer memory, in bytes."""
    meminfo = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        meminfo[name] = int(value.split()[0]) * 1024
    tcp_pages, _ = tcp_kernel_memory()
    return {
        "slab": meminfo["Slab"],
        "slab_unreclaimable": meminfo["SUnreclaim"],
        "tcp_buffers": tcp_pages * PAGE,
    }


class Watch(threading.Thread):
    """Asks /healthz every second and /metrics every five, and times every answer, by the
    phase of the run it came in (set by the script as the run goes)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.phase = "opening"
        self.answers: list[tuple[str, str, float, bool]] = []
        """(phase, path, seconds, failed) of every request."""
        self._done = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self._done.wait(1.0):
            paths = ["/healthz", "/metrics"] if tick % 5 == 0 else ["/healthz"]
            for path in paths:
                phase, began, failed = self.phase, time.monotonic(), False
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
                        answer.read()
                except OSError:
                    failed = True
                self.answers.append((phase, path, time.monotonic() - began, failed))
            tick += 1

    def stop(self) -> dict[str, Any]:
        """Per phase and path: how many were asked, failed, and how long the answers took
        (with a few hundred answers, p99 is the third-slowest or so)."""
        self._done.set()
        self.join(15)
        report: dict[str, Any] = {}
        for phase, path in dict.fromkeys((phase, path) for phase, path, _, _ in self.answers):
            times = sorted(t for f, p, t, _ in self.answers if (f, p) == (phase, path))
            report[f"{phase} {path}"] = {
                "asked": len(times),
                "failed": sum(1 for f, p, _, bad in self.answers if (f, p) == (phase, path) and bad),
                "p50_seconds": round(times[len(times) // 2], 3),
                "p99_seconds": round(times[min(len(times) - 1, len(times) * 99 // 100)], 3),
                "slowest_seconds": round(times[-1], 3),
            }
        return report


class MemorySampler(threading.Thread):
    """Samples the server's proportional memory and the streams its processes hold (their
    open descriptors above those they had before the first stream) while the streams
    open. The slope of one against the other is what a further stream costs, apart from
    what each worker spends once (its first requests' buffers, the code they page in)."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.descriptors_before = descriptors_of(server.pids())
        self.samples: list[tuple[int, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        pids = self.server.pids()
        streams = descriptors_of(pids) - self.descriptors_before
        self.samples.append((streams, pss_of(pids)))

    def stop(self) -> None:
        """Once the streams are open: a last sample, then no more (a broadcast's unread
        events would count as the streams' memory)."""
        if self._done.is_set():
            return
        self._done.set()
        self.join(60)
        self.sample()

    def fit(self, streams: int) -> dict[str, float] | None:
        """The least-squares line through the samples taken after the first tenth of the
        streams opened: bytes per stream, and where it meets zero streams (a baseline of
        warmed-up workers)."""
        points = [(x, y) for x, y in self.samples if x >= streams // 10]
        if len(points) < 3 or points[-1][0] - points[0][0] < streams // 4:
            return None
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        spread = sum((x - mean_x) ** 2 for x, _ in points)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
        return {
            "bytes_per_stream": round(slope, 1),
            "warm_baseline_mb": round((mean_y - slope * mean_x) / 1e6, 1),
            "samples": len(points),
        }


def descriptors_of(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def server_figures(port: int) -> dict[str, float]:
    """Why streams closed during the broadcast, summed over the workers (/metrics)."""
    names = ("rawsse_streams_closed_total", "rawsse_slow_consumers_total", "rawsse_send_timeouts_total",
             "rawsse_connections_dropped_total")  # fmt: skip
    found = dict.fromkeys(names, 0.0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as answer:
            for line in answer.read().decode().splitlines():
                name = line.split("{", 1)[0].split(" ", 1)[0]
                if name in found:
                    found[name] += float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return found


class Server:
    def __init__(self, workers: int) -> None:
        self.port = free_port()
        self.workers = workers
        began = time.monotonic()
        self.process = subprocess.Popen(
            [*RAWSSE, "serve", "--port", str(self.port), "--workers", str(workers), "--heartbeat", "60",
             "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as answer:
                    if answer.status == 200 and len(self.worker_pids()) == workers:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError("the server did not become ready")
        self.started_in = time.monotonic() - began
        self.pids_at_start = self.worker_pids()

    def worker_pids(self) -> list[int]:
        return process_tree(self.process.pid)[1:]

    def pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()]

    def rss(self) -> dict[str, int]:
        pids = self.pids()
        return {"total": rss_of(pids), "pss": pss_of(pids), "supervisor": rss_of([self.process.pid]),
                "workers": len(pids) - 1}  # fmt: skip

    def stop(self) -> None:
        stop_process(self.process, 120)


def flood(
    server: Server, mode: str, streams: int, processes: int, events: int, size: int, websocket: bool,
    on_open: Any, out: Path,
) -> dict[str, Any]:  # fmt: skip
    """`rawsse flood`, its progress read as it goes: `on_open()` once its streams are open."""
    scheme, path = ("ws", "/ws") if websocket else ("http", "/events")
    sources = f"127.0.0.2-127.0.0.{1 + processes}"
    command = [
        *RAWSSE, "flood", mode, f"{scheme}://127.0.0.1:{server.port}{path}", "--streams", str(streams),
        "--processes", str(processes), "--source-addresses", sources, "--connect-window", "4096",
        "--events", str(events), "--size", str(size), "--settle", "20", "--max-wait", "300",
        "--pause", str(PAUSE), "--json", str(out),
    ]  # fmt: skip
    if mode == "unicast":
        command += ["--publish-connections", "4"]
    niced = ["nice", "-n", str(CLIENT_NICE), *command]
    child = subprocess.Popen(niced, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    told = False
    for line in child.stdout:
        for part in re.split(r"[\r\n]", line):
            if part.strip():
                print("   ", part.strip()[-160:], flush=True)
            if not told and re.search(r"\d+ of \d+ streams open", part):
                told = True
                on_open()
    child.wait()
    if not out.exists():
        raise RuntimeError(f"rawsse flood ended ({child.returncode}) without writing its figures")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def run_transport(
    workers: int, streams: int, events: int, size: int, websocket: bool, work: Path
) -> dict[str, Any]:
    name = "WebSocket" if websocket else "SSE"
    print(f"== {name}: {streams:,} streams on {workers} workers", flush=True)
    server = Server(workers)
    kernel_before = kernel_memory()
    baseline = server.rss()
    print(f"   {workers} workers ready in {server.started_in:.1f} s; all rawsse processes "
          f"{baseline['total'] / 1e6:.0f} MB resident "
          f"({baseline['pss'] / 1e6:.0f} MB proportional, anonymous)"
          " before any stream", flush=True)  # fmt: skip
    watch = Watch(server.port)
    watch.start()
    sampler = MemorySampler(server)
    sampler.start()
    held: dict[str, Any] = {}

    def opened() -> None:
        began = time.monotonic()
        watch.phase = "held"
        # The flood publishes PAUSE seconds after it told us its streams are open.
        threading.Timer(PAUSE, lambda: setattr(watch, "phase", "broadcast")).start()
        time.sleep(PAUSE / 2)  # the last heads written, the readers settled, nothing published
        held["rss"] = server.rss()
        held["kernel"] = kernel_memory()
        held["after_open_seconds"] = round(time.monotonic() - began, 1)
        sampler.stop()  # a last sample, then none while events are unread

    processes = math.ceil(streams / STREAMS_PER_PROCESS)
    try:
        try:
            result = flood(server, "broadcast", streams, processes, events, size, websocket, opened,
                           work / f"{name}-broadcast.json")  # fmt: skip
            closed = server_figures(server.port)
            watch.phase = "unicast"
            sample = flood(server, "unicast", 10_000, 2, 10_000, size, websocket, lambda: None,
                           work / f"{name}-unicast.json")  # fmt: skip
        finally:
            sampler.stop()
            health = watch.stop()
            restarted = sorted(set(server.pids_at_start) - set(server.worker_pids()))
    finally:
        server.stop()
    opening, summary = result["opening"], result["summary"]
    if "rss" not in held:
        raise RuntimeError("the flood never said its streams were open: nothing held was measured")
    rss, kernel = held["rss"], held["kernel"]
    open_streams = max(opening["streams"], 1)
    processes_of_server = baseline["workers"] + 1  # and the supervisor
    figures = {
        "transport": name,
        "workers": workers,
        "flood_processes": processes,
        "asked": streams,
        "opened": opening["streams"],
        "failed": opening["errors"],
        "refused": opening["refused"],
        "not_tried": opening["not_tried"],
        "open_seconds": round(opening["seconds"], 1),
        "open_per_second": round(opening["streams_per_second"]),
        "broadcast_events": events,
        "received": summary["received"],
        "expected": result.get("expected_deliveries"),
        "lost": summary["lost"],
        "duplicates": summary["duplicates"],
        "out_of_order": summary["out_of_order"],
        "deliveries_per_second": round(result.get("deliveries_per_second", 0)),
        "latency_p50_s": result["latency"]["p50"],
        "latency_p99_s": result["latency"]["p99"],
        "unicast_sample": {
            "streams": sample["opening"]["streams"],
            "received": sample["summary"]["received"],
            "expected": sample.get("expected_deliveries"),
            "lost": sample["summary"]["lost"],
            "deliveries_per_second": round(sample.get("deliveries_per_second", 0)),
            "latency_p99_s": sample["latency"]["p99"],
        },
        "rss_baseline_mb": round(baseline["total"] / 1e6, 1),
        "rss_baseline_per_process_mb": round(baseline["total"] / 1e6 / processes_of_server, 1),
        "pss_baseline_per_process_mb": round(baseline["pss"] / 1e6 / processes_of_server, 1),
        "pss_baseline_mb": round(baseline["pss"] / 1e6, 1),
        "rss_held_mb": round(rss["total"] / 1e6, 1),
        "pss_held_mb": round(rss["pss"] / 1e6, 1),
        "held_measured_after_open_seconds": held["after_open_seconds"],
        "user_bytes_per_stream": round((rss["total"] - baseline["total"]) / open_streams),
        "pss_bytes_per_stream": round((rss["pss"] - baseline["pss"]) / open_streams),
        "pss_per_further_stream": sampler.fit(streams),
        "kernel_slab_bytes_per_stream": round((kernel["slab"] - kernel_before["slab"]) / open_streams),
        "kernel_tcp_buffers_mb": round(kernel["tcp_buffers"] / 1e6, 1),
        "dropped_by_the_flood": summary["disconnects"],
        "server_closed": closed,
        "workers_restarted": restarted,
        "health": health,
    }
    print(f"   {json.dumps(figures)}", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1_000_000, help="SSE streams (0: none)")
    parser.add_argument("--ws-streams", type=int, default=1_000_000, help="WebSocket streams (0: none)")
    parser.add_argument("--events", type=int, default=10, help="events broadcast to every stream")
    parser.add_argument("--size", type=int, default=128, help="bytes per event")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "million.json")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"rawsse-million-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    results = []
    for streams, websocket in ((args.streams, False), (args.ws_streams, True)):
        if streams:
            workers = math.ceil(streams / STREAMS_PER_PROCESS)
            results.append(run_transport(workers, streams, args.events, args.size, websocket, work))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs, {os.sysconf('SC_PHYS_PAGES') * PAGE / 2**30:.0f} GiB",
        "seconds": round(time.monotonic() - began),
        "runs": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"== done in {report['seconds']} s; written to {args.json}", flush=True)
    ok = all(
        r["opened"] == r["asked"]
        and not (r["lost"] or r["duplicates"] or r["workers_restarted"] or r["unicast_sample"]["lost"])
        and r["held_measured_after_open_seconds"] < PAUSE  # before the broadcast began
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
