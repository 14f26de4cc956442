"""The fast path for the common WebSocket frame (issue 17): complete, unfragmented, plain.

`take` reads, from the start of what a connection received, every frame that
is a whole text or binary message in one frame: FIN set, no RSV bit, opcode
1 or 2, masked as the reading side requires, its length in the shortest
form, all of it in the bytes given, and (text) valid UTF-8. It stops at the
first frame that is anything else (a fragment, a control frame, an RSV bit,
a frame not complete yet, invalid UTF-8, a protocol error) and says how many
bytes it took: the caller gives the rest to wsproto, which handles that frame
and reports what is wrong with it exactly as before. So the fast path never
decides anything wsproto would decide differently; it only skips wsproto's
per-frame objects (header, masker, events, the str a text frame becomes and
the bytes it is encoded back to).

Pure: no sockets, no wsproto.
"""
from __future__ import annotations

from collections.abc import Callable

TEXT = b"text"
BINARY = b"binary"

# FIN | opcode: the only first bytes taken (no RSV bit: no extension in use)
_FIN_TEXT = 0x81
_FIN_BINARY = 0x82
_SMALL_UNMASK = 512  # below: one XOR of two ints; from here: wsproto's translate tables

_XOR_TABLE: list[bytes | None] = [None] * 256  # byte -> its XOR table, made on first use


def _xor_table(b: int) -> bytes:
    table = _XOR_TABLE[b]
    if table is None:
        table = _XOR_TABLE[b] = bytes(a ^ b for a in range(256))
    return table

Emit = Callable[[bytes, bytes, bool], None]
"""(content type, payload, finished): `Outflow.message`."""


def unmask(data: bytes, start: int, end: int, key: bytes) -> bytes:
    """data[start:end] XOR the repeated 4-byte `key`."""
    n = end - start
    if n < _SMALL_UNMASK:
        mask = (key * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data[start:end], "little")
                ^ int.from_bytes(mask, "little")).to_bytes(n, "little")
    out = bytearray(data[start:end])
    for i in range(4):
        out[i::4] = out[i::4].translate(_xor_table(key[i]))
    return bytes(out)


def take(data: bytes, masked: bool, emit: Emit) -> int:
    """Emit the plain whole-message frames at the start of `data`; the number
    of bytes they took (0 if the first frame is not one)."""
    n = len(data)
    pos = 0
    mask_bit = 0x80 if masked else 0
    while n - pos >= 2:
        first = data[pos]
        if first != _FIN_TEXT and first != _FIN_BINARY:
            break
        second = data[pos + 1]
        if second & 0x80 != mask_bit:
            break
        size = second & 0x7F
        head = pos + 2
        if size == 126:
            if n - head < 2:
                break
            size = (data[head] << 8) | data[head + 1]
            if size < 126:
                break  # not the shortest form: wsproto's error
            head += 2
        elif size == 127:
            if n - head < 8:
                break
            size = int.from_bytes(data[head:head + 8], "big")
            if size < 65536 or size >> 63:
                break  # not the shortest form, or the top bit: wsproto's error
            head += 8
        end = head + (4 if masked else 0) + size
        if end > n:
            break  # not all here: wsproto reads it as it comes
        if masked:
            start = head + 4
            if size < _SMALL_UNMASK:  # unmask() inlined: the usual message is small
                mask = (data[head:start] * ((size >> 2) + 1))[:size]
                payload = (int.from_bytes(data[start:end], "little")
                           ^ int.from_bytes(mask, "little")).to_bytes(size, "little")
            else:
                payload = unmask(data, start, end, data[head:start])
        else:
            payload = data[head:end]
        if first == _FIN_TEXT:
            if not payload.isascii():
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    break  # wsproto closes with 1007
            emit(TEXT, payload, True)
        else:
            emit(BINARY, payload, True)
        pos = end
    return pos
