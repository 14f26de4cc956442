"""Client mode: handlers' requests become outgoing HTTP exchanges.

Two interfaces (shared/zhttp/client.md sections 1-7):

* REQ (--zserver-req): one request message, the whole exchange under
  --req-timeout, exactly one reply ({code, reason, headers, body} or
  {type: error, condition}).
* stream (--zserver-stream): a session per (from, id) with seq numbers both
  ways: `keep-alive` ack, the response head as a data packet with `more`,
  the body under the handler's credits, a final packet without `more`;
  uploads with `more` are streamed under condure's credits. Errors before the
  head was delivered are `error` + condition, after it `cancel`; handler
  faults end the session silently.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import h11
from gevent.event import Event

from ..errors import (BadMessage, ClientError, CondureError, HandlerCancel, HandlerError,
                      SessionTimeout)
from ..private import io_watcher
from ..zhttp import packet as zp
from ..zhttp.flow import Outflow
from ..zhttp.session import Session
from .context import Service
from .http1 import Origin, open_origin
from .request import MAX_REDIRECTS, ClientRequest, from_packet, redirect
from .websocket import run_websocket

log = logging.getLogger("condure.client")

HTTP_SCHEMES = ("http", "https")
ALL_SCHEMES = ("http", "https", "ws", "wss")
EXT = {b"multi": True}
# handler packets whose body condure grants back once written (WebSocket)
GRANTED_BACK = (zp.DATA, b"ping", b"pong")
# handler packets whose `credits` field adds to the credits for the origin's data
CREDITED = (zp.DATA, b"credit", b"ping", b"pong")
OVERRUN = "handler sent more than its credits"


# --- REQ interface ---------------------------------------------------------


def req_exchange(service: Service, pkt: zp.Packet) -> dict[bytes, Any]:
    """Run one REQ-interface request; the reply's fields (without id)."""
    if pkt.type:
        raise ClientError("bad-request", "request must be a data packet")
    req = from_packet(pkt, HTTP_SCHEMES)
    cfg = service.config
    if len(req.body) > cfg.body_buffer_size:
        raise ClientError("undefined-condition", "request body too large")
    for _hop in range(MAX_REDIRECTS + 1):
        origin = open_origin(req, service.pool, cfg.deny_out_internal, cfg.req_timeout)
        try:
            origin.send_head(req, "length", len(req.body))  # REQ: always the body's own length
            origin.send_body(req.body)
            origin.end()
            head, body = _read_whole(origin, req, cfg.body_buffer_size)
        except BaseException:
            origin.close()
            raise
        service.pool.put(origin)
        nxt = redirect(req, head.status_code, list(head.headers.raw_items()), HTTP_SCHEMES) \
            if req.follow_redirects else None
        if nxt is None:
            return _reply_fields(head, body)
        req = nxt
    raise ClientError("too-many-redirects")


def _read_whole(origin: Origin, req: ClientRequest, limit: int) -> tuple[Any, bytes]:
    head = _response_head(origin)
    body = bytearray()
    while True:
        ev = origin.next_event()
        if type(ev) is h11.EndOfMessage:
            return head, bytes(body)
        body += ev.data
        if len(body) > limit:
            raise ClientError("undefined-condition", "response body larger than --body-buffer-size")


def _response_head(origin: Origin, wait: Any = None) -> Any:
    while True:
        ev = origin.next_event(wait)
        if type(ev) is h11.Response:
            return ev
        # 1xx interim responses (h11.InformationalResponse) are skipped


def _reply_fields(head: Any, body: bytes) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {b"code": head.status_code, b"reason": bytes(head.reason)}
    headers = [[n, v] for n, v in head.headers.raw_items()]
    if headers:
        out[b"headers"] = headers
    if body:
        out[b"body"] = body
    return out


def req_reply(rid: bytes | None, fields: dict[bytes, Any]) -> bytes:
    pairs: list[tuple[bytes, Any]] = [] if rid is None else [(b"id", rid)]
    return zp.encode(pairs + list(fields.items()))


# --- stream interface --------------------------------------------------------


