"""One client connection: the request loop and the handler inbox.

A connection greenlet reads a request head, gives it to the exchange its
listener's mode picks (an HTTP exchange, a WebSocket handshake, a req-mode
exchange: the connection imports none of them), and on a persistent
connection starts over with a new session id. It is, at once, the exchange's
`ClientStream` (through `ClientIO`) and its `HandlerLink` (the inbox the SUB
reader delivers to, and the sends): one object, so the hot path stays plain
method calls.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..blocks import BlockBudget
from ..errors import (BadRequest, BufferExceeded, ClientGone, CondureError, HeadTooLarge,
                      Stopped, Timeout)
from ..log import ConnLogger, watch_level
from ..zhttp import packet as zp
from ..zhttp.session import Session
from . import access
from .clientio import ClientIO
from .parser import make_parser
from .request import NEED_DATA, Http2Preface, RequestHead
from .ports import Inbound
from .timers import Armed

if TYPE_CHECKING:
    from ..context import Server

log = logging.getLogger("condure.connection")

INBOX_MAX = 1024  # handler packets queued for one connection before it is aborted


class Slots(Protocol):
    """The count of a mode's maxconn (listener.ConnectionLimit): HTTP/2
    streams take slots of it too (server/http2.py)."""

    size: int
    active: int

    def leave(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Mode:
    """What a listener's connections do with a request head (server/modes.py)."""
    name: str  # "stream" or "req" (the connection gauges' label)
    exchange: Callable[[Connection, RequestHead], bool]  # True: the connection stays open
    timers: Any  # StreamTimers or ReqTimers
    io_timeout: float  # for writes and reads that must wait
    # the spare blocks a request head may borrow (stream mode: one pool for
    # all of a worker's stream listeners); None: heads stay --buffer-size
    blocks: BlockBudget | None = None
    # what serves a connection that opened with the HTTP/2 preface (h2c with
    # prior knowledge, server/http2.py); None: the preface gets the 505 any
    # unknown version gets (req mode, or HTTP/2 off)
    http2: Callable[[Connection], None] | None = None
    # the listeners' shared maxconn count (stream mode: each concurrent
    # HTTP/2 stream past a connection's first takes a slot of it)
    limit: Slots | None = None


def _refresh_debug() -> None:
    Connection.debug = log.isEnabledFor(logging.DEBUG)


