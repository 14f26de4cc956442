"""WebSocket <-> ZHTTP: one mapping for server and client mode.

The other end's frames (a client's in server mode, an origin's in client
mode) come out of wsproto as events and go to the handler through an
`Outflow` (credits); the handler's packets become wsproto events. The rules,
shared/zhttp/server.md section 8 and client.md section 8:

* text and binary messages are forwarded frame by frame, never reassembled;
  text goes as its UTF-8 bytes, so a piece cut by credits may end inside a
  character and the rest follows as it is;
* ping and pong are forwarded, never answered by condure itself;
* a close carries its code unless the frame had none (1005) or there was
  no frame (1006), and its reason as the body;
* a handler's text message is decoded across its pieces (a character split
  over two packets is decoded whole; invalid bytes become U+FFFD, the frame
  must be valid UTF-8); the first piece decides text or binary;
* a handler's close without a code is 1000; its reason must be UTF-8.

Pure: wsproto is a sans-IO state machine, and nothing here touches a socket.
"""
from __future__ import annotations

import codecs
import operator
from typing import Any

from wsproto.connection import ConnectionState
from wsproto.events import (BytesMessage, CloseConnection, Event, Message, Ping, Pong,
                            TextMessage)

from .. import wsframe
from ..errors import HandlerError
from .flow import Outflow
from .packet import Packet

NO_STATUS = 1005  # the close frame carried no code
ABNORMAL = 1006  # no close frame at all (made up by wsproto)


def to_flow(ev: Event, flow: Outflow) -> bool:
    """Queue a wsproto event for the handler; False if it is not a frame event
    (a handshake event, left to the caller)."""
    if isinstance(ev, Message):
        if isinstance(ev, TextMessage):
            flow.message(b"text", memoryview(ev.data.encode("utf-8")), ev.message_finished)
        else:
            flow.message(b"binary", memoryview(ev.data), ev.message_finished)
    elif isinstance(ev, Ping):
        flow.control(b"ping", bytes(ev.payload))
    elif isinstance(ev, Pong):
        flow.control(b"pong", bytes(ev.payload))
    elif isinstance(ev, CloseConnection):
        flow.other(b"close", int(ev.code), ev.reason.encode("utf-8") if ev.reason else b"")
    else:
        return False
    return True


def close_fields(code: int, reason: bytes) -> dict[str, Any]:
    """The fields of the `close` packet that reports the other end's close."""
    fields: dict[str, Any] = {}
    if code not in (NO_STATUS, ABNORMAL):
        fields["code"] = code
    if reason:
        fields["body"] = reason
    return fields


def close_event(pkt: Packet) -> CloseConnection:
    """The close frame a handler's `close` packet asks for."""
    try:
        reason = pkt.body.decode("utf-8")
    except UnicodeDecodeError:
        raise HandlerError("close reason is not valid utf-8") from None
    return CloseConnection(code=1000 if pkt.code is None else pkt.code, reason=reason)


def control_event(pkt: Packet) -> Ping | Pong:
    return Ping(payload=pkt.body) if pkt.type == b"ping" else Pong(payload=pkt.body)


def _fast_path_works() -> bool:
    """wsproto's state between frames is where `Reader._idle` reads it (wsproto
    1.2-1.3); with another layout the fast path stays off and wsproto reads all."""
    from wsproto.connection import Connection, ConnectionType
    try:
        ws = Connection(ConnectionType.SERVER)
        return _idle(ws) and ws._proto.extensions == []
    except AttributeError:
        return False


def _idle(ws: Any) -> bool:
    """wsproto's Connection `ws` is open, between frames and between messages,
    with nothing buffered or waiting, and still parsing (after a protocol
    error its frame generator is over while the state stays OPEN): the fast
    path may read the next bytes."""
    proto = ws._proto
    decoder = proto._frame_decoder
    return (ws._state is _OPEN and decoder.header is None and not decoder.buffer.buffer
            and proto._message_decoder.opcode is None and not ws._events
            and proto._parse_more.gi_frame is not None)


