"""The WebSocket fast path (wsframe.py) and the Reader that uses it (zhttp/wsmap.py).

Every frame shape by hand against `take`, then the Reader with the fast path
against the Reader without it (wsproto alone) on the same bytes cut at every
point: the handler must get the same items in the same order and wsproto
must end in the same state.
"""
from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import XorMaskerSimple

from condure import wsframe
from condure.wsdeflate import DEFLATE_FEED, BoundedDeflate
from condure.zhttp import wsmap
from condure.zhttp.flow import Outflow

KEY = b"\x01\x82\x33\xf4"


def frame(first: int, payload: bytes, masked: bool = True, key: bytes = KEY,
          size_form: int | None = None) -> bytes:
    """One frame by hand; `size_form` forces 7, 16 or 64-bit length."""
    n = len(payload)
    form = size_form or (7 if n < 126 else 16 if n < 65536 else 64)
    bit = 0x80 if masked else 0
    if form == 7:
        head = bytes((first, bit | n))
    elif form == 16:
        head = bytes((first, bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, bit | 127)) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    return head + key + bytes(XorMaskerSimple(key).process(bytearray(payload)))


def taken(data: bytes, masked: bool = True) -> tuple[int, list[tuple[bytes, bytes, bool]]]:
    got: list[tuple[bytes, bytes, bool]] = []
    n = wsframe.take(data, masked, lambda kind, payload, fin: got.append((kind, payload, fin)))
    return n, got


# --- take: one shape at a time -------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 11, 125, 126, 127, 1000, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [True, False])
def test_binary_of_every_length_form(size: int, masked: bool) -> None:
    payload = os.urandom(size)
    data = frame(0x82, payload, masked)
    assert taken(data, masked) == (len(data), [(b"binary", payload, True)])


@pytest.mark.parametrize("size", [0, 5, 200, 70000])
def test_text(size: int) -> None:
    payload = ("é" * size).encode()[:size * 2]
    data = frame(0x81, payload)
    assert taken(data) == (len(data), [(b"text", payload, True)])


def test_several_frames_in_one_read_and_a_partial_one_after() -> None:
    a, b, c = frame(0x81, b"hello"), frame(0x82, b"\x00\x01"), frame(0x81, b"x" * 300)
    for cut in range(len(c)):
        assert taken(a + b + c[:cut]) == (len(a + b), [(b"text", b"hello", True),
                                                         (b"binary", b"\x00\x01", True)])
    assert taken(a + b + c)[0] == len(a + b + c)


@pytest.mark.parametrize("payload", [b"\xff", b"a\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_invalid_utf8_is_left_to_wsproto(payload: bytes) -> None:
    good = frame(0x81, b"ok")
    assert taken(good + frame(0x81, payload)) == (len(good), [(b"text", b"ok", True)])
    assert taken(frame(0x82, payload))[0] > 0  # binary: any bytes


@pytest.mark.parametrize("data", [
    frame(0x01, b"frag"),  # FIN clear: a fragment
    frame(0x80, b"cont"),  # continuation
    frame(0x89, b"ping"), frame(0x8A, b""), frame(0x88, b"\x03\xe8"),  # control
    frame(0xC1, b"rsv1"), frame(0xA2, b"rsv2"), frame(0x92, b"rsv3"),  # RSV bits
    frame(0x83, b"op3"), frame(0x8B, b"opB"),  # reserved opcodes
    frame(0x81, b"unmasked", masked=False),  # a client must mask
    frame(0x82, b"x" * 10, size_form=16), frame(0x82, b"x" * 200, size_form=64),  # long form
    b"\x82\xff" + b"\x80" + b"\x00" * 7 + KEY,  # 64-bit length with the top bit
    b"\x82", b"\x82\xfe\x00", b"\x82\xff" + b"\x00" * 7,  # header not all here
])
def test_other_frames_are_not_taken(data: bytes) -> None:
    assert taken(data) == (0, [])


def test_a_client_reader_takes_unmasked_frames_only() -> None:
    assert taken(frame(0x82, b"ab", masked=True), masked=False) == (0, [])
    assert taken(frame(0x82, b"ab", masked=False), masked=False)[0] == 4


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 511, 512, 513, 4099])
def test_unmask_matches_wsproto(size: int) -> None:
    data = b"pre" + os.urandom(size) + b"post"
    key = os.urandom(4)
    want = bytes(XorMaskerSimple(key).process(bytearray(data[3:3 + size])))
    assert wsframe.unmask(data, 3, 3 + size, key) == want


