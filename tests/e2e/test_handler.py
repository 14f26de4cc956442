"""condure.handler (issue 18) end to end: handler processes on the library
(tests/handler_apps.py) next to a real condure, ours (`python -m condure`)
and the Rust condure 1.9.1 of the Debian package (`/usr/bin/condure`), with
real clients on 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import websocket

from conftest import REPO_ROOT
from rawhttp import Client, get

APPS = str(REPO_ROOT / "tests" / "handler_apps.py")


class App:
    """A handler_apps.py process; `events()` are its EVENT lines."""

    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[str]:
        return [line[6:] for line in self.text().splitlines() if line.startswith("EVENT ")]

    def wait_event(self, text: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not any(text in e for e in self.events()):
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < end, f"{text!r} not seen:\n{self.text()}"
            time.sleep(0.05)


@pytest.fixture
def apps(processes, tmp_path: Path) -> Callable[..., App]:
    count = [0]

    def start(*argv: str, ready: bool = True) -> App:
        count[0] += 1
        log_path = tmp_path / f"app{count[0]}.log"
        with open(log_path, "wb") as out:
            proc = processes([sys.executable, APPS, *argv], stdout=out, stderr=subprocess.STDOUT)
        app = App(proc, log_path)
        if ready:
            app.wait_event("ready")
        return app
    return start


def post(path: str, body: bytes) -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), len(body)) + body)


def test_hello_persistent(target, apps) -> None:
    t = target()
    apps("general", t.base)
    with Client(t.port) as c:
        for _ in range(3):  # the connection stays open between requests
            c.send(get("/", host=b"localhost"))
            r = c.read_response()
            assert r.raw == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 12\r\n\r\nhello world\n")


def test_request_fields(target, apps) -> None:
    t = target()
    apps("general", t.base)
    with Client(t.port) as c:
        c.send(get("/env?q=1", host=b"example.org:99", extra=b"X-Test: yes\r\n"))
        assert c.read_response().body == b"GET http://example.org:99/env?q=1 127.0.0.1 yes"


@pytest.mark.deadline(60)
def test_large_body_under_credits(target, apps) -> None:
    """3 MB up: far more than the window, so it only arrives as the
    application reads and grants credits back; the connection persists."""
    t = target()
    app = apps("general", t.base)
    body = os.urandom(3_000_000)
    with Client(t.port, timeout=20) as c:
        c.send(post("/echo", body))
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
        c.send(get("/", host=b"localhost"))  # still persistent
        assert c.read_response().body == b"hello world\n"
    assert "body 3000000" in app.events()


def test_streamed_response_within_credits(target, apps) -> None:
    """200 writes of 5000 bytes: the handler may only send what condure
    granted (8192 at first), so most writes wait for `credit` packets; a
    handler that overran them would have the connection cut (server.md 4.4)."""
    t = target()
    apps("general", t.base)
    with Client(t.port, timeout=20) as c:
        c.send(get("/stream?200&5000", host=b"localhost"))
        r = c.read_response()
        assert r.status == 200 and r.header(b"Transfer-Encoding") == b"chunked"
        assert r.body == b"".join(bytes([65 + i % 26]) * 5000 for i in range(200))


@pytest.mark.deadline(60)
def test_slow_client(target, apps) -> None:
    """A client that reads 600 KB in small sips gets every byte, in order: the
    handler waits for condure's credits instead of overrunning it."""
    t = target()
    apps("general", t.base)
    with socket.create_connection(("127.0.0.1", t.port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.sendall(get("/stream?60&10000", host=b"localhost"))
        want = b"".join(bytes([65 + i % 26]) * 10000 for i in range(60))
        got = bytearray()
        pauses = 0
        while not got.endswith(b"0\r\n\r\n"):
            data = s.recv(65536)
            assert data, "closed early"
            got += data
            if pauses < 20:  # slow at first: the handler must wait meanwhile
                pauses += 1
                time.sleep(0.05)
        head, _, chunked = bytes(got).partition(b"\r\n\r\n")
        body = bytearray()
        while True:
            size_line, _, rest = chunked.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body += rest[:size]
            chunked = rest[size + 2:]
        assert bytes(body) == want


def test_cancel_reaches_the_request_greenlet(target, apps) -> None:
    t = target()
    app = apps("general", t.base)
    c = Client(t.port)
    c.send(get("/slow", host=b"localhost"))
    r = c.read_head()
    assert r.status == 200
    c.read_chunk()  # "first\n": the session is live
    c.close()  # client gone: condure sends cancel
    app.wait_event("cancelled")


def test_websocket_echo(target, apps) -> None:
    t = target()
    app = apps("general", t.base)
    ws = websocket.create_connection(f"ws://127.0.0.1:{t.port}/chat", timeout=10,
                                     subprotocols=["chat", "other"])
    try:
        assert ws.getsubprotocol() == "chat"
        ws.send("hello")
        assert ws.recv() == "hello"
        big = os.urandom(100_000)  # over both windows: credits both ways
        ws.send_binary(big)
        assert ws.recv() == big
        # a fragmented message comes back whole (the library puts it together)
        ws.send_frame(websocket.ABNF.create_frame("abc", websocket.ABNF.OPCODE_TEXT, fin=0))
        ws.send_frame(websocket.ABNF.create_frame("déf".encode(), websocket.ABNF.OPCODE_CONT, fin=1))
        assert ws.recv() == "abcdéf"
        ws.ping(b"pp")  # answered by the library
        op, frame = ws.recv_data_frame(control_frame=True)
        assert op == websocket.ABNF.OPCODE_PONG and frame.data == b"pp"
        ws.send("close-me")  # the handler closes with 4001
        op, frame = ws.recv_data_frame(control_frame=True)
        assert op == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 4001 and frame.data[2:] == b"bye"
    finally:
        ws.close()
    app.wait_event("closed by handler code=")  # the client's answer arrived


def test_websocket_client_close(target, apps) -> None:
    t = target()
    app = apps("general", t.base)
    ws = websocket.create_connection(f"ws://127.0.0.1:{t.port}/x", timeout=10)
    ws.send("one")
    assert ws.recv() == "one"
    ws.close(status=4002, reason=b"done")
    app.wait_event("ws closed code=4002 reason=done")


def test_websocket_close_reaches_a_sender(target, apps) -> None:
    """An application that only sends learns of the client's close from its next send."""
    t = target()
    app = apps("general", t.base)
    ws = websocket.create_connection(f"ws://127.0.0.1:{t.port}/push", timeout=10)
    assert ws.recv() == "tick"
    ws.close(status=4003)
    app.wait_event("push closed code=4003")


def test_websocket_reject(target, apps) -> None:
    t = target()
    apps("general", t.base)
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(f"ws://127.0.0.1:{t.port}/reject", timeout=10)
    assert e.value.status_code == 403


def test_handoff_http_between_processes(target, apps, zdir: str) -> None:
    """Process A starts the response and hands the session off; process B
    adopts it and finishes the response on the same client connection."""
    t = target()
    ep = f"ipc://{zdir}/handoff"
    b = apps("handoff-to", t.base, "--handoff", ep)
    a = apps("handoff-from", t.base, "--handoff", ep)
    with Client(t.port, timeout=10) as c:
        c.send(get("/", host=b"localhost"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"from A\nfrom B\nthe end\n"
    rid = [e for e in a.events() if e.startswith("handed off")][0].split()[-1]
    b.wait_event(f"adopted {rid}")


def test_handoff_websocket_between_processes(target, apps, zdir: str) -> None:
    t = target()
    ep = f"ipc://{zdir}/handoff"
    b = apps("handoff-to", t.base, "--handoff", ep)
    apps("handoff-from", t.base, "--handoff", ep)
    ws = websocket.create_connection(f"ws://127.0.0.1:{t.port}/ws", timeout=10)
    try:
        ws.send("1")
        assert ws.recv() == "A got 1"
        for i in range(2, 5):  # now B's
            ws.send(str(i))
            assert ws.recv() == f"B got {i}"
        ws.close()
    finally:
        ws.shutdown()
    b.wait_event("ws done")


def test_req_mode(target_kind_req, apps) -> None:
    port, spec = target_kind_req
    apps("req", spec, ready=False)
    end = time.monotonic() + 10
    while True:  # the ROUTER connects in the background: retry until it has
        with Client(port, timeout=2) as c:
            c.send(post("/x", b"abc"))
            try:
                r = c.read_response()
                break
            except (socket.timeout, TimeoutError, AssertionError):
                assert time.monotonic() < end
    assert r.status == 200 and r.body == b"req POST 3\n"
    with Client(port, timeout=10) as c:
        for _ in range(2):
            c.send(post("/y", b"hello"))
            assert c.read_response().body == b"req POST 5\n"


def test_bind_topology(condure, apps, zdir: str) -> None:
    """--zclient-connect: the handler binds, condure connects."""
    base = f"ipc://{zdir}/bound"
    apps("general", base, "--bind", ready=False)
    end = time.monotonic() + 5
    while not Path(f"{zdir}/bound-in").exists():
        assert time.monotonic() < end
        time.sleep(0.05)
    c = condure("--zclient-connect", base=base)
    deadline = time.monotonic() + 10
    while True:
        with Client(c.port, timeout=3) as client:
            client.send(get("/", host=b"localhost"))
            try:
                assert client.read_response().body == b"hello world\n"
                break
            except (socket.timeout, TimeoutError):
                assert time.monotonic() < deadline


def test_concurrency_bound(condure, apps) -> None:
    """--concurrency 2: six requests at once, never more than two application
    greenlets running; all six are answered."""
    import threading
    c = condure()
    app = apps("general", c.base, "--concurrency", "2")
    bodies: list[bytes] = []

    def one() -> None:
        with Client(c.port, timeout=10) as client:
            client.send(get("/hold", host=b"localhost"))
            bodies.append(client.read_response().body)
    threads = [threading.Thread(target=one) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(15)
    assert bodies == [b"held"] * 6
    actives = [int(e.split()[1]) for e in app.events() if e.startswith("active ")]
    assert len(actives) == 6 and max(actives) == 2, actives
