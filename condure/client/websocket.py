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
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Pong,
                            RejectConnection, RejectData, Request, TextMessage)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..wsdeflate import DEFLATE_FEED, BoundedDeflate
from ..zhttp import packet as zp
from .connect import ClientError
from .http1 import open_origin
from .request import ClientRequest

if TYPE_CHECKING:
    from .session import StreamSession

READ_SIZE = 65536


@dataclass(slots=True)
class _Rest:
    """What is left of an origin message after a piece went to the handler.

    Kept as bytes: the handler's credits count bytes, so a piece may end
    inside a UTF-8 character, whose other bytes must follow as they are (as
    decoded text on their own they would be replaced by U+FFFD)."""
    data: bytes
    ctype: bytes
    message_finished: bool


def _text_decoder() -> codecs.IncrementalDecoder:
    # a handler's text message arrives in pieces cut by credits, not by
    # character: a character split over two packets is decoded whole
    return codecs.getincrementaldecoder("utf-8")("replace")


class _Client:
    def __init__(self, session: StreamSession, req: ClientRequest) -> None:
        self.s = session
        self.req = req
        cfg = session.service.config
        session.origin = open_origin(req, session.service.pool, cfg.deny_out_internal,
                                     cfg.stream_timeout)
        self.sock = session.origin.sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Any] = []
        self.closed_by_handler = False
        self.closed_by_origin = False
        self._head: bytearray | None = bytearray()  # the handshake response as received, until it is complete
        # with --compression, origin bytes go to wsproto DEFLATE_FEED at a time and
        # only while no event waits (bounded inflation, D18); 0: all at once
        self._feed = DEFLATE_FEED if cfg.compression else 0
        self._wire = bytearray()  # origin bytes not yet given to wsproto
        self._eof = False
        self._text_in = _text_decoder()  # the handler's text message in progress

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
        except OSError as e:
            raise ClientError("undefined-condition", f"read: {e}") from None
        if self._head is not None and len(self._head) < READ_SIZE:
            self._head += data
        self._wire += data
        self._eof = not data
        self._feed_some()

    def _feed_some(self) -> None:
        """Give wsproto origin bytes until some events come out (or none are left)."""
        wire = self._wire
        try:
            while wire and not self.events:
                n = self._feed or len(wire)
                piece = bytes(wire[:n])
                del wire[:n]
                self.ws.receive_data(piece)
                self.events.extend(self.ws.events())
            if self._eof and not wire:
                self.ws.receive_data(None)
                self.events.extend(self.ws.events())
        except RemoteProtocolError as e:
            raise ClientError("undefined-condition", str(e)) from None

    # --- handshake ----------------------------------------------------------

    def handshake(self) -> None:
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
            while not self.events:
                self.s._until_readable()
                self.read()
            ev = self.events.pop(0)
            if isinstance(ev, AcceptConnection):
                self._accepted(ev)
                return
            if isinstance(ev, RejectConnection):
                self._rejected(ev)
                return

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

    def _accepted(self, ev: AcceptConnection) -> None:
        s = self.s
        s.header_sent = True
        reason, headers = self._response_head()
        # the window (D22) is what may wait here for the origin: deliver() refuses more
        s.grant(s.service.config.ws_window, code=101, reason=reason, headers=headers or None)

    def _rejected(self, ev: RejectConnection) -> None:
        body = bytearray()
        finished = not ev.has_body
        while not finished and len(body) < self.s.service.config.buffer_size:
            while not self.events:
                self.s._until_readable()
                self.read()
            item = self.events.pop(0)
            if isinstance(item, RejectData):
                body += item.data
                finished = item.body_finished
        reason, headers = self._response_head()
        self.s.send(b"error", condition=b"rejected", code=ev.status_code, reason=reason,
                    headers=headers or None,
                    body=bytes(body), keep_empty=("body",))  # always present, as condure
        raise _Done()

    # --- messages -------------------------------------------------------------

    def loop(self) -> None:
        s = self.s
        while True:
            while (item := s._take()) is not None:
                self.from_handler(item[0])
            if self.closed_by_handler and self.closed_by_origin:
                return
            if self.events:
                if not self.to_handler():
                    s.wait()  # out of credits
                continue
            if self._wire:
                self._feed_some()
                if self.events:
                    continue
            if s.wait(self.sock):
                self.read()

    def from_handler(self, pkt: zp.Packet) -> None:
        kind = pkt.type
        if kind == zp.DATA:  # within its credits: StreamSession.deliver checked
            if not self.closed_by_handler:
                msg: BytesMessage | TextMessage
                if pkt.content_type == b"binary":
                    msg = BytesMessage(data=pkt.body, message_finished=not pkt.more)
                else:
                    text = self._text_in.decode(pkt.body, final=not pkt.more)
                    msg = TextMessage(data=text, message_finished=not pkt.more)
                self.write(msg)
            if pkt.body:
                self.s.grant(len(pkt.body))
        elif kind in (b"ping", b"pong"):
            self.write(Ping(payload=pkt.body) if kind == b"ping" else Pong(payload=pkt.body))
            if pkt.body:
                self.s.grant(len(pkt.body))
        elif kind == b"close":
            code = 1000 if pkt.code is None else pkt.code
            reason = pkt.body.decode("utf-8", "replace") if pkt.code is not None else ""
            if not self.closed_by_handler:
                self.closed_by_handler = True
                self.write(CloseConnection(code=code, reason=reason))
        elif kind not in (b"credit", b"keep-alive"):
            raise _HandlerFault(kind)

    def to_handler(self) -> bool:
        """Forward the next origin event; False when credits ran out."""
        s = self.s
        ev = self.events[0]
        if isinstance(ev, (Message, _Rest)):
            if isinstance(ev, _Rest):
                data, ctype = ev.data, ev.ctype
            elif isinstance(ev, TextMessage):
                data, ctype = ev.data.encode(), b"text"
            else:
                data, ctype = bytes(ev.data), b"binary"
            if data and s.credits <= 0:
                return False
            # pieces up to the window, not --buffer-size (D22): Pushpin's proxy
            # relays a piece that ends exactly on its client's credits and then
            # waits for a signal that never comes; Zurl sends whole frames
            n = min(s.credits, s.service.config.ws_window, len(data))
            piece, rest = data[:n], data[n:]
            s.credits -= n
            last = ev.message_finished and not rest
            s.send(zp.DATA, content_type=ctype, body=piece, more=not last)
            if rest:
                self.events[0] = _Rest(rest, ctype, ev.message_finished)
                return True
        elif isinstance(ev, (Ping, Pong)):
            payload = bytes(ev.payload)
            if len(payload) > s.credits:
                return False
            s.credits -= len(payload)
            s.send(b"ping" if isinstance(ev, Ping) else b"pong", body=payload)
        elif isinstance(ev, CloseConnection):
            if self.ws.state is ConnectionState.OPEN:
                # wsproto reports a protocol error as a close it made up: the
                # origin sent no close, the session fails (cancel) as with condure
                raise ClientError("undefined-condition", f"bad frame from origin: {ev.reason}")
            fields: dict[str, Any] = {}
            if ev.code not in (1005, 1006):
                fields["code"] = int(ev.code)
                fields["body"] = ev.reason.encode() if ev.reason else None
            if ev.code == 1006:
                raise ClientError("undefined-condition", "origin dropped the connection")
            self.closed_by_origin = True
            s.send(b"close", **fields)
        self.events.pop(0)
        return True


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


class _Done(Exception):
    pass


class _HandlerFault(Exception):
    pass


def run_websocket(session: StreamSession, req: ClientRequest) -> None:
    from .session import HandlerGone
    try:
        client = _Client(session, req)
        client.handshake()
        client.loop()
    except _Done:
        return
    except _HandlerFault as e:
        raise HandlerGone(f"unexpected packet {e}") from None
