"""rawsse against the Python peers (and nchan where installed), same workloads, one run.

    .venv/bin/python bench/compare.py                    # the full suite, about 10 minutes
    .venv/bin/python bench/compare.py --tiny             # every workload at toy size (the tests)
    .venv/bin/python bench/compare.py --servers rawsse,sse-starlette --workloads W2,W4
    .venv/bin/python bench/compare.py --servers rawsse,handoff-sketch,nchan --rounds 3
    .venv/bin/python bench/compare.py --servers rawsse-ws,rawsse,websockets,picows \
        --reference rawsse-ws --workloads W1,W2,W3      # WebSocket streams against SSE and peers

Each workload starts each server afresh, drives it with `rawsse flood`, stops it, and
records what the flood saw plus the server's memory and CPU. Results: a table on the
terminal, bench/results/compare.json, and bench/results/compare.png (the rawsse/peer
ratios). Ratios are what to read: absolute numbers drift on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PAGE, answers, free_port, process_tree, rss_bytes, stop_process, tcp_kernel_memory

from rawsse.flood.options import FloodOptions
from rawsse.flood.run import run_flood

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
TICKS = os.sysconf("SC_CLK_TCK")


# Servers


@dataclass
class ServerKind:
    name: str
    command: Callable[[list[int], Path], list[str]]
    """The command line, given the server's ports (one per node) and a work directory."""
    publish_url: str = "http://127.0.0.1:{port}/publish"
    publish_body: str = "topic={topic}&data={data}"
    publish_type: str = "application/x-www-form-urlencoded"
    available: Callable[[], str | None] = lambda: None
    """None when it can run here, else the reason it is skipped."""
    nodes: int = 1
    """Servers a flood spreads its streams over (publishing goes to the first)."""
    stream_url: str = "http://127.0.0.1:{port}/events"
    """Where a stream is asked for; a ws:// URL floods WebSocket streams."""
    publish_ports: int = 0
    """1 for a server that takes publishes on a port of its own (the last it is given)."""
    token_secret: str = ""
    """The flood signs a token for each stream with this secret (see rawsse flood --token-secret)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables of the server's process (secrets stay out of the process list)."""


def _module_missing(*modules: str) -> Callable[[], str | None]:
    def check() -> str | None:
        import importlib.util

        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"not installed: {', '.join(missing)} (pip install -e '.[bench]')" if missing else None

    return check


def _nchan_missing() -> str | None:
    if shutil.which("nginx") is None or not NCHAN_MODULE.exists():
        return "nginx with the nchan module is not installed (apt-get install nginx libnginx-mod-nchan)"
    return None


def _redis_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    return _module_missing("redis")()


def _nchan_command(ports: list[int], workdir: Path) -> list[str]:
    conf = (ROOT / "bench" / "nchan.conf").read_text()
    conf = conf.replace("MODULE", str(NCHAN_MODULE)).replace("PORT", str(ports[0]))
    (workdir / "tmp").mkdir(exist_ok=True)
    (workdir / "nginx.conf").write_text(conf)
    return ["nginx", "-p", str(workdir), "-c", str(workdir / "nginx.conf")]


def _websocket_peer(name: str, module: str, requires: str) -> ServerKind:
    """A Python WebSocket server of bench/peers: streams on its first port, publishes on
    its second (see bench/peers/ws_publish.py)."""
    return ServerKind(
        name,
        lambda ports, _: [PYTHON, "-m", module, *map(str, ports)],
        stream_url="ws://127.0.0.1:{port}/ws",
        publish_ports=1,
        available=_module_missing(requires),
    )


IDLE_SETTLE = 2.5
"""Seconds after the last stream opened before W1 reads the server's idle memory."""

PYTHON = sys.executable
RAWSSE = [PYTHON, "-m", "rawsse", "serve", "--log-level", "warning", "--port"]

