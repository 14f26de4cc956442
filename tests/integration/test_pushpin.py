"""Pushpin 1.36 running its whole stack on our condure, end to end.

Each test writes a private pushpin.conf (own run dir, log dir, free ports on
127.0.0.1 for every port Pushpin opens), starts `pushpin --config FILE` with
`[runner] services=condure,zurl,pushpin-proxy,pushpin-handler` and
`condure_bin` = this checkout's `.venv/bin/condure` (never the Debian condure
on PATH), plus a local origin HTTP server. Clients talk to Pushpin's
http_port, i.e. to our condure's server side; Pushpin's proxy reaches the
origin through Zurl.

The `pushpin_both_roles` fixture (tests test_both_roles_*) runs no Zurl:
`services=condure,pushpin-proxy,pushpin-handler` and `condure_bin` =
this checkout's `.venv/bin/condure-pushpin` (the package's console script,
condure/pushpin.py), which execs our condure with the runner's arguments plus
`--zserver-stream ipc://RUNDIR/pushpin-zurl` (PULL
-zurl-in, ROUTER -zurl-in-stream with identity `condure`, PUB -zurl-out:
where this config points the proxy's zurl_out_specs, zurl_out_stream_specs and
zurl_in_specs). The proxy addresses the client side by the `from` of its
replies (ZWebSocket/ZhttpRequest toAddress), so the default --id fits. One
condure process is then both Pushpin's server and the proxy's client.

What Pushpin starts (shared/zhttp/server.md 1.4): `condure --log-level=N
--listen=127.0.0.1:P,stream --zclient-stream=ipc://RUNDIR/pushpin-condure
--buffer-size=8192 --stream-maxconn=M`. The runner puts every service in its
own process group but they all stay in the runner's session: the runner is
started with start_new_session=True, so the session id equals its pid, and
teardown kills exactly the processes of that session.

Readiness: every service logged `started`, the ports accept, and Pushpin's
proxy and handler are connected to condure's ipc sockets (see wait_zmq_peers:
our condure starts slowly, and a request taken before the proxy's PUB is
connected never gets its response).

Logs: /tmp/ppXXXX/log/{runner,condure,zurl,pushpin-proxy,pushpin-handler}.log
(condure at --log-level=3; PUSHPIN_CONDURE_LOG_LEVEL=4 for packet traces),
printed at teardown, so shown for failing tests; the directory is removed.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

if shutil.which("pushpin") is None:
    pytest.skip("pushpin is not installed", allow_module_level=True)
HAVE_ZURL = shutil.which("zurl") is not None  # only the `pushpin` fixture needs it

import h11  # noqa: E402
from wsproto import ConnectionType, WSConnection  # noqa: E402
from wsproto.connection import Connection as WsFrameConnection  # noqa: E402
from wsproto.events import Ping  # noqa: E402
from wsproto.events import (AcceptConnection, CloseConnection, Message,  # noqa: E402
                            RejectConnection, Request, TextMessage)

from conftest import REPO_ROOT, get_free_port  # noqa: E402

pytestmark = pytest.mark.deadline(120)

VENV_BIN = REPO_ROOT / ".venv" / "bin"
CONDURE_BIN = VENV_BIN / "condure"  # console script of the editable install
# condure_bin for "both roles" (no Zurl): the package's console script that execs
# `python -P -m condure` adding the client side (condure/pushpin.py)
BOTH_ROLES_WRAPPER = VENV_BIN / "condure-pushpin"
PUSHPIN_PUBLISH = shutil.which("pushpin-publish")

# condure's --log-level under Pushpin: 3 (debug) by default, 4 for packet traces
CONDURE_LOG_LEVEL = int(os.environ.get("PUSHPIN_CONDURE_LOG_LEVEL", "3"))
START_TIMEOUT = 20.0
IO_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0  # the runner stops its services itself; condure may wait for cancels

WS_EVENTS = "application/websocket-events"
# `[INFO] 2026-01-01 10:00:00.000 started`: Pushpin's runner and services once up
STARTED = re.compile(r"^\[INFO\] \S+ \S+ started$", re.M)


# ---------------------------------------------------------------------------
# the origin


def encode_events(events: list[tuple[str, bytes | None]]) -> bytes:
    """WebSocket-over-HTTP events: `TYPE\\r\\n` or `TYPE <hex len>\\r\\n<content>\\r\\n`."""
    out = bytearray()
    for etype, content in events:
        if content is None:
            out += etype.encode() + b"\r\n"
        else:
            out += b"%s %x\r\n%s\r\n" % (etype.encode(), len(content), content)
    return bytes(out)


def decode_events(body: bytes) -> list[tuple[str, bytes | None]]:
    events: list[tuple[str, bytes | None]] = []
    pos = 0
    while pos < len(body):
        end = body.index(b"\r\n", pos)
        line = body[pos:end].decode()
        pos = end + 2
        if " " in line:
            etype, size_hex = line.split(" ", 1)
            size = int(size_hex, 16)
            content = body[pos:pos + size]
            assert body[pos + size:pos + size + 2] == b"\r\n", body
            pos += size + 2
            events.append((etype, content))
        else:
            events.append((line, None))
    return events


class Origin:
    """A threaded HTTP/1.1 origin on 127.0.0.1:<ephemeral port>.

    GET /plain   -> 200 text/plain PLAIN_BODY
    GET /stream  -> GRIP: Grip-Hold: stream, Grip-Channel: test, body STREAM_START
    POST /ws     -> WebSocket-over-HTTP: OPEN -> OPEN, TEXT -> echoed TEXT,
                    CLOSE -> CLOSE (same code); on /ws-grip the OPEN answer also
                    subscribes the connection to channel `wstest` (GRIP control
                    message) so a publish reaches it.
    GET /echo with `Upgrade: websocket` -> a plain WebSocket echo server (text
                    and binary messages echoed, close answered); every message
                    it receives is recorded in `ws_messages`.
    Every request is recorded in `requests` (method, path, headers, body).
    """

    PLAIN_BODY = b"hello from the origin\n"
    STREAM_START = b"stream open\n"

    def __init__(self) -> None:
        origin = self
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets GET /slow answer
        self.ws_messages: list[str | bytes] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _record(self, body: bytes) -> None:
                with origin.lock:
                    origin.requests.append(
                        (self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                         body))

            def _send(self, code: int, headers: list[tuple[str, str]], body: bytes) -> None:
                try:
                    self.send_response(code)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the proxy gave up (test stopped it)

            def _ws_echo(self) -> None:
                """RFC 6455 handshake by hand, then wsproto's frame layer on the socket."""
                key = self.headers.get("Sec-WebSocket-Key", "")
                accept = base64.b64encode(hashlib.sha1(
                    (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                conn = WsFrameConnection(ConnectionType.SERVER)
                parts: list[str | bytes] = []
                try:
                    while True:
                        data = self.rfile.read1(65536)  # type: ignore[attr-defined]
                        if not data:
                            return
                        conn.receive_data(data)
                        for ev in conn.events():
                            if isinstance(ev, Message):
                                parts.append(ev.data)
                                if ev.message_finished:
                                    msg = (b"".join(parts) if isinstance(ev.data, bytes)
                                           else "".join(parts))  # type: ignore[arg-type]
                                    parts.clear()
                                    with origin.lock:
                                        origin.ws_messages.append(msg)
                                    self.wfile.write(conn.send(Message(data=msg)))
                            elif isinstance(ev, Ping):
                                self.wfile.write(conn.send(ev.response()))
                            elif isinstance(ev, CloseConnection):
                                self.wfile.write(conn.send(ev.response()))
                                return
                except (OSError, ValueError):
                    return

            def do_GET(self) -> None:
                self._record(b"")
                if self.path == "/echo" and \
                        self.headers.get("Upgrade", "").lower() == "websocket":
                    self._ws_echo()
                elif self.path == "/plain":
                    self._send(200, [("Content-Type", "text/plain"),
                                     ("X-Origin", "yes")], origin.PLAIN_BODY)
                elif self.path == "/slow":  # answers once released (or after 20 s)
                    origin.release.wait(20)
                    self._send(200, [("Content-Type", "text/plain")], b"slow\n")
                elif self.path == "/stream":
                    self._send(200, [("Content-Type", "text/plain"),
                                     ("Grip-Hold", "stream"),
                                     ("Grip-Channel", "test")], origin.STREAM_START)
                else:
                    self._send(404, [("Content-Type", "text/plain")], b"not found\n")

            def do_POST(self) -> None:
                body = self._body()
                self._record(body)
                if self.path not in ("/ws", "/ws-grip") or \
                        self.headers.get("Content-Type") != WS_EVENTS:
                    self._send(404, [("Content-Type", "text/plain")], b"not found\n")
                    return
                out: list[tuple[str, bytes | None]] = []
                headers = [("Content-Type", WS_EVENTS)]
                for etype, content in decode_events(body):
                    if etype == "OPEN":
                        out.append(("OPEN", None))
                        if self.path == "/ws-grip":
                            headers.append(("Sec-WebSocket-Extensions", 'grip; message-prefix=""'))
                            control = json.dumps({"type": "subscribe", "channel": "wstest"})
                            out.append(("TEXT", b"c:" + control.encode()))
                    elif etype == "TEXT":
                        out.append(("TEXT", content))
                    elif etype == "CLOSE":
                        out.append(("CLOSE", content))
                self._send(200, headers, encode_events(out))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def seen(self, method: str, path: str) -> list[tuple[str, str, dict[str, str], bytes]]:
        with self.lock:
            return [r for r in self.requests if r[0] == method and r[1] == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def origin() -> Iterator[Origin]:
    o = Origin()
    try:
        yield o
    finally:
        o.close()


# ---------------------------------------------------------------------------
# Pushpin


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of a live pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = data.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def session_members(sid: int) -> dict[int, tuple[str, int, int]]:
    """Live (non-zombie) processes of session `sid`: pid -> (state, ppid, pgrp)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(int(entry))
        if st is not None and st[3] == sid and st[0] != "Z":
            out[int(entry)] = (st[0], st[1], st[2])
    return out


class Pushpin:
    def __init__(self, proc: subprocess.Popen, root: Path, http_port: int,
                 publish_port: int, origin: Origin) -> None:
        self.proc = proc
        self.root = root
        self.rundir = root / "run"
        self.logdir = root / "log"
        self.http_port = http_port
        self.publish_port = publish_port
        self.origin = origin

    # logs -------------------------------------------------------------
    def log(self, name: str) -> str:
        try:
            return (self.logdir / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_logs(self) -> str:
        parts = []
        for path in sorted(self.logdir.glob("*")):
            parts.append(f"----- {path.name} -----\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def wait_log(self, name: str, text: str | re.Pattern[str],
                 timeout: float = IO_TIMEOUT) -> str:
        """Wait until `text` (a substring or a compiled pattern) is in log `name`."""
        end = time.monotonic() + timeout
        while True:
            log = self.log(name)
            if text.search(log) if isinstance(text, re.Pattern) else text in log:
                return log
            if self.proc.poll() is not None:
                raise AssertionError(f"pushpin exited ({self.proc.returncode}) while waiting for "
                                     f"{text!r} in {name}:\n{self.all_logs()}")
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} not in {name} within {timeout} s:\n"
                                     f"{self.all_logs()}")
            time.sleep(0.05)

    # processes --------------------------------------------------------
    def children(self) -> dict[int, list[str]]:
        """The runner's direct children: pid -> cmdline."""
        return {pid: proc_cmdline(pid) for pid, (_, ppid, _) in
                session_members(self.proc.pid).items() if ppid == self.proc.pid}

    def condure_pid(self) -> int:
        return int((self.rundir / "condure.pid").read_text().strip())

    # publishing -------------------------------------------------------
    def publish_http(self, items: list[dict]) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.publish_port}/publish/",
            data=json.dumps({"items": items}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=IO_TIMEOUT) as resp:
            assert resp.status == 200, resp.read()

    def publish_cli(self, *args: str) -> str:
        assert PUSHPIN_PUBLISH is not None
        res = subprocess.run([PUSHPIN_PUBLISH, "--spec", f"http://127.0.0.1:{self.publish_port}",
                              *args], capture_output=True, text=True, timeout=IO_TIMEOUT,
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
        return res.stdout + res.stderr


def write_config(root: Path, http_port: int, ports: dict[str, int], origin_port: int,
                 route_opts: str, both_roles: bool = False) -> Path:
    """Pushpin's config; with `both_roles` no zurl service and condure_bin =
    BOTH_ROLES_WRAPPER (our condure as server and as client, see that script)."""
    rundir, logdir = root / "run", root / "log"
    services = "condure,pushpin-proxy,pushpin-handler" if both_roles else \
        "condure,zurl,pushpin-proxy,pushpin-handler"
    condure_bin = BOTH_ROLES_WRAPPER if both_roles else CONDURE_BIN
    rundir.mkdir()
    logdir.mkdir()
    (root / "routes").write_text(f"* 127.0.0.1:{origin_port}{route_opts}\n")
    conf = root / "pushpin.conf"
    # The Debian internal.conf points the proxy at a system zurl in /var/run/zurl;
    # with zurl started by our runner the specs must follow its template
    # (RUNDIR/IPC_PREFIX zurl-in...). Values here override the included file.
    conf.write_text(f"""\
[global]
include={{libdir}}/internal.conf
rundir={rundir}
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120

[runner]
services={services}
http_port=127.0.0.1:{http_port}
logdir={logdir}
log_level=2,condure:{CONDURE_LOG_LEVEL}
client_buffer_size=8192
client_maxconn=1000
condure_bin={condure_bin}
zurl_bin=zurl

[proxy]
routesfile=routes
debug=true
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
x_forwarded_for=
x_forwarded_for_trusted=
orig_headers_need_mark=
accept_pushpin_route=false
log_from=false
log_user_agent=false
sig_iss=pushpin
sig_key=changeme
upstream_key=
updates_check=off
organization_name=
zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in
zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream
zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out

[handler]
push_in_spec=tcp://127.0.0.1:{ports['push_in']}
push_in_sub_specs=tcp://127.0.0.1:{ports['push_in_sub']}
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port={ports['push_in_http']}
push_in_http_max_headers_size=10000
push_in_http_max_body_size=1000000
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=tcp://127.0.0.1:{ports['command']}
message_rate=2500
message_hwm=25000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
""")
    return conf


def unix_peers(path: Path) -> int:
    """Connected (accepted) unix sockets on the socket file `path` (/proc/net/unix)."""
    n = 0
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == str(path) and fields[5] == "03":
                n += 1
    return n


# condure's ipc endpoints and how many Pushpin sockets connect to each (server.md 1.4):
# pushpin-proxy PULL -> BASE-out; proxy and handler ROUTER -> BASE-out-stream;
# proxy and handler PUB -> BASE-in
CONDURE_PEERS = {"pushpin-condure-out": 1, "pushpin-condure-out-stream": 2,
                 "pushpin-condure-in": 2}


def wait_zmq_peers(pp: Pushpin, timeout: float = START_TIMEOUT) -> None:
    """Wait until Pushpin's proxy and handler have connected to condure's sockets.

    Our condure starts much more slowly than the Rust one, so the proxy and the
    handler, started at the same time by the runner, connect only on a later
    ZeroMQ reconnect (every 100 ms). A request condure accepts before the
    proxy's PUB has connected and seen condure's SUB subscription gets no
    answer: its response packets are dropped by the PUB (observed: the proxy
    logged `code=200`, condure's trace shows no IN packet for the session).
    """
    end = time.monotonic() + timeout
    while True:
        counts = {name: unix_peers(pp.rundir / name) for name in CONDURE_PEERS}
        if all(counts[name] >= n for name, n in CONDURE_PEERS.items()):
            time.sleep(0.3)  # ZMTP handshakes and the SUB subscription
            return
        if pp.proc.poll() is not None or time.monotonic() > end:
            raise AssertionError(f"Pushpin not connected to condure ({counts}):\n"
                                 f"{pp.all_logs()}")
        time.sleep(0.05)


def wait_port(port: int, pp: Pushpin, timeout: float = START_TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if pp.proc.poll() is not None or time.monotonic() > end:
            raise AssertionError(f"port {port} not listening (pushpin rc={pp.proc.poll()}):\n"
                                 f"{pp.all_logs()}")
        time.sleep(0.05)


def stop_pushpin(pp: Pushpin) -> list[str]:
    """Stop the runner and everything in its session; return what had to be killed."""
    sid = pp.proc.pid
    killed: list[str] = []
    if pp.proc.poll() is None:
        pp.proc.send_signal(signal.SIGTERM)  # the runner stops its services
        try:
            pp.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            killed.append(f"runner {sid}")
    # whatever is left in the runner's session (services it did not stop, their children)
    end = time.monotonic() + STOP_TIMEOUT
    while True:
        left = session_members(sid)
        if not left:
            break
        for pid, (_, _, pgrp) in left.items():
            killed.append(f"{pid} {' '.join(proc_cmdline(pid))}")
            # each service leads its own group inside our session: kill the group
            for target in (lambda: os.killpg(pgrp, signal.SIGKILL),
                           lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    target()
                except (ProcessLookupError, PermissionError):
                    pass
        if time.monotonic() > end:
            break
        time.sleep(0.1)
    if pp.proc.poll() is None:
        pp.proc.kill()
    pp.proc.wait(STOP_TIMEOUT)
    return killed


# the client-side endpoints of our condure in both roles (condure-pushpin:
# --zserver-stream ipc://RUNDIR/pushpin-zurl) and how many pushpin-proxy sockets
# connect to each: PUSH -> BASE-in, ROUTER -> BASE-in-stream, SUB -> BASE-out
CLIENT_PEERS = {"pushpin-zurl-in": 1, "pushpin-zurl-in-stream": 1, "pushpin-zurl-out": 1}


def wait_client_peers(pp: Pushpin, timeout: float = START_TIMEOUT) -> None:
    """Wait until pushpin-proxy's zurl sockets are connected to our condure's client side."""
    end = time.monotonic() + timeout
    while True:
        counts = {name: unix_peers(pp.rundir / name) for name in CLIENT_PEERS}
        if all(counts[name] >= n for name, n in CLIENT_PEERS.items()):
            time.sleep(0.3)  # ZMTP handshakes and the proxy's SUB subscription
            return
        if pp.proc.poll() is not None or time.monotonic() > end:
            raise AssertionError(f"pushpin-proxy not connected to condure's client side "
                                 f"({counts}):\n{pp.all_logs()}")
        time.sleep(0.05)


def check_wrapper_installed() -> None:
    """condure-pushpin exists only once the venv was (re)installed from a checkout
    that has it (`make venv`), and it must run this checkout's package."""
    if not os.access(BOTH_ROLES_WRAPPER, os.X_OK):
        pytest.fail(f"{BOTH_ROLES_WRAPPER} missing: the venv predates the console script; "
                    f"run `make venv` (or .venv/bin/pip install -e .)")
    res = subprocess.run([str(VENV_BIN / "python"), "-P", "-c",
                          "import condure; print(condure.__file__)"],
                         capture_output=True, text=True, cwd="/", timeout=IO_TIMEOUT)
    where = Path(res.stdout.strip()).resolve()
    if res.returncode != 0 or REPO_ROOT.resolve() not in where.parents:
        pytest.fail(f"{VENV_BIN}/python imports condure from {where} (rc {res.returncode}, "
                    f"{res.stderr.strip()}), not from {REPO_ROOT}: reinstall with `make venv`")


def pushpin_factory(origin: Origin, both_roles: bool) -> Iterator[Callable[..., Pushpin]]:
    """The body of the `pushpin` and `pushpin_both_roles` fixtures."""
    if not os.access(CONDURE_BIN, os.X_OK):
        pytest.skip(f"{CONDURE_BIN} missing: run .venv/bin/pip install -e .")
    if not both_roles and not HAVE_ZURL:
        pytest.skip("zurl is not installed")
    if both_roles:
        check_wrapper_installed()
    started: list[Pushpin] = []
    roots: list[Path] = []

    def launch(route_opts: str) -> Pushpin:
        root = Path(tempfile.mkdtemp(prefix="pp", dir="/tmp"))  # short: ipc path limit
        roots.append(root)
        http_port = get_free_port()
        ports = {name: get_free_port() for name in
                 ("push_in", "push_in_sub", "push_in_http", "command")}
        conf = write_config(root, http_port, ports, origin.port, route_opts, both_roles)
        with open(root / "log" / "runner.out", "wb") as out:
            proc = subprocess.Popen(
                ["pushpin", "--config", str(conf), "--logfile", str(root / "log" / "runner.log")],
                cwd=root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        pp = Pushpin(proc, root, http_port, ports["push_in_http"], origin)
        started.append(pp)
        logs = ["runner.log", "pushpin-proxy.log", "pushpin-handler.log"]
        for name in logs if both_roles else logs + ["zurl.log"]:
            pp.wait_log(name, STARTED, START_TIMEOUT)
        return pp

    def start(route_opts: str = "") -> Pushpin:
        # a port picked free can be taken (as another connection's ephemeral source port)
        # before pushpin binds it: then pushpin exits at once and a fresh set is tried
        for attempt in range(3):
            try:
                pp = launch(route_opts)
                break
            except AssertionError as e:
                if "unable to bind" not in str(e) or attempt == 2:
                    raise
                stop_pushpin(started.pop())
        http_port = pp.http_port
        pp.wait_log("condure.log", "[condure] started", START_TIMEOUT)
        wait_port(http_port, pp)
        wait_port(pp.publish_port, pp)
        wait_zmq_peers(pp)
        if both_roles:
            wait_client_peers(pp)
        end = time.monotonic() + START_TIMEOUT
        while True:  # first request through the whole stack
            try:
                status, _, body = http_get(http_port, "/plain", timeout=3.0)
                if status == 200 and body == Origin.PLAIN_BODY:
                    break
            except (OSError, h11.ProtocolError):
                pass
            if time.monotonic() > end:
                raise AssertionError(f"no GET /plain through pushpin:\n{pp.all_logs()}")
            time.sleep(0.2)
        return pp

    try:
        yield start
    finally:
        problems = []
        for pp in started:
            killed = stop_pushpin(pp)
            if killed:
                problems.append(f"had to kill: {killed}")
            if session_members(pp.proc.pid):
                problems.append(f"left running: {session_members(pp.proc.pid)}")
        for pp in started:
            print(pp.all_logs())  # shown by pytest for failing tests
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
        assert not problems, problems


@pytest.fixture
def pushpin(origin: Origin) -> Iterator[Callable[..., Pushpin]]:
    """Factory: pushpin(route_opts="") -> a started Pushpin routing * to the origin.

    Started only once everything is up: runner/services logged `started`, the
    http and publish ports accept, proxy and handler are connected to condure's
    ipc sockets (wait_zmq_peers) and a GET /plain has gone through the whole stack.
    At teardown the runner gets SIGTERM; anything of its session still alive
    after that is SIGKILLed (and reported as a failure).
    """
    yield from pushpin_factory(origin, both_roles=False)


@pytest.fixture
def pushpin_both_roles(origin: Origin) -> Iterator[Callable[..., Pushpin]]:
    """Like `pushpin`, but without Zurl: `[runner] services=condure,pushpin-proxy,
    pushpin-handler` and condure_bin = condure-pushpin, so one process of
    our condure is Pushpin's server (--listen, --zclient-stream) and the proxy's
    outgoing HTTP/WebSocket client (--zserver-stream ipc://RUNDIR/pushpin-zurl,
    where the proxy's zurl_* specs point). Also waits until the proxy's zurl
    sockets are connected to condure's client side (wait_client_peers)."""
    yield from pushpin_factory(origin, both_roles=True)


# ---------------------------------------------------------------------------
# clients


class HttpClient:
    """An h11 client connection to 127.0.0.1:port."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, *events: object) -> None:
        for ev in events:
            data = self.conn.send(ev)  # type: ignore[arg-type]
            if data:
                self.sock.sendall(data)

    def next_event(self, timeout: float = IO_TIMEOUT) -> object:
        self.sock.settimeout(timeout)
        while True:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
                continue
            return ev

    def get(self, target: str) -> None:
        self.send(h11.Request(method="GET", target=target,
                              headers=[("Host", f"127.0.0.1:{self.port}")]),
                  h11.EndOfMessage())

    def close(self) -> None:
        self.sock.close()


def http_get(port: int, target: str, timeout: float = IO_TIMEOUT
             ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    c = HttpClient(port, timeout)
    try:
        c.get(target)
        resp = c.next_event(timeout)
        assert isinstance(resp, h11.Response), resp
        body = b""
        while True:
            ev = c.next_event(timeout)
            if isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return resp.status_code, list(resp.headers), body
            else:
                raise AssertionError(f"unexpected {ev!r}")
    finally:
        c.close()


class WsClient:
    def __init__(self, port: int, target: str, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[object] = []
        self.send(Request(host=f"127.0.0.1:{port}", target=target))

    def send(self, event: object) -> None:
        self.sock.sendall(self.ws.send(event))  # type: ignore[arg-type]

    def next_event(self, timeout: float = IO_TIMEOUT) -> object:
        """The next wsproto event; None on EOF."""
        self.sock.settimeout(timeout)
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    def next_text(self, timeout: float = IO_TIMEOUT) -> str:
        parts = []
        while True:
            ev = self.next_event(timeout)
            assert isinstance(ev, TextMessage), ev
            parts.append(ev.data)
            if ev.message_finished:
                return "".join(parts)

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------
# checks shared by the tests


def assert_our_condure(pp: Pushpin, both_roles: bool = False) -> int:
    """The runner's condure child is this checkout's console script run by the venv
    python (with `both_roles`: what condure-pushpin execs, `<venv python> -P -m condure`)."""
    pid = pp.condure_pid()
    cmdline = proc_cmdline(pid)
    stat = proc_stat(pid)
    assert stat is not None and stat[1] == pp.proc.pid, (pid, stat, pp.children())
    if both_roles:
        assert cmdline[1:4] == ["-P", "-m", "condure"], cmdline
    else:
        # a console script runs as `<venv python> <venv>/bin/condure --log-level=... ...`
        assert len(cmdline) >= 2 and cmdline[1] == str(CONDURE_BIN), cmdline
    assert Path(cmdline[0]).parent == VENV_BIN, cmdline
    exe = os.readlink(f"/proc/{pid}/exe")
    assert "python" in Path(exe).name, exe
    assert f"--listen=127.0.0.1:{pp.http_port},stream" in cmdline, cmdline
    assert f"--zclient-stream=ipc://{pp.rundir}/pushpin-condure" in cmdline, cmdline
    # and no other condure (e.g. the Debian /usr/bin/condure) anywhere in the stack
    condures = [c for c in pp.children().values()
                if any(Path(a).name == "condure" for a in c[:4])]
    assert condures == [cmdline], pp.children()
    return pid


def cmdline_python(pp: Pushpin) -> str:
    """The interpreter running the runner's condure child."""
    return proc_cmdline(pp.condure_pid())[0]


def assert_condure_healthy(pp: Pushpin) -> None:
    pid = pp.condure_pid()
    assert proc_stat(pid) is not None, f"condure died:\n{pp.log('condure.log')}"
    log = pp.log("condure.log")
    bad = [line for line in log.splitlines()
           if line.startswith(("[ERR]", "Traceback")) or "zhttp parse error" in line]
    assert not bad, f"condure logged errors:\n{log}"


# ---------------------------------------------------------------------------
# tests


def test_pushpin_runs_our_condure(pushpin: Callable[..., Pushpin]) -> None:
    pp = pushpin()
    condure_pid = assert_our_condure(pp)
    others = sorted(Path(c[0]).name for pid, c in pp.children().items() if pid != condure_pid)
    assert others == ["pushpin-handler", "pushpin-proxy", "zurl"], pp.children()
    # the venv's `condure` package is this checkout (editable install), whatever the cwd
    res = subprocess.run([cmdline_python(pp), "-c", "import condure; print(condure.__file__)"],
                         cwd=pp.root, capture_output=True, text=True, timeout=IO_TIMEOUT,
                         stdin=subprocess.DEVNULL)
    assert Path(res.stdout.strip()).resolve() == REPO_ROOT / "condure" / "__init__.py", res
    # our condure's startup lines, with Pushpin's options
    log = pp.log("condure.log")
    assert f"listening on 127.0.0.1:{pp.http_port}" in log, log
    assert f"zhttp client bind ipc://{pp.rundir}/pushpin-condure-out" in log, log


def test_plain_get(pushpin: Callable[..., Pushpin], origin: Origin) -> None:
    pp = pushpin()
    assert_our_condure(pp)
    before = len(origin.seen("GET", "/plain"))
    status, headers, body = http_get(pp.http_port, "/plain")
    assert status == 200
    assert body == Origin.PLAIN_BODY
    hdrs = {k.lower(): v for k, v in headers}
    assert hdrs[b"x-origin"] == b"yes"
    assert hdrs[b"content-length"] == str(len(Origin.PLAIN_BODY)).encode()
    assert len(origin.seen("GET", "/plain")) == before + 1
    # the proxy routed it to the origin (through zurl)
    pp.wait_log("pushpin-proxy.log",
                f"GET http://127.0.0.1:{pp.http_port}/plain -> 127.0.0.1:{origin.port} code=200")
    # and our condure's server side carried it
    log = pp.wait_log("condure.log", f"request: GET http://127.0.0.1:{pp.http_port}/plain")
    assert "finished" in log, log

    # keep-alive: two requests on one connection
    c = HttpClient(pp.http_port)
    try:
        for _ in range(2):
            c.get("/plain")
            resp = c.next_event()
            assert isinstance(resp, h11.Response) and resp.status_code == 200, resp
            body = b""
            while not isinstance(ev := c.next_event(), h11.EndOfMessage):
                assert isinstance(ev, h11.Data), ev
                body += ev.data
            assert body == Origin.PLAIN_BODY
            c.conn.start_next_cycle()
    finally:
        c.close()
    assert_condure_healthy(pp)


def test_grip_stream_publish(pushpin: Callable[..., Pushpin], origin: Origin) -> None:
    pp = pushpin()
    assert_our_condure(pp)
    c = HttpClient(pp.http_port)
    try:
        c.get("/stream")
        resp = c.next_event()
        assert isinstance(resp, h11.Response), resp
        assert resp.status_code == 200
        hdrs = {k.lower(): v for k, v in resp.headers}
        assert hdrs.get(b"transfer-encoding") == b"chunked", resp.headers
        assert b"grip-hold" not in hdrs and b"grip-channel" not in hdrs, resp.headers

        def read_until(expected: bytes) -> bytes:
            got = b""
            while expected not in got:
                ev = c.next_event()
                assert isinstance(ev, h11.Data), (ev, got)
                got += ev.data
            return got

        assert read_until(Origin.STREAM_START) == Origin.STREAM_START
        # the handler subscribed the held connection; only then publish
        pp.wait_log("pushpin-handler.log",
                    f"subscribe http://127.0.0.1:{pp.http_port}/stream channel=test")

        # 1. the pushpin-publish CLI (HTTP publish endpoint)
        if PUSHPIN_PUBLISH is not None:
            out = pp.publish_cli("test", "hello")
            assert "Published" in out, out
        else:
            pp.publish_http([{"channel": "test",
                              "formats": {"http-stream": {"content": "hello\n"}}}])
        assert read_until(b"hello\n") == b"hello\n"
        pp.wait_log("pushpin-handler.log", "publish channel=test receivers=1")

        # 2. POST /publish/ with JSON, a second item on the same stream
        pp.publish_http([{"channel": "test",
                          "formats": {"http-stream": {"content": "world\n"}}}])
        assert read_until(b"world\n") == b"world\n"

        # 3. close the stream from the publisher: the chunked body ends (0-size chunk)
        pp.publish_http([{"channel": "test", "formats": {"http-stream": {"action": "close"}}}])
        ev = c.next_event()
        assert isinstance(ev, h11.EndOfMessage), ev
    finally:
        c.close()
    assert_condure_healthy(pp)


def test_websocket_over_http_echo(pushpin: Callable[..., Pushpin], origin: Origin) -> None:
    pp = pushpin(",over_http")
    assert_our_condure(pp)
    ws = WsClient(pp.http_port, "/ws")
    try:
        ev = ws.next_event()
        if isinstance(ev, RejectConnection):
            raise AssertionError(f"rejected: {ev!r}\n{pp.all_logs()}")
        assert isinstance(ev, AcceptConnection), ev
        opens = origin.seen("POST", "/ws")
        assert opens and decode_events(opens[0][3]) == [("OPEN", None)], opens
        assert opens[0][2].get("connection-id"), opens[0][2]

        for text in ("hello ws", "second message \u00e9"):
            ws.send(Message(data=text))
            assert ws.next_text() == text

        ws.send(CloseConnection(code=1000, reason="bye"))
        ev = ws.next_event()
        assert isinstance(ev, CloseConnection), ev
        assert ev.code == 1000, ev
        assert ws.next_event() is None  # condure closes the TCP connection
    finally:
        ws.close()
    events = [e for r in origin.seen("POST", "/ws") for e in decode_events(r[3])]
    assert ("TEXT", b"hello ws") in events, events
    assert any(e[0] == "CLOSE" for e in events), events
    log = pp.log("condure.log")
    assert f"request: GET ws://127.0.0.1:{pp.http_port}/ws" in log, log
    assert_condure_healthy(pp)


def test_websocket_over_http_publish(pushpin: Callable[..., Pushpin], origin: Origin) -> None:
    """A GRIP-subscribed WebSocket-over-HTTP connection receives a published ws-message."""
    pp = pushpin(",over_http")
    ws = WsClient(pp.http_port, "/ws-grip")
    try:
        ev = ws.next_event()
        assert isinstance(ev, AcceptConnection), (ev, pp.all_logs())
        pp.wait_log("pushpin-handler.log", "channel=wstest")
        pp.publish_http([{"channel": "wstest", "formats": {"ws-message": {"content": "pushed"}}}])
        assert ws.next_text() == "pushed"
        # the echo still works after the push
        ws.send(Message(data="after push"))
        assert ws.next_text() == "after push"
        ws.send(CloseConnection(code=1000))
        ev = ws.next_event()
        assert isinstance(ev, CloseConnection), ev
    finally:
        ws.close()
    assert_condure_healthy(pp)


# ---------------------------------------------------------------------------
# stopping Pushpin while a GRIP stream is held

# Pushpin's runner (src/runner/service.cpp, STOP_TIMEOUT 4000 ms) SIGTERMs every
# service at once and SIGKILLs, with "<name> taking too long, forcing quit",
# any service still running 4 s later.
RUNNER_STOP_TIMEOUT = 4.0


def hold_stream(pp: Pushpin) -> HttpClient:
    """A client whose GET /stream is held by Pushpin (subscribed to `test`)."""
    c = HttpClient(pp.http_port)
    c.get("/stream")
    resp = c.next_event()
    assert isinstance(resp, h11.Response) and resp.status_code == 200, resp
    got = b""
    while Origin.STREAM_START not in got:
        ev = c.next_event()
        assert isinstance(ev, h11.Data), ev
        got += ev.data
    pp.wait_log("pushpin-handler.log",
                f"subscribe http://127.0.0.1:{pp.http_port}/stream channel=test")
    return c


def stop_runner(pp: Pushpin) -> float:
    """SIGTERM the runner as an init script would; return how long it took to exit."""
    t0 = time.monotonic()
    pp.proc.send_signal(signal.SIGTERM)
    pp.proc.wait(STOP_TIMEOUT)
    return time.monotonic() - t0


def read_to_eof(c: HttpClient, timeout: float = IO_TIMEOUT) -> bytes:
    c.sock.settimeout(timeout)
    data = b""
    while chunk := c.sock.recv(65536):
        data += chunk
    return data


def test_runner_stop_with_held_stream(pushpin: Callable[..., Pushpin]) -> None:
    """Stopping Pushpin ends a held stream: pushpin-handler cancels the session,
    condure closes the client's connection and stops in time, the runner exits 0
    and no process of the stack is left."""
    pp = pushpin()
    c = hold_stream(pp)
    try:
        elapsed = stop_runner(pp)
        read_to_eof(c)  # closed (without the last chunk: the stream was cut)
    finally:
        c.close()
    assert pp.proc.returncode == 0, pp.all_logs()
    assert not session_members(pp.proc.pid), session_members(pp.proc.pid)
    assert "forcing quit" not in pp.log("runner.log"), (elapsed, pp.all_logs())
    assert "[condure] stopped" in pp.log("condure.log"), pp.log("condure.log")


def slow_request(pp: Pushpin, origin: Origin) -> HttpClient:
    """A client whose GET /slow has reached the origin, which has not answered yet."""
    c = HttpClient(pp.http_port)
    c.get("/slow")
    end = time.monotonic() + IO_TIMEOUT
    while not origin.seen("GET", "/slow"):
        assert time.monotonic() < end, pp.all_logs()
        time.sleep(0.05)
    return c


def test_runner_stop_with_request_in_flight(pushpin: Callable[..., Pushpin],
                                            origin: Origin) -> None:
    """Stopping Pushpin while the origin is still working on a response:
    pushpin-proxy cancels the session, condure closes the client's connection
    and stops well within the runner's 4 s."""
    pp = pushpin()
    c = slow_request(pp, origin)
    try:
        elapsed = stop_runner(pp)
        read_to_eof(c)
    finally:
        c.close()
        origin.release.set()
    assert pp.proc.returncode == 0, pp.all_logs()
    assert "forcing quit" not in pp.log("runner.log"), (elapsed, pp.all_logs())
    assert "[condure] stopped" in pp.log("condure.log"), pp.log("condure.log")
    assert elapsed < RUNNER_STOP_TIMEOUT, elapsed


def crash_proxy(pp: Pushpin, origin: Origin) -> tuple[HttpClient, float]:
    """SIGKILL pushpin-proxy (by the pid in its pid file, a child of our runner)
    while a request it owns is in flight; the runner then stops the whole stack
    (src/runner/app.cpp service_error). Returns the client and how long the
    runner took to exit after the crash."""
    c = slow_request(pp, origin)
    pid = int((pp.rundir / "pushpin-proxy.pid").read_text().strip())
    stat = proc_stat(pid)
    assert stat is not None and stat[1] == pp.proc.pid, (pid, stat)
    assert Path(proc_cmdline(pid)[0]).name == "pushpin-proxy", proc_cmdline(pid)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    pp.proc.wait(STOP_TIMEOUT)
    return c, time.monotonic() - t0


def test_proxy_crash_stops_stack(pushpin: Callable[..., Pushpin], origin: Origin) -> None:
    """When pushpin-proxy dies the runner stops everything: the client whose
    request the proxy owned is disconnected and no process is left."""
    pp = pushpin()
    c, _ = crash_proxy(pp, origin)
    try:
        read_to_eof(c)
    finally:
        c.close()
        origin.release.set()
    assert pp.proc.returncode == 1, pp.all_logs()  # the runner reports the failed service
    assert "proxy:" in pp.log("runner.log"), pp.log("runner.log")
    assert not session_members(pp.proc.pid), session_members(pp.proc.pid)


def test_condure_stops_within_runner_timeout_after_proxy_crash(
        pushpin: Callable[..., Pushpin], origin: Origin) -> None:
    """With pushpin-proxy gone, nobody will ever answer condure's session;
    on the runner's SIGTERM condure must still exit before the runner's 4 s
    are up (Pushpin passes no --shutdown-timeout)."""
    pp = pushpin()
    c, elapsed = crash_proxy(pp, origin)
    c.close()
    origin.release.set()
    runner_log = pp.log("runner.log")
    assert "condure taking too long, forcing quit" not in runner_log, (elapsed, pp.all_logs())
    assert "[condure] stopped" in pp.log("condure.log"), pp.log("condure.log")


# ---------------------------------------------------------------------------
# our condure in both roles: Pushpin's server and, instead of Zurl, the proxy's
# outgoing HTTP/WebSocket client (pushpin_both_roles, condure-pushpin)


def assert_both_roles(pp: Pushpin) -> int:
    """One process of our condure is the server and the client; no zurl anywhere."""
    pid = assert_our_condure(pp, both_roles=True)
    cmdline = proc_cmdline(pid)
    base = f"ipc://{pp.rundir}/pushpin-zurl"
    assert cmdline[-4:] == ["--zserver-stream", base, "--zserver-req", f"{base}-req"], cmdline
    others = sorted(Path(c[0]).name for p, c in pp.children().items() if p != pid)
    assert others == ["pushpin-handler", "pushpin-proxy"], pp.children()
    # no zurl in the runner's session (nor its pid file), nothing left of the wrapper
    session = session_members(pp.proc.pid)
    names = {p: proc_cmdline(p) for p in session}
    assert not [c for c in names.values() if any(Path(a).name == "zurl" for a in c[:2])], names
    assert not [c for c in names.values() if any("condure-pushpin" in a for a in c[:2])], names
    assert not (pp.rundir / "zurl.pid").exists()
    assert not pp.log("zurl.log")
    # the client-side sockets are condure's (bound, with the proxy connected to them)
    for name in CLIENT_PEERS:
        assert (pp.rundir / name).is_socket(), name
    return pid


def test_both_roles_no_zurl(pushpin_both_roles: Callable[..., Pushpin]) -> None:
    pp = pushpin_both_roles()
    assert_both_roles(pp)
    log = pp.log("condure.log")
    assert f"listening on 127.0.0.1:{pp.http_port}" in log, log
    assert f"zhttp client bind ipc://{pp.rundir}/pushpin-condure-out" in log, log
    assert_condure_healthy(pp)


def test_both_roles_plain_get(pushpin_both_roles: Callable[..., Pushpin],
                              origin: Origin) -> None:
    pp = pushpin_both_roles()
    assert_both_roles(pp)
    before = len(origin.seen("GET", "/plain"))
    status, headers, body = http_get(pp.http_port, "/plain")
    assert status == 200
    assert body == Origin.PLAIN_BODY
    hdrs = {k.lower(): v for k, v in headers}
    assert hdrs[b"x-origin"] == b"yes"
    assert len(origin.seen("GET", "/plain")) == before + 1
    # the origin was reached by our condure's client side (its request head)
    req_headers = origin.seen("GET", "/plain")[-1][2]
    assert req_headers.get("host") == f"127.0.0.1:{pp.http_port}", req_headers
    pp.wait_log("pushpin-proxy.log",
                f"GET http://127.0.0.1:{pp.http_port}/plain -> 127.0.0.1:{origin.port} code=200")
    # keep-alive on the client connection
    c = HttpClient(pp.http_port)
    try:
        for _ in range(2):
            c.get("/plain")
            resp = c.next_event()
            assert isinstance(resp, h11.Response) and resp.status_code == 200, resp
            body = b""
            while not isinstance(ev := c.next_event(), h11.EndOfMessage):
                assert isinstance(ev, h11.Data), ev
                body += ev.data
            assert body == Origin.PLAIN_BODY
            c.conn.start_next_cycle()
    finally:
        c.close()
    assert_condure_healthy(pp)


def test_both_roles_websocket_over_http_echo(pushpin_both_roles: Callable[..., Pushpin],
                                             origin: Origin) -> None:
    """WebSocket-over-HTTP: the proxy POSTs the events to the origin through our
    condure's client side."""
    pp = pushpin_both_roles(",over_http")
    assert_both_roles(pp)
    ws = WsClient(pp.http_port, "/ws")
    try:
        ev = ws.next_event()
        assert isinstance(ev, AcceptConnection), (ev, pp.all_logs())
        opens = origin.seen("POST", "/ws")
        assert opens and decode_events(opens[0][3]) == [("OPEN", None)], opens
        for text in ("hello ws", "second message \u00e9"):
            ws.send(Message(data=text))
            assert ws.next_text() == text
        ws.send(CloseConnection(code=1000, reason="bye"))
        ev = ws.next_event()
        assert isinstance(ev, CloseConnection), ev
        assert ev.code == 1000, ev
        assert ws.next_event() is None
    finally:
        ws.close()
    events = [e for r in origin.seen("POST", "/ws") for e in decode_events(r[3])]
    assert ("TEXT", b"hello ws") in events, events
    assert any(e[0] == "CLOSE" for e in events), events
    assert_condure_healthy(pp)


def test_both_roles_websocket_echo(pushpin_both_roles: Callable[..., Pushpin],
                                   origin: Origin) -> None:
    """A plain WebSocket route: Pushpin proxies the client's WebSocket to the
    origin's WebSocket server, our condure's client side being the origin-facing
    WebSocket client (as Zurl would be)."""
    pp = pushpin_both_roles()
    assert_both_roles(pp)
    ws = WsClient(pp.http_port, "/echo")
    try:
        ev = ws.next_event()
        assert isinstance(ev, AcceptConnection), (ev, pp.all_logs())
        hs = origin.seen("GET", "/echo")
        assert hs and hs[-1][2].get("upgrade", "").lower() == "websocket", hs
        # larger messages: test_both_roles_websocket_message_over_window
        for text in ("hello ws", "second message \u00e9", "y" * 6000):
            ws.send(Message(data=text))
            assert ws.next_text() == text
        ws.send(Message(data=b"\x00\x01binary"))
        ev = ws.next_event()
        assert isinstance(ev, Message) and ev.data == b"\x00\x01binary", ev
        ws.send(CloseConnection(code=1000, reason="bye"))
        ev = ws.next_event()
        assert isinstance(ev, CloseConnection), ev
        assert ev.code == 1000, ev
        assert ws.next_event() is None
    finally:
        ws.close()
    with origin.lock:
        got = list(origin.ws_messages)
    assert got == ["hello ws", "second message \u00e9", "y" * 6000, b"\x00\x01binary"], got
    assert_condure_healthy(pp)


# Pushpin 1.36's pushpin-proxy relays the next frame towards its client side
# only on in_readyRead / out_framesWritten (WsProxySession), so a `credit` that
# arrives while nothing is queued is never used: with condure's grant of
# --buffer-size (8192 from the runner) a larger message stalled for good
# (observed: 8184+8+8184 bytes of 20000 forwarded, credits 8184, 8, 8184 back,
# then only keep-alives). Zurl grants 200000, and so do we (D22).
def test_both_roles_websocket_message_over_window(
        pushpin_both_roles: Callable[..., Pushpin], origin: Origin) -> None:
    """A client->origin message far over --buffer-size passes (D22), as with Zurl."""
    pp = pushpin_both_roles()
    ws = WsClient(pp.http_port, "/echo")
    try:
        ev = ws.next_event()
        assert isinstance(ev, AcceptConnection), (ev, pp.all_logs())
        # three in a row: more than the window in all, granted back as written
        for i in range(3):
            text = chr(ord("x") + i) * 100000
            ws.send(Message(data=text))
            assert ws.next_text(timeout=5.0) == text
    finally:
        ws.close()
    with origin.lock:
        assert [len(m) for m in origin.ws_messages] == [100000] * 3


def test_websocket_echo_zurl(pushpin: Callable[..., Pushpin], origin: Origin) -> None:
    """Reference for test_both_roles_websocket_echo: the same plain WebSocket
    route with Zurl as the proxy's client."""
    pp = pushpin()
    ws = WsClient(pp.http_port, "/echo")
    try:
        ev = ws.next_event()
        assert isinstance(ev, AcceptConnection), (ev, pp.all_logs())
        for text in ("hello ws", "second message \u00e9", "x" * 20000):
            ws.send(Message(data=text))
            assert ws.next_text() == text
        ws.send(CloseConnection(code=1000, reason="bye"))
        ev = ws.next_event()
        assert isinstance(ev, CloseConnection), ev
    finally:
        ws.close()
