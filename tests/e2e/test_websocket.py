"""WebSocket in stream mode, end to end.

Each test starts its own `python -m condure` subprocess (conftest), plays the
handler with real ZeroMQ sockets over ipc (zhttp_handler.Handler) or runs
loadtest/ws_echo_handler.py, and plays the client over a plain TCP socket:
hand-built frames (so protocol violations and exact frame headers can be
checked) or wsproto. References: shared/zhttp/server.md section 8 and
docs/deviations.md D2, D3, D7.
"""
from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping,
                            Pong, Request, TextMessage)

from rawhttp import Client, get
from zhttp_handler import Handler

REPO_ROOT = Path(__file__).resolve().parents[2]
ECHO_HANDLER = REPO_ROOT / "loadtest" / "ws_echo_handler.py"

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3 example
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
EXT = {b"multi": True}

TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

Start = Callable[..., tuple]


# ---------------------------------------------------------------------------
# client side helpers


def upgrade(path: str = "/ws", host: bytes = b"example.com", extra: bytes = b"",
            upgrade_value: bytes = b"websocket", connection: bytes = b"Upgrade",
            key: bytes | None = KEY, version: bytes | None = b"13",
            method: bytes = b"GET", body: bytes | None = None) -> bytes:
    """Bytes of an upgrade request (each part can be broken for negative tests)."""
    lines = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: " + host,
             b"Upgrade: " + upgrade_value, b"Connection: " + connection]
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + key)
    if version is not None:
        lines.append(b"Sec-WebSocket-Version: " + version)
    head = b"\r\n".join(lines) + b"\r\n" + extra
    if body is not None:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + (body or b"")


def frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = True,
          rsv: int = 0) -> bytes:
    """One client frame built by hand (RFC 6455 section 5.2)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int | None = None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]


class WSClient(Client):
    """rawhttp.Client plus frame reading and writing."""

    @classmethod
    def with_rcvbuf(cls, port: int, size: int, timeout: float = 5.0) -> WSClient:
        """A client whose receive buffer is set small before connecting."""
        self = cls.__new__(cls)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        self.sock, self.timeout, self.buf, self.eof = sock, timeout, bytearray(), False
        return self

    def read_frame(self) -> Frame:
        b0, b1 = self.read_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read_exact(8))[0]
        key = self.read_exact(4) if b1 & 0x80 else b""
        payload = self.read_exact(n)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, bool(key), payload)

    def read_message(self) -> tuple[int, bytes, list[Frame]]:
        """(opcode of the first frame, whole content, frames) of one data message."""
        frames = [self.read_frame()]
        assert frames[0].opcode in (TEXT, BINARY), frames[0]
        while not frames[-1].fin:
            frames.append(self.read_frame())
            assert frames[-1].opcode == CONT, frames[-1]
        return frames[0].opcode, b"".join(f.payload for f in frames), frames

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: object) -> None:
        self.send(frame(opcode, payload, **kwargs))  # type: ignore[arg-type]

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.send_frame(CLOSE, close_payload(code, reason))


def handshake(h: Handler, client: WSClient, request: bytes | None = None,
              credits: int | None = 200000, headers: tuple = ()) -> dict:
    """Upgrade `client`, accept with a 101; returns the request packet."""
    client.send(upgrade() if request is None else request)
    req = h.recv_request()
    extra = {} if credits is None else {"credits": credits}
    h.respond(req, 101, b"Switching Protocols", headers, **extra)
    r = client.read_head()
    assert r.status == 101, r.head
    return req


def recv_data(h: Handler, req: dict, timeout: float = 5.0) -> dict:
    p = h.recv(timeout)
    assert p[b"id"] == req[b"id"], p
    assert b"type" not in p, p
    return p


def recv_message(h: Handler, req: dict) -> tuple[bytes, bytes, list[dict]]:
    """Data packets of one client message: (content-type, content, packets)."""
    packets = [recv_data(h, req)]
    while packets[-1].get(b"more"):
        packets.append(recv_data(h, req))
    ctypes = {p.get(b"content-type") for p in packets}
    assert len(ctypes) == 1, packets
    return ctypes.pop(), b"".join(p.get(b"body", b"") for p in packets), packets


def recv_credits(h: Handler, req: dict, total: int) -> list[int]:
    """`credit` packets until they add up to `total`."""
    got: list[int] = []
    while sum(got) < total:
        p = h.recv_type(b"credit")
        assert p[b"id"] == req[b"id"]
        got.append(p[b"credits"])
    assert sum(got) == total, got
    return got


@pytest.fixture
def start(condure, handler_factory) -> Start:
    """start(*condure_args) -> (condure process, handler)."""

    def _start(*args: str, **kwargs: object) -> tuple:
        c = condure(*args, **kwargs)
        return c, handler_factory(c.base)

    return _start


@pytest.fixture
def ch(start: Start) -> tuple:
    return start()


@pytest.fixture(params=["h11", "httptools"])
def pch(start: Start, request: pytest.FixtureRequest) -> tuple:
    """Like `ch`, with each --http-parser (answers to requests must not depend on it)."""
    return start("--http-parser", request.param)


@pytest.fixture
def ws(ch):
    """(condure, handler, open client, request packet) for an accepted session."""
    c, h = ch
    client = WSClient(c.port)
    try:
        req = handshake(h, client)
        yield c, h, client, req
    finally:
        client.close()


def assert_serves_websocket(c, h: Handler) -> None:
    """The process is alive and a fresh connection completes a WebSocket echo."""
    assert c.alive(), c.log_text()
    with WSClient(c.port) as other:
        req = handshake(h, other)
        other.send_frame(TEXT, b"still here")
        for _ in range(10):  # an earlier session's cancel may still be on its way
            p = h.recv()
            if p[b"id"] == req[b"id"]:
                break
            assert p.get(b"type") == b"cancel", p
        assert p.get(b"type") is None and p[b"body"] == b"still here", p
        h.body(req, b"yes", content_type="text")
        assert other.read_message()[1] == b"yes"


# ---------------------------------------------------------------------------
# handshake


def test_handshake_head_is_exact(ch) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        h.respond(req, 101, b"Switching Protocols",
                  [(b"Sec-WebSocket-Protocol", b"chat"), (b"X-Custom", b"1"),
                   (b"Upgrade", b"bogus"), (b"connection", b"bogus"),
                   (b"Sec-WebSocket-Accept", b"bogus"), (b"Sec-WebSocket-Extensions", b"bogus")],
                  credits=1000)
        r = client.read_head()
        assert r.head == (b"HTTP/1.1 101 Switching Protocols\r\n"
                          b"Sec-WebSocket-Protocol: chat\r\nX-Custom: 1\r\n"
                          b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n")
        client.expect_silence(0.2)  # no body, no frame on its own
        # and the session works
        client.send_frame(TEXT, b"hi")
        assert recv_message(h, req)[:2] == (b"text", b"hi")


def test_request_packet_fields(ch) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade("/chat?room=1", host=b"example.com:8080",
                            extra=b"Origin: http://example.com\r\n"
                                  b"Sec-WebSocket-Protocol: chat, superchat\r\n"))
        req = h.recv_request()
        assert list(req) == [b"from", b"id", b"seq", b"ext", b"method", b"uri", b"headers",
                             b"credits", b"router-resp", b"peer-address", b"peer-port"]  # D27
        assert req[b"from"] == b"condure"
        assert req[b"seq"] == 0
        assert req[b"ext"] == EXT
        assert req[b"method"] == b"GET"
        assert req[b"uri"] == b"ws://example.com:8080/chat?room=1"
        assert req[b"headers"] == [
            [b"Host", b"example.com:8080"], [b"Upgrade", b"websocket"],
            [b"Connection", b"Upgrade"], [b"Sec-WebSocket-Key", KEY],
            [b"Sec-WebSocket-Version", b"13"], [b"Origin", b"http://example.com"],
            [b"Sec-WebSocket-Protocol", b"chat, superchat"]]
        assert req[b"credits"] == 8192
        assert req[b"peer-address"] == b"127.0.0.1"
        assert req[b"peer-port"] == client.local_port
        for absent in (b"stream", b"more", b"body"):
            assert absent not in req


@pytest.mark.parametrize("upgrade_value,connection", [
    (b"WebSocket", b"Upgrade"),
    (b"WEBSOCKET", b"upgrade"),
    (b"websocket", b"keep-alive, Upgrade"),
])
def test_upgrade_token_in_any_case_d7(ch, upgrade_value: bytes, connection: bytes) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade(upgrade_value=upgrade_value, connection=connection))
        req = h.recv_request()
        assert req[b"uri"] == b"ws://example.com/ws"
        assert b"stream" not in req
        h.respond(req, 101, b"Switching Protocols", credits=1000)
        r = client.read_head()
        assert r.status == 101 and r.header(b"sec-websocket-accept") == ACCEPT
        client.send_frame(BINARY, b"\x00\x01")
        assert recv_message(h, req)[:2] == (b"binary", b"\x00\x01")


# connmgr.md 4.3 F: pushpin-connmgr's answer to an invalid upgrade (110 bytes of
# text), which we send with `Connection: close` (D1; condure 1.9.1 closes
# without a response)
INVALID_UPGRADE = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 110\r\n\r\nRequest contained an Upgrade header with value \"websocket\""
    b" but the request was not a valid WebSocket request.\n")


@pytest.mark.parametrize("request_bytes", [
    upgrade(version=b"8"),
    upgrade(version=None),
    upgrade(key=None),
    upgrade(key=b"k" * 221),
    upgrade(method=b"POST", body=b"hello"),
    upgrade(method=b"POST", body=b""),  # connmgr.md 8, scenario 22
    upgrade(extra=b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n",
    upgrade(upgrade_value=b"WebSocket", version=b"12"),
    upgrade(extra=b"Sec-WebSocket-Extensions: permessage-deflate,\r\n"),
    upgrade(extra=b"Sec-WebSocket-Extensions: x; a=\"open\r\n"),
    upgrade(extra=b"Sec-WebSocket-Extensions: \r\n"),
], ids=["version-8", "no-version", "no-key", "key-221", "post-with-body", "post-empty", "chunked",
        "mixed-case", "extensions-trailing-comma", "extensions-open-quote", "extensions-empty"])
def test_invalid_upgrade_is_400_d1(pch, request_bytes: bytes) -> None:
    c, h = pch
    with WSClient(c.port) as client:
        client.send(request_bytes)
        assert client.read_until_close(3.0) == INVALID_UPGRADE
    h.expect_nothing(0.3)  # the handler sees nothing
    assert_serves_websocket(c, h)


@pytest.mark.parametrize("ext, forwarded", [(b"a,,b", False), (b"a; b=1, c", True)],
                         ids=["malformed", "well-formed"])
def test_plain_request_with_sec_websocket_extensions(pch, ext: bytes, forwarded: bool) -> None:
    """condure 1.9.1 (observed) and connmgr read Sec-WebSocket-Extensions on
    every stream-mode request: a malformed value spoils a plain one too
    (condure closes, connmgr and we answer its invalid-WebSocket 400)."""
    c, h = pch
    with Client(c.port) as client:
        client.send(get("/plain", extra=b"Sec-WebSocket-Extensions: " + ext + b"\r\n"))
        if forwarded:
            req = h.recv_request()
            assert req[b"uri"] == b"http://example.com/plain"
        else:
            assert client.read_until_close(3.0) == INVALID_UPGRADE
            h.expect_nothing(0.3)


@pytest.mark.parametrize("request_bytes", [
    upgrade(key=b"k" * 220),  # condure hashes key + GUID in 256 bytes
    upgrade(extra=b"Sec-WebSocket-Extensions: x-unknown; a=\"q;,\", permessage-deflate; foo\r\n"),
], ids=["key-220", "extensions-odd-but-well-formed"])
def test_upgrade_at_the_edge_of_valid(ch, request_bytes: bytes) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        client.send(request_bytes)
        req = h.recv_request()
        assert req[b"uri"] == b"ws://example.com/ws"


# ---------------------------------------------------------------------------
# messages


def test_text_and_binary_both_ways(ws) -> None:
    c, h, client, req = ws
    client.send_frame(TEXT, "héllo".encode())
    p = recv_data(h, req)
    assert p[b"content-type"] == b"text" and p[b"body"] == "héllo".encode()
    assert b"more" not in p
    client.send_frame(BINARY, b"\x00\xff\x10")
    p = recv_data(h, req)
    assert p[b"content-type"] == b"binary" and p[b"body"] == b"\x00\xff\x10"
    client.send_frame(TEXT, b"")  # an empty message: content-type, no body
    p = recv_data(h, req)
    assert p[b"content-type"] == b"text" and b"body" not in p and b"more" not in p

    h.body(req, "wörld".encode(), content_type="text")
    f = client.read_frame()
    assert (f.fin, f.rsv, f.opcode, f.masked, f.payload) == (True, 0, TEXT, False,
                                                             "wörld".encode())
    h.body(req, b"\x01\x02", content_type="binary")
    f = client.read_frame()
    assert (f.fin, f.opcode, f.payload) == (True, BINARY, b"\x01\x02")
    h.send({"id": req[b"id"], "body": b"no type"})  # absent content-type -> text
    f = client.read_frame()
    assert (f.fin, f.opcode, f.payload) == (True, TEXT, b"no type")
    h.send({"id": req[b"id"], "content-type": b"binary"})  # empty message
    f = client.read_frame()
    assert (f.fin, f.opcode, f.payload) == (True, BINARY, b"")


def test_packets_from_condure_carry_increasing_seq(ws) -> None:
    c, h, client, req = ws
    seqs = []
    for i in range(5):
        client.send_frame(TEXT, b"m%d" % i)
        p = recv_data(h, req)
        assert p[b"from"] == b"condure" and p[b"ext"] == EXT
        seqs.append(p[b"seq"])
    assert seqs == [1, 2, 3, 4, 5]


def test_fragmented_client_message_arrives_as_more_pieces(ws) -> None:
    c, h, client, req = ws
    client.send_frame(TEXT, b"abc", fin=False)
    client.send_frame(CONT, b"def", fin=False)
    client.send_frame(CONT, b"ghi")
    packets = [recv_data(h, req) for _ in range(3)]
    assert [p.get(b"body") for p in packets] == [b"abc", b"def", b"ghi"]
    assert [p.get(b"more") for p in packets] == [True, True, None]
    assert all(p[b"content-type"] == b"text" for p in packets)
    # binary, with a control frame in the middle of the message
    client.send_frame(BINARY, b"\x01", fin=False)
    client.send_frame(PING, b"p")
    client.send_frame(CONT, b"\x02")
    p1 = recv_data(h, req)
    ping = h.recv_type(b"ping")
    p2 = recv_data(h, req)
    assert (p1[b"body"], p1[b"more"], p1[b"content-type"]) == (b"\x01", True, b"binary")
    assert ping[b"body"] == b"p"
    assert (p2[b"body"], p2.get(b"more"), p2[b"content-type"]) == (b"\x02", None, b"binary")


def test_frames_of_every_kind_in_one_write_arrive_in_order(ws) -> None:
    """Whole frames (the fast path), a fragmented message with a ping inside
    and a frame cut by the write (wsproto), then whole frames again."""
    c, h, client, req = ws
    big = bytes(range(256)) * 4  # 16-bit length
    last = frame(TEXT, "fin é".encode())
    client.send(frame(TEXT, b"a") + frame(BINARY, big) + frame(TEXT, "é".encode())
                + frame(TEXT, b"f1", fin=False) + frame(PING, b"p") + frame(CONT, b"f2")
                + frame(BINARY, b"b") + last[:3])
    def packets(n: int) -> list[tuple]:
        got = [h.recv() for _ in range(n)]
        assert all(p[b"id"] == req[b"id"] for p in got), got
        return [(p.get(b"type"), p.get(b"content-type"), p.get(b"body"), p.get(b"more"))
                for p in got]

    assert packets(6) == [
        (None, b"text", b"a", None), (None, b"binary", big, None),
        (None, b"text", "é".encode(), None), (None, b"text", b"f1", True),
        (b"ping", None, b"p", None), (None, b"text", b"f2", None)]
    client.send(last[3:] + frame(BINARY, b"z"))
    assert packets(3) == [(None, b"binary", b"b", None), (None, b"text", "fin é".encode(), None),
                          (None, b"binary", b"z", None)]


@pytest.mark.parametrize("ctype,opcode", [(b"text", TEXT), (b"binary", BINARY)])
def test_handler_more_pieces_become_one_fragmented_message(ws, ctype: bytes,
                                                           opcode: int) -> None:
    c, h, client, req = ws
    h.body(req, b"ab", more=True, content_type=ctype)
    h.body(req, b"cd", more=True, content_type=ctype)
    h.body(req, b"", more=True, content_type=ctype)
    h.body(req, b"ef", content_type=ctype)
    frames = [client.read_frame()]
    while not frames[-1].fin:
        assert len(frames) < 10
        frames.append(client.read_frame())
    assert frames[0].opcode == opcode and not frames[0].fin
    assert all(f.opcode == CONT for f in frames[1:])
    assert frames[-1].fin and not any(f.fin for f in frames[:-1])
    assert b"".join(f.payload for f in frames) == b"abcdef"
    assert [f.payload for f in frames if f.payload] == [b"ab", b"cd", b"ef"]
    assert all(not f.masked and f.rsv == 0 for f in frames)
    # the next message starts with its own opcode again
    h.body(req, b"next", content_type=ctype)
    assert client.read_message()[:2] == (opcode, b"next")


@pytest.mark.deadline(60)
def test_large_client_message_never_exceeds_handler_credits(ch) -> None:
    c, h = ch
    rng = random.Random(7)
    data = rng.randbytes(100_000)
    with WSClient(c.port) as client:
        req = handshake(h, client, credits=1000)
        client.send_frame(BINARY, data)
        granted, got, pieces = 1000, 0, []
        for _ in range(200):  # bounded: about 22 grants are needed
            while got < granted and got < len(data):
                p = recv_data(h, req)
                body = p.get(b"body", b"")
                assert p[b"content-type"] == b"binary"
                assert 0 < len(body) <= 8192, len(body)
                got += len(body)
                assert got <= granted, f"{got} bytes forwarded with {granted} credits"
                pieces.append(p)
            if got == len(data):
                break
            # condure used all credits and now waits for more
            h.expect_nothing(0.15)
            n = rng.randint(500, 9000)
            h.credit(req, n)
            granted += n
        assert got == len(data)
        assert b"".join(p[b"body"] for p in pieces) == data
        assert all(p.get(b"more") is True for p in pieces[:-1])
        assert b"more" not in pieces[-1]
        h.expect_nothing(0.2)


def test_accept_without_credits_assumes_the_buffer_size(ch) -> None:
    """Pushpin sends no credits on accept: condure assumes its buffer size."""
    c, h = ch
    with WSClient(c.port) as client:
        req = handshake(h, client, credits=None)
        client.send_frame(BINARY, b"x" * 9000)
        got = 0
        while got < 8192:
            got += len(recv_data(h, req).get(b"body", b""))
        assert got == 8192
        h.expect_nothing(0.3)
        h.credit(req, 1000)
        p = recv_data(h, req)
        assert len(p[b"body"]) == 808 and b"more" not in p


def test_control_frames_relayed_without_automatic_pong(ws) -> None:
    c, h, client, req = ws
    client.send_frame(PING, b"hi")
    p = h.recv_type(b"ping")
    assert p[b"id"] == req[b"id"] and p[b"body"] == b"hi"
    client.expect_silence(0.3)  # condure does not answer pings itself
    client.send_frame(PONG, b"po")
    assert h.recv_type(b"pong")[b"body"] == b"po"
    client.send_frame(PING)  # empty ping: no body field
    p = h.recv_type(b"ping")
    assert b"body" not in p

    h.packet(req, "pong", body=b"hi")
    f = client.read_frame()
    assert (f.opcode, f.fin, f.payload, f.masked) == (PONG, True, b"hi", False)
    h.packet(req, "ping", body=b"x")
    f = client.read_frame()
    assert (f.opcode, f.payload) == (PING, b"x")
    h.packet(req, "ping")
    f = client.read_frame()
    assert (f.opcode, f.payload) == (PING, b"")


def test_ping_pong_payloads_use_handler_credits(ch) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        req = handshake(h, client, credits=10)
        client.send_frame(PING, b"123456")
        assert h.recv_type(b"ping")[b"body"] == b"123456"
        client.send_frame(PING, b"abcdefgh")  # 8 > 4 credits left: held back
        h.expect_nothing(0.3)
        h.credit(req, 4)
        assert h.recv_type(b"ping")[b"body"] == b"abcdefgh"


def test_credits_returned_for_written_content(ws) -> None:
    c, h, client, req = ws
    h.body(req, b"hello", content_type="text")
    assert client.read_message()[1] == b"hello"
    assert recv_credits(h, req, 5) == [5]
    h.packet(req, "ping", body=b"sp")
    assert client.read_frame().payload == b"sp"
    assert recv_credits(h, req, 2) == [2]
    h.packet(req, "pong", body=b"spong")
    assert client.read_frame().payload == b"spong"
    assert recv_credits(h, req, 5) == [5]
    h.body(req, b"ab", more=True, content_type="binary")
    h.body(req, b"cde", content_type="binary")
    assert client.read_message()[1] == b"abcde"
    assert recv_credits(h, req, 5) in ([2, 3], [5])
    h.body(req, b"", content_type="binary")  # nothing written, nothing returned
    assert client.read_message()[1] == b""
    h.expect_nothing(0.3)


# ---------------------------------------------------------------------------
# close handshake and endings


def test_close_from_client(ws) -> None:
    c, h, client, req = ws
    client.send_close(1000, b"bye")
    p = h.recv_type(b"close")
    assert p[b"id"] == req[b"id"] and p[b"code"] == 1000 and p[b"body"] == b"bye"
    client.expect_silence(0.3)  # condure waits for the handler's close
    h.packet(req, "close", code=1000)
    f = client.read_frame()
    assert f.opcode == CLOSE and f.close_code == 1000 and not f.masked
    assert client.closed_within(3.0)
    h.expect_nothing(0.3)  # clean close: no cancel


def test_handler_message_after_client_close_is_still_relayed(ws) -> None:
    c, h, client, req = ws
    client.send_close(1000)
    h.recv_type(b"close")
    h.body(req, b"late", content_type="text")
    h.packet(req, "close", code=1000)
    f = client.read_frame()
    assert (f.opcode, f.payload) == (TEXT, b"late")
    assert client.read_frame().opcode == CLOSE


def test_close_without_code_from_client(ws) -> None:
    c, h, client, req = ws
    client.send_close(None)
    p = h.recv_type(b"close")
    assert b"code" not in p and b"body" not in p
    h.packet(req, "close")  # no code -> 1000
    assert client.read_frame().close_code == 1000
    assert client.closed_within(3.0)


def test_close_from_handler_first(ws) -> None:
    c, h, client, req = ws
    h.packet(req, "close", code=1001, body=b"going")
    f = client.read_frame()
    assert f.opcode == CLOSE and f.close_code == 1001 and f.close_reason == b"going"
    # condure keeps reading until the client's close: messages still arrive
    client.send_frame(TEXT, b"after")
    assert recv_message(h, req)[1] == b"after"
    client.send_close(1001, b"ok")
    p = h.recv_type(b"close")
    assert p[b"code"] == 1001 and p[b"body"] == b"ok"
    assert client.closed_within(3.0)
    h.expect_nothing(0.3)


def test_client_drops_tcp_sends_cancel(ws) -> None:
    c, h, client, req = ws
    client.close()
    p = h.recv_type(b"cancel")
    assert p[b"id"] == req[b"id"]
    assert_serves_websocket(c, h)


def test_handler_cancel_closes_tcp(ws) -> None:
    c, h, client, req = ws
    h.packet(req, "cancel")
    assert client.closed_within(3.0), bytes(client.buf)
    h.expect_nothing(0.3)


def test_rejected_upgrade_is_an_http_response(ch) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        h.packet(req, "error", condition="rejected", code=403, reason=b"Forbidden",
                 headers=[[b"Content-Type", b"text/plain"], [b"Upgrade", b"websocket"],
                          [b"Sec-WebSocket-Accept", b"x"]],
                 body=b"go away\n")
        r = client.read_response()
        assert r.raw == (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 8\r\n\r\ngo away\n")
        assert client.read_until_close(3.0) == b""
    h.expect_nothing(0.3)


def test_other_error_condition_is_500_d29(ch) -> None:
    """connmgr's case H (condure 1.9.1 closes without a response); no cancel."""
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        h.packet(req, "error", condition="bad-request")
        assert client.read_until_close(3.0) == (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: 27\r\n\r\nFailed to process request.\n")
    h.expect_nothing(0.3)


@pytest.mark.parametrize("size", [8192, 9000])
def test_rejection_larger_than_the_buffer_is_500_d30(ch, size: int) -> None:
    """connmgr.md 8, scenario 26: a `rejected` body over --buffer-size (8192) is
    not written; the client gets connmgr's 500 and text, the handler `cancel`
    (condure 1.9.1 wrote the head with `Content-Length: 9000`, no body, closed
    and cancelled). A body of exactly the buffer size is the rejection as usual."""
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        h.packet(req, "error", condition="rejected", code=403, reason=b"Forbidden",
                 body=b"x" * size)
        raw = client.read_until_close(3.0)
        if size == 8192:
            assert raw == b"HTTP/1.1 403 Forbidden\r\nContent-Length: 8192\r\n\r\n" + b"x" * 8192
        else:
            assert raw == (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                           b"Connection: close\r\nContent-Length: 57\r\n\r\n"
                           b"Non-101 response body size exceeded limit of 8192 bytes.\n")
            p = h.recv_type(b"cancel")
            assert (p[b"id"], p[b"seq"]) == (req[b"id"], 1)
    h.expect_nothing(0.3)


@pytest.mark.parametrize("body", [b"not a websocket\n", b""], ids=["body", "empty"])
def test_plain_response_to_upgrade_d3(ch, body: bytes) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        h.respond(req, 200, b"OK", [(b"Content-Type", b"text/plain")], body)
        r = client.read_response()
        assert r.status == 200 and r.body == body
        assert r.header(b"connection") == b"close"
        assert r.header(b"content-type") == b"text/plain"
        for name in (b"upgrade", b"sec-websocket-accept", b"sec-websocket-extensions"):
            assert r.header(name) is None, r.head
        assert client.read_until_close(3.0) == b""
    assert_serves_websocket(c, h)


def test_101_with_a_body_does_not_crash_d3(ch) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        h.respond(req, 101, b"Switching Protocols", body=b"oops", credits=1000)
        r = client.read_head()
        assert r.status == 101
    time.sleep(0.2)
    assert_serves_websocket(c, h)


# handshake answers condure refuses to write (D9, D17): the client gets a 502, the
# handler a cancel; `fields` is the handler's first packet (type data unless given)
REFUSED_ANSWERS = {
    "accept-name-not-a-token": {"code": 101, "headers": [[b"Sec-WebSocket-Protocol", b"chat"],
                                                         [b"X Bad", b"v"]]},
    "accept-crlf-value": {"code": 101, "headers": [[b"X-A", b"a\r\nEvil: 1"]]},
    "accept-code-100": {"code": 100},  # not 101: a plain response (D3), but not a final one
    "reject-code-101": {"type": "error", "condition": "rejected", "code": 101},
    "reject-without-code": {"type": "error", "condition": "rejected", "body": b"no"},
    "reject-name-not-a-token": {"type": "error", "condition": "rejected", "code": 403,
                                "headers": [[b"X:Y", b"v"]]},
    "reject-crlf-reason": {"type": "error", "condition": "rejected", "code": 403,
                           "reason": b"No\r\nEvil: 1"},
}


@pytest.mark.parametrize("name", list(REFUSED_ANSWERS))
def test_refused_handshake_answer_is_502_and_cancel_d9_d17(ch, name: str) -> None:
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        fields = {"reason": b"R", **REFUSED_ANSWERS[name]}
        h.send({"id": req[b"id"], **fields})
        raw = client.read_until_close(3.0)
        assert raw.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), raw
        assert raw.count(b"HTTP/1.1") == 1 and b"Evil" not in raw, raw
    p = h.recv_type(b"cancel")
    assert (p[b"id"], p[b"seq"]) == (req[b"id"], 1)
    log = c.wait_log("[WARN]")
    assert log.count("[WARN]") == 1 and "Traceback" not in log, log
    assert c.alive()


