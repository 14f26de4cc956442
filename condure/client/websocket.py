"""Client-mode WebSocket (shared/zhttp/client.md sections 3.3, 5.3, 8) with wsproto.

After the ack, condure opens the connection, sends the handshake (handler
headers pass through) and answers the handler with the 101 (credits =
--client-ws-window, D22) or a `rejected` error carrying the origin's response. Then
frames both ways: origin messages in pieces under the handler's credits,
handler messages written and their sizes granted back; ping/pong are
forwarded (never answered by condure itself); close is relayed both ways.
With --compression, origin bytes are inflated a piece at a time as the
handler's credits allow, and a message inflating past
--compression-message-max ends the session like a bad frame (cancel, D18).

The mapping itself is server mode's (zhttp/wsmap.py, credits by
zhttp/flow.py); what stays here is client mode's own: the handshake and
its raw response head, the rejected body, the window (D22), a close made
up by wsproto while OPEN or a dropped connection (1006) failing the
session, and a handler close without a code dropping its reason.
"""
from __future__ import annotations

import ssl
from typing import Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, CloseConnection, Event, RejectConnection,
                            RejectData, Request)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..errors import BadMessage, ClientError
from ..wsdeflate import DEFLATE_FEED, BoundedDeflate
from ..zhttp import packet as zp
from ..zhttp.wsmap import (ABNORMAL, Reader, Writer, close_event, close_fields,
                           control_event)
from .context import Stream
from .http1 import open_origin
from .request import ClientRequest

READ_SIZE = 65536