class StreamSession:
    """One stream-interface session: an outgoing HTTP exchange for a handler."""

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
        return f"<StreamSession {self.rid!r} from {self.addr!r}>"

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
        """A packet to the handler; empty fields are left out unless named in `keep_empty`."""
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
            self.addr, zp.encode(pairs))

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

    # --- the exchange ----------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except CondureError as e:
            # ClientError: the exchange failed, the handler is told; the
            # handler's own end (HandlerEnded: cancel, error, bad seq or packet,
            # a dropped request) and its silence (SessionTimeout) send nothing
            if e.cancel:
                log.log(e.level, "client session %r failed: %s (%s)", self.rid, e.condition, e)
                self._fail(e.condition)
            else:
                log.log(e.level, "client session %r ended: %s (%s)", self.rid,
                        type(e).__name__, e)
        except Exception:
            log.exception("client session %r failed", self.rid)
            self._fail("undefined-condition")
        finally:
            if self.origin is not None:
                self.origin.close()
            self.service.end_session(self.key)

    def _fail(self, condition: str) -> None:
        """`error` + condition before the response head reached the handler,
        `cancel` after (client.md 4.2)."""
        if self.header_sent:
            self.send(b"cancel")
        else:
            self.send(b"error", condition=condition.encode())

    def _run(self) -> None:
        try:
            req = from_packet(self.first, ALL_SCHEMES)  # DropRequest: nothing at all is sent
        except ClientError as e:
            self.send(b"error", condition=e.condition.encode())  # no ack before this
            return
        self.send(b"keep-alive")  # the ack: the handler now knows our address
        if req.websocket:
            run_websocket(self, req)
            return
        head = self._exchange(req)
        self.header_sent = True
        self.send(zp.DATA, code=head.status_code, reason=bytes(head.reason),
                  headers=[[n, v] for n, v in head.headers.raw_items()], more=True)
        self._stream_body()

    def _exchange(self, req: ClientRequest) -> Any:
        cfg = self.service.config
        for _hop in range(MAX_REDIRECTS + 1):
            self.origin = open_origin(req, self.service.pool, cfg.deny_out_internal,
                                      cfg.stream_timeout)
            self._send_request(req)
            head = _response_head(self.origin, self.until_readable)
            follow = req.follow_redirects and not req.more
            nxt = redirect(req, head.status_code, list(head.headers.raw_items()),
                           HTTP_SCHEMES) if follow else None
            if nxt is None:
                return head
            self._discard_body()
            req = nxt
        raise ClientError("too-many-redirects")

    def _send_request(self, req: ClientRequest) -> None:
        origin = self.origin
        assert origin is not None
        if not req.more:
            length = req.length if req.length is not None else len(req.body)
            origin.send_head(req, "length", length)
            origin.send_body(req.body)
            origin.end()
            return
        origin.send_head(req, "chunked" if req.length is None else "length", req.length or 0)
        origin.send_body(req.body)
        self._upload()

    def _upload(self) -> None:
        """Request body from the handler under our credits, granted as it is written."""
        origin = self.origin
        assert origin is not None
        window = self.service.config.buffer_size
        if any(p is not None and p.type == zp.DATA for p, _ in self.inbox):
            raise BadMessage("request body before any credit")
        self.send(b"credit", credits=window)
        while True:
            pkt = self.take()
            if pkt is None:
                self.wait()
                continue
            if pkt.type != zp.DATA:
                continue  # credit, keep-alive
            if len(pkt.body) > window:
                raise ClientError("undefined-condition", OVERRUN)
            origin.send_body(pkt.body)
            self.last_io = time.monotonic()
            if not pkt.more:
                origin.end()
                return
            if pkt.body:
                self.send(b"credit", credits=len(pkt.body))

    def _discard_body(self) -> None:
        origin = self.origin
        assert origin is not None
        while type(origin.next_event()) is not h11.EndOfMessage:
            pass
        self.service.pool.put(origin)
        self.origin = None

    def _stream_body(self) -> None:
        """The response body through the Outflow: pieces of at most
        min(credits, --buffer-size); the end needs credit too (client.md 5.1)."""
        origin = self.origin
        assert origin is not None
        flow = self.flow
        while True:
            self._handle_control()
            while (piece := flow.next()) is not None:
                more = piece[3]
                self.send(zp.DATA, body=piece[2], more=more)
                if not more:
                    self.service.pool.put(origin)
                    self.origin = None
                    return
            if flow:
                self.wait()  # out of credits: the origin is not read meanwhile
                continue
            ev = origin.next_event(self.until_readable)
            if type(ev) is h11.EndOfMessage:
                flow.end()
            else:
                data, ended = origin.take_buffered(bytes(ev.data))
                if data or ended:
                    flow.body(data, ended)
