"""--debug-socket (pushpin-connmgr's, connmgr.md 5.1 and scenario 28), end to end.

Every log level goes to the socket's clients while one is connected, in
stdout's format, whatever --log-level says; stdout keeps its level. At most
10 clients; a client that does not read loses lines (`** dropped N logs`)
and never slows requests. With --workers N the parent owns the socket and
the workers' lines reach it too.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import socket
import stat
import time

import pytest

from conftest import get_free_port, run_cli
from rawhttp import Client, get

LOG_LINE = re.compile(
    r"\[(ERR|WARN|INFO|DEBUG|TRACE)\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[condure(::\w+)*\] .+")
CONNECTED = "[condure::debug] debug log client connected"


class DebugClient:
    """A Unix-socket client of --debug-socket that collects the lines it reads."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.buf = b""
        self.lines: list[str] = []

    def read_until(self, text: str, timeout: float = 5.0, count: int = 1) -> list[str]:
        """Read until `count` lines contain `text`; return every line read so far."""
        end = time.monotonic() + timeout
        found = sum(text in line for line in self.lines)
        while found < count:
            left = end - time.monotonic()
            assert left > 0, f"{text!r} x{count} not received:\n" + "\n".join(self.lines)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            assert chunk, "closed by condure:\n" + "\n".join(self.lines)
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\n")
            new = [line.decode() for line in done]
            found += sum(text in line for line in new)
            self.lines += new
        return self.lines

    def drain(self, quiet: float = 0.5, timeout: float = 10.0) -> None:
        """Read until nothing has come for `quiet` seconds."""
        end = time.monotonic() + timeout
        self.sock.settimeout(quiet)
        while time.monotonic() < end:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return
            assert chunk, "closed by condure"
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\n")
            self.lines += [line.decode() for line in done]
        raise AssertionError("still sending")

    def connected(self) -> DebugClient:
        """Wait for the line condure sends once it streams every level to us."""
        self.read_until(CONNECTED)
        return self

    def close(self) -> None:
        self.sock.close()


def request(port: int, h, path: str = "/x") -> None:
    with Client(port) as client:
        client.send(get(path))
        h.respond(h.recv_request(), 200, b"OK", [], b"hello")
        assert client.read_response().body == b"hello"


def test_scenario_28_every_level_to_the_socket_none_on_stdout(condure, handler_factory,
                                                              zdir) -> None:
    path = f"{zdir}/d.sock"
    c = condure("--debug-socket", path, log_level=0)
    h = handler_factory(c.base)
    d = DebugClient(path).connected()
    request(c.port, h, "/x")
    lines = d.read_until("[condure::zhttpsocket] IN stream")
    assert any(re.fullmatch(r"\[DEBUG\] \S+ \S+ \[condure::connection\] conn \S+: "
                            r"request: GET http://example\.com/x", line) for line in lines), lines
    assert any(line.startswith("[TRACE] ") and "OUT stream {" in line for line in lines), lines
    assert all(LOG_LINE.fullmatch(line) for line in lines), lines
    assert c.log_text() == ""  # --log-level 0: not a line on stdout
    d.close()


def test_stdout_keeps_its_level_while_a_client_is_connected(condure, handler_factory,
                                                            zdir) -> None:
    path = f"{zdir}/d.sock"
    c = condure("--debug-socket", path, log_level=2)
    h = handler_factory(c.base)
    d = DebugClient(path).connected()
    request(c.port, h)
    d.read_until("[TRACE]")
    text = c.log_text()
    assert "debug socket on " + path in text
    assert "[DEBUG]" not in text and "[TRACE]" not in text, text
    d.close()


def test_lines_stop_when_the_last_client_leaves_and_come_back(condure, handler_factory,
                                                              zdir) -> None:
    path = f"{zdir}/d.sock"
    c = condure("--debug-socket", path, log_level=0)
    h = handler_factory(c.base)
    first, second = DebugClient(path).connected(), DebugClient(path).connected()
    request(c.port, h, "/both")
    for d in (first, second):
        d.read_until("GET http://example.com/both")
    first.close()
    request(c.port, h, "/one")
    second.read_until("GET http://example.com/one")
    second.close()
    time.sleep(0.3)  # condure sees both gone
    request(c.port, h, "/none")  # logged nowhere
    third = DebugClient(path).connected()
    request(c.port, h, "/again")
    lines = third.read_until("GET http://example.com/again")
    assert not any("/none" in line for line in lines), lines
    third.close()


def test_eleventh_client_is_closed_with_a_warning(condure, zdir) -> None:
    path = f"{zdir}/d.sock"
    c = condure("--debug-socket", path, log_level=1)
    clients = [DebugClient(path).connected() for _ in range(10)]
    extra = DebugClient(path)
    assert extra.sock.recv(100) == b""  # accepted, then closed at once
    c.wait_log("[WARN]")
    warns = [line for line in c.log_text().splitlines() if line.startswith("[WARN]")]
    assert len(warns) == 1 and warns[0].endswith(
        "[condure::debug] too many debug log connections, rejecting"), warns
    clients.pop().close()
    time.sleep(0.3)
    clients.append(DebugClient(path).connected())  # a place is free again
    for d in clients:
        d.close()
    extra.close()