BENCH_SECRET = "the-bench-secret-that-signs-every-flood-token"
SERVERS = {
    "rawsse": ServerKind("rawsse", lambda ports, _: [*RAWSSE, str(ports[0])]),
    # The durable log of --data-dir (a fresh directory per run), each --fsync promise.
    "rawsse-data-dir": ServerKind(
        "rawsse-data-dir", lambda ports, work: [*RAWSSE, str(ports[0]), "--data-dir", str(work / "data")]
    ),
    "rawsse-fsync-always": ServerKind(
        "rawsse-fsync-always",
        lambda ports, work: [*RAWSSE, str(ports[0]), "--data-dir", str(work / "data"), "--fsync", "always"],
    ),
    "rawsse-transport": ServerKind(
        "rawsse-transport", lambda ports, _: [*RAWSSE, str(ports[0]), "--streams", "transport"]
    ),
    "sse-starlette": ServerKind(
        "sse-starlette",
        lambda ports, _: [
            PYTHON, "-m", "uvicorn", "bench.peers.starlette_app:app", "--port", str(ports[0]),
            "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
            "--no-access-log", "--backlog", "4096",
        ],
        available=_module_missing("sse_starlette", "uvicorn", "multipart"),
    ),
    "aiohttp-sse": ServerKind(
        "aiohttp-sse",
        lambda ports, _: [PYTHON, str(ROOT / "bench" / "peers" / "aiohttp_app.py"), str(ports[0])],
        available=_module_missing("aiohttp", "aiohttp_sse"),
    ),
    "handoff-sketch": ServerKind(
        "handoff-sketch",
        lambda ports, _: [PYTHON, str(ROOT / "bench" / "peers" / "handoff.py"), str(ports[0])],
    ),
    "nchan": ServerKind(
        "nchan",
        _nchan_command,
        publish_url="http://127.0.0.1:{port}/publish?topic={{topic}}",
        publish_body="{data}",
        publish_type="text/plain",
        available=_nchan_missing,
    ),
    # WebSocket streams (not in the default set): rawsse's /ws, and two Python peers.
    # Every stream with a token of its own (a user of its own), checked at its start and
    # held in the ledger until it expires: the cost of private topics beside "rawsse".
    "rawsse-tokens": ServerKind(
        "rawsse-tokens",
        lambda ports, _: [*RAWSSE, str(ports[0])],
        token_secret=BENCH_SECRET,
        env={"RAWSSE_JWT_SECRET": BENCH_SECRET},
    ),
    "rawsse-ws": ServerKind(
        "rawsse-ws", lambda ports, _: [*RAWSSE, str(ports[0])], stream_url="ws://127.0.0.1:{port}/ws"
    ),
    "websockets": _websocket_peer("websockets", "bench.peers.websockets_app", "websockets"),
    "picows": _websocket_peer("picows", "bench.peers.picows_app", "picows"),
    # rawsse beyond one process: not in the default set.
    "rawsse-2workers": ServerKind(
        "rawsse-2workers", lambda ports, _: [*RAWSSE, str(ports[0]), "--workers", "2"]
    ),
    "rawsse-4workers": ServerKind(
        "rawsse-4workers", lambda ports, _: [*RAWSSE, str(ports[0]), "--workers", "4"]
    ),
    "rawsse-2nodes": ServerKind(
        "rawsse-2nodes",
        lambda ports, _: [PYTHON, str(ROOT / "bench" / "peers" / "cluster.py"), *map(str, ports)],
        available=_redis_missing,
        nodes=2,
    ),
}  # fmt: skip
DEFAULT_SERVERS = ["rawsse", "handoff-sketch", "rawsse-transport", "sse-starlette", "aiohttp-sse", "nchan"]


class RunningServer:
    def __init__(self, kind: ServerKind) -> None:
        self.kind = kind
        self.ports = [free_port() for _ in range(kind.nodes + kind.publish_ports)]
        self.port = self.ports[kind.nodes] if kind.publish_ports else self.ports[0]
        """Where publishes go."""
        self._workdir = Path(tempfile.mkdtemp(prefix=f"bench-{kind.name}-"))
        self.process = subprocess.Popen(
            kind.command(self.ports, self._workdir),
            cwd=ROOT,
            env={**os.environ, **kind.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not all(answers(port) for port in self.ports):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind.name} did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return ",".join(self.kind.stream_url.format(port=port) for port in self.ports[: self.kind.nodes])

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in process_tree(self.process.pid))

    def cpu_seconds(self) -> float:
        return sum(_cpu(pid) for pid in process_tree(self.process.pid))

    def stop(self) -> None:
        stop_process(self.process, 15)
        shutil.rmtree(self._workdir, ignore_errors=True)


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError):
        return 0.0


# Workloads


@dataclass
class Workload:
    name: str
    title: str
    mode: str
    streams: int
    tiny_streams: int
    flood: dict[str, Any] = field(default_factory=dict)
    tiny_flood: dict[str, Any] = field(default_factory=dict)


