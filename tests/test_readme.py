"""The README's commands, run as a reader would run them: the quick start against the
server `scripts/serve` starts (its output compared with the one the README shows), every
`curl` command of the README against it, and every `rawsse` command line checked by the
command's own parser. Only the port differs: the test's server listens on a free one."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawsse.cli import build_parser
from tests.helpers import free_port
from tests.processes import Served as ServedProcess

KIND = "integration"

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TIMEOUT = 30.0


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


DURABLE = "## Durable delivery"
"""The section whose example needs a server with a data directory (its own, here)."""


def commands(text: str = README) -> list[str]:
    """Every command line of the shell blocks of `text`, without its trailing comment."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def block_after(words: str, language: str = "") -> str:
    """The first code block after `words` in the README."""
    after = README.split(words, 1)[1]
    return re.search(rf"```{language}\n(.*?)```", after, flags=re.S).group(1)  # type: ignore[union-attr]


class Served:
    """`scripts/serve` on a free port, as the quick start runs it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            ["scripts/serve", "--port", str(self.port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        self.banner: list[str] = []
        deadline = time.monotonic() + 120  # a fresh clone installs first
        for line in self.process.stderr:
            self.banner.append(line)
            if "listening on" in line or time.monotonic() > deadline:
                break
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def local(self, command: str) -> str:
        return command.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(TIMEOUT)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served()
    yield server
    server.stop()


def test_scripts_serve_says_where_the_command_is(served: Served) -> None:
    assert any(".venv/bin/rawsse" in line for line in served.banner), served.banner


def test_the_quick_start_shows_what_the_readme_shows(served: Served) -> None:
    listen = block_after("in one terminal:", "sh").strip()
    publishes = block_after("and in another", "sh").strip().splitlines()
    assert listen.startswith("curl -N") and len(publishes) == 2, (listen, publishes)
    stream = subprocess.Popen(shlex.split(served.local(listen)), cwd=ROOT, stdout=subprocess.PIPE)
    assert stream.stdout is not None
    try:
        assert stream.stdout.readline() == b"retry: 3000\n"  # the stream is open
        # `rawsse publish` finds the server through RAWSSE_URL, here at the test's port.
        environment = {**os.environ, "RAWSSE_URL": f"http://127.0.0.1:{served.port}"}
        for command in publishes:
            subprocess.run(served.local(command), shell=True, cwd=ROOT, check=True, timeout=TIMEOUT,
                           capture_output=True, env=environment)  # fmt: skip
        shown = block_after("The first terminal shows:")
        seen = "retry: 3000\n"
        while seen.count("\n\n") < shown.count("\n\n"):
            seen += stream.stdout.readline().decode()
    finally:
        stream.terminate()
        stream.wait(TIMEOUT)
    epoch = re.search(r"id: (\w+)-1\n", seen).group(1)  # type: ignore[union-attr]
    assert seen == shown.replace("5f2c09e1", epoch)


def test_every_curl_command_of_the_readme_succeeds(served: Served, tmp_path: Path) -> None:
    (tmp_path / "msg.txt").write_text("a message from a file\n")
    ran = 0
    durable = commands(section(DURABLE))
    for command in commands():
        if not command.startswith("curl ") or command.startswith("curl -N") or command in durable:
            continue  # the stream is the quick start's; the durable example has its server
        finished = subprocess.run(
            served.local(command) + " --fail-with-body --silent --show-error --max-time 10",
            shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert finished.returncode == 0, (command, finished.stdout, finished.stderr)
        ran += 1
    assert ran >= 4


def section(heading: str) -> str:
    after = README.split(heading, 1)[1]
    return after.split("\n## ", 1)[0]


def test_the_durable_delivery_example_answers_what_the_readme_shows(tmp_path: Path) -> None:
    text = section(DURABLE)
    curls = [command for command in commands(text) if command.startswith("curl ")]
    assert len(curls) == 2, curls
    with ServedProcess("--data-dir", str(tmp_path / "data")) as served:
        outputs = []
        for command in curls:
            local = command.replace("127.0.0.1:8080", f"127.0.0.1:{served.port}")
            finished = subprocess.run(
                local + " --fail-with-body --silent --show-error --max-time 10",
                shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
            )  # fmt: skip
            assert finished.returncode == 0, (command, finished.stdout, finished.stderr)
            outputs.append(finished.stdout)
    epoch = json.loads(outputs[0])["id"].split("-")[0]
    shown = re.search(r"```json\n(.*?)```", text, flags=re.S).group(1)  # type: ignore[union-attr]
    assert json.loads(outputs[1]) == json.loads(shown.replace("5f2c09e1", epoch))


def test_every_rawsse_command_line_parses() -> None:
    parser = build_parser()
    checked = 0
    for command in commands():
        words = shlex.split(command)
        if words[0] not in ("rawsse", ".venv/bin/rawsse"):
            continue
        parser.parse_args(words[1:])  # exits (fails the test) on an unknown option
        checked += 1
    assert checked >= 6