@pytest.mark.parametrize("params,mode,user,group", [
    (",mode=640", 0o640, "root", "root"),
    (",mode=600,user=nobody,group=nogroup", 0o600, "nobody", "nogroup"),
])
def test_mode_user_group(condure, zdir, params: str, mode: int, user: str, group: str) -> None:
    path = f"{zdir}/d.sock"
    with open(path, "w"):  # a file in the way is removed first
        pass
    condure("--debug-socket", path + params)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == mode
    assert st.st_uid == pwd.getpwnam(user).pw_uid
    assert st.st_gid == grp.getgrnam(group).gr_gid


@pytest.mark.parametrize("spec,message", [
    ("D/d.sock,foo=1", "failed to parse debug-socket: invalid param: foo"),
    ("D/d.sock,local", "failed to parse debug-socket: invalid param: local"),
    ("D/d.sock,mode=9", "failed to parse debug-socket: invalid mode 9: invalid digit found in string"),
    (",mode=600", "failed to parse debug-socket: empty path"),
    ("D/missing/d.sock", "debug socket: failed to bind D/missing/d.sock: No such file or directory"),
    ("D/d.sock,user=no-such-user-x",
     "debug socket: failed to set owner of D/d.sock: getpwnam(): name not found: 'no-such-user-x'"),
])
@pytest.mark.parametrize("workers", [1, 2])
def test_bad_spec_or_bind_error_exits_1(zdir, spec: str, message: str, workers: int) -> None:
    r = run_cli("--listen", f"127.0.0.1:{get_free_port()}", "--zclient-stream",
                f"ipc://{zdir}/c", "--workers", str(workers), "--debug-socket",
                spec.replace("D/", zdir + "/"), timeout=8)
    assert r.returncode == 1, r
    errors = [line for line in r.stdout.splitlines() if line.startswith("[ERR]")]
    assert len(errors) == 1 and errors[0].endswith(message.replace("D/", zdir + "/")), r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    assert "worker 0 started" not in r.stdout  # refused before any worker


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.deadline(60)
def test_stalled_client_never_blocks_requests_and_loses_lines(condure, handler_factory,
                                                              zdir) -> None:
    """A client that stops reading: requests go on at full speed, condure's
    memory stays bounded (its queue: 2000 lines), and once it reads again it
    is told how many lines it missed, before the next line."""
    path = f"{zdir}/d.sock"
    c = condure("--debug-socket", path, log_level=0)
    h = handler_factory(c.base)
    stalled = DebugClient(path).connected()
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request(c.port, h)
    rss = _rss(c.pid)
    slowest = 0.0
    with Client(c.port) as client:
        for i in range(1500):  # ~6 lines each: far more than the queue and the socket buffer
            start = time.monotonic()
            client.send(get(f"/{i}"))
            h.respond(h.recv_request(), 200, b"OK", [], b"hello")
            assert client.read_response().body == b"hello"
            slowest = max(slowest, time.monotonic() - start)
    assert slowest < 1.0, slowest
    assert _rss(c.pid) - rss < 30_000_000
    stalled.drain()  # what was queued (and the lines of the client's close, if any)
    request(c.port, h, "/after")  # more lines: the count comes before the first of them
    lines = stalled.read_until("GET http://example.com/after")
    [at] = [i for i, line in enumerate(lines) if line.startswith("** dropped")]
    assert re.fullmatch(r"\*\* dropped \d+ logs", lines[at]), lines[at]
    assert int(lines[at].split()[2]) > 1000
    assert LOG_LINE.fullmatch(lines[at + 1]), lines[at:at + 2]
    stalled.close()


@pytest.mark.deadline(60)
def test_workers_lines_reach_the_parents_socket(condure, handler_factory, zdir) -> None:
    path = f"{zdir}/d.sock"
    c = condure("--workers", "2", "--debug-socket", path, log_level=0)
    h = handler_factory(c.base, wait=False)
    subscribed: set[bytes] = set()
    while len(subscribed) < 2:  # both workers' subscriptions, through the parent
        assert h.pub.poll(5000), subscribed
        subscribed.add(h.pub.recv())
    d = DebugClient(path).connected()
    d.read_until("lines follow", count=2)  # each worker has started sending
    assert {m for line in d.lines for m in re.findall(r"worker (\d) lines follow", line)} \
        == {"0", "1"}
    seen: set[str] = set()
    for i in range(40):  # new connections: the kernel spreads them over the workers
        with Client(c.port) as client:
            client.send(get(f"/w{i}"))
            req = h.recv_request()
            h.send({b"id": req[b"id"], b"code": 200, b"reason": b"OK", b"body": b"hello"},
                   instance=req[b"from"])  # the worker's own `from`
            assert client.read_response().body == b"hello"
        lines = d.read_until(f"GET http://example.com/w{i}")
        seen = {m for line in lines for m in re.findall(r"conn (\d)-\d+-\d+: request", line)}
        if seen == {"0", "1"}:
            break
    assert seen == {"0", "1"}, d.lines
    assert all(LOG_LINE.fullmatch(line) for line in d.lines), d.lines
    assert c.log_text() == ""
    d.close()
