"""The command line of `python -m condure`, as a subprocess.

References: shared/zhttp/server.md sections 1.1-1.5 and 9.2 (log format),
deviation D11 (--ipc-file-mode is octal).
"""
from __future__ import annotations

import os
import re
import signal
import stat

import pytest

from conftest import REPO_ROOT, get_free_port, run_cli
from rawhttp import Client, get

LOG_LINE = re.compile(
    r"\[(ERR|WARN|INFO|DEBUG|TRACE)\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[condure(::\w+)*\] .+")

OPTIONS = [
    "--log-level", "--id", "--workers", "--req-maxconn", "--stream-maxconn", "--buffer-size",
    "--body-buffer-size", "--messages-max", "--req-timeout", "--stream-timeout", "--listen",
    "--zclient-req", "--zclient-stream", "--zclient-connect", "--zserver-req",
    "--zserver-stream", "--zserver-connect", "--ipc-file-mode", "--tls-identities-dir",
    "--compression", "--deny-out-internal", "--sizes", "--help", "--version",
    "--compression-message-max",  # ours (D18)
    "--access-log",  # ours (D21)
    "--client-ws-window",  # ours (D22)
    "--prometheus", "--debug-socket",  # pushpin-connmgr's
    "--blocks-max", "--connection-blocks-max",  # pushpin-connmgr's (connmgr.md 3.1)
]


def read_version() -> str:
    text = (REPO_ROOT / "condure" / "__init__.py").read_text()
    match = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.M)
    assert match, "no __version__ in condure/__init__.py"
    return match.group(1)


# which implementation this is, for an operator: condure's release first (what
# a tool reading `condure X.Y.Z` expects), then ours
VERSION = f"condure 1.10.1 (python {read_version()})"


@pytest.fixture
def safe_args(zdir: str) -> list[str]:
    """Arguments that keep a run that gets further than expected harmless: a free
    loopback port and ipc files in the temporary directory, never in the repo."""
    return ["--listen", f"127.0.0.1:{get_free_port()},stream",
            "--zclient-stream", f"ipc://{zdir}/client", "--zclient-req", f"ipc://{zdir}/req"]


def test_help_lists_every_option() -> None:
    r = run_cli("--help")
    assert r.returncode == 0, r
    for option in OPTIONS:
        assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", r.stdout), option
    assert r.stderr == ""


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str) -> None:
    r = run_cli(flag)
    assert r.returncode == 0, r
    assert r.stdout == VERSION + "\n"


BAD_VALUES = [
    (["--log-level", "x"], "failed to parse log-level: invalid digit found in string"),
    (["--buffer-size", "x"], "failed to parse buffer-size: invalid digit found in string"),
    (["--stream-timeout", "-1"], "failed to parse stream-timeout"),
    (["--workers", "2000"], "failed to parse workers: value too large"),
    (["--id", ""], "failed to parse id: value cannot be empty or contain a space"),
    (["--id", "a b"], "failed to parse id: value cannot be empty or contain a space"),
    (["--listen", "127.0.0.1:abc"], "failed to parse listen: invalid port abc"),
    (["--listen", "8000,bogus"], "failed to parse listen: invalid param: bogus"),
    (["--listen", "1.2.3:80"], "failed to parse listen: invalid socket address syntax"),
    (["--ipc-file-mode", "9"], "failed to parse ipc-file-mode: invalid digit found in string"),
    (["--stream-maxconn", "0"], "stream maxconn must be >= workers"),
    # connmgr.md 8, scenario 16
    (["--blocks-max", "1"], "blocks-max is too small"),
    (["--connection-blocks-max", "1"], "connection-blocks-max is too small"),
    (["--blocks-max", "x"], "failed to parse blocks-max: invalid digit found in string"),
    (["--connection-blocks-max", "-2"],
     "failed to parse connection-blocks-max: invalid digit found in string"),
]


@pytest.mark.parametrize("args,message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_value_exits_1_with_one_log_line(safe_args: list[str], args: list[str],
                                             message: str) -> None:
    base_args = safe_args[2:] if args[0] == "--listen" else safe_args
    r = run_cli(*base_args, *args)
    assert r.returncode == 1, r
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    assert LOG_LINE.fullmatch(lines[0]), lines[0]
    assert lines[0].startswith("[ERR] ")
    assert message in lines[0]


@pytest.mark.parametrize("base,message", [
    ("foo://x", "base spec must be ipc or tcp"),
    ("tcp://127.0.0.1", "error parsing tcp port in base spec"),
])
def test_bad_spec_base_exits_1(base: str, message: str) -> None:
    r = run_cli("--listen", f"127.0.0.1:{get_free_port()},stream", "--zclient-stream", base)
    assert r.returncode == 1, r
    errors = [line for line in r.stdout.splitlines() if line.startswith("[ERR]")]
    assert len(errors) == 1 and message in errors[0], r.stdout
    assert all(LOG_LINE.fullmatch(line) for line in r.stdout.splitlines()), r.stdout


