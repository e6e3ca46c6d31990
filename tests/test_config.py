"""Every option refuses a bad value at start: one line on stderr naming the option as it
was given (flag or environment variable), exit status 2, and no server."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from rawsse.cli import main
from rawsse.config import Config
from rawsse.errors import ConfigError
from rawsse.options import env_name, flag_name
from rawsse.preflight import check_environment

KIND = "unit"

BAD_VALUES: dict[str, list[str]] = {
    "host": ["a b", "-x", ""],
    "port": ["70000", "65536", "-1", "http", "80.5"],
    "history": ["-1", "1e9", "many"],
    "history_age": ["0", "-5", "nan", "inf"],
    "history_bytes": ["-1", "1TB"],
    "data_dir": ["", "   "],
    "fsync": ["sometimes", ""],
    "fsync_interval": ["0", "0.5", "7200"],
    "store_age": ["1", "-1", "forever"],
    "store_bytes": ["0", "1000", "1GB"],
    "heartbeat": ["0", "0.5", "inf"],
    "retry": ["0", "50", "-3000"],
    "retry_spread": ["-1", "7200"],
    "max_connections": ["-1", "99999999"],
    "max_accept_rate": ["-1", "0.5", "nan"],
    "max_pending_bytes": ["0", "100", "2GB"],
    "send_timeout": ["0", "-1"],
    "max_header_bytes": ["0", "100"],
    "max_url_bytes": ["0", "10"],
    "max_body_bytes": ["0", "10"],
    "header_timeout": ["0", "0.1"],
    "body_timeout": ["0", "-1"],
    "keepalive_timeout": ["0", "forever"],
    "max_topics": ["0", "-2", "5000"],
    "max_topic_length": ["0", "100000"],
    "max_queued_bytes": ["0", "1"],
    "fanout_slice": ["0", "-1", "2048.5"],
    "publish_token": ["has space", "", "x" * 5000],
    "shutdown_grace": ["-1", "99999"],
    "backlog": ["0", "100000"],
    "loop": ["tokio", ""],
    "streams": ["io_uring", ""],
    "log_level": ["chatty"],
    "workers": ["0", "65", "-1", "many", "²"],
    "broker": ["postgres://x", "redis://", "redis://h:99999", "redis://h/db"],
    "broker_history": ["0", "-1"],
    "dashboard": ["maybe"],
    "cors_origin": ["example.com", "ftp://a.example", "*, http://a.example"],
    "jwt_secret": ["short", "x" * 31],
    "jwt_secret_file": ["/no/such/secret"],
    "jwt_key_file": ["/no/such/key.pem", "/dev/null"],
    "jwt_jwks_file": ["/no/such/jwks.json", "/dev/null"],
    "jwt_issuer": [],  # any text is an issuer
    "jwt_audience": [],
    "jwt_leeway": ["-1", "301", "soon"],
    "token_cookie": ["a b", "a;b", ""],
    "token_query": ["maybe"],
    "public_topics": ["news*x", "a,{sub}", "bad name"],
    "max_streams_per_user": ["-1", "0.5"],
    "max_streams_per_ip": ["-1", "many"],
    "trusted_proxy": ["10.0.0.0/33", "not-an-address"],
    "auth_url": ["ftp://app", "app.example/auth", "http://:80/x", "http://h:99999/"],
    "auth_timeout": ["0", "61"],
    "auth_connections": ["0", "5000"],
    "auth_cache": ["-1", "4000"],
    "auth_fallback": ["allow"],
    "presence_events": ["bad name", "a*b"],
}


def test_the_table_covers_every_option() -> None:
    assert set(BAD_VALUES) == {spec.name for spec in dataclasses.fields(Config)}


def bad_cases() -> list[tuple[str, str]]:
    return [(name, value) for name, values in BAD_VALUES.items() for value in values]


@pytest.mark.parametrize(("name", "value"), bad_cases())
def test_a_bad_flag_is_refused_in_one_line(
    name: str, value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def serving(*args: object) -> None:
        raise AssertionError(f"a server bound its port with {name}={value!r}")

    # What the machine lacks (an unreadable key file) is refused before the port is bound.
    monkeypatch.setattr("rawsse.reactor.server.listen", serving)
    if name in ("dashboard", "token_query"):  # switches: only their variables take a value
        monkeypatch.setenv(env_name(name), value)
        expected = env_name(name)
        argv = ["serve"]
    else:
        expected = flag_name(name)
        argv = ["serve", f"{flag_name(name)}={value}"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rawsse: {expected} "), lines


FILES = {"jwt_secret_file", "jwt_key_file", "jwt_jwks_file"}
"""Options whose files are read by the preflight, not while the options are built."""


@pytest.mark.parametrize(("name", "value"), bad_cases())
def test_a_bad_environment_variable_is_refused_by_its_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config = Config.from_env({env_name(name): value})
        assert name in FILES, "only a file's content is the preflight's to judge"
        check_environment(config)
    refused = caught.value
    assert str(refused).startswith(f"{env_name(name)} ") or refused.name == name


def test_the_message_gives_the_range_and_the_value() -> None:
    with pytest.raises(ConfigError, match=r"^--port must be an integer from 0 to 65535, got 70000$"):
        Config.from_env({}, port="70000")
    with pytest.raises(ConfigError, match=r"^RAWSSE_HEARTBEAT must be a number from 1 to 86400 s, got 0$"):
        Config.from_env({"RAWSSE_HEARTBEAT": "0"})
    with pytest.raises(ConfigError, match=r"^fanout_slice must be an integer from 1 to"):
        Config(fanout_slice=0)  # embedding code is refused the same way


def test_the_command_line_wins_over_the_environment() -> None:
    config = Config.from_env({"RAWSSE_PORT": "70000", "RAWSSE_HEARTBEAT": "5"}, port="9000")
    assert (config.port, config.heartbeat) == (9000, 5.0)


def test_edge_values_and_special_values_are_accepted() -> None:
    config = Config.from_env(
        {},
        port="65535",
        history="0",
        max_connections="0",
        max_accept_rate="0",
        shutdown_grace="0",
        workers="auto",
        broker="redis://127.0.0.1:6379/0",
        host="[::1]",
    )
    assert (config.port, config.history, config.max_connections, config.workers) == (65535, 0, 0, "auto")


@pytest.mark.kind("integration")  # a child process
def test_the_process_exits_2_with_one_line() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "rawsse", "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == 2
    assert finished.stderr == "rawsse: --port must be an integer from 0 to 65535, got 70000\n"


@pytest.mark.kind("integration")  # a child process
def test_a_missing_extra_names_what_to_install() -> None:
    """A plain `pip install rawsse` has no redis-py: the Redis broker says so in one line."""
    code = (
        "import sys; sys.modules['redis'] = None\n"  # as if it were not installed
        "from rawsse.cli import main\n"
        "sys.exit(main(['serve', '--broker', 'redis://127.0.0.1:6379/0']))"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert finished.returncode == 2
    assert finished.stderr == (
        "rawsse: --broker redis:// needs the redis extra: pip install 'rawsse[redis]'\n"
    )


@pytest.mark.kind("integration")  # a child process
def test_a_missing_extra_is_named_by_the_variable_that_asked_for_it() -> None:
    code = (
        "import os, sys; sys.modules['redis'] = None\n"
        "os.environ['RAWSSE_BROKER'] = 'redis://127.0.0.1:6379/0'\n"
        "from rawsse.cli import main\n"
        "sys.exit(main(['serve']))"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert finished.returncode == 2
    assert finished.stderr.startswith("rawsse: RAWSSE_BROKER redis:// needs the redis extra"), finished.stderr


@pytest.mark.kind("integration")  # a child process
def test_version() -> None:
    from rawsse import __version__

    finished = subprocess.run(
        [sys.executable, "-m", "rawsse", "--version"], capture_output=True, text=True, timeout=30
    )
    assert finished.stdout == f"rawsse {__version__}\n"


@pytest.mark.kind("integration")  # a child process
@pytest.mark.parametrize("command", ["serve", "flood"])
def test_every_help_line_shows_its_default(command: str) -> None:
    text = subprocess.run(
        [sys.executable, "-m", "rawsse", command, "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    entries: list[list[str]] = []
    for line in text.partition("\noptions:\n")[2].splitlines():
        if line.startswith("  -"):
            entries.append([line])
        elif entries:
            entries[-1].append(line)
    assert len(entries) > 10
    no_default = ("--help", "--quiet", "--json", "--publish-token", "--cors-origin", "--dashboard")
    for entry in entries:
        option = entry[0].split()[0].rstrip(",")
        if option in no_default or option == "-h":
            continue
        assert "default" in " ".join(entry), f"{option} shows no default"


def test_any_origin_is_refused_where_a_cookie_carries_the_credential() -> None:
    secret = "x" * 40
    with pytest.raises(ConfigError, match=r"^cors_origin cannot be '\*' when a cookie"):
        Config(cors_origin="*", token_cookie="session", jwt_secret=secret)
    with pytest.raises(ConfigError, match=r"^cors_origin cannot be"):
        Config(cors_origin="*", auth_url="http://127.0.0.1:9/auth")
    with pytest.raises(ConfigError, match=r"^cors_origin cannot be"):
        Config(cors_origin=" *, ", token_cookie="session", jwt_secret=secret)  # still any origin
    Config(cors_origin="*", jwt_secret=secret)  # tokens in headers only: no cookie to misuse
    with pytest.raises(ConfigError, match=r"^token_query needs a key"):
        Config(token_query=True, auth_url="http://127.0.0.1:9/auth")  # the application reads no JWT


def test_a_trusted_proxy_on_this_machine_needs_the_publish_token() -> None:
    """Through a proxy on loopback every request comes from loopback: loopback can no
    longer stand for the operator, so publishing must take the token."""
    on_loopback = ("127.0.0.1", "127.0.0.0/8", "::1", "10.0.0.0/8,127.0.0.5", "0.0.0.0/0", "::ffff:127.0.0.9")
    for proxies in on_loopback:
        with pytest.raises(ConfigError, match=r"^trusted_proxy names a proxy on this machine.*publish-token"):
            Config(trusted_proxy=proxies)
        Config(trusted_proxy=proxies, publish_token="s3cret")
    Config(trusted_proxy="10.0.0.0/8, 192.0.2.7, 2001:db8::/32")  # proxies elsewhere: loopback is ours
