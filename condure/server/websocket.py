"""WebSocket in stream mode (shared/zhttp/server.md section 8).

The handshake is an HTTP exchange whose request carries a ``ws://`` uri:
the handler's first data packet decides. A 101 completes the handshake
(condure adds Upgrade, Connection, Sec-WebSocket-Accept); anything else is
written as a plain HTTP response and the connection closes (D3); an
``error`` with condition ``rejected`` becomes the rejection response.

After the 101 a wsproto Connection takes over with the bytes h11 had already
buffered. Client messages reach the handler in pieces under its credits
(never reassembled); handler messages become frames, and their content
bytes are returned as credits once written. Protocol violations close with
1002/1007 and the handler gets that close (D2).
"""
from __future__ import annotations

import base64
import codecs
import hashlib
import struct
from collections import deque
from typing import Any

import gevent
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (BytesMessage, CloseConnection, Message, Ping, Pong,
                            TextMessage)
from wsproto.extensions import Extension
from wsproto.utilities import LocalProtocolError

from ..errors import (BadMessage, BufferExceeded, ClientGone, CondureError, HandlerError,
                      Stopped)
from ..wsdeflate import DEFLATE_FEED, BoundedDeflate
from ..zhttp import packet as zp
from . import http1
from .parser import RequestHead
from .stream import Exchange

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_CONTROL = 125
# handler headers condure replaces with its own on the handshake response
_WS_HEADERS = frozenset([b"upgrade", b"connection", b"sec-websocket-accept",
                         b"sec-websocket-extensions", b"content-length", b"transfer-encoding"])


_DEFLATE_FLAGS = ("client_no_context_takeover", "server_no_context_takeover")


def negotiate_deflate(head: RequestHead, limit: int) -> tuple[bytes, BoundedDeflate] | None:
    """condure's rules: the first valid permessage-deflate offer wins.

    Accepted parameters: the two no_context_takeover flags (echoed),
    client_max_window_bits[=8..15] and server_max_window_bits only if 15
    (never echoed: the server always uses 15). Anything else spoils the offer.
    `limit`: --compression-message-max (D18).
    """
    for n, v in head.headers:
        if n.lower() != b"sec-websocket-extensions":
            continue
        for offer in v.decode("latin-1").split(","):
            flags = _deflate_offer(offer)
            if flags is not None:
                value = "; ".join(["permessage-deflate"] + [f for f in _DEFLATE_FLAGS if flags.get(f)])
                ext = BoundedDeflate(limit, **flags)
                ext.finalize(value)
                return value.encode(), ext
    return None


def _deflate_offer(offer: str) -> dict[str, bool] | None:
    parts = [p.strip() for p in offer.split(";")]
    if parts[0] != "permessage-deflate":
        return None
    flags: dict[str, bool] = {}
    seen = set()
    for p in parts[1:]:
        name, _, value = (x.strip() for x in p.partition("="))
        if name in seen:
            return None
        seen.add(name)
        if name in _DEFLATE_FLAGS and not value:
            flags[name] = True
        elif name == "client_max_window_bits":
            if value and not (value.isdigit() and 8 <= int(value) <= 15):
                return None
        elif name == "server_max_window_bits":
            if value != "15":
                return None
        else:
            return None
    return flags


def valid_upgrade(head: RequestHead) -> bool:
    """condure's checks; an invalid upgrade is closed without a response."""
    if head.method != b"GET" or head.chunked or head.content_length:
        return False
    key = head.header(b"sec-websocket-key")
    return head.header(b"sec-websocket-version") == b"13" and key is not None and 0 < len(key) <= 256


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


def handshake_head(reason: bytes, headers: list[tuple[bytes, bytes]], key: bytes,
                   extension: bytes | None = None) -> bytes:
    block, _ = http1.header_lines(headers, _WS_HEADERS)
    lines = [http1.status_line(b"1.1", 101, reason, interim=True), block]
    lines += [b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
              b"Sec-WebSocket-Accept: %s\r\n" % accept_key(key)]
    if extension:
        lines.append(b"Sec-WebSocket-Extensions: %s\r\n" % extension)
    lines.append(b"\r\n")
    return b"".join(lines)