WORKLOADS = {
    "W1": Workload("W1", "idle memory", "idle", 15000, 100, {"seconds": 5}, {"seconds": 0.5}),
    "W2": Workload("W2", "broadcast", "broadcast", 10000, 100, {"events": 200}, {"events": 20}),
    "W3": Workload(
        "W3", "fixed rate", "broadcast", 10000, 100,
        {"events": 500, "rate": 50.0}, {"events": 10, "rate": 20.0},
    ),
    # 2,000 connects in flight, then the streams are held long enough for the memory the
    # burst leaves behind to be read (IDLE_SETTLE).
    "W4": Workload(
        "W4", "storm", "storm", 10000, 100,
        {"connect_window": 2000, "seconds": 5}, {"connect_window": 50, "seconds": 0.5},
    ),
    # One publish request per event, as ordinary HTTP clients send them: one in flight on
    # each of 4 keep-alive connections. W5P pipelines 64 per connection instead.
    "W5": Workload(
        "W5", "unicast", "unicast", 10000, 100,
        {"events": 20000, "publish_connections": 4, "pipeline": 1},
        {"events": 200, "publish_connections": 2, "pipeline": 1},
    ),
    "W5P": Workload(
        "W5P", "unicast, pipelined", "unicast", 10000, 100,
        {"events": 20000, "publish_connections": 4, "pipeline": 64},
        {"events": 200, "publish_connections": 2, "pipeline": 64},
    ),
}  # fmt: skip


