"""The `rawsse` command: `rawsse serve` and `rawsse publish`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from rawsse.config import Config, env_name

DEFAULT_URL = "http://127.0.0.1:8080"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rawsse", description="A Server-Sent Events push server.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every option can also be set by the environment "
        "variable shown with it; the command line wins.",
    )
    for spec in dataclasses.fields(Config):
        flag = "--" + spec.name.replace("_", "-")
        kind = {"int": int, "float": float}.get(str(spec.type), str)
        default = "(none)" if spec.metadata.get("secret") else spec.default
        serve.add_argument(
            flag,
            dest=spec.name,
            type=kind,
            default=None,
            choices=spec.metadata.get("choices"),
            metavar=None if spec.metadata.get("choices") else spec.name.split("_")[-1].upper(),
            help=f"{spec.metadata['help']} [env {env_name(spec.name)}; default {default}]",
        )

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return publish(args)


def serve(args: argparse.Namespace) -> int:
    from rawsse.reactor.main import run

    overrides: dict[str, Any] = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(Config)}
    try:
        config = Config.from_env(**overrides)
    except ValueError as exc:
        print(f"rawsse: {exc}", file=sys.stderr)
        return 2
    try:
        run(config)
    except OSError as exc:
        print(f"rawsse: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
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