class Reader:
    """The other end's bytes into wsproto and its events into an Outflow.

    `feed` > 0 (compression): bytes go to wsproto that many at a time and
    only while nothing waits for credits, so a small compressed frame cannot
    inflate into more than one piece's worth of waiting data (D18).

    `fast`: `ws` is a wsproto Connection (not the handshake's WSConnection)
    with no extension, and `feed` is 0. Then, whenever wsproto is between
    messages with nothing buffered, the whole plain text and binary frames at
    the start of the bytes go straight to the flow (`wsframe.take`, the same
    items wsproto's events would have made) and only the rest goes to wsproto;
    a fragmented message, a control frame, a frame cut by the read, anything
    odd, is wsproto's, and it keeps the bytes from there on until it is back
    between messages.
    """

    __slots__ = ("ws", "flow", "feed", "wire", "eof", "_eof_given", "_fast", "_masked")

    def __init__(self, ws: Any, flow: Outflow, feed: int = 0, fast: bool = False) -> None:
        self.ws = ws  # a wsproto Connection or WSConnection
        self.flow = flow
        self.feed = feed
        self.wire = bytearray()  # bytes not yet given to wsproto (feed > 0 or handshake)
        self.eof = False
        self._eof_given = False
        self._fast = fast and not feed and FAST_PATH and not ws._proto.extensions
        self._masked = fast and not ws.client  # a server reads masked frames

    def receive(self, data: bytes) -> list[Event]:
        """New bytes (b"": end of input); returns the events that are not
        frame events (handshake), in order."""
        if not data:
            self.eof = True
        elif not self.feed and not self.wire:  # the usual case: no copy
            if self._fast and _idle(self.ws):
                n = wsframe.take(data, self._masked, self.flow.message)
                if n == len(data):
                    return []
                if n:
                    data = data[n:]
            self.ws.receive_data(data)
            return self._events()
        else:
            self.wire += data
        return self.pump()

    @property
    def behind(self) -> bool:
        """True while bytes wait for wsproto (feed them before reading more);
        hot paths test `wire` itself."""
        return bool(self.wire)

    def pump(self) -> list[Event]:
        """Give wsproto waiting bytes until something waits in the flow."""
        wire = self.wire
        others: list[Event] = []
        while wire and not self.flow.queue and not others:
            n = self.feed or len(wire)
            piece = bytes(wire[:n])
            del wire[:n]
            self.ws.receive_data(piece)
            others += self._events()
        if self.eof and not wire and not self._eof_given:
            self._eof_given = True
            self.ws.receive_data(None)
            others += self._events()
        return others

    def _events(self) -> list[Event]:
        flow = self.flow
        others: list[Event] = []
        for ev in self.ws.events():
            if not to_flow(ev, flow):
                others.append(ev)
        return others


_OPEN = ConnectionState.OPEN
FAST_PATH = _fast_path_works()
# a wsproto Connection's state without its property (a Python call); hot
# paths read it several times a message
state = operator.attrgetter("_state" if FAST_PATH else "state")


class Writer:
    """A handler's message pieces as wsproto events (the compressed path and
    client mode; uncompressed server frames are built directly)."""

    __slots__ = ("_decoder", "_binary")

    def __init__(self) -> None:
        self._decoder: Any = None  # the UTF-8 decoder of the text message in progress
        self._binary = False

    def event(self, pkt: Packet) -> BytesMessage | TextMessage:
        last = not pkt.more
        if self._decoder is None:  # the first piece of a message decides its type
            self._binary = pkt.content_type == b"binary"
            self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        if last:
            decoder, self._decoder = self._decoder, None
        else:
            decoder = self._decoder
        if self._binary:
            return BytesMessage(data=pkt.body, message_finished=last)
        return TextMessage(data=decoder.decode(pkt.body, final=last), message_finished=last)