# ---------------------------------------------------------------------------
# protocol violations from the client (D2)


@pytest.mark.parametrize("raw,code", [
    (frame(TEXT, b"hi", mask=False), 1002),
    (frame(3, b"x"), 1002),
    (frame(0xB, b"x"), 1002),
    (frame(TEXT, b"x", rsv=4), 1002),
    (frame(CONT, b"x"), 1002),
    (frame(PING, b"x" * 126), 1002),
    (frame(PING, b"x", fin=False), 1002),
    (frame(CLOSE, b"\x03"), 1002),
    (frame(CLOSE, close_payload(999)), 1002),
    (frame(TEXT, b"\xff\xfe"), 1007),
    (frame(TEXT, b"ok\xc3", fin=False) + frame(CONT, b"("), 1007),
    (frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"), 1002),
    # after whole plain frames in the same read (the fast path's, then wsproto's)
    (frame(TEXT, b"ok") + frame(BINARY, b"ok") + frame(TEXT, b"\xff\xfe"), 1007),
    (frame(TEXT, b"ok") + frame(TEXT, b"hi", mask=False), 1002),
    (frame(BINARY, b"ok") + frame(TEXT, b"x", rsv=4), 1002),
    (frame(TEXT, b"ok") + frame(CONT, b"x"), 1002),
], ids=["unmasked", "opcode-3", "opcode-11", "rsv-bit", "stray-continuation",
        "long-ping", "fragmented-ping", "close-1-byte", "close-code-999",
        "invalid-utf8", "invalid-utf8-fragmented", "new-message-inside-one",
        "whole-frames-then-invalid-utf8", "whole-frame-then-unmasked",
        "whole-frame-then-rsv-bit", "whole-frame-then-stray-continuation"])
def test_protocol_violation_closes_with_code_d2(ws, raw: bytes, code: int) -> None:
    c, h, client, req = ws
    client.send(raw)
    packets = []
    for _ in range(5):  # a first fragment may have been forwarded before the error
        p = h.recv()
        packets.append(p)
        if p.get(b"type") == b"close":
            break
    assert packets[-1].get(b"type") == b"close", packets
    assert packets[-1][b"code"] == code, packets
    assert all(b"type" not in p for p in packets[:-1]), packets
    frames = []
    for _ in range(5):
        frames.append(client.read_frame())
        if frames[-1].opcode == CLOSE:
            break
    assert frames[-1].opcode == CLOSE and frames[-1].close_code == code, frames
    assert client.read_until_close(3.0) == b""  # nothing after the close frame, then EOF
    h.expect_nothing(0.3)  # the close was the end: no cancel after it
    assert c.alive()


# ---------------------------------------------------------------------------
# limits


def test_handler_message_larger_than_buffer_closes_and_cancels(ws) -> None:
    c, h, client, req = ws
    h.body(req, b"x" * 9000, content_type="binary")
    assert h.recv_type(b"cancel")[b"id"] == req[b"id"]
    assert client.closed_within(3.0), bytes(client.buf)[:100]
    assert_serves_websocket(c, h)


def test_handler_message_larger_than_small_buffer_size(start: Start) -> None:
    c, h = start("--buffer-size", "4096")
    with WSClient(c.port) as client:
        req = handshake(h, client)
        assert req[b"credits"] == 4096
        h.body(req, b"y" * 4096, content_type="binary")  # exactly the buffer: fine
        assert client.read_message()[1] == b"y" * 4096
        recv_credits(h, req, 4096)
        h.body(req, b"z" * 4097, content_type="binary")
        assert h.recv_type(b"cancel")[b"id"] == req[b"id"]
        assert client.closed_within(3.0)


def test_control_payload_over_125_from_handler_closes_and_cancels(ws) -> None:
    c, h, client, req = ws
    h.packet(req, "ping", body=b"p" * 126)
    assert h.recv_type(b"cancel")[b"id"] == req[b"id"]
    assert client.closed_within(3.0), bytes(client.buf)[:100]


def test_messages_max_burst_that_drains_is_fine(start: Start) -> None:
    c, h = start("--messages-max", "2")
    with WSClient(c.port) as client:
        req = handshake(h, client)
        for i in range(10):
            h.body(req, b"m%d" % i, content_type="text")
        for i in range(10):
            assert client.read_message()[1] == b"m%d" % i
        recv_credits(h, req, 20)


@pytest.mark.deadline(60)
def test_messages_max_exceeded_while_client_stalls_aborts(start: Start) -> None:
    """Messages pile up in condure while the client does not read: past
    --messages-max the session is aborted with a cancel (server.md 8.7).
    The handler honours credits all along."""
    c, h = start("--messages-max", "5")
    sock_client = WSClient.with_rcvbuf(c.port, 4096)
    with sock_client as client:
        req = handshake(h, client)
        credits, payload, sent = 8192, b"m" * 500, 0
        end = time.monotonic() + 45
        cancelled = False
        while time.monotonic() < end and sent < 200_000:
            while credits >= len(payload):
                h.body(req, payload, content_type="binary")
                credits -= len(payload)
                sent += 1
            p = h.recv(5.0)
            if p.get(b"type") == b"cancel":
                cancelled = True
                break
            assert p.get(b"type") == b"credit", p
            credits += p[b"credits"]
        assert cancelled, f"no cancel after {sent} messages"
        client.read_until_close(10.0)  # whatever was buffered, then EOF
    assert c.alive()


def fill_until_write_blocks(h: Handler, req: dict, size: int = 4000,
                            limit: int = 64 << 20, quiet: float = 1.0) -> int:
    """Send messages under the credits condure grants until it stops returning
    them (its writes to a client that does not read are blocked); bytes sent."""
    credits, sent = req[b"credits"], 0
    end = time.monotonic() + 30
    while sent < limit and time.monotonic() < end:
        while credits >= size:
            h.body(req, b"f" * size, content_type="binary")
            credits -= size
            sent += size
        try:
            p = h.recv(quiet)
        except AssertionError:
            return sent  # no credit for `quiet` seconds: the writes are stuck
        assert p.get(b"type") == b"credit", p
        credits += p[b"credits"]
    raise AssertionError(f"condure kept writing: {sent} bytes")


@pytest.mark.deadline(60)
def test_client_messages_still_forwarded_while_a_write_is_blocked(start: Start) -> None:
    c, h = start()
    with WSClient.with_rcvbuf(c.port, 4096) as client:
        req = handshake(h, client, credits=200000)
        fill_until_write_blocks(h, req)
        client.send_frame(TEXT, b"through")
        p = h.recv(3.0)
        assert p.get(b"type") is None and p[b"body"] == b"through", p


@pytest.mark.deadline(60)
def test_handler_cancel_while_a_write_is_blocked_closes(start: Start) -> None:
    c, h = start()
    with WSClient.with_rcvbuf(c.port, 4096) as client:
        req = handshake(h, client, credits=200000)
        fill_until_write_blocks(h, req)
        h.packet(req, "cancel")
        # processed while the client still does not read (reading would unblock the write)
        c.wait_log("process error: HandlerCancel", 3.0)
        client.read_until_close(5.0)  # what was buffered, then EOF


# ---------------------------------------------------------------------------
# several sessions


def test_multi_id_packet_reaches_two_websockets(ch) -> None:
    c, h = ch
    with WSClient(c.port) as a, WSClient(c.port) as b:
        ra = handshake(h, a)
        rb = handshake(h, b)
        h.send({"id": [{"id": ra[b"id"], "seq": 1}, {"id": rb[b"id"], "seq": 1}],
                "body": b"to both", "content-type": b"text"})
        assert a.read_message()[1] == b"to both"
        assert b.read_message()[1] == b"to both"


# ---------------------------------------------------------------------------
# the echo handler of loadtest/ws_echo_handler.py


@pytest.fixture
def echo(condure, processes):
    """(condure, echo handler process) once the handler is subscribed."""
    c = condure()
    proc = processes([sys.executable, str(ECHO_HANDLER), "--base", c.base, "--id", "echo-test"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    end = time.monotonic() + 10
    line = b""
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if r:
            line = proc.stdout.readline()
            if line.startswith(b"subscribed condure") or not line:
                break
    assert line.startswith(b"subscribed condure"), (line, proc.poll())
    yield c, proc
    assert proc.poll() is None, "echo handler died"


class WSProtoClient:
    """A wsproto client over a plain socket."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list = []
        self.sock.sendall(self.ws.send(Request(host="example.com", target="/echo")))
        ev = self.next_event()
        assert isinstance(ev, AcceptConnection), ev

    def close(self) -> None:
        self.sock.close()

    def next_event(self):
        for _ in range(100_000):
            if self.pending:
                return self.pending.pop(0)
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.pending.extend(self.ws.events())
            if not data and not self.pending:
                raise AssertionError("connection closed")
        raise AssertionError("no event")

    def send(self, event) -> None:
        self.sock.sendall(self.ws.send(event))

    def read_message(self) -> str | bytes:
        parts: list = []
        for _ in range(100_000):
            ev = self.next_event()
            assert isinstance(ev, Message), ev
            parts.append(ev.data)
            if ev.message_finished:
                return "".join(parts) if isinstance(ev, TextMessage) else b"".join(parts)
        raise AssertionError("message never finished")


def random_message(rng: random.Random, size: int) -> str | bytes:
    if rng.random() < 0.5:
        return rng.randbytes(size)
    alphabet = "abcxyz é€𝄞\n"
    text = "".join(rng.choice(alphabet) for _ in range(size))
    return text.encode()[:size].decode("utf-8", "ignore")


@pytest.mark.deadline(120)
def test_echo_handler_200_random_messages(echo) -> None:
    c, proc = echo
    rng = random.Random(2024)
    client = WSProtoClient(c.port)
    try:
        for i in range(200):
            msg = random_message(rng, rng.randint(0, 20000))
            client.send(TextMessage(data=msg) if isinstance(msg, str) else BytesMessage(data=msg))
            back = client.read_message()
            assert type(back) is type(msg) and back == msg, f"message {i} differs"
        client.send(Ping(payload=b"are you there"))
        ev = client.next_event()
        assert isinstance(ev, Pong) and ev.payload == b"are you there"
        client.send(CloseConnection(code=1000, reason="done"))
        ev = client.next_event()
        assert isinstance(ev, CloseConnection) and ev.code == 1000
        assert client.sock.recv(1) == b""
    finally:
        client.close()


@pytest.mark.deadline(120)
def test_echo_handler_pipelined_messages(echo) -> None:
    """Many messages in flight at once: both credit windows are exercised."""
    c, proc = echo
    rng = random.Random(99)
    msgs = [rng.randbytes(rng.randint(0, 30000)) for _ in range(60)]
    out = bytearray()
    for m in msgs:
        out += frame(BINARY, m)
    received: list[bytes] = []
    with WSClient(c.port) as client:
        client.send(upgrade())
        assert client.read_head().status == 101
        client.sock.setblocking(False)
        buf = bytearray(client.buf)
        parts: list[bytes] = []
        end = time.monotonic() + 90
        while len(received) < len(msgs) and time.monotonic() < end:
            want_write = bool(out)
            r, w, _ = select.select([client.sock], [client.sock] if want_write else [], [], 1.0)
            if w:
                n = client.sock.send(out[:65536])
                del out[:n]
            if r:
                data = client.sock.recv(65536)
                assert data, "connection closed"
                buf += data
                while True:  # parse complete server frames from buf
                    if len(buf) < 2:
                        break
                    n = buf[1] & 0x7F
                    off = 2
                    if n == 126:
                        if len(buf) < 4:
                            break
                        n, off = struct.unpack("!H", buf[2:4])[0], 4
                    elif n == 127:
                        if len(buf) < 10:
                            break
                        n, off = struct.unpack("!Q", buf[2:10])[0], 10
                    if len(buf) < off + n:
                        break
                    fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
                    assert opcode in (BINARY, CONT), opcode
                    parts.append(bytes(buf[off:off + n]))
                    del buf[:off + n]
                    if fin:
                        received.append(b"".join(parts))
                        parts = []
        assert len(received) == len(msgs)
        assert received == msgs


def test_echo_handler_answers_plain_http(echo) -> None:
    c, proc = echo
    with Client(c.port) as client:
        client.send(get("/"))
        r = client.read_response()
        assert r.status == 200 and r.body == b"echo handler\n"
        body = b"x" * 20000
        client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        r = client.read_response()
        assert r.status == 200 and r.body == b"echo handler\n"
        assert r.header(b"connection") is None  # body read first: stays persistent


def test_echo_handler_close_and_cancel_forget_sessions(echo) -> None:
    c, proc = echo
    for _ in range(3):
        with WSClient(c.port) as client:
            client.send(upgrade())
            assert client.read_head().status == 101
            client.send_frame(TEXT, b"x")
            assert client.read_message()[1] == b"x"
        # dropped without close: the handler gets a cancel and forgets
    with WSClient(c.port) as client:
        client.send(upgrade())
        assert client.read_head().status == 101
        client.send_frame(PING, b"pp")
        f = client.read_frame()
        assert (f.opcode, f.payload) == (PONG, b"pp")
        client.send_close(4000, b"x")
        assert client.read_frame().close_code == 4000
        assert client.closed_within(3.0)


class FakeCondure:
    """condure's three stream sockets, bound, to drive the echo handler directly."""

    def __init__(self, base: str, instance: bytes = b"fake") -> None:
        import zmq
        self.zmq = zmq
        self.instance = instance
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, instance + b" ")
        for s in (self.push, self.router, self.sub):
            s.setsockopt(zmq.LINGER, 0)
        self.push.bind(base + "-out")
        self.router.bind(base + "-out-stream")
        self.sub.bind(base + "-in")

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    def request(self, rid: bytes, uri: bytes, credits: int = 100, **extra: object) -> None:
        import tnetstring
        msg = {b"from": self.instance, b"id": rid, b"seq": 0, b"ext": {b"multi": True},
               b"method": b"GET", b"uri": uri, b"headers": [[b"Host", b"a"]],
               b"credits": credits, b"peer-address": b"127.0.0.1", b"peer-port": 1}
        msg.update({k.encode(): v for k, v in extra.items()})
        self.push.send(b"T" + tnetstring.dumps(msg))

    def to_handler(self, ident: bytes, msg: dict | bytes) -> None:
        import tnetstring
        payload = msg if isinstance(msg, bytes) else b"T" + tnetstring.dumps(
            {b"from": self.instance, **msg})
        end = time.monotonic() + 5
        while True:  # the handler's ROUTER may still be connecting
            try:
                self.router.send_multipart([ident, b"", payload])
                return
            except self.zmq.ZMQError:
                assert time.monotonic() < end, "handler ROUTER not connected"
                time.sleep(0.02)

    def recv(self, timeout: float = 5.0) -> dict:
        import tnetstring
        if not self.sub.poll(timeout * 1000):
            raise AssertionError(f"nothing from the handler within {timeout} s")
        data = self.sub.recv()
        prefix = self.instance + b" T"
        assert data.startswith(prefix), data[:80]
        return tnetstring.loads(data[len(prefix):])

    def expect_nothing(self, seconds: float = 0.3) -> None:
        if self.sub.poll(seconds * 1000):
            raise AssertionError(f"unexpected: {self.sub.recv()[:200]!r}")


@pytest.mark.deadline(40)
def test_echo_handler_protocol_against_a_fake_condure(zdir: str, processes) -> None:
    """The echo handler's packets, seq numbering, credit discipline, keep-alives
    and robustness, with this test playing condure."""
    base = f"ipc://{zdir}/client"
    fake = FakeCondure(base)
    try:
        proc = processes([sys.executable, str(ECHO_HANDLER), "--base", base, "--id", "echo-x",
                          "--keepalive", "1", "--window", "5000"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # libzmq attaches the handler's connection to our bound SUB (and sends
        # it the subscription) only while this thread uses the socket
        for _ in range(200):
            fake.expect_nothing(0.05)
            if select.select([proc.stdout], [], [], 0)[0]:
                break
        assert proc.stdout.readline().startswith(b"subscribed fake")
        ident = b"echo-x"

        fake.request(b"s1", b"ws://a/", credits=100)
        p = fake.recv()
        assert (p[b"from"], p[b"id"], p[b"seq"], p[b"code"], p[b"credits"]) == (
            ident, b"s1", 0, 101, 5000)
        # 150 bytes with 100 credits: 100 now (split: more), the rest after a credit
        fake.to_handler(ident, {b"id": b"s1", b"seq": 1, b"content-type": b"text",
                                b"body": b"a" * 150})
        p = fake.recv()
        assert (p[b"seq"], p[b"body"], p[b"more"], p[b"content-type"]) == (
            1, b"a" * 100, True, b"text")
        p = fake.recv()
        assert (p[b"seq"], p[b"type"], p[b"credits"]) == (2, b"credit", 100)
        fake.expect_nothing(0.3)
        fake.to_handler(ident, {b"id": b"s1", b"seq": 2, b"type": b"credit", b"credits": 1000})
        p = fake.recv()
        assert (p[b"seq"], p[b"body"], p.get(b"more")) == (3, b"a" * 50, None)
        assert fake.recv()[b"credits"] == 50
        # the more flag and content-type of every piece are kept
        fake.to_handler(ident, {b"id": b"s1", b"seq": 3, b"content-type": b"binary",
                                b"body": b"\x00", b"more": True})
        p = fake.recv()
        assert (p[b"seq"], p[b"body"], p[b"more"], p[b"content-type"]) == (
            5, b"\x00", True, b"binary")
        assert fake.recv()[b"credits"] == 1
        fake.to_handler(ident, {b"id": b"s1", b"seq": 4, b"content-type": b"binary"})
        p = fake.recv()
        assert (p[b"seq"], p.get(b"body"), p.get(b"more"), p[b"content-type"]) == (
            7, None, None, b"binary")
        # ping -> pong (credits granted back), pong consumed
        fake.to_handler(ident, {b"id": b"s1", b"seq": 5, b"type": b"ping", b"body": b"pp"})
        p = fake.recv()
        assert (p[b"seq"], p[b"type"], p[b"body"]) == (8, b"pong", b"pp")
        assert fake.recv()[b"credits"] == 2
        fake.to_handler(ident, {b"id": b"s1", b"seq": 6, b"type": b"pong", b"body": b"q"})
        p = fake.recv()
        assert (p[b"seq"], p[b"type"], p[b"credits"]) == (10, b"credit", 1)
        # garbage and strange packets are survived
        for junk in (b"junk", b"T", b"Tnot a tnetstring", b"T4:abcd,", b"T0:]",
                     b"T" + __import__("tnetstring").dumps({b"id": 5})):
            fake.to_handler(ident, junk)
        fake.to_handler(ident, {b"id": b"s1", b"type": b"surprise"})
        fake.to_handler(ident, {b"id": b"nope", b"content-type": b"text", b"body": b"x"})
        # multi-id keep-alive: accepted silently
        fake.to_handler(ident, {b"id": [{b"id": b"s1", b"seq": 7}, {b"id": b"s2", b"seq": 3}],
                                b"type": b"keep-alive"})
        # after 1 s of silence on s1, the handler keeps it alive
        p = fake.recv(3.0)
        assert (p[b"id"], p[b"seq"], p[b"type"]) == (b"s1", 11, b"keep-alive")
        # close -> close with the same code; the session is forgotten
        fake.to_handler(ident, {b"id": b"s1", b"seq": 8, b"type": b"close", b"code": 1001})
        p = fake.recv()
        assert (p[b"id"], p[b"seq"], p[b"type"], p[b"code"]) == (b"s1", 12, b"close", 1001)
        fake.to_handler(ident, {b"id": b"s1", b"seq": 9, b"content-type": b"text",
                                b"body": b"late"})
        fake.expect_nothing(1.5)  # forgotten: no echo, no keep-alive either
        # plain HTTP
        fake.request(b"h1", b"http://a/", credits=8192, stream=True)
        p = fake.recv()
        assert (p[b"id"], p[b"seq"], p[b"code"], p[b"body"]) == (
            b"h1", 0, 200, b"echo handler\n")
        # cancel forgets a WebSocket session
        fake.request(b"s3", b"wss://a/")
        assert fake.recv()[b"code"] == 101
        fake.to_handler(ident, {b"id": b"s3", b"seq": 1, b"type": b"cancel"})
        fake.expect_nothing(1.5)
        assert proc.poll() is None
    finally:
        fake.close()
