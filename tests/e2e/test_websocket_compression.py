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


@pytest.mark.parametrize("args, credits", [((), 8192), (("--buffer-size", "4096"), 4096)])
def test_deflate_session_gets_the_whole_buffer_size_as_credits(condure, args: tuple,
                                                                credits: int) -> None:
    """pushpin-connmgr (connmgr.md 6) grants the full --buffer-size to a session
    with permessage-deflate (condure 1.10.1 granted three quarters of it)."""
    cd = condure("--compression", *args)
    h = Handler(cd.base)
    head, req = handshake_head(cd, h, b"permessage-deflate")
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in head
    assert req[b"credits"] == credits
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


def peak_rss_kb(pid: int) -> int:
    """VmHWM: the process's peak RSS so far, transient peaks included."""
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0])


def send_zeros(cd, h: Handler, c: WsClient, req: dict, size: int) -> tuple[int, int | None, int]:
    """One compressed message of `size` zero bytes (about size/1000 on the wire); the
    handler grants back what it gets. Returns (bytes the handler got, the close code
    it got or None if the message ended, how much condure's peak RSS grew, in KB)."""
    before = peak_rss_kb(cd.pid)
    c.sock.sendall(c.ws.send(BytesMessage(data=b"\0" * size)))
    total = 0
    while True:
        m = h.recv(timeout=10)
        if m.get(b"type") == b"close":
            return total, m[b"code"], peak_rss_kb(cd.pid) - before
        assert m.get(b"type") is None, m
        total += len(m.get(b"body", b""))
        h.credit(req, len(m.get(b"body", b"")))
        if not m.get(b"more"):
            return total, None, peak_rss_kb(cd.pid) - before


def open_session(cd, h: Handler) -> tuple[WsClient, dict]:
    c = WsClient(cd.port)
    req = h.recv_request()
    h.respond(req, 101, "Switching Protocols", credits=65536)
    c.events()
    return c, req


def test_decompression_bomb_is_bounded(condure) -> None:
    """64 MiB of zeros (about 65 KB on the wire): condure inflates a piece at a time
    under the handler's credits and closes with 1009 past --compression-message-max
    (default 16 MiB, D18); its RSS must not grow by more than a few MB while the
    handler reads everything."""
    cd = condure("--compression")
    h = Handler(cd.base)
    c, req = open_session(cd, h)
    total, code, growth = send_zeros(cd, h, c, req, 64 * 1024 * 1024)
    assert code == 1009
    assert 1_000_000 < total <= 16 * 1024 * 1024
    assert growth < 8 * 1024, f"peak RSS grew {growth} KB"
    closed = [ev for ev in c.events() if isinstance(ev, CloseConnection)]
    assert closed and closed[0].code == 1009
    assert cd.alive()
    c.close()
    h.close()


LIMIT = 100_000


def test_message_at_the_limit_passes_one_byte_more_closes_with_1009_d18(condure) -> None:
    cd = condure("--compression", "--compression-message-max", str(LIMIT))
    h = Handler(cd.base)
    c, req = open_session(cd, h)
    assert send_zeros(cd, h, c, req, LIMIT)[:2] == (LIMIT, None)  # whole, ended, no close
    assert send_zeros(cd, h, c, req, LIMIT)[:2] == (LIMIT, None)  # the count is per message
    c.send(TextMessage(data="small"))
    assert h.recv()[b"body"] == b"small"
    total, code, _ = send_zeros(cd, h, c, req, LIMIT + 1)
    assert code == 1009 and total <= LIMIT
    closed = [ev for ev in c.events() if isinstance(ev, CloseConnection)]
    assert closed and closed[0].code == 1009
    c.close()
    # without compression nothing is inflated, and nothing limited (messages go in pieces)
    plain = WsClient(cd.port, deflate=False)
    req = h.recv_request()
    h.respond(req, 101, "Switching Protocols", credits=65536)
    plain.events()
    assert send_zeros(cd, h, plain, req, LIMIT * 3)[:2] == (LIMIT * 3, None)
    plain.close()
    assert cd.alive()
    h.close()


def test_zero_is_no_limit_and_memory_stays_bounded_d18(condure) -> None:
    """condure 1.9.1's behaviour on request: a message past the default limit (20 MiB
    from about 20 KB on the wire) reaches the handler whole."""
    cd = condure("--compression", "--compression-message-max", "0")
    h = Handler(cd.base)
    c, req = open_session(cd, h)
    size = 20 * 1024 * 1024
    total, code, growth = send_zeros(cd, h, c, req, size)
    assert (total, code) == (size, None)
    assert growth < 8 * 1024, f"peak RSS grew {growth} KB"
    c.close()
    h.close()
