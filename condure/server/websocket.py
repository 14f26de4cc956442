"""A WebSocket session in stream mode, after the 101 (shared/zhttp/server.md 8).

A wsproto Connection takes over with the bytes the parser had already
buffered. Client frames reach the handler through the shared core
(zhttp/wsmap.py into zhttp/flow.py; whole plain frames by wsframe.py's fast
path, without compression): in pieces under its credits, never
reassembled. Handler messages become frames, and their content bytes go
back as credits once the client's socket has taken them. Protocol
violations close with 1002/1007 and the handler gets that close (D2).

Uncompressed handler messages are framed here, the handler's bytes as they
are (as condure: no UTF-8 check, no copy through wsproto); with
permessage-deflate, wsproto frames and compresses them.
"""
from __future__ import annotations

import struct
import time
from typing import Any

import gevent
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event
from wsproto.extensions import Extension
from wsproto.utilities import LocalProtocolError

from ..errors import BadMessage, BufferExceeded, ClientGone, CondureError
from ..wsdeflate import DEFLATE_FEED
from ..zhttp import packet as zp
from ..zhttp import wsmap
from ..zhttp.flow import Outflow
from ..zhttp.session import Session
from .exchange import SESSION_HANDLERS, pump, send
from .ports import ClientStream, HandlerLink, Worker

MAX_CONTROL = 125
_state = wsmap.state  # ws.state without the property call
OPEN = ConnectionState.OPEN
# states in which a handler's message still goes to the client: after the
# client's close, handler messages are relayed until the handler closes too,
# as condure does
_RELAYING = (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)
_READING = (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING)