# --- the Reader: fast path or not, the same for the handler ----------------------------

def client_bytes(*events: Any) -> bytes:
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(ev) for ev in events)


def items(flow: Outflow) -> list[tuple[Any, ...]]:
    return [(it[0], it[1], it[2], bytes(it[3]), it[4]) for it in flow.queue]


def read(chunks: list[bytes], fast: bool) -> tuple[list[tuple[Any, ...]], list[Any], Any]:
    ws = Connection(ConnectionType.SERVER)
    reader = wsmap.Reader(ws, Outflow(8192, 1 << 30), 0, fast=fast)
    others: list[Any] = []
    for chunk in chunks:
        if ws.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            others += reader.receive(chunk)
    return items(reader.flow), others, ws.state


STREAMS = {
    "plain": client_bytes(TextMessage("hello"), BytesMessage(b"\x00" * 130), TextMessage("hé"),
                          BytesMessage(b"z" * 70000), TextMessage("")),
    "fragmented with a ping inside": client_bytes(
        TextMessage("one"), TextMessage("fr", message_finished=False), Ping(b"p"),
        TextMessage("ag", message_finished=False), TextMessage("é"), BytesMessage(b"after"),
        Pong(b"q"), TextMessage("last")),
    "close then more": (client_bytes(TextMessage("a"), CloseConnection(1000, "bye"))
                        + frame(0x81, b"ignored")),
    "invalid utf8": client_bytes(TextMessage("ok")) + frame(0x81, b"bad\xff") + frame(0x81, b"x"),
    "invalid utf8 across fragments": (client_bytes(TextMessage("ok")) + frame(0x01, b"\xc3")
                                      + frame(0x80, b"\x28")),
    "rsv bit": client_bytes(TextMessage("ok")) + frame(0xC1, b"r"),
    "unmasked": client_bytes(TextMessage("ok")) + frame(0x81, b"u", masked=False),
    "long form length": client_bytes(TextMessage("ok")) + frame(0x82, b"x", size_form=16),
    "continuation first": frame(0x80, b"c") + frame(0x81, b"ok"),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_whole_stream_same_as_wsproto(name: str) -> None:
    data = STREAMS[name]
    assert read([data], True) == read([data], False)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_cut_anywhere_same_as_wsproto(name: str) -> None:
    data = STREAMS[name][:3000]  # the 70000-byte frame: cut points within its first bytes
    for cut in range(len(data) + 1):
        chunks = [data[:cut], data[cut:]]
        assert read(chunks, True) == read(chunks, False), cut


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_byte_by_byte_same_as_wsproto(name: str) -> None:
    data = STREAMS[name][:2000]
    chunks = [data[i:i + 1] for i in range(len(data))]
    assert read(chunks, True) == read(chunks, False)


def test_fast_path_is_on_with_this_wsproto() -> None:
    assert wsmap.FAST_PATH
    ws = Connection(ConnectionType.SERVER)
    reader = wsmap.Reader(ws, Outflow(8192, 100), 0, fast=True)
    reader.receive(frame(0x81, b"hi"))
    # the fast path took it: wsproto never saw a frame
    assert ws._proto._frame_decoder.buffer.buffer == bytearray()
    assert items(reader.flow) == [(1, b"", b"text", b"hi", True)]


def test_after_the_fast_path_wsproto_finishes_a_fragmented_message() -> None:
    ws = Connection(ConnectionType.SERVER)
    reader = wsmap.Reader(ws, Outflow(8192, 1 << 20), 0, fast=True)
    reader.receive(frame(0x81, b"a") + frame(0x01, b"b"))
    assert ws._proto._message_decoder.opcode is not None  # wsproto holds the message
    reader.receive(frame(0x81, b"c"))  # a new message inside the fragmented one: wsproto's error
    got = items(reader.flow)
    assert got[:2] == [(1, b"", b"text", b"a", True), (1, b"", b"text", b"b", False)]
    assert got[2][1] == b"close" and got[2][2] == 1002


def test_no_fast_path_with_compression() -> None:
    ext = BoundedDeflate(0)
    ext.finalize("permessage-deflate")
    ws = Connection(ConnectionType.SERVER, [ext])
    assert not wsmap.Reader(ws, Outflow(8192, 100), DEFLATE_FEED, fast=True)._fast
    assert not wsmap.Reader(ws, Outflow(8192, 100), 0, fast=True)._fast