@pytest.mark.parametrize("args,names", [
    (["--bogus"], "--bogus"),
    (["--buffer-size"], "--buffer-size"),
    (["--log-level", "2", "--log-level", "3"], "--log-level"),
], ids=["unknown-option", "missing-value", "repeated-option"])
def test_command_line_syntax_error_exits_2(safe_args: list[str], args: list[str],
                                          names: str) -> None:
    """clap's exit status for syntax errors; bad values exit 1 (server.md 1.1)."""
    r = run_cli(*safe_args, *args)
    assert names in r.stdout + r.stderr, r
    assert r.returncode == 2, r


def test_unknown_option_is_refused(safe_args: list[str]) -> None:
    r = run_cli(*safe_args, "--bogus")
    assert r.returncode != 0, r
    assert "--bogus" in r.stdout + r.stderr
    assert "starting..." not in r.stdout


# Combinations that parse but are not built yet. Options leave this list as
# they get implemented (--compression, --workers N, --http-parser httptools,
# `--listen ...,req` / `...,tls` and client mode alone already have).
@pytest.mark.parametrize("args", [
    ["--zserver-stream", "ipc://ZDIR/server", "--workers", "2"],
    ["--zserver-req", "ipc://ZDIR/server-req", "--workers", "2"],
], ids=["zserver-stream-workers-2", "zserver-req-workers-2"])
def test_unsupported_feature_exits_1(zdir: str, args: list[str]) -> None:
    args = [a.replace("ZDIR", zdir) for a in args]
    args += ["--listen", f"127.0.0.1:{get_free_port()},stream"]
    r = run_cli("--zclient-stream", f"ipc://{zdir}/client", "--zclient-req", f"ipc://{zdir}/req",
                *args)
    assert r.returncode == 1, r
    errors = [line for line in r.stdout.splitlines() if line.startswith("[ERR]")]
    assert len(errors) == 1 and "not supported yet" in errors[0], r.stdout
    assert not any(name.endswith("-in") for name in os.listdir(zdir)), "sockets were bound"


def test_startup_log_lines(condure) -> None:
    c = condure(log_level=2)
    log = c.wait_log("started")
    lines = log.splitlines()
    assert all(LOG_LINE.fullmatch(line) for line in lines), log
    messages = [line.split("] ", 2)[2] for line in lines]
    base = c.base
    assert messages[:4] == [
        f"starting... {VERSION}",
        f"zhttp client bind {base}-out {base}-out-stream {base}-in",
        f"listening on 127.0.0.1:{c.port}",
        "started",
    ]
    assert all(line.startswith("[INFO] ") for line in lines[:4])


def test_log_level_0_is_quiet(condure, handler_factory) -> None:
    c = condure(log_level=0)
    h = handler_factory(c.base)
    with Client(c.port) as client:
        client.send(get("/"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [], b"ok")
        client.read_response()
    assert c.stop() == 0
    assert c.log_text() == ""


def test_second_process_on_the_same_port_exits_1(condure, zdir: str) -> None:
    first = condure()
    r = run_cli("--listen", f"127.0.0.1:{first.port},stream",
                "--zclient-stream", f"ipc://{zdir}/other")
    assert r.returncode == 1, r
    errors = [line for line in r.stdout.splitlines() if line.startswith("[ERR]")]
    assert len(errors) == 1, r.stdout
    assert f"127.0.0.1:{first.port}" in errors[0] and "in use" in errors[0].lower(), errors
    assert first.alive()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_with_status_0(condure, sig: signal.Signals) -> None:
    c = condure(log_level=2)
    c.proc.send_signal(sig)
    assert c.proc.wait(10) == 0
    messages = [line.split("] ", 2)[2] for line in c.log_text().splitlines()]
    assert messages[-2:] == ["stopping...", "stopped"], messages


@pytest.mark.parametrize("mode,expected", [("700", 0o700), ("755", 0o755)])
def test_ipc_file_mode_is_octal_d11(condure, zdir: str, mode: str, expected: int) -> None:
    c = condure("--ipc-file-mode", mode)
    path = c.base[len("ipc://"):]
    for suffix in ("-out", "-out-stream", "-in"):
        st = os.stat(path + suffix)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == expected, (suffix, oct(st.st_mode))


def test_zclient_connect_with_binding_handler(condure, handler_factory, zdir: str) -> None:
    base = f"ipc://{zdir}/hb"
    h = handler_factory(base, bind=True, wait=False)
    c = condure("--zclient-connect", base=base)
    h.wait_ready()
    assert f"zhttp client connect {base}-out {base}-out-stream {base}-in" in c.log_text()
    with Client(c.port) as client:
        client.send(get("/"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [], b"connected", more=True)
        client.read_head()
        assert h.recv_type(b"credit")[b"credits"] == 9  # the ROUTER path works too
        h.body(req, b"")
        assert client.read_chunk()[1] == b"connected"


def test_custom_id_is_from_and_subscription(condure, handler_factory) -> None:
    c = condure("--id", "edge-7")
    h = handler_factory(c.base, instance=b"edge-7")
    with Client(c.port) as client:
        client.send(get("/"))
        req = h.recv_request()
        assert req[b"from"] == b"edge-7"
        h.respond(req, 200, b"OK", [], b"ok\n")
        assert client.read_response().body == b"ok\n"
