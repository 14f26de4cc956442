"""Slow clients (issue 12, item 1): a request head must be whole within the
stream timeout, whatever trickles in; body and response phases keep the
inactivity timeout.

condure refreshes its stream timer when a request head is received, not for
each byte of an incomplete head (shared/zhttp/server.md 4.3): 1.9.1 closed a
client sending one header byte every 0.5 s at 3.0 s with --stream-timeout 3.
Before the fix ours re-armed the timer on every byte, so a slot could be
held for as long as a client kept trickling (slowloris).
"""
from __future__ import annotations

import selectors
import socket
import time

import pytest

from rawhttp import Client, get
from zhttp_handler import Handler

TIMEOUT = 3  # --stream-timeout for these tests
SLOW_CLIENTS = 100
TRICKLE = 0.5  # seconds between two bytes of a slow head
CT = (b"Content-Type", b"text/plain")

SLOW_HEADS = [
    get("/slow", extra=b"X-Padding: " + b"p" * 200 + b"\r\n"),
    (b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     + b"X-Padding: " + b"p" * 200 + b"\r\n\r\n"),
]


class Trickler:
    """Many clients, each sending its request head one byte per TRICKLE."""

    def __init__(self, port: int, count: int) -> None:
        self.sel = selectors.DefaultSelector()
        self.sent: dict[socket.socket, int] = {}
        self.heads: dict[socket.socket, bytes] = {}
        self.closed_at: dict[socket.socket, float] = {}
        self.received: dict[socket.socket, bytes] = {}
        self.start = time.monotonic()
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.sent[s] = 0
            self.heads[s] = SLOW_HEADS[i % len(SLOW_HEADS)]
            self.received[s] = b""

    @property
    def open(self) -> list[socket.socket]:
        return [s for s in self.sent if s not in self.closed_at]

    def step(self) -> None:
        """Send the next byte on every open socket, then watch for closes
        until the next step is due."""
        for s in self.open:
            n = self.sent[s]
            try:
                s.send(self.heads[s][n:n + 1])
                self.sent[s] = n + 1
            except OSError:
                self._closed(s)
        end = time.monotonic() + TRICKLE
        while (left := end - time.monotonic()) > 0:
            for key, _ in self.sel.select(left):
                self._read(key.fileobj)  # type: ignore[arg-type]

    def _read(self, s: socket.socket) -> None:
        try:
            data = s.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.received[s] += data
        else:
            self._closed(s)

    def _closed(self, s: socket.socket) -> None:
        if s not in self.closed_at:
            self.closed_at[s] = time.monotonic() - self.start
            self.sel.unregister(s)

    def close(self) -> None:
        for s in self.sent:
            s.close()
        self.sel.close()


@pytest.mark.deadline(40)
@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_trickled_heads_are_closed_at_the_stream_timeout(condure, handler_factory,
                                                         parser: str) -> None:
    c = condure("--stream-timeout", str(TIMEOUT), "--http-parser", parser)
    h: Handler = handler_factory(c.base)
    slow = Trickler(c.port, SLOW_CLIENTS)
    try:
        served_at = None
        while slow.open and time.monotonic() - slow.start < 3 * TIMEOUT:
            slow.step()
            if served_at is None and time.monotonic() - slow.start > 1:
                # a normal client meanwhile: its request reaches the handler and
                # its response comes back while the slow heads are trickling
                with Client(c.port) as normal:
                    normal.send(get("/normal"))
                    req = h.recv_request()
                    assert req[b"uri"] == b"http://example.com/normal"
                    h.respond(req, 200, b"OK", [CT], b"served\n")
                    assert normal.read_response().body == b"served\n"
                served_at = time.monotonic() - slow.start
        assert served_at is not None and served_at < TIMEOUT
        assert not slow.open, f"{len(slow.open)} slow clients still open"
        times = sorted(slow.closed_at.values())
        # every head was still incomplete (each byte came well within the
        # timeout), so only the fixed deadline from the connection's start can
        # have closed them: no earlier, and not much later
        assert all(slow.sent[s] < len(slow.heads[s]) for s in slow.sent)
        assert TIMEOUT - 0.2 <= times[0] and times[-1] <= TIMEOUT + 1.5, times
        # closed without a response, as condure does for an incomplete head
        assert not any(slow.received.values())
        h.expect_nothing(0.3)
    finally:
        slow.close()
    assert c.alive()


@pytest.mark.deadline(30)
def test_next_head_on_a_keepalive_connection_has_the_same_deadline(condure, handler_factory) -> None:
    """The deadline of a later head counts from the last response byte written."""
    c = condure("--stream-timeout", str(TIMEOUT))
    h: Handler = handler_factory(c.base)
    with Client(c.port) as client:
        client.send(get("/first"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"first\n")
        client.read_response()
        answered = time.monotonic()
        head = get("/second")
        closed = None
        for i in range(len(head) - 1):  # never the last byte
            client.send(head[i:i + 1])
            if client.closed_within(TRICKLE):
                closed = time.monotonic() - answered
                break
        assert closed is not None and TIMEOUT - 0.2 <= closed <= TIMEOUT + 1.5, closed
    h.expect_nothing(0.3)


@pytest.mark.deadline(30)
def test_a_trickled_body_keeps_the_inactivity_timeout(condure, handler_factory) -> None:
    """Body bytes are activity: a body sent one byte per 0.8 s with a 2 s
    timeout arrives whole, long after the timeout would have fired on a head."""
    c = condure("--stream-timeout", "2")
    h: Handler = handler_factory(c.base)
    body = b"0123456789"
    with Client(c.port) as client:
        client.send(b"POST /upload HTTP/1.1\r\nHost: example.com\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body))
        req = h.recv_request()
        h.credit(req, 1000)
        for i in range(len(body)):  # 8 s in all
            client.send(body[i:i + 1])
            time.sleep(0.8)
        got = b""
        while len(got) < len(body):
            p = h.recv()
            assert p[b"id"] == req[b"id"] and b"type" not in p, p  # no cancel
            got += p.get(b"body", b"")
        assert got == body
        h.respond(req, 200, b"OK", [CT], b"thanks\n")
        assert client.read_response().body == b"thanks\n"
