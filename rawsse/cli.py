"""The `rawsse` command: `rawsse serve` and `rawsse publish`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rawsse import __version__
from rawsse.config import Config
from rawsse.errors import ConfigError, PortInUse, StoreUnusable, WorkersFailed
from rawsse.flood.options import DEFAULT_SOURCES, FloodOptions, parse_sources
from rawsse.flood.tally import PAYLOAD_HEAD_BYTES
from rawsse.options import describe_range, env_name, field_kind, flag_name

DEFAULT_URL = "http://127.0.0.1:8080"

FLOOD = FloodOptions(mode="idle", url="")
"""The flood's defaults, which the command line's flags show and use."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rawsse",
        description="A Server-Sent Events and WebSocket push server, and a load tester for such servers.",
    )
    parser.add_argument("--version", action="version", version=f"rawsse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every option can also be set by the environment "
        "variable shown with it; the command line wins. A value out of its range is "
        "refused with one line on stderr and exit status 2.",
    )
    for spec in dataclasses.fields(Config):
        flag = flag_name(spec.name)
        if field_kind(spec) == "bool":  # --dashboard / --no-dashboard
            state = "on" if spec.default else "off"
            serve.add_argument(
                flag,
                dest=spec.name,
                action=argparse.BooleanOptionalAction,
                help=f"{spec.metadata['help']} [env {env_name(spec.name)}=1|0; default {state}]",
            )
            continue
        # Values stay text here: Config.from_env converts and checks them, so a bad one
        # gets the same one-line answer from a flag as from its environment variable.
        default = "(none)" if spec.metadata["secret"] or spec.default is None else spec.default
        unit = f" {spec.metadata['unit']}" if spec.metadata["unit"] and spec.default is not None else ""
        accepted = "" if spec.metadata["low"] is None else f"; {describe_range(spec)}"
        choices = spec.metadata["choices"]
        serve.add_argument(
            flag,
            dest=spec.name,
            default=None,
            metavar="{" + ",".join(choices) + "}" if choices else spec.name.split("_")[-1].upper(),
            help=f"{spec.metadata['help']}{accepted} [env {env_name(spec.name)}; default {default}{unit}]",
        )

    store = commands.add_parser(
        "store",
        help="look into a --data-dir",
        description="An operator's look at the durable log of a --data-dir: stat and dump read "
        "it (while the server runs, too); compact gives back the space trimmed events left, "
        "with the server stopped.",
    )
    store.add_argument("action", choices=("stat", "dump", "compact"))
    store.add_argument("data_dir", metavar="DIR", help="the server's --data-dir")
    store.add_argument("--topic", help="dump: the topic whose events to print (one JSON object a line)")
    store.add_argument("--after", default="0", help="dump: only events after this id (default: all)")
    store.add_argument("--limit", type=int, help="dump: at most this many events")

    publish = commands.add_parser(
        "publish", help="publish one event", description="Publish one event to a running server."
    )
    publish.add_argument("topic", help="topic to publish to")
    publish.add_argument("data", help="event data ('-' reads it from standard input)")
    publish.add_argument("--event", help="event name (the client's addEventListener type)")
    publish.add_argument(
        "--url",
        default=os.environ.get("RAWSSE_URL", DEFAULT_URL),
        help=f"server URL [env RAWSSE_URL; default {DEFAULT_URL}]",
    )
    publish.add_argument(
        "--token",
        default=os.environ.get(env_name("publish_token")),
        help=f"bearer token [env {env_name('publish_token')}]",
    )
    add_flood_parser(commands)
    return parser


FLOOD_DESCRIPTION = """Load any SSE server with many streams from several processes and
loopback source addresses, and count every event: loss, duplicates, latency.

modes:
  idle       open N streams and hold them for --seconds
  storm      open N streams as fast as possible (--connect-window at a time); report
             streams/s to the first byte
  broadcast  N subscribers on one topic; publish --events events of --size bytes
             (as fast as the server takes them, or at --rate events/s)
  unicast    N subscribers each on its own topic; --events events round-robin

Each payload carries a key, a sequence number and its publish time, so every stream's
events are checked for loss and duplicates and timed end to end. Other servers are driven
through --subscribe-query, --publish-url and --publish-body templates ({topic}, {data})."""