class WebSocketSession:
    """The session after the handshake: client frames <-> handler packets."""

    HANDLERS: dict[bytes, Any]

    done = False
    _out_started = False  # a handler message is in progress (uncompressed framing)

    def __init__(self, stream: ClientStream, link: HandlerLink, server: Worker,
                 session: Session, credits: int, deflate: Extension | None) -> None:
        self.stream = stream
        self.link = link
        self.server = server
        self.session = session
        self.ws = WsConnection(ConnectionType.SERVER, [deflate] if deflate is not None else [])
        self.flow = Outflow(stream.buffer_size, credits)
        self.compressed = deflate is not None
        # compressed: client bytes go to wsproto a piece at a time (bounded inflation, D18)
        self.reader = wsmap.Reader(self.ws, self.flow, DEFLATE_FEED if self.compressed else 0,
                                   fast=not self.compressed)
        self.writer = wsmap.Writer() if self.compressed else None
        self.messages_max = server.config.messages_max

    def run(self) -> None:
        """From the client bytes read past the handshake until the session ends."""
        leftover: bytes = self.stream.parser.leftover()
        if leftover:
            self.reader.receive(leftover)
        self._forward()
        pump(self)
        self.stream.flush_all()

    # --- the client's frames ------------------------------------------------

    def want_read(self) -> bool:
        if self.session.paused or self.flow.queue or self.reader.wire:
            return False
        return self.flow.credits > 0 and _state(self.ws) in _READING

    def on_client_readable(self) -> None:
        data = self.stream.recv_now()
        if not data:
            raise ClientGone("client closed the connection")
        self.reader.receive(data)
        self._forward()

    def _forward(self) -> None:
        """Send the client's frames to the handler while its credits allow."""
        flow, reader = self.flow, self.reader
        while True:
            if not flow.queue:
                if not reader.wire:
                    return  # nothing waits
                reader.pump()
                if not flow.queue:
                    return  # all fed, nothing came out yet
            piece = flow.next()
            if piece is None:
                return  # out of credits
            kind, extra, body, more = piece
            if kind == zp.DATA:
                if not more:
                    self.server.metrics.ws_messages["in"] += 1
                send(self, zp.DATA, content_type=extra, body=body, more=more)
            elif kind == b"close":
                self._on_client_close(extra, body)
            else:
                send(self, kind, body=body)

    def _on_client_close(self, code: int, reason: bytes) -> None:
        if self.ws.state is OPEN:
            # wsproto reports a protocol violation as a close it made up (D2)
            self.stream.log.info("websocket protocol error: %s", reason.decode("utf-8", "replace"))
            send(self, b"close", code=code)
            self._write(CloseConnection(code=code))
            self.done = True
            return
        send(self, b"close", **wsmap.close_fields(code, reason))
        if self.ws.state is ConnectionState.CLOSED:
            self.done = True  # this answered our close

    # --- the handler's packets --------------------------------------------------

    def apply(self, pkt: zp.Packet, seq: int | None) -> None:
        self.session.accept(pkt, seq, time.monotonic())
        handler = self.HANDLERS.get(pkt.type)
        if handler is None:
            raise BadMessage(f"unexpected packet type {pkt.type_name}")
        handler(self, pkt)

    def _on_data(self, pkt: zp.Packet) -> None:
        """A handler message (or a piece of one) to the client."""
        self.flow.credits += pkt.credits
        stream = self.stream
        body = pkt.body
        n = len(body)
        if n > stream.buffer_size:
            raise BufferExceeded("handler sent more than its credits")
        if stream.queued_pieces >= self.messages_max:
            raise BufferExceeded("too many messages waiting for the client")
        credit = (lambda: send(self, b"credit", credits=n)) if n else None  # once written
        state = _state(self.ws)
        if self.writer is not None:  # compressed: wsproto's deflate frames it (not after a close)
            if state is OPEN:
                self._write(self.writer.event(pkt), credit)
                credit = None
        elif state in _RELAYING:
            # an unmasked data frame, the handler's bytes as they are (as condure)
            if self._out_started:  # a later piece: continuation
                first = 0
            else:  # the first piece: the message's type
                first = 2 if pkt.content_type == b"binary" else 1
                self._out_started = True
            if not pkt.more:
                first |= 0x80
            stream.queue_write((bytes((first, n)) if n < 126 else _frame_header(first, n)) + body,
                               credit)
            credit = None
        if credit is not None:
            credit()  # not written (closing): the bytes are still given back
        if not pkt.more:
            self._out_started = False
            self.server.metrics.ws_messages["out"] += 1
        if self.flow.queue or self.reader.wire:  # (`_forward` would find nothing otherwise)
            self._forward()

    def _on_credit(self, pkt: zp.Packet) -> None:
        self.flow.credits += pkt.credits
        self._forward()

    def _on_control(self, pkt: zp.Packet) -> None:
        if len(pkt.body) > MAX_CONTROL:
            raise BufferExceeded("control frame payload too large")
        self.flow.credits += pkt.credits
        n = len(pkt.body)
        credit = (lambda: send(self, b"credit", credits=n)) if n else None
        if self.ws.state is OPEN:
            self._write(wsmap.control_event(pkt), credit)
        elif credit is not None:
            credit()
        self._forward()

    def _on_close(self, pkt: zp.Packet) -> None:
        event = wsmap.close_event(pkt)
        if self.ws.state in _RELAYING:
            self._write(event)
        if self.ws.state is ConnectionState.CLOSED:
            self.done = True

    # --- writing and ending -------------------------------------------------------

    def _write(self, event: Event, on_written: Any = None) -> None:
        try:
            data = self.ws.send(event)
        except (LocalProtocolError, ValueError) as e:
            raise BadMessage(f"cannot send to client: {e}") from None
        self.stream.queue_write(data, on_written)

    def going_away(self) -> None:
        """Shutdown (D12): close with 1001 and give the frame a second to go."""
        if self.ws.state is not OPEN:
            return
        try:
            self._write(CloseConnection(code=1001))
            with gevent.Timeout(1.0, False):
                self.stream.flush_all()
        except CondureError:
            pass


def _frame_header(first: int, n: int) -> bytes:
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return struct.pack("!BBH", first, 126, n)
    return struct.pack("!BBQ", first, 127, n)


WebSocketSession.HANDLERS = {
    **SESSION_HANDLERS,
    zp.DATA: WebSocketSession._on_data,
    b"credit": WebSocketSession._on_credit,
    b"ping": WebSocketSession._on_control,
    b"pong": WebSocketSession._on_control,
    b"close": WebSocketSession._on_close,
}