def rejection(code: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The handler's `rejected` answer, as condure writes it (no Connection header);
    its code must be a final status like any response's (D17)."""
    line = http1.status_line(b"1.1", code, reason)
    block, _ = http1.header_lines(headers, _WS_HEADERS)
    lines = [line, block]
    lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
    return b"".join(lines) + body


class WebSocketExchange(Exchange):
    """A WebSocket session: handshake through the handler, then messages."""

    HANDLERS: dict[bytes, Any]

    def __init__(self, conn: Any, head: RequestHead) -> None:
        super().__init__(conn, head)
        self.persistent = False
        self.ws: Connection | None = None
        self.events: deque = deque()  # client events not yet forwarded (credits)
        self._out_started = False  # a handler message is in progress (uncompressed framing)
        self._decoder: Any = None  # its UTF-8 decoder (compressed path, wsproto wants str)
        self._out_binary = False
        self._wire = bytearray()  # client bytes not yet given to wsproto (compression)
        self._feed = 0  # 0: give wsproto everything at once
        self._rejection_bytes: int | None = None  # body of a `rejected` answer written
        cfg = conn.server.config
        self.deflate = None
        if cfg.compression:
            self.deflate = negotiate_deflate(head, cfg.compression_message_max)

    def _send_request(self) -> None:
        conn, head = self.conn, self.head
        scheme = b"wss" if conn.scheme == b"https" else b"ws"
        uri = self.uri = http1.request_uri(head, scheme)
        conn.log.debug("request: %s %s", head.method.decode("latin-1"), uri.decode("latin-1"))
        self._send_first(uri, more=False, stream=False)

    # --- reading the client ------------------------------------------------

    def _want_read(self) -> bool:
        ws = self.ws
        if ws is None or self.session.paused or self.events or self._wire:
            return False
        return self.credits > 0 and ws.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING)

    def _on_client_readable(self) -> None:
        data = self.conn.recv_now()
        if not data:
            raise ClientGone("client closed the connection")
        self._take_events(data)

    def _take_events(self, data: bytes = b"") -> None:
        if not self._feed:
            self._parse(data)
        else:
            self._wire += data
            self._feed_some()
        self._forward()

    def _feed_some(self) -> None:
        """Give wsproto small pieces until some events come out (bounded inflation)."""
        wire = self._wire
        while wire and not self.events:
            piece = bytes(wire[:self._feed])
            del wire[:self._feed]
            self._parse(piece)

    def _parse(self, data: bytes) -> None:
        assert self.ws is not None
        if data:
            self.ws.receive_data(data)
        for ev in self.ws.events():
            if isinstance(ev, Message):
                body = memoryview(ev.data.encode("utf-8") if isinstance(ev, TextMessage) else ev.data)
                ctype = b"text" if isinstance(ev, TextMessage) else b"binary"
                self.events.append((zp.DATA, ctype, body, ev.message_finished))
            elif isinstance(ev, Ping):
                self.events.append((b"ping", None, bytes(ev.payload), True))
            elif isinstance(ev, Pong):
                self.events.append((b"pong", None, bytes(ev.payload), True))
            elif isinstance(ev, CloseConnection):
                self.events.append((b"close", ev, b"", True))

    def _forward(self) -> None:
        """Send client events to the handler while its credits allow.

        A message goes in pieces of at most min(credits, buffer size) bytes,
        `more` on all but its last piece; ping/pong payloads use credits too.
        """
        events = self.events
        while True:
            if not events:
                if not self._wire:
                    return
                self._feed_some()
                continue
            kind, extra, body, finished = events[0]
            if kind == b"close":
                self._on_client_close(extra)
            elif kind != zp.DATA:
                if len(body) > self.credits:
                    return
                self.credits -= len(body)
                self._send(kind, body=body)
            elif not body:
                if finished:  # an empty non-final frame makes no packet
                    self.server.metrics.ws_messages["in"] += 1
                    self._send(zp.DATA, content_type=extra)
            else:
                n = min(self.credits, self.conn.buffer_size, len(body))
                if n == 0:
                    return
                self.credits -= n
                last = finished and n == len(body)
                if last:
                    self.server.metrics.ws_messages["in"] += 1
                self._send(zp.DATA, content_type=extra, body=bytes(body[:n]), more=not last)
                if n < len(body):
                    events[0] = (kind, extra, body[n:], finished)
                    continue
            events.popleft()

    def _on_client_close(self, ev: CloseConnection) -> None:
        assert self.ws is not None
        code = ev.code
        reason = ev.reason.encode("utf-8") if ev.reason else b""
        if self.ws.state is ConnectionState.OPEN:
            # wsproto reports a protocol violation as a close it made up (D2)
            self.conn.log.info("websocket protocol error: %s", ev.reason)
            self._send(b"close", code=int(code))
            self._write(CloseConnection(code=int(code)))
            self.done = True
            return
        fields: dict[str, Any] = {}
        if code not in (1005, 1006):  # 1005: the close frame carried no status
            fields["code"] = int(code)
        if reason:
            fields["body"] = reason
        self._send(b"close", **fields)
        if self.ws.state is ConnectionState.CLOSED:
            self.done = True  # this answered our close

    # --- handler packets ----------------------------------------------------

    def _start_response(self, pkt: zp.Packet) -> None:
        if pkt.code != 101:
            self._plain_response(pkt)
            return
        conn = self.conn
        if pkt.body:
            conn.log.warning("ignoring body of a 101 response")
        key = self.head.header(b"sec-websocket-key") or b""
        extensions: list[Extension]
        ext_header, extensions = None, []
        if self.deflate is not None:
            ext_header, ext = self.deflate
            extensions = [ext]
            self._feed = DEFLATE_FEED
        head = handshake_head(pkt.reason, pkt.headers, key, ext_header)
        if len(head) > conn.buffer_size:
            raise BufferExceeded("response does not fit the write buffer")
        self.written = True
        self.code = 101
        conn.write(head)
        self.response = http1.ResponseBody(http1.NO_BODY, 0, True)
        if self.credits == 0:
            self.credits = conn.buffer_size  # Pushpin sends no credits on accept
        self.ws = Connection(ConnectionType.SERVER, extensions)
        conn.websocket = True
        conn.protocol = "websocket"
        metrics = self.server.metrics
        metrics.connections[("stream", "http")] -= 1
        metrics.connections[("stream", "websocket")] += 1
        if conn.stopping:
            conn.stop(False)
        self._take_events(conn.parser.leftover())

    def _plain_response(self, pkt: zp.Packet) -> None:
        """D3: a non-101 answer is an ordinary HTTP response, then close."""
        headers = [(n, v) for n, v in pkt.headers
                   if n.lower() not in (b"upgrade", b"sec-websocket-accept", b"sec-websocket-extensions")]
        pkt.headers = headers
        self.persistent = False
        super()._start_response(pkt)

    def _on_data(self, pkt: zp.Packet) -> None:
        if self.ws is None:
            super()._on_data(pkt)
            return
        self.credits += pkt.credits
        if len(pkt.body) > self.conn.buffer_size:
            raise BufferExceeded("handler sent more than its credits")
        self._send_message(pkt)
        self._forward()

    def _send_message(self, pkt: zp.Packet) -> None:
        assert self.ws is not None
        last = not pkt.more
        state = self.ws.state
        if self.conn.queued_pieces >= self.server.config.messages_max:
            raise BufferExceeded("too many messages waiting for the client")
        n = len(pkt.body)
        credit = (lambda: self._send(b"credit", credits=n)) if n else None
        if self._feed:  # compressed: wsproto's deflate does the framing (not after a close)
            if state is ConnectionState.OPEN:
                self._write(self._message_event(pkt, last), credit)
                credit = None
        elif state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            # after the client's close, handler messages are still relayed until
            # the handler closes too, as condure does
            self.conn.queue_write(self._frame(pkt, last), credit)
            credit = None
        if credit is not None:
            credit()  # not written (closing): the bytes are still given back
        if last:
            self._decoder = None
            self._out_started = False
            self.server.metrics.ws_messages["out"] += 1

    def _frame(self, pkt: zp.Packet, last: bool) -> bytes:
        """An unmasked data frame, the handler's bytes as they are (as condure)."""
        if not self._out_started:  # first piece: the message's type; later: continuation
            opcode = 2 if pkt.content_type == b"binary" else 1
            self._out_started = True
        else:
            opcode = 0
        return _frame_header(opcode | (0x80 if last else 0), len(pkt.body)) + pkt.body

    def _message_event(self, pkt: zp.Packet, last: bool) -> Message:
        if self._decoder is None:  # first piece of a message decides its type
            self._out_binary = pkt.content_type == b"binary"
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        if self._out_binary:
            return BytesMessage(data=pkt.body, message_finished=last)
        return TextMessage(data=self._decoder.decode(pkt.body, final=last), message_finished=last)

    def _on_error(self, pkt: zp.Packet) -> None:
        if self.ws is None and pkt.condition == b"rejected":
            code = 0 if pkt.code is None else pkt.code  # condure writes a missing code as 0
            out = rejection(code, pkt.reason, pkt.headers, pkt.body)  # may refuse (D9, D17): 502
            self.written = True
            self.code = code
            self._rejection_bytes = len(pkt.body)
            self.conn.write(out)
            self.done = True
            return
        super()._on_error(pkt)

    def _on_credit(self, pkt: zp.Packet) -> None:
        self.credits += pkt.credits
        if self.ws is not None:
            self._forward()

    def _on_control(self, pkt: zp.Packet) -> None:
        if self.ws is None:
            raise BadMessage(f"unexpected packet type {pkt.type_name}")
        if len(pkt.body) > MAX_CONTROL:
            raise BufferExceeded("control frame payload too large")
        self.credits += pkt.credits
        n = len(pkt.body)
        credit = (lambda: self._send(b"credit", credits=n)) if n else None
        if self.ws.state is ConnectionState.OPEN:
            self._write(Ping(payload=pkt.body) if pkt.type == b"ping" else Pong(payload=pkt.body),
                        credit)
        elif credit is not None:
            credit()
        self._forward()

    def _on_close(self, pkt: zp.Packet) -> None:
        if self.ws is None:
            raise BadMessage("unexpected packet type close")
        code = 1000 if pkt.code is None else pkt.code
        try:
            reason = pkt.body.decode("utf-8")
        except UnicodeDecodeError:
            raise HandlerError("close reason is not valid utf-8") from None
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._write(CloseConnection(code=code, reason=reason))
        if self.ws.state is ConnectionState.CLOSED:
            self.done = True

    def _fail(self, e: Any) -> None:
        if isinstance(e, Stopped) and self.ws is not None and self.ws.state is ConnectionState.OPEN:
            try:  # D12: WebSockets are closed with 1001 (going away)
                self._write(CloseConnection(code=1001))
                with gevent.Timeout(1.0, False):
                    self.conn.flush_all()
            except CondureError:
                pass
        self.conn.websocket = False
        super()._fail(e)

    def _body_bytes(self) -> int:
        if self.ws is not None:  # the frames written since the handshake
            return self.conn.queued_bytes_sent
        if self._rejection_bytes is not None:
            return self._rejection_bytes
        return super()._body_bytes()

    def _write(self, event: Any, on_written: Any = None) -> None:
        assert self.ws is not None
        try:
            data = self.ws.send(event)
        except (LocalProtocolError, ValueError) as e:
            raise BadMessage(f"cannot send to client: {e}") from None
        self.conn.queue_write(data, on_written)


def _frame_header(first: int, n: int) -> bytes:
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return struct.pack("!BBH", first, 126, n)
    return struct.pack("!BBQ", first, 127, n)


WebSocketExchange.HANDLERS = {
    **Exchange.HANDLERS,
    zp.DATA: WebSocketExchange._on_data,
    b"credit": WebSocketExchange._on_credit,
    b"error": WebSocketExchange._on_error,
    b"ping": WebSocketExchange._on_control,
    b"pong": WebSocketExchange._on_control,
    b"close": WebSocketExchange._on_close,
}
