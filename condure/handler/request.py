"""One request as the application sees it: its head, its body as a stream,
and the response (whole or streamed), all within condure's credits.

A `Request` lives in two greenlets: the socket readers of `Handler` hand it
condure's packets (`deliver`: checked, credits counted, the rest queued at
once, so that seq gaps, cancels and credits are seen even while the
application is busy), and the application's greenlet reads and writes it.
Every send happens without yielding, right after its seq is taken, so the
two never interleave a session's packets out of order.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Iterable, Iterator, Protocol

import tnetstring
from gevent.event import Event

from ..errors import CondureError
from ..zhttp import packet as zp
from .errors import Cancelled, SessionEnded, SessionLost
from .session import HandlerSession
from .websocket import WebSocket

log = logging.getLogger("condure.handler")

HeaderList = Iterable[tuple[str | bytes, str | bytes]]
HANDOFF_TIMEOUT = 10.0  # seconds to wait for condure's handoff-proceed


class Owner(Protocol):
    """What a request needs of its handler (`sockets.Handler`)."""

    identity: bytes

    def publish(self, addr: bytes, payload: bytes) -> None: ...

    def unregister(self, req: "Request") -> None: ...


def to_bytes(value: str | bytes | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return b"%d" % value
    return value.encode("latin-1")


def header_pairs(headers: HeaderList) -> list[list[bytes]]:
    return [[to_bytes(n), to_bytes(v)] for n, v in headers]


class Body:
    """The request body, read under credits: nothing comes from condure until
    the first read, and then only as much as the application has taken plus a
    window (backpressure from the application to its client)."""

    def __init__(self, req: "Request", ended: bool) -> None:
        self._req = req
        self._buf = bytearray()
        self._ended = ended  # the last body packet has arrived (or there is no body)
        self.received = 0  # body bytes condure sent so far

    @classmethod
    def whole(cls, data: bytes) -> "Body":
        """A body that has arrived whole (req mode)."""
        body = cls.__new__(cls)
        body._req = None  # type: ignore[assignment]  # never used: it has ended
        body._buf = bytearray(data)
        body._ended = True
        body.received = len(data)
        return body

    def _fill(self) -> bool:
        """Wait for the next body packet; False at the end of the body."""
        if self._ended:
            return False
        req = self._req
        grant = req.hs.first_grant()
        if grant:
            req.send(b"credit", [(b"credits", grant)])
        while True:
            pkt = req.take()
            if pkt.type != zp.DATA:
                log.debug("%s: %s packet while reading the body, ignored",
                          req.rid.decode(), pkt.type_name)
                continue
            self._buf += pkt.body
            self.received += len(pkt.body)
            if not pkt.more:
                self._ended = True
            return True

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        if data and not self._ended:
            grant = self._req.hs.consumed(len(data))
            if grant:
                self._req.send(b"credit", [(b"credits", grant)])
        return data

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all of the rest if negative); b"" at the end.
        What is collected counts as consumed at once, so a read larger than
        the window keeps the credits flowing."""
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            if not self._buf and not self._fill():
                break
            want = len(self._buf) if size is None or size < 0 else size - len(out)
            out += self._take(want)
        return bytes(out)

    def read1(self, size: int = -1) -> bytes:
        """What has arrived (waiting for one packet if nothing has)."""
        while not self._buf and self._fill():
            pass
        return self._take(len(self._buf) if size is None or size < 0 else size)

    def readline(self, size: int = -1) -> bytes:
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            if not self._buf and not self._fill():
                break
            nl = self._buf.find(b"\n")
            want = len(self._buf) if nl < 0 else nl + 1
            if size is not None and size >= 0:
                want = min(want, size - len(out))
            out += self._take(want)
            if nl >= 0 and out.endswith(b"\n"):
                break
        return bytes(out)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class Request:
    """One client request: `method`, `uri`, `headers`, `peer`, `body`; answer
    with `respond`, or `start` + `write`... + `end`; a WebSocket with
    `accept_websocket` or `reject`; pass it on with `handoff`."""

    def __init__(self, handler: Owner, pkt: zp.Packet, rid: bytes, now: float) -> None:
        method, uri, peer = zp.request_info(pkt)
        self.handler = handler
        self.hs = HandlerSession(rid, pkt.from_, pkt.credits, now)
        self.method = method.decode("latin-1")
        self.uri = uri.decode("latin-1")
        self.headers: list[tuple[bytes, bytes]] = pkt.headers
        self.peer: tuple[str, int] | None = (
            None if peer is None else (peer[0].decode("latin-1"), peer[1]))
        self.body = Body(self, not pkt.more)
        self.is_websocket = self.uri.startswith(("ws://", "wss://"))
        self.ended = Event()  # set once the session is over, for whatever reason
        self.failure: SessionEnded | None = None
        self.inbox: deque[zp.Packet] = deque()
        self._wake = Event()
        self._head: list[tuple[bytes, Any]] | None = None  # to go with the next packet
        self.started = False  # the response (or the 101) has begun
        self.finished = False  # our last packet has gone
        self._proceed = False  # handoff-proceed arrived

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} {self.hs!r}>"

    @property
    def rid(self) -> bytes:
        return self.hs.id

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.hs.addr, self.hs.id)

    def header(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        want = name.lower().encode("latin-1")
        for n, v in self.headers:
            if n.lower() == want:
                return v.decode("latin-1")
        return None

    @property
    def subprotocols(self) -> list[str]:
        """The WebSocket subprotocols the client offers, in its order."""
        return [p.strip() for n, v in self.headers if n.lower() == b"sec-websocket-protocol"
                for p in v.decode("latin-1").split(",") if p.strip()]

    # --- condure's packets (the reader greenlets) -----------------------------

    def deliver(self, pkt: zp.Packet, seq: int | None, now: float) -> None:
        if self.failure is not None:
            return
        try:
            self.hs.accept(pkt, seq, now)
        except CondureError as e:
            self.fail(SessionLost(str(e)), cancel=True)
            return
        t = pkt.type
        if t == b"credit":
            self.pump()  # what waited for credits goes now
        elif t == b"keep-alive":
            return
        elif t == b"cancel":
            self.fail(Cancelled("cancelled by condure"))
            return
        elif t == b"handoff-proceed":
            self._proceed = True
        elif t == b"ping" and self.started and self.is_websocket:
            # answered here, whatever the application is doing (condure does
            # not answer pings itself); the payload costs credits both ways
            self.hs.out.control(b"pong", pkt.body)
            self.pump()
            self.consumed(len(pkt.body))
        else:
            self.inbox.append(pkt)
        self._wake.set()

    def fail(self, exc: SessionEnded, cancel: bool = False) -> None:
        """End the session with `exc` (raised by the next call of the
        application); `cancel`: tell condure too."""
        if self.failure is not None or self.finished:
            return
        log.debug("%s: %s", self.rid.decode(), exc)
        self.failure = exc
        if cancel:
            self.send(b"cancel")
        self._done()
        self._wake.set()

    def expire(self, now: float) -> bool:
        if self.hs.expired(now):
            self.fail(SessionLost("condure has been silent too long"))
            return True
        return False

    # --- waiting (the application's greenlet) -------------------------------

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def wait(self, timeout: float | None = None) -> None:
        """Until the next packet or failure (or `timeout` seconds)."""
        self._check()
        self._wake.clear()
        self._wake.wait(timeout)
        self._check()

    def take(self) -> zp.Packet:
        """The next queued packet of condure's (waiting for one)."""
        while not self.inbox:
            self.wait()
        return self.inbox.popleft()

    def consumed(self, n: int) -> None:
        grant = self.hs.consumed(n)
        if grant:
            self.send(b"credit", [(b"credits", grant)])

    # --- our packets ------------------------------------------------------------

    def send(self, type_: bytes = zp.DATA, fields: Iterable[tuple[bytes, Any]] = ()) -> None:
        payload = zp.handler_packet(self.handler.identity, self.rid,
                                    self.hs.next_seq(time.monotonic()), type_, fields)
        self.handler.publish(self.hs.addr, payload)

    def pump(self) -> None:
        """Send every piece the credits allow now (never waits)."""
        flow = self.hs.out
        while flow.queue:
            piece = flow.next()
            if piece is None:
                return
            t, extra, data, more = piece
            fields: list[tuple[bytes, Any]] = []
            if self._head is not None:
                fields, self._head = self._head, None
            if t == zp.DATA:
                if extra is not None:
                    fields.append((b"content-type", extra))
                if data:
                    fields.append((b"body", bytes(data)))
                if more:
                    fields.append((b"more", True))
            elif t == b"close":
                if extra is not None:
                    fields.append((b"code", extra))
                if data:
                    fields.append((b"body", data))
            elif data:
                fields.append((b"body", data))
            self.send(t, fields)

    def drain(self) -> None:
        """Send everything queued, waiting for credits as needed."""
        self._check()
        flow = self.hs.out
        while True:
            self.pump()
            if flow.idle:
                return
            self.wait()

    # --- the response -------------------------------------------------------

    def start(self, code: int = 200, reason: str | bytes | None = None,
              headers: HeaderList = (), defer: bool = False) -> None:
        """Begin the response: the head goes at once (for a response whose
        body comes later), or with the first body bytes if `defer`. A
        Content-Length header makes condure send that length; without one the
        streamed body is chunked (HTTP/1.1)."""
        self._check()
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        head: list[tuple[bytes, Any]] = [
            (b"code", code), (b"reason", to_bytes(reason) if reason is not None else
                              REASONS.get(code, b"Unknown")),
            (b"headers", header_pairs(headers))]
        if self.body._ended is False and not self.hs.granted:
            # the body was not read: let condure take it anyway, so that the
            # connection can stay persistent when it is already buffered (server.md 5.7)
            self.hs.granted = True
            head.append((b"credits", self.hs.window))
        self._head = head
        if not defer:
            self.send(zp.DATA, self._head + [(b"more", True)])
            self._head = None

    def write(self, data: bytes) -> None:
        """Body bytes: sent as condure's credits allow (this waits for them)."""
        if not self.started:
            self.start(defer=True)
        if data:
            self.hs.out.body(data)
            self.drain()

    def end(self, data: bytes = b"") -> None:
        """The last body bytes; the response is complete."""
        if not self.started:
            self.start(defer=True)
        self._check()
        flow = self.hs.out
        if data:
            flow.body(data)
        if flow.body_waiting:
            flow.end()  # the last piece goes without `more`
            self.drain()
        else:
            flow.queue.clear()  # an open body with nothing in it: the end costs no credit
            fields = self._head or []
            self._head = None
            self.send(zp.DATA, fields)
        self._done()

    def respond(self, code: int = 200, reason: str | bytes | None = None,
                headers: HeaderList = (), body: bytes | str = b"") -> None:
        """The whole response at once (condure adds its Content-Length)."""
        self.start(code, reason, headers, defer=True)
        self.end(to_bytes(body))

    def cancel(self) -> None:
        """Abort: condure closes the client connection."""
        if not self.finished and self.failure is None:
            self.send(b"cancel")
        self._done()

    def _done(self) -> None:
        if not self.finished:
            self.finished = True
            self.hs.ended = True
            self.handler.unregister(self)
            self.ended.set()

    # --- WebSocket -------------------------------------------------------------

    def accept_websocket(self, protocol: str | None = None,
                         headers: HeaderList = ()) -> WebSocket:
        """Accept a WebSocket request (101), with a subprotocol if given."""
        if not self.is_websocket:
            raise RuntimeError("not a WebSocket request")
        hs = list(headers)
        if protocol:
            hs.append(("Sec-WebSocket-Protocol", protocol))
        self._check()
        self.started = True
        self.hs.granted = True
        self.send(zp.DATA, [(b"code", 101), (b"reason", b"Switching Protocols"),
                            (b"headers", header_pairs(hs)), (b"credits", self.hs.window)])
        return WebSocket(self)

    def reject(self, code: int = 403, reason: str | bytes | None = None,
               headers: HeaderList = (), body: bytes | str = b"") -> None:
        """Refuse a WebSocket request with an HTTP answer."""
        self._check()
        self.started = True
        fields: list[tuple[bytes, Any]] = [
            (b"condition", b"rejected"), (b"code", code),
            (b"reason", to_bytes(reason) if reason is not None else REASONS.get(code, b"Unknown")),
            (b"headers", header_pairs(headers))]
        if body:
            fields.append((b"body", to_bytes(body)))
        self.send(b"error", fields)
        self._done()

    # --- handoff ------------------------------------------------------------------

    def handoff(self, timeout: float = HANDOFF_TIMEOUT) -> bytes:
        """Pass the live session on: asks condure to pause it (handoff-start,
        handoff-proceed) and returns its state, for `Handler.adopt` in another
        process (which continues it, our seq numbering included). Whatever is
        still queued goes first; this process is done with it afterwards."""
        self.drain()
        self.send(b"handoff-start")
        end = time.monotonic() + timeout
        while not self._proceed:
            left = end - time.monotonic()
            if left <= 0:
                self.fail(SessionLost("no handoff-proceed from condure"), cancel=True)
                self._check()
            self.wait(left)
        state = {
            b"addr": self.hs.addr, b"id": self.rid, b"out-seq": self.hs.zs.out_seq,
            b"in-seq": self.hs.zs.in_seq, b"credits": self.hs.out.credits,
            b"limit": self.hs.out.limit, b"method": self.method.encode("latin-1"),
            b"uri": self.uri.encode("latin-1"), b"headers": [list(h) for h in self.headers],
            b"started": self.started, b"body-ended": self.body._ended,
            b"granted": self.hs.granted, b"unacked": self.hs.unacked,
            # what condure sent before it saw our handoff-start and we have not
            # consumed: the new owner gets it first (it was counted and seq-checked here)
            b"inbox": [p.raw for p in self.inbox], b"body-buf": bytes(self.body._buf),
        }
        if self.peer is not None:
            state[b"peer"] = [self.peer[0].encode("latin-1"), self.peer[1]]
        self._done()
        return tnetstring.dumps(state)

    @classmethod
    def from_handoff(cls, handler: Owner, state: bytes, now: float) -> "Request":
        """The session `handoff` passed on, as this handler's own."""
        s = tnetstring.loads(state)
        raw = {b"id": s[b"id"], b"from": s[b"addr"], b"method": s[b"method"], b"uri": s[b"uri"],
               b"headers": s[b"headers"], b"credits": s[b"credits"],
               b"more": not s[b"body-ended"]}
        if b"peer" in s:
            raw[b"peer-address"], raw[b"peer-port"] = s[b"peer"]
        pkt = zp.parse(b"T" + tnetstring.dumps(raw))
        req = cls(handler, pkt, s[b"id"], now)
        req.hs.zs.out_seq = s[b"out-seq"]
        req.hs.zs.in_seq = s[b"in-seq"]
        req.hs.out.limit = s[b"limit"]
        req.hs.granted = s[b"granted"]
        req.hs.unacked = s[b"unacked"]
        req.started = s[b"started"]
        req.inbox.extend(zp.parse(b"T" + tnetstring.dumps(m)) for m in s[b"inbox"])
        req.body._buf += s[b"body-buf"]
        return req


REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently",
    302: b"Found", 303: b"See Other", 304: b"Not Modified", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 409: b"Conflict", 410: b"Gone",
    411: b"Length Required", 413: b"Content Too Large", 415: b"Unsupported Media Type",
    429: b"Too Many Requests", 500: b"Internal Server Error", 501: b"Not Implemented",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}