class _FloodHelp(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The mode list as written, and every option's default on its line."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == "":
            return action.help  # a switch, or a default the help itself explains
        return super()._get_help_string(action)


def _at_least(low: float, kind: type[int] | type[float] = int) -> Any:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    return parse


def add_flood_parser(commands: Any) -> None:
    flood = commands.add_parser(
        "flood",
        help="load-test an SSE or WebSocket server",
        description=FLOOD_DESCRIPTION,
        formatter_class=_FloodHelp,
    )
    flood.add_argument("mode", choices=["idle", "storm", "broadcast", "unicast"])
    flood.add_argument(
        "url",
        help="the server's stream URL without query, e.g. http://127.0.0.1:8080/events, or "
        "ws://127.0.0.1:8080/ws for WebSocket streams; "
        "several comma-separated (a cluster's nodes): worker processes take them in turn, "
        "publishing goes to the first",
    )
    flood.add_argument("--streams", type=_at_least(1), default=FLOOD.streams, help="streams to open")
    flood.add_argument(
        "--source-addresses",
        default=DEFAULT_SOURCES,
        help="loopback addresses to connect from, one per process in turn",
    )
    flood.add_argument(
        "--seconds",
        type=_at_least(0, float),
        help="idle, storm: how long to hold the streams once open (default: idle 10, storm 0)",
    )
    flood.add_argument(
        "--connect-window", type=_at_least(1), default=FLOOD.connect_window,
        help="connections in flight at once while opening, shared by the processes",
    )  # fmt: skip
    flood.add_argument(
        "--open-timeout", type=_at_least(0, float), default=FLOOD.open_timeout,
        help="seconds the streams may take to open; those not tried by then are reported "
        "(default 0: 60, and one more per 1,000 streams)",
    )  # fmt: skip
    flood.add_argument(
        "--pause", type=_at_least(0, float), default=FLOOD.pause,
        help="broadcast/unicast: seconds to hold the streams idle once open, before publishing",
    )  # fmt: skip
    flood.add_argument(
        "--events", type=_at_least(1), default=FLOOD.events, help="broadcast/unicast: events to publish"
    )
    flood.add_argument(
        "--size", type=_at_least(PAYLOAD_HEAD_BYTES), default=FLOOD.size, help="payload bytes per event"
    )
    flood.add_argument(
        "--rate",
        type=_at_least(0, float),
        default=FLOOD.rate,
        help="events/s to publish; 0: as fast as accepted",
    )
    flood.add_argument("--topic", default=FLOOD.topic, help="topic (unicast: prefix of topic-N)")
    flood.add_argument("--subscribe-query", default=FLOOD.subscribe_query, help="query of each stream URL")
    flood.add_argument(
        "--publish-url", default="", help="publish URL template (default: the server's /publish)"
    )
    flood.add_argument("--publish-body", default=FLOOD.publish_body, help="publish body template")
    flood.add_argument("--publish-type", default=FLOOD.publish_type, help="publish Content-Type")
    for flag, help_text in (  # the counts, from 1
        ("--processes", "worker processes; each must stay under its open-files cap"),
        ("--publish-connections", "parallel publish connections"),
        (
            "--pipeline",
            "publish requests in flight per connection (1: one at a time, as ordinary HTTP clients)",
        ),
    ):
        default = getattr(FLOOD, flag[2:].replace("-", "_"))
        flood.add_argument(flag, type=_at_least(1), default=default, help=help_text)
    for flag, help_text in (  # the durations, in seconds
        ("--settle", "seconds without new events before the missing count as lost"),
        ("--max-wait", "seconds after publishing to wait at most for the last events"),
        ("--max-publish-seconds", "stop publishing after this long (0: no limit); unsent ones are reported"),
    ):
        default = getattr(FLOOD, flag[2:].replace("-", "_"))
        flood.add_argument(flag, type=_at_least(0, float), default=default, help=help_text)
    flood.add_argument(
        "--token-secret",
        default="",
        help="sign a token of its own for each stream with this HS256 secret (the server's "
        "RAWSSE_JWT_SECRET), sent as Authorization: Bearer: the streams of distinct users "
        "(default: none, no tokens)",
    )
    flood.add_argument("--json", type=Path, help="write the full result here")
    flood.add_argument("--quiet", action="store_true", help="print only the final summary")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "flood":
        return flood(args)
    if args.command == "store":
        return store(args)
    return publish(args)


def store(args: argparse.Namespace) -> int:
    from rawsse.store import inspect

    try:
        if args.action == "stat":
            for name, value in inspect.stat(args.data_dir):
                print(f"{name + ':':<36}{value}")
        elif args.action == "dump":
            if not args.topic:
                print("rawsse: store dump needs --topic", file=sys.stderr)
                return 2
            if args.limit is not None and args.limit < 1:
                print(f"rawsse: --limit must be at least 1, got {args.limit}", file=sys.stderr)
                return 2
            after = args.after.rpartition("-")[2]
            if not after.isdigit():
                print(f"rawsse: --after must be an event id, got {args.after!r}", file=sys.stderr)
                return 2
            for line in inspect.dump(args.data_dir, args.topic, int(after), args.limit):
                print(line)
        else:
            before, after_size = inspect.compact(args.data_dir)
            print(f"compacted {args.data_dir}: {before} -> {after_size} bytes")
    except StoreUnusable as exc:
        print(f"rawsse: {exc}", file=sys.stderr)
        return 2
    return 0


def flood(args: argparse.Namespace) -> int:
    from rawsse.flood.run import check_source_ports, run_flood, write_json

    # The flood options share their names with the command-line flags.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(FloodOptions) if hasattr(args, f.name)}
    try:
        sources = parse_sources(args.source_addresses)
    except ValueError as exc:
        print(f"rawsse flood: --source-addresses: {exc}", file=sys.stderr)
        return 2
    options = FloodOptions(**given, sources=sources, progress=not args.quiet)
    try:
        check_source_ports(options)
    except ValueError as exc:
        print(f"rawsse flood: {exc}", file=sys.stderr)
        return 2
    result = run_flood(options)
    if args.json:
        write_json(result, args.json)
    summary, opening = result["summary"], result["opening"]
    unopened = opening["errors"] or opening["refused"] or opening["not_tried"]
    return 1 if summary["lost"] or summary["duplicates"] or unopened else 0


def serve(args: argparse.Namespace) -> int:
    from rawsse.process.run import run

    given: dict[str, Any] = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(Config)}
    try:
        config = Config.from_env(**given)
    except ConfigError as exc:  # named by the flag or variable it came from
        print(f"rawsse: {exc}", file=sys.stderr)
        return 2
    try:
        run(config)
    except ConfigError as exc:  # what the options need from this machine (rawsse.preflight)
        source = flag_name(exc.name) if given.get(exc.name) is not None else env_name(exc.name)
        if source not in os.environ and not source.startswith("--"):
            source = flag_name(exc.name)
        print(f"rawsse: {source} {exc.problem}", file=sys.stderr)
        return 2
    except StoreUnusable as exc:  # --data-dir: another server's, not ours, unreadable, newer
        print(f"rawsse: {exc}", file=sys.stderr)
        return 2
    except PortInUse as exc:
        print(f"rawsse: cannot serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"rawsse: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    except WorkersFailed as exc:
        print(f"rawsse: {exc}", file=sys.stderr)
        return 1
    return 0


def publish(args: argparse.Namespace) -> int:
    data = sys.stdin.read() if args.data == "-" else args.data
    fields = [("topic", args.topic), ("data", data)]
    if args.event:
        fields.append(("event", args.event))
    request = urllib.request.Request(
        args.url.rstrip("/") + "/publish",
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            print(json.loads(answer.read())["id"])
            return 0
    except urllib.error.HTTPError as exc:
        print(f"rawsse: {exc.code} {exc.read().decode(errors='replace').strip()}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"rawsse: cannot reach {args.url}: {exc}", file=sys.stderr)
    return 1