def run_workload(
    kind: ServerKind,
    workload: Workload,
    tiny: bool,
    run_index: int,
    max_wait: float,
    streams: int = 0,
    processes: int = 2,
) -> dict[str, Any]:
    server = RunningServer(kind)
    try:
        options = FloodOptions(
            mode=workload.mode,
            url=server.url,
            streams=streams or (workload.tiny_streams if tiny else workload.streams),
            processes=processes,
            # A fresh source network per run (earlier runs' ports sit in TIME_WAIT), and a
            # source address per flood process (about 28,000 ports each).
            sources=[f"127.{10 + run_index % 240}.0.{2 + n}" for n in range(processes)],
            publish_url=kind.publish_url.format(port=server.port),
            publish_body=kind.publish_body,
            publish_type=kind.publish_type,
            token_secret=kind.token_secret,
            settle=5.0,
            max_wait=max_wait,
            max_publish_seconds=max_wait,
            progress=False,
            **(workload.tiny_flood if tiny else workload.flood),
        )
        rss_before = server.rss()
        cpu_before = server.cpu_seconds()
        peak = [rss_before]
        samples: list[tuple[float, int]] = []
        # Kernel socket memory of both ends (the machine's, not only the server's).
        kernel_before = tcp_kernel_memory()
        kernel_peak = list(kernel_before)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                rss = server.rss()
                samples.append((time.time(), rss))
                peak[0] = max(peak[0], rss)
                pages, slab = tcp_kernel_memory()
                kernel_peak[0] = max(kernel_peak[0], pages)
                kernel_peak[1] = max(kernel_peak[1], slab)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        result = run_flood(options)
        wall = time.monotonic() - started
        result["wall_seconds"] = wall
        streams = max(result["opening"]["streams"], 1)
        done.set()
        sampler.join()
        # Idle memory is what the server holds once the burst is over (a sweep or two
        # later, when the allocator's slack is given back), not its peak during the burst.
        settled = result["opening"]["ended_at"] + IDLE_SETTLE
        idle = [rss for at, rss in samples if at >= settled] or [peak[0]]
        result["server"] = {
            "rss_before": rss_before,
            "rss_peak": peak[0],
            "rss_idle": sorted(idle)[len(idle) // 2],
            "rss_per_stream": (sorted(idle)[len(idle) // 2] - rss_before) / streams,
            "rss_peak_per_stream": (peak[0] - rss_before) / streams,
            "cpu_percent": 100 * (server.cpu_seconds() - cpu_before) / wall,
            "cpu_seconds": server.cpu_seconds() - cpu_before,
            "kernel_tcp_buffer_bytes_per_stream": (kernel_peak[0] - kernel_before[0]) * PAGE / streams,
            "kernel_tcp_socket_bytes_per_stream": (
                (kernel_peak[1] - kernel_before[1]) / streams if kernel_before[1] >= 0 else None
            ),
        }
        return result
    finally:
        server.stop()


def headline(workload: str, result: dict[str, Any]) -> dict[str, float]:
    """The figures the table shows for a workload; higher is better unless named *_s/_B."""
    summary = result["summary"]
    figures: dict[str, float] = {}
    if workload == "W1":
        figures["B/stream"] = result["server"]["rss_per_stream"]
        figures["peak B/strm"] = result["server"]["rss_peak_per_stream"]
        # Both ends of each connection, so the same for every server; shown for scale.
        figures["kernel B/strm"] = result["server"]["kernel_tcp_buffer_bytes_per_stream"]
        socket_objects = result["server"]["kernel_tcp_socket_bytes_per_stream"]
        if socket_objects is not None:
            figures["slab B/strm"] = socket_objects
    opening = result["opening"]
    client = result["client"]
    if workload == "W4":
        figures["streams/s"] = opening["streams_per_second"]
        # The server's own CPU per stream: what the client's speed does not blur.
        figures["cpu us/strm"] = 1e6 * result["server"]["cpu_seconds"] / max(opening["streams"], 1)
        figures["B/stream"] = result["server"]["rss_per_stream"]  # what the burst left behind
        # The client's CPU while opening, in % of one core (its processes together).
        figures["client cpu %"] = 100 * client["opening_cpu_seconds"] / max(opening["seconds"], 1e-9)
    if "publish" in result:
        expected = max(result["expected_deliveries"], 1)
        figures["deliveries/s"] = result["deliveries_per_second"]
        figures["p50 s"] = result["latency"]["p50"]
        figures["p99 s"] = result["latency"]["p99"]
        figures["lost %"] = 100 * (expected - summary["received"]) / expected
        figures["unsent"] = result["publish"]["unsent"]
        if workload in ("W5", "W5P"):  # a publish request per delivery: the request path's cost
            figures["cpu us/event"] = 1e6 * result["server"]["cpu_seconds"] / max(summary["received"], 1)
        # The client's CPU once the streams were open: publishing and reading.
        delivering = max(result["wall_seconds"] - opening["seconds"], 1e-9)
        figures["client cpu %"] = 100 * (client["cpu_seconds"] - client["opening_cpu_seconds"]) / delivering
    if "publish" in result:
        for worker, latency in result.get("latency_by_worker", {}).items():
            figures[f"p99 s, w{worker}"] = latency["p99"]
    if workload == "W3":
        figures["max s"] = result["latency"]["max"]
        figures["cpu %"] = result["server"]["cpu_percent"]
    return figures


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run, its headline replaced by each figure's median over all runs (and
    every run's headline kept beside it)."""
    merged = dict(runs[0])
    if len(runs) > 1:
        merged["rounds"] = [run["headline"] for run in runs]
        merged["headline"] = {
            figure: statistics.median(run["headline"][figure] for run in runs if figure in run["headline"])
            for figure in runs[0]["headline"]
        }
    return merged


LOWER_IS_BETTER = {
    "B/stream", "peak B/strm", "p50 s", "p99 s", "max s", "lost %", "cpu %", "cpu us/strm", "cpu us/event"
}  # fmt: skip


def ratio(name: str, ours: float, theirs: float) -> float | None:
    """How many times better the reference server is (>1 is better) for this figure."""
    if name in ("lost %", "unsent", "kernel B/strm", "slab B/strm", "client cpu %"):
        return None
    if name in LOWER_IS_BETTER or name.startswith("p99 s"):
        return theirs / ours if ours > 0 else None
    return ours / theirs if theirs > 0 else None


def table(
    results: dict[str, dict[str, dict[str, Any]]], servers: list[str], reference: str = "rawsse"
) -> str:
    """Each figure of each server, and the reference server's ratio to each other one."""
    lines = []
    header = f"{'workload':<24}{'figure':<14}" + "".join(f"{s:>18}" for s in servers)
    peers = [s for s in servers if s != reference]
    header += "".join(f"{'x vs ' + p:>24}" for p in peers)
    lines.append(header)
    for workload, per_server in results.items():
        names: list[str] = []
        for figures in per_server.values():
            names.extend(n for n in figures["headline"] if n not in names)
        for name in names:
            row = f"{workload + ' ' + WORKLOADS[workload].title:<24}{name:<14}"
            values = {s: per_server.get(s, {}).get("headline", {}).get(name) for s in servers}
            row += "".join(f"{_fmt(values[s]):>18}" for s in servers)
            for peer in peers:
                r = None
                if values.get(reference) is not None and values.get(peer) is not None:
                    r = ratio(name, values[reference], values[peer])  # type: ignore[arg-type]
                row += f"{(f'{r:.2f}x' if r is not None else '-'):>24}"
            lines.append(row)
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def chart(
    results: dict[str, dict[str, dict[str, Any]]], servers: list[str], path: Path, reference: str = "rawsse"
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [s for s in servers if s != reference]
    labels: list[str] = []
    bars: dict[str, list[float]] = {p: [] for p in peers}
    for workload, per_server in results.items():
        ours = per_server.get(reference, {}).get("headline", {})
        for name in ours:
            if name in ("lost %", "unsent", "p50 s", "client cpu %", "kernel B/strm", "slab B/strm"):
                continue
            labels.append(f"{workload} {name}")
            for peer in peers:
                theirs = per_server.get(peer, {}).get("headline", {}).get(name)
                r = ratio(name, ours[name], theirs) if theirs is not None else None
                bars[peer].append(r or 0.0)
    figure, axes = plt.subplots(figsize=(max(8, len(labels) * 0.9), 4.5))
    width = 0.8 / max(len(peers), 1)
    for index, peer in enumerate(peers):
        positions = [n + index * width for n in range(len(labels))]
        axes.bar(positions, bars[peer], width, label=f"{reference} vs {peer}")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_yscale("log")
    axes.set_ylabel("times better (log scale; 1 = equal)")
    axes.set_xticks([n + width * (len(peers) - 1) / 2 for n in range(len(labels))])
    axes.set_xticklabels(labels, rotation=30, ha="right")
    axes.set_title(f"{reference} against its peers, same machine, same run")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, of: {', '.join(SERVERS)} (default: {','.join(DEFAULT_SERVERS)})",
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: W1..W5, W5P")
    parser.add_argument("--tiny", action="store_true", help="toy sizes, for the tests")
    parser.add_argument(
        "--streams", type=int, default=0, help="streams for every workload instead of its own count"
    )
    parser.add_argument(
        "--flood-processes",
        type=int,
        default=2,
        help="flood processes (each holds under 20,000 sockets here: use 4 for 60,000 streams)",
    )
    parser.add_argument(
        "--max-wait", type=float, default=30.0, help="seconds to wait for a slow server's events"
    )
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="the interpreter of another rawsse checkout (its .venv/bin/python): adds the servers "
        "rawsse-baseline and rawsse-baseline-ws (its streams on /ws), to compare a change with "
        "what came before it in one run",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each workload this many times, the servers in alternating order, and report "
        "each figure's median (a shared machine's drift then falls on every server alike)",
    )
    parser.add_argument(
        "--reference",
        default="rawsse",
        help="the server the ratios are of (rawsse-ws for the WebSocket runs)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where compare.json and compare.png go")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    if args.baseline:
        baseline = [args.baseline, "-m", "rawsse", "serve", "--log-level", "warning", "--port"]
        command = lambda ports, _: [*baseline, str(ports[0])]  # noqa: E731
        SERVERS["rawsse-baseline"] = ServerKind("rawsse-baseline", command)
        SERVERS["rawsse-baseline-ws"] = ServerKind(
            "rawsse-baseline-ws", command, stream_url="ws://127.0.0.1:{port}/ws"
        )
    servers = []
    for name in args.servers.split(","):
        reason = SERVERS[name].available()
        if reason:
            print(f"skipping {name}: {reason}", file=sys.stderr)
        else:
            servers.append(name)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    run_index = int(time.time()) % 200
    for workload in args.workloads.split(","):
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        for round_number in range(args.rounds):
            for name in servers if round_number % 2 == 0 else servers[::-1]:
                run_index += 1
                print(f"{workload} {WORKLOADS[workload].title}: {name} ...", file=sys.stderr, flush=True)
                try:
                    result = run_workload(
                        SERVERS[name],
                        WORKLOADS[workload],
                        args.tiny,
                        run_index,
                        args.max_wait,
                        args.streams,
                        args.flood_processes,
                    )
                except Exception as exc:
                    print(f"  failed: {exc}", file=sys.stderr)
                    continue
                result["headline"] = headline(workload, result)
                runs[name].append(result)
        results[workload] = {name: median_run(done) for name, done in runs.items() if done}
    print(table(results, servers, args.reference))
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "date": time.strftime("%Y-%m-%d"),
        "tiny": args.tiny,
        "servers": servers,
        "reference": args.reference,
        "results": results,
    }
    (args.out / "compare.json").write_text(json.dumps(document, indent=2) + "\n")
    if not args.no_chart:
        chart(results, servers, args.out / "compare.png", args.reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
