"""Client mode, stream interface: a session's side towards its handler.

Everything a stream session exchanges with its handler goes through here:
packets out with the session's seq numbers, packets in (`deliver` on
arrival, then `take` with the common checks of zhttp/session.py), the
credits for the origin's data (an Outflow) and the window for the
handler's own data (D22), handoff pauses, keep-alives and expiry, and the
one wait for a handler packet or the origin's data.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any

from gevent.event import Event

from ..errors import BadMessage, ClientError, HandlerCancel, HandlerError, SessionTimeout
from ..private import io_watcher
from ..zhttp import packet as zp
from ..zhttp.flow import Outflow
from ..zhttp.session import Session
from .context import Service
from .http1 import Origin

EXT = {b"multi": True}
# handler packets whose body condure grants back once written (WebSocket)
GRANTED_BACK = (zp.DATA, b"ping", b"pong")
# handler packets whose `credits` field adds to the credits for the origin's data
CREDITED = (zp.DATA, b"credit", b"ping", b"pong")
OVERRUN = "handler sent more than its credits"


class SessionLink:
    """The handler side of a stream-interface session: its packets both ways
    (seq, credits, the window), handoff pauses, keep-alives, expiry, and the
    waiting for a handler packet or the origin. `StreamSession` adds the exchange."""

    def __init__(self, service: Service, pkt: zp.Packet, rid: bytes) -> None:
        self.service = service
        self.first = pkt
        self.key = (pkt.from_, rid)
        now = time.monotonic()
        # the ZHTTP side: seq both ways, reply address, handoff pause,
        # keep-alive schedule and handler silence, by the rules server mode uses
        self.zs = Session(rid, now, service.keepalive_interval)
        self.zs.in_seq = 1  # the first packet was seq 0
        self.zs.addr = pkt.from_
        # router-resp (pushpin-connmgr): every packet of the session goes to the
        # requester's ROUTER rather than our PUB; the first packet decides
        self.router = pkt.router_resp
        self.last_io = now
        # the origin's data to the handler under its credits, in pieces of at
        # most --buffer-size (the WebSocket client uses its window instead, D22)
        self.flow = Outflow(service.config.buffer_size, pkt.credits)
        self.inbox: deque[tuple[zp.Packet | None, int | None]] = deque()
        self.event = Event()
        self.header_sent = False
        self.origin: Origin | None = None
        # bytes the handler may still send us (granted, not yet received), for
        # the packets whose size we grant back; None: not counted (HTTP)
        self.recv_window: int | None = None
        self._overrun = False
        self.greenlet: Any = None  # set by the service
        self.writing = False  # blocked writing to the origin (see deliver)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.rid!r} from {self.addr!r}>"

    @property
    def rid(self) -> bytes:
        return self.zs.id

    @property
    def addr(self) -> bytes:
        # set from the first packet; every later one comes from the same
        # address, since sessions are found by (from, id)
        return self.zs.addr or b""

    # --- packets -----------------------------------------------------------

    def deliver(self, pkt: zp.Packet, seq: int | None) -> None:
        """Queue a handler packet. Sizes are counted here, on arrival, so that
        what waits in the inbox for a slow origin never exceeds the credits we
        granted (the window, D22): at a packet past them the queue is dropped
        and the session fails (cancel), even while blocked writing to the origin."""
        if self._overrun:
            return
        if self.recv_window is not None and pkt.type in GRANTED_BACK:
            if len(pkt.body) > self.recv_window:
                self._overrun = True
                self.inbox.clear()  # it all goes: the session fails
                self.inbox.append((None, seq))
                self.event.set()
                if self.writing and self.greenlet is not None:
                    # a stalled origin write would keep the marker waiting for ever
                    self.greenlet.kill(ClientError("undefined-condition", OVERRUN), block=False)
                return
            self.recv_window -= len(pkt.body)
        self.inbox.append((pkt, seq))
        self.event.set()

    def grant(self, n: int, **fields: Any) -> None:
        """Let the handler send `n` more bytes: a `credit` packet, or with
        `fields` the packet that carries the credits (the 101)."""
        self.recv_window = (self.recv_window or 0) + n
        if fields:
            self.send(zp.DATA, **fields, credits=n)
        else:
            self.send(b"credit", credits=n)

    def send(self, type_: bytes = zp.DATA, keep_empty: tuple[str, ...] = (), **fields: Any) -> None:
        """A packet to the handler; empty fields are left out unless named in
        `keep_empty`. Nothing while handed off (a cancel neither), as in server mode."""
        if self.zs.paused:
            return
        self._send(self.zs.next_seq(), type_, keep_empty, fields)

    def _send(self, seq: int, type_: bytes, keep_empty: tuple[str, ...] = (),
              fields: dict[str, Any] | None = None) -> None:
        pairs: list[tuple[bytes, Any]] = [(b"from", self.service.instance_id), (b"id", self.rid),
                                          (b"seq", seq), (b"ext", EXT)]
        if type_:
            pairs.append((b"type", type_))
        pairs += [(k.replace("_", "-").encode(), v) for k, v in (fields or {}).items()
                  if v not in (None, b"", False) or (k in keep_empty and v is not None)]
        self.service.sockets.send(  # type: ignore[union-attr]  # set before any session runs
            self.addr, zp.encode(pairs), self.router)

    def take(self) -> zp.Packet | None:
        """The next handler packet after the common checks, or None."""
        if not self.inbox:
            return None
        pkt, seq = self.inbox.popleft()
        if pkt is None:  # see deliver
            raise ClientError("undefined-condition", OVERRUN)
        self.zs.accept(pkt, seq, time.monotonic())  # BadSeq, BadMessage; resumes after a handoff
        if pkt.type == b"cancel":
            raise HandlerCancel("cancel")
        if pkt.type == b"error":
            raise HandlerError(f"error condition={pkt.condition.decode('latin-1')}")
        if pkt.type == b"handoff-start":
            self.send(b"handoff-proceed")
            self.zs.paused = True
            self._paused()
            return None
        if pkt.type in CREDITED:
            self.flow.grant(pkt.credits)
        return pkt

    def _paused(self) -> None:
        """After handoff-proceed nothing happens until the next handler packet
        (client.md 7.5); no keep-alives meanwhile, as in server mode."""
        while not self.inbox:
            self.wait()

    def wait(self, sock: Any = None) -> bool:
        """Until a handler packet comes or, with `sock`, the origin has data
        (True). Sends keep-alives when due; ends a silent session."""
        if self.inbox:
            return False
        now = time.monotonic()
        zs, service = self.zs, self.service
        if zs.expired(now, service.handler_timeout):
            raise SessionTimeout("no handler packet in time")
        if now >= self.last_io + service.stream_timeout:
            raise ClientError("connection-timeout", "stream timeout")
        seq = zs.keepalive(now, service.keepalive_interval)
        if seq is not None:
            self._send(seq, b"keep-alive")
        timeout = min(zs.deadline(service.handler_timeout),
                      self.last_io + service.stream_timeout) - now
        self.event.clear()
        if sock is None:
            self.event.wait(timeout)
            return False
        if getattr(sock, "pending", lambda: 0)():
            return True
        return self._wait_readable(sock, timeout)

    def _wait_readable(self, sock: Any, timeout: float) -> bool:
        """Wait for a handler packet or the origin's data (True)."""
        readable = []

        def on_readable() -> None:
            readable.append(True)
            self.event.set()

        watcher = io_watcher(sock.fileno(), 1)
        watcher.start(on_readable)
        try:
            self.event.wait(timeout)
        finally:
            watcher.stop()
            watcher.close()
        if readable:
            self.last_io = time.monotonic()
        return bool(readable)

    def _handle_control(self) -> None:
        """Apply queued packets while no body is expected from the handler."""
        while (pkt := self.take()) is not None:
            if pkt.type == zp.DATA:
                raise BadMessage("unexpected data packet")

    def until_readable(self) -> None:
        assert self.origin is not None
        while True:
            self._handle_control()
            if self.wait(self.origin.sock):
                return
