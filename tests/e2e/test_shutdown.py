"""Graceful shutdown (deviation D12) and signals."""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import condure_command, get_free_port
from zhttp_handler import Handler

WS_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def _client(port: int, data: bytes) -> socket.socket:
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(data)
    return c


def _read_all(c: socket.socket) -> bytes:
    out = b""
    while chunk := c.recv(65536):
        out += chunk
    return out


def test_response_in_flight_finishes_then_exit_0(condure):
    cd = condure("--shutdown-timeout", "5")
    h = Handler(cd.base)
    c = _client(cd.port, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    req = h.recv_request()
    h.respond(req, 200, "OK", [("Content-Type", "text/plain")], more=True)
    time.sleep(0.2)
    cd.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # new connections are no longer accepted (or are closed at once)
    try:
        late = socket.create_connection(("127.0.0.1", cd.port), timeout=1)
        late.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        late.settimeout(2)
        assert late.recv(100) == b""
        late.close()
    except OSError:
        pass
    h.body(req, "the end\n")
    data = _read_all(c)
    assert data.endswith(b"8\r\nthe end\n\r\n0\r\n\r\n")
    assert cd.proc.wait(10) == 0
    h.close()


def test_websocket_is_closed_with_1001_and_handler_cancelled(condure):
    cd = condure()
    h = Handler(cd.base)
    c = _client(cd.port, WS_UPGRADE)
    req = h.recv_request()
    h.respond(req, 101, "Switching Protocols")
    assert c.recv(4096).startswith(b"HTTP/1.1 101 ")
    cd.proc.send_signal(signal.SIGTERM)
    frame = c.recv(4096)
    assert frame[0] == 0x88 and struct.unpack("!H", frame[2:4])[0] == 1001
    assert h.recv_type(b"cancel")
    assert cd.proc.wait(10) == 0
    h.close()


def test_unanswered_request_is_cancelled_after_the_grace(condure):
    cd = condure("--shutdown-timeout", "1")
    h = Handler(cd.base)
    c = _client(cd.port, b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
    req = h.recv_request()
    h.packet(req, "keep-alive")  # the handler's address is now known
    time.sleep(0.2)
    start = time.monotonic()
    cd.proc.send_signal(signal.SIGTERM)
    assert h.recv_type(b"cancel", timeout=5)
    assert _read_all(c) == b""
    assert cd.proc.wait(10) == 0
    assert 0.8 < time.monotonic() - start < 5
    h.close()


def test_idle_keepalive_connection_closes_at_once(condure):
    cd = condure()
    h = Handler(cd.base)
    c = _client(cd.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    h.respond(h.recv_request(), 200, "OK", [], "hi")
    assert c.recv(4096).endswith(b"hi")
    start = time.monotonic()
    cd.proc.send_signal(signal.SIGTERM)
    assert _read_all(c) == b""
    assert cd.proc.wait(10) == 0
    assert time.monotonic() - start < 3
    h.close()


def test_second_signal_exits_1_at_once(condure):
    cd = condure("--shutdown-timeout", "30")
    h = Handler(cd.base)
    c = _client(cd.port, b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
    h.recv_request()
    cd.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    cd.proc.send_signal(signal.SIGINT)
    assert cd.proc.wait(5) == 1
    c.close()
    h.close()


def test_sighup_is_logged_and_ignored(condure):
    cd = condure()
    cd.proc.send_signal(signal.SIGHUP)
    cd.wait_log("SIGHUP ignored")
    assert cd.alive()
    c = socket.create_connection(("127.0.0.1", cd.port), timeout=2)
    c.close()


def test_a_slot_freed_during_shutdown_does_not_reopen_the_listener(condure):
    """At --stream-maxconn the listener stops accepting (clients wait in the
    backlog); when a connection ends during shutdown, accepting must stay off."""
    cd = condure("--stream-maxconn", "1", "--shutdown-timeout", "5")
    h = Handler(cd.base)
    c = _client(cd.port, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    req = h.recv_request()
    late = _client(cd.port, b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n")  # waits in the backlog
    time.sleep(0.3)
    cd.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    h.respond(req, 200, "OK", body="done\n")  # frees the only slot, mid-shutdown
    assert _read_all(c).endswith(b"done\n")
    assert not h.pull.poll(1000), "the backlogged client was accepted during shutdown"
    assert cd.proc.wait(10) == 0
    try:
        assert _read_all(late) == b""  # never answered: closed or reset at exit
    except ConnectionResetError:
        pass
    h.close()


# ---------------------------------------------------------------------------
# stop accepting means stop accepting (issue 12, item 6): the listening sockets
# are closed at the signal, so a client connecting during the drain is refused
# at once, as by condure, instead of being queued by the kernel, never served
# and reset at exit


def _workers_handler(handler_factory, base: str, workers: int) -> Handler:
    """A Handler (closed at teardown, cancelling what a failed test left open)
    for condure with --workers N: each worker subscribes with its own `from`
    (condure-0, ...), through the parent's proxy."""
    if workers == 1:
        return handler_factory(base)
    h = handler_factory(base, wait=False)
    subscriptions = set()
    while len(subscriptions) < workers:
        assert h.pub.poll(5000), f"subscriptions so far: {subscriptions}"
        subscriptions.add(h.pub.recv())
    return h


def _hold_a_response(port: int, h: Handler) -> tuple[socket.socket, dict]:
    """A request whose response has started and that the handler holds open."""
    c = _client(port, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    req = h.recv_request()
    h.instance = req[b"from"]  # the worker that has it (condure-N), or condure
    h.respond(req, 200, "OK", [("Content-Type", "text/plain")], more=True)
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(4096)
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    return c, req


def _wait_stopping(log_text, count: int, timeout: float = 5.0) -> None:
    """Until `count` processes serving clients (a worker each) logged "stopping..."."""
    end = time.monotonic() + timeout
    while log_text().count("[condure] stopping...") < count:
        assert time.monotonic() < end, log_text()
        time.sleep(0.02)
    time.sleep(0.2)  # the listeners close right after that line


def _assert_refused(connect) -> None:
    try:
        s = connect()
    except ConnectionRefusedError:
        return
    s.close()
    raise AssertionError("a new client was accepted during the drain")


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_new_connections_are_refused_during_the_drain(condure, handler_factory, zdir: str,
                                                     workers: int):
    path = f"{zdir}/s.sock"
    cd = condure("--shutdown-timeout", "5", "--listen", f"{path},local",
                 "--workers", str(workers))
    if workers > 1:
        cd.wait_log("[condure::workers] started")  # every worker, not only the first, listens
    h = _workers_handler(handler_factory, cd.base, workers)
    c, req = _hold_a_response(cd.port, h)
    cd.proc.send_signal(signal.SIGTERM)
    _wait_stopping(cd.log_text, workers)
    _assert_refused(lambda: socket.create_connection(("127.0.0.1", cd.port), timeout=2))

    def unix_connect() -> socket.socket:
        u = socket.socket(socket.AF_UNIX)
        try:
            u.connect(path)  # the file is still there: refused, not "no such file"
        except BaseException:
            u.close()
            raise
        return u

    _assert_refused(unix_connect)
    h.body(req, "the end\n")  # the response in flight still completes
    assert _read_all(c).endswith(b"8\r\nthe end\n\r\n0\r\n\r\n")
    assert cd.proc.wait(10) == 0


def test_signal_to_the_process_group_drains_the_workers(processes, handler_factory, zdir: str,
                                                       tmp_path):
    """Ctrl-C in a terminal or systemd signal every process of the group: a
    worker then gets the signal twice (directly, and from the parent), which
    must not count as the operator's second signal (exit 1 at once)."""
    port = get_free_port()
    base = f"ipc://{zdir}/client"
    log_path = tmp_path / "condure.log"
    with open(log_path, "wb") as log_file:
        # a process group of its own (`processes`): the one the test signals
        proc = processes(condure_command("--listen", f"127.0.0.1:{port}", "--zclient-stream",
                                         base, "--workers", "2", "--shutdown-timeout", "5"),
                         stdout=log_file, stderr=subprocess.STDOUT)
    end = time.monotonic() + 10
    while "[condure::workers] started" not in log_path.read_text():
        assert proc.poll() is None and time.monotonic() < end, log_path.read_text()
        time.sleep(0.05)
    h = _workers_handler(handler_factory, base, 2)
    c, req = _hold_a_response(port, h)
    os.killpg(proc.pid, signal.SIGINT)
    _wait_stopping(log_path.read_text, 2)
    h.body(req, "the end\n")
    assert _read_all(c).endswith(b"8\r\nthe end\n\r\n0\r\n\r\n")
    assert proc.wait(10) == 0, log_path.read_text()
