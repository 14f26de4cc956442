"""The client's view: responses parsed with h11, WebSocket frames made and
read with a client-side wsproto (no hand-made bytes where a library can
make them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h11
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Event
from wsproto.extensions import Extension, PerMessageDeflate

from doubles import Client

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    interim: list[int] = field(default_factory=list)  # 1xx before it
    complete: bool = False

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


def replies(data: bytes | bytearray, method: bytes = b"GET") -> list[Reply]:
    """Every response in `data` (then EOF), as a client that sent `method` reads them."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(bytes(data))
    out: list[Reply] = []
    interim: list[int] = []
    current: Reply | None = None
    eof = False
    while True:
        if conn.our_state is h11.IDLE:
            conn.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
            conn.send(h11.EndOfMessage())
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError:
            break  # cut short: `current` stays incomplete
        if ev is h11.NEED_DATA:
            if eof:
                break
            conn.receive_data(b"")
            eof = True
        elif isinstance(ev, h11.InformationalResponse):
            interim.append(ev.status_code)
        elif isinstance(ev, h11.Response):
            current = Reply(ev.status_code, list(ev.headers), interim=interim)
            out.append(current)
            interim = []
        elif isinstance(ev, h11.Data):
            assert current is not None
            current.body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            assert current is not None
            current.complete = True
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
        else:  # ConnectionClosed
            break
    return out


def only_reply(data: bytes | bytearray, method: bytes = b"GET") -> Reply:
    (reply,) = replies(data, method)
    return reply


class WsClient:
    """A WebSocket client's state machine, after the handshake."""

    def __init__(self, deflate: bool = False) -> None:
        extensions: list[Extension] = []
        if deflate:
            ext = PerMessageDeflate()
            ext.finalize("permessage-deflate")
            extensions.append(ext)
        self.conn = Connection(ConnectionType.CLIENT, extensions)

    def send(self, *events: Any) -> Client:
        """The frames of `events` as a script step."""
        return Client(b"".join(self.conn.send(ev) for ev in events))

    def receive(self, written: bytes | bytearray) -> list[Event]:
        """The events in what condure wrote after its 101 head."""
        _head, sep, frames = bytes(written).partition(b"\r\n\r\n")
        assert sep, "no 101 head"
        self.conn.receive_data(frames)
        return list(self.conn.events())


def frames_from_server(*events: Any) -> bytes:
    """Unmasked frames, as only a server sends them (a protocol violation
    from a client)."""
    server = Connection(ConnectionType.SERVER)
    return b"".join(server.send(ev) for ev in events)


def oversized_ping(client: WsClient, n: int = 126) -> Client:
    """A masked ping with `n` > 125 payload bytes, which wsproto will not make:
    its binary frame of that size with the opcode byte turned into a ping's."""
    frame = client.conn.send(BytesMessage(b"p" * n))
    assert frame[0] == 0x82
    return Client(b"\x89" + frame[1:])
