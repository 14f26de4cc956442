"""--compression: permessage-deflate negotiation, both directions, bounded inflation."""
from __future__ import annotations

import socket

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Request,
                            TextMessage)
from wsproto.extensions import PerMessageDeflate

from zhttp_handler import Handler

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


def handshake_head(cd, h: Handler, extensions: bytes | None) -> tuple[bytes, dict]:
    c = socket.create_connection(("127.0.0.1", cd.port), timeout=5)
    extra = b"Sec-WebSocket-Extensions: " + extensions + b"\r\n" if extensions else b""
    c.sendall(UPGRADE + extra + b"\r\n")
    req = h.recv_request()
    h.respond(req, 101, "Switching Protocols", credits=100000)
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(4096)
    c.close()
    return head, req


@pytest.mark.parametrize("offer, answer", [
    (b"permessage-deflate", b"permessage-deflate"),
    (b"permessage-deflate; client_max_window_bits", b"permessage-deflate"),
    (b"permessage-deflate; client_no_context_takeover; server_no_context_takeover",
     b"permessage-deflate; client_no_context_takeover; server_no_context_takeover"),
    (b"permessage-deflate; server_max_window_bits=15", b"permessage-deflate"),
    (b"permessage-deflate; server_max_window_bits=10", None),  # declined
    (b"permessage-deflate; foo=1, permessage-deflate; client_no_context_takeover",
     b"permessage-deflate; client_no_context_takeover"),  # first valid offer wins
    (b"x-webkit-deflate-frame", None),
])
def test_negotiation(condure, offer: bytes, answer: bytes | None) -> None:
    cd = condure("--compression")
    h = Handler(cd.base)
    head, req = handshake_head(cd, h, offer)
    line = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-extensions:")]
    if answer is None:
        assert line == []
    else:
        assert line == [b"Sec-WebSocket-Extensions: " + answer]
    h.close()


def test_no_negotiation_without_the_flag(condure) -> None:
    cd = condure()
    h = Handler(cd.base)
    head, _ = handshake_head(cd, h, b"permessage-deflate")
    assert b"sec-websocket-extensions" not in head.lower()
    h.close()


class WsClient:
    def __init__(self, port: int, deflate: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.ws = WSConnection(ConnectionType.CLIENT)
        exts = [PerMessageDeflate()] if deflate else []
        self.sock.sendall(self.ws.send(Request(host="a", target="/ws", extensions=exts)))

    def events(self) -> list:
        self.ws.receive_data(self.sock.recv(65536))
        return list(self.ws.events())

    def send(self, event) -> None:
        self.sock.sendall(self.ws.send(event))

    def close(self) -> None:
        self.sock.close()


def test_messages_are_compressed_both_ways_credits_count_plain_bytes(condure) -> None:
    cd = condure("--compression")
    h = Handler(cd.base)
    c = WsClient(cd.port)
    req = h.recv_request()
    h.respond(req, 101, "Switching Protocols", credits=100000)
    (accept,) = c.events()
    assert isinstance(accept, AcceptConnection) and accept.extensions
    text = "compress me please " * 50
    raw = c.ws.send(TextMessage(data=text))
    assert len(raw) < len(text) // 4 and raw[0] & 0x40  # RSV1: compressed on the wire
    c.sock.sendall(raw)
    got = b""
    while True:
        m = h.recv()
        got += m.get(b"body", b"")
        if not m.get(b"more"):
            break
    assert got == text.encode() and m[b"content-type"] == b"text"
    h.body(req, text, **{"content-type": "text"})
    received = ""
    while not received.endswith("please "):
        for ev in c.events():
            assert isinstance(ev, TextMessage)
            received += ev.data
    assert received == text
    credit = h.recv_type(b"credit")
    assert credit[b"credits"] == len(text)  # uncompressed bytes
    c.close()
    h.close()


def test_decompression_bomb_is_bounded(condure) -> None:
    """64 MiB of zeros (about 65 KB on the wire): condure inflates a piece at a time
    under the handler's credits and closes with 1009 past its message cap; its RSS
    must not grow by more than a few MB while the handler reads everything."""
    cd = condure("--compression")
    h = Handler(cd.base)
    c = WsClient(cd.port)
    req = h.recv_request()
    h.respond(req, 101, "Switching Protocols", credits=65536)
    c.events()

    def rss() -> int:
        with open(f"/proc/{cd.pid}/status") as f:
            return int(f.read().split("VmRSS:")[1].split()[0])

    before = peak = rss()
    wire = c.ws.send(BytesMessage(data=b"\0" * (64 * 1024 * 1024)))
    assert len(wire) < 200_000
    c.sock.sendall(wire)
    total = 0
    while True:
        m = h.recv(timeout=10)
        if m.get(b"type") == b"close":
            assert m[b"code"] == 1009
            break
        assert m.get(b"type") is None
        total += len(m.get(b"body", b""))
        h.credit(req, len(m.get(b"body", b"")))
        peak = max(peak, rss())
    assert 1_000_000 < total <= 16 * 1024 * 1024
    assert peak - before < 8 * 1024, f"RSS grew {peak - before} KB"
    closed = [ev for ev in c.events() if isinstance(ev, CloseConnection)]
    assert closed and closed[0].code == 1009
    assert cd.alive()
    c.close()
    h.close()