class _Client:
    def __init__(self, session: Stream, req: ClientRequest) -> None:
        self.s = session
        self.req = req
        cfg = session.service.config
        session.origin = open_origin(req, session.service.pool, cfg.deny_out_internal,
                                     cfg.stream_timeout, session.service.blocks)
        self.sock = session.origin.sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        # pieces up to the window, not --buffer-size (D22): Pushpin's proxy
        # relays a piece that ends exactly on its client's credits and then
        # waits for a signal that never comes; Zurl sends whole frames
        session.flow.limit = cfg.ws_window
        # with --compression, origin bytes go to wsproto DEFLATE_FEED at a time and
        # only while nothing waits for credits (bounded inflation, D18)
        self.reader = Reader(self.ws, session.flow, DEFLATE_FEED if cfg.compression else 0)
        self.writer = Writer()  # the handler's messages
        self.events: list[Event] = []  # handshake events not yet handled
        self.closed_by_handler = False
        self.closed_by_origin = False
        self._head: bytearray | None = bytearray()  # the handshake response as received, until it is complete

    def write(self, event: Any) -> None:
        try:
            data = self.ws.send(event)
        except LocalProtocolError as e:
            raise ClientError("undefined-condition", str(e)) from None
        self.s.writing = True
        try:
            self.s.origin.write(data)  # type: ignore[union-attr]
        finally:
            self.s.writing = False

    def read(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except ssl.SSLError as e:  # e.g. the origin refusing our client certificate (TLS 1.3)
            raise ClientError("tls-error", f"read: {e}") from None
        except OSError as e:
            raise ClientError("undefined-condition", f"read: {e}") from None
        if self._head is not None and len(self._head) < READ_SIZE:
            self._head += data
        self._parse(data)

    def _parse(self, data: bytes | None) -> None:
        """Origin bytes (b"": its EOF; None: only those still waiting) into
        wsproto: frames go to the flow, handshake events to `events`."""
        reader = self.reader
        try:
            self.events += reader.pump() if data is None else reader.receive(data)
        except RemoteProtocolError as e:
            raise ClientError("undefined-condition", str(e)) from None

    def _next_event(self) -> Event:
        """The next handshake event, reading the origin as needed."""
        while not self.events:
            if self.reader.behind:
                self._parse(None)
            else:
                self.s.until_readable()
                self.read()
        return self.events.pop(0)

    # --- handshake ----------------------------------------------------------

    def handshake(self) -> bool:
        """Send the request and deliver the origin's answer; True if it accepted."""
        req = self.req
        cfg = self.s.service.config
        extensions = [BoundedDeflate(cfg.compression_message_max)] if cfg.compression else []
        protocols = [p.strip().decode() for n, v in req.headers
                     if n.lower() == b"sec-websocket-protocol" for p in v.split(b",") if p.strip()]
        headers = [(n, v) for n, v in req.headers if n.lower() != b"sec-websocket-protocol"]
        try:
            data = self.ws.send(Request(host=req.host_header.decode(), target=req.target.decode(),
                                        extra_headers=headers, extensions=extensions,
                                        subprotocols=protocols))
        except (LocalProtocolError, h11.LocalProtocolError) as e:  # wsproto, or h11 beneath it
            raise ClientError("bad-request", str(e)) from None
        self.s.origin.write(handshake_order(data))  # type: ignore[union-attr]
        while True:
            ev = self._next_event()
            if isinstance(ev, AcceptConnection):
                self._accepted()
                return True
            if isinstance(ev, RejectConnection):
                self._rejected(ev)
                return False

    def _response_head(self) -> tuple[bytes, list[list[bytes]]]:
        """The origin's reason phrase and every header as sent (wsproto keeps
        only some of them), from the raw handshake response."""
        raw = bytes(self._head or b"")
        self._head = None
        lines = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        reason = lines[0].split(b" ", 2)[2] if lines[0].count(b" ") >= 2 else b""
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers.append([name, value.strip(b" \t")])
        return reason, headers

    def _accepted(self) -> None:
        s = self.s
        s.header_sent = True
        reason, headers = self._response_head()
        # the window (D22) is what may wait here for the origin: deliver() refuses more
        s.grant(s.service.config.ws_window, code=101, reason=reason, headers=headers or None)

    def _rejected(self, ev: RejectConnection) -> None:
        """The origin's non-101 answer as a `rejected` error with its whole body;
        a body over --buffer-size is `rejection-too-large`, as pushpin-connmgr
        answers (connmgr.md 6; condure 1.10.1 waited for ever)."""
        limit = self.s.service.config.buffer_size
        body = bytearray()
        finished = not ev.has_body
        while not finished:
            item = self._next_event()
            if isinstance(item, RejectData):
                body += item.data
                finished = item.body_finished
                if len(body) > limit:
                    raise ClientError("rejection-too-large", f"rejection body over {limit} bytes")
        reason, headers = self._response_head()
        self.s.send(b"error", condition=b"rejected", code=ev.status_code, reason=reason,
                    headers=headers or None,
                    body=bytes(body), keep_empty=("body",))  # always present, as condure

    # --- messages -------------------------------------------------------------

    def loop(self) -> None:
        s = self.s
        while True:
            while (pkt := s.take()) is not None:
                self.from_handler(pkt)
            self.to_handler()
            if self.closed_by_handler and self.closed_by_origin:
                return
            if s.flow:
                s.wait()  # out of credits: the origin is not read meanwhile
            elif self.reader.behind:
                self._parse(None)
            elif s.wait(self.sock):
                self.read()

    def from_handler(self, pkt: zp.Packet) -> None:
        kind = pkt.type
        if kind == zp.DATA:  # within its credits: StreamSession.deliver checked
            if not self.closed_by_handler:  # data after its own close is ignored
                self.write(self.writer.event(pkt))
            if pkt.body:
                self.s.grant(len(pkt.body))
        elif kind in (b"ping", b"pong"):
            self.write(control_event(pkt))
            if pkt.body:
                self.s.grant(len(pkt.body))
        elif kind == b"close":
            if not self.closed_by_handler:
                self.closed_by_handler = True
                self.write(_handler_close(pkt))
        elif kind not in (b"credit", b"keep-alive"):
            raise BadMessage(f"unexpected packet {kind!r}")

    def to_handler(self) -> None:
        """Forward what the handler's credits allow of the origin's frames."""
        s = self.s
        while (piece := s.flow.next()) is not None:
            kind, extra, body, more = piece
            if kind == zp.DATA:
                s.send(zp.DATA, content_type=extra, body=body, more=more)
            elif kind == b"close":
                self._origin_close(extra, body)
            else:  # ping, pong
                s.send(kind, body=body)

    def _origin_close(self, code: int, reason: bytes) -> None:
        if self.ws.state is ConnectionState.OPEN:
            # wsproto reports a protocol error as a close it made up: the
            # origin sent no close, the session fails (cancel) as with condure
            raise ClientError("undefined-condition",
                              f"bad frame from origin: {reason.decode('utf-8', 'replace')}")
        if code == ABNORMAL:
            raise ClientError("undefined-condition", "origin dropped the connection")
        self.closed_by_origin = True
        self.s.send(b"close", **close_fields(code, reason))


def _handler_close(pkt: zp.Packet) -> CloseConnection:
    """The close frame for a handler's `close`: its reason must be UTF-8 (else
    HandlerError, as in server mode), and without a code it is 1000 with the
    reason dropped (client.md 8.3; server mode keeps it)."""
    ev = close_event(pkt)
    return ev if pkt.code is not None else CloseConnection(code=ev.code)


_FIRST = (b"host", b"upgrade", b"connection", b"sec-websocket-version", b"sec-websocket-key",
          b"sec-websocket-extensions")


def handshake_order(head: bytes) -> bytes:
    """condure's header order for the handshake: Host, Upgrade, Connection,
    Version, Key, Extensions, then the rest as given (wsproto puts Key first)."""
    lines = head.split(b"\r\n")
    request_line, fields = lines[0], [ln for ln in lines[1:] if ln]
    def rank(line: bytes) -> int:
        name = line.split(b":", 1)[0].strip().lower()
        return _FIRST.index(name) if name in _FIRST else len(_FIRST)
    fields.sort(key=rank)  # stable: the others keep their order
    return b"\r\n".join([request_line, *fields]) + b"\r\n\r\n"


def run_websocket(session: Stream, req: ClientRequest) -> None:
    client = _Client(session, req)
    if client.handshake():
        client.loop()
        if session.origin is not None:  # closed both ways: a normal end (close_notify)
            session.origin.close(notify=True)
            session.origin = None