class Connection(Armed, ClientIO):
    """Serves the HTTP/1.x requests of one client socket, one session at a time."""

    # State every connection starts with, as class attributes: an instance
    # gets its own value when it first assigns one (a connection is set up
    # once per accept, so fewer assignments there count). Mind the count of
    # instance attributes: past 30, CPython 3.11 stops sharing the keys of
    # instance dicts and every attribute access on a connection gets slower
    # (31 cost 1.5% more instructions per request than 29; a test checks it).
    _logger: ConnLogger | None = None  # made for the first line logged
    # whether DEBUG is enabled: one attribute read on the hot path, kept up
    # to date for every connection at once by _refresh_debug (a debug-socket
    # client lowers the level while it is connected)
    debug = False
    _log_id = b""
    session: Session | None = None
    stopping = False  # shutting down: no further requests
    websocket = False
    protocol = "http"  # "websocket" once upgraded (for the connection gauge)
    http2 = False  # served by server/http2.py (which stop() must reach too)

    def __init__(self, server: Server, mode: Mode, sock: Any, peer: Any, slot: int,
                 scheme: bytes = b"http") -> None:
        self.server = server
        self.mode = mode
        self.scheme = scheme
        self.peer = _peer_fields(peer)
        self.slot = slot
        cfg = server.config
        self.buffer_size = cfg.buffer_size
        self.stream_timeout = float(cfg.stream_timeout)
        self.parser = make_parser(cfg.http_parser, cfg.buffer_size)
        self._inbox: deque[Inbound] = deque()
        self._open(sock, mode.io_timeout)

    def __repr__(self) -> str:
        return f"<Connection slot={self.slot} session={self.session!r}>"

    @property
    def log(self) -> ConnLogger:
        """This connection's logger (`conn <session id>: ...`)."""
        if self._logger is None:
            self._logger = ConnLogger(log, "")
        self._logger.conn_id = self._log_id
        return self._logger

    # --- the request loop --------------------------------------------------

    def run(self) -> None:
        self.server.connections.add(self)
        try:
            # no explicit yield between requests: every request waits for its
            # handler's answer (and every read waits for readiness) through the
            # hub, so a busy keep-alive client cannot starve the others
            while self._serve_one():
                pass
        except Exception:
            self.log.exception("connection failed")
        finally:
            self.server.connections.discard(self)
            self.end_session()
            self.server.wheel.remove(self)
            self.parser.close()
            self._close_io()

    def _serve_one(self) -> bool:
        """Handle one request; True if the connection stays open for the next."""
        server = self.server
        now = time.monotonic()
        rid = server.registry.new_id(self.slot)
        self.session = Session(rid, now, server.keepalive_interval)
        self._log_id = rid
        if self.debug:
            self.log.debug("assigning id")
        self._inbox.clear()
        self._timeout = None
        self.arm()
        if self.stopping:
            return False
        self.waiting_for_request = True
        http2 = None
        try:
            head = self._read_head()
        except Http2Preface as e:
            if self.mode.http2 is None:
                return self._refuse(e, now)
            head = None
            http2 = self.mode.http2  # an HTTP/2 connection: served below
        except BadRequest as e:
            return self._refuse(e, now)
        except (ClientGone, Timeout, Stopped) as e:
            self.log.debug("process error: %s", type(e).__name__)
            return False
        finally:
            self.waiting_for_request = False
        if head is None:
            if http2 is not None:  # h2 checks the rest of the preface
                self.end_session()
                http2(self)  # the whole connection, all its streams
            return False
        # counted as pushpin-connmgr counts: every head parsed, whatever comes of it
        server.metrics.requests += 1
        return self.mode.exchange(self, head)

    def _refuse(self, e: BadRequest, now: float) -> bool:
        """A head refused (D1): condure's answer, and the connection ends."""
        server = self.server
        server.metrics.parse_errors += 1
        self.log.info("bad request: %s", e)
        status = e.status or 400
        if server.access_log:  # before the answer's drain (up to a second)
            access.own_answer(self.peer, None, None, status, now, e)
        self.answer_and_close(status, e.text)
        return False

    def _read_head(self) -> RequestHead | None:
        parser = self.parser
        try:
            while True:
                try:
                    ev = parser.next_event()
                except HeadTooLarge as e:
                    self._grow_head(e)
                    continue
                if ev is NEED_DATA:
                    data = self.recv()
                    if not data:
                        return None
                    parser.feed(data)
                    continue
                if isinstance(ev, RequestHead):
                    self.last_io = time.monotonic()
                    return ev
                raise BadRequest("unexpected data before request head")
        finally:
            # the blocks a head borrowed go back as soon as it is parsed, and
            # however reading it ended (refused, client gone, timeout,
            # shutdown, the greenlet killed): before any answer is written
            if parser.max_head != self.buffer_size:
                self._release_blocks()

    def _grow_head(self, e: HeadTooLarge) -> None:
        """The head outgrew its buffer: one spare block more (connmgr.md 3.3),
        or the refusal, naming the capacity it reached."""
        blocks = self.mode.blocks
        parser = self.parser
        if blocks is not None:
            capacity = blocks.grow(parser.max_head)
            if capacity != parser.max_head:
                parser.max_head = capacity
                return
        raise e  # its capacity is the one reached

    def _release_blocks(self) -> None:
        blocks = self.mode.blocks
        if blocks is not None:
            self.parser.max_head = blocks.release(self.parser.max_head)

    def end_session(self) -> None:
        s = self.session
        if s is not None:
            self.server.registry.unregister(s.id)
            self.session = None

    def upgraded(self) -> None:
        """The connection is a WebSocket from now on."""
        self.websocket = True
        self.protocol = "websocket"
        connections = self.server.metrics.connections
        connections[(self.mode.name, "http")] -= 1
        connections[(self.mode.name, "websocket")] += 1
        if self.stopping:
            self.stop(False)

    # --- the handler link --------------------------------------------------

    def send_first(self, rid: bytes, payload: bytes) -> None:
        server = self.server
        server.registry.register(rid, self)
        if self.mode.name == "req":
            server.zreq.send(payload)  # type: ignore[union-attr]  # req mode: zreq is set
        else:
            server.zsockets.send_first(payload)  # type: ignore[union-attr]  # stream mode

    def send_to(self, addr: bytes, payload: bytes) -> None:
        self.server.zsockets.send_to(addr, payload)  # type: ignore[union-attr]  # stream mode

    def deliver(self, rid: bytes, pkt: zp.Packet, seq: int | None) -> None:
        """Called by the SUB reader for each packet addressed to this connection."""
        if len(self._inbox) >= INBOX_MAX:
            self._timeout = "inbox overflow"
        else:
            self._inbox.append((rid, pkt, seq))
        self._wake_soon()

    def next_packet(self) -> Inbound | None:
        if self._inbox:
            return self._inbox.popleft()
        return None

    # --- timers and shutdown -------------------------------------------------

    def flag(self, reason: str) -> None:
        """A timeout (or shutdown): the greenlet wakes and raises it."""
        self._timeout = reason
        self._wake_soon()

    def check_timeout(self) -> None:
        if self._timeout:
            reason, self._timeout = self._timeout, None
            raise flagged(reason)

    def stop(self, force: bool) -> None:
        """Shutdown (D12): idle connections and WebSockets end now; a request
        in flight may finish (then the connection closes) unless `force`."""
        self.stopping = True
        if force or self.waiting_for_request or self.websocket or self.http2:
            self.flag("stopped")  # HTTP/2: the first one is a graceful GOAWAY


def flagged(reason: str) -> CondureError:
    """The error a flag raises in the connection greenlet (see `flag`)."""
    if reason == "inbox overflow":
        return BufferExceeded(reason)
    if reason == "stopped":
        return Stopped("shutting down")
    return Timeout(reason)


def _peer_fields(peer: Any) -> tuple[bytes, int] | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return peer[0].encode(), int(peer[1])
    return None  # unix socket peers have no address


watch_level(_refresh_debug)
