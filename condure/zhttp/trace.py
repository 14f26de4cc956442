"""Readable ZHTTP packets for `--log-level 4` traces (pure).

condure traces every message it sends or receives as `OUT <socket> <packet>`
/ `IN <socket> <packet>`, where the packet is shown as its fields in wire
order, `{ "from": "condure", "id": "0-0-0", "seq": 0, ... }`, strings in
double quotes with non-printable bytes escaped, and the content (`body`) of
data, close and `rejected` packets apart at the end with its length:
`{ ... } 5 "hello"`. An address-prefixed message (`<addr> T<map>`, as on the
SUB and PUB sockets) starts with the address. Both the fields and the
content are cut in the middle past LIMIT characters.

This module walks the tnetstring itself instead of decoding it with the
codec: the order of the fields on the wire is kept, and a packet the codec
would refuse is still shown as far as it can be read. It never raises on
any input: traces exist for the packets nobody expected.
"""
from __future__ import annotations

LIMIT = 1000  # characters of the fields, and of the content, before cutting
MAX_DEPTH = 32  # nesting shown before `<too deep>`
CONTENT_FIELD = b"body"
ELLIPSIS = "..."

# tnetstring type characters
_STRING, _INT, _FLOAT, _BOOL, _NULL, _MAP, _LIST = b",#^!~}]"

# ASCII escapes as condure prints them: \t \r \n \' \" \\, printable ASCII
# as is, every other byte as \xNN
_ESCAPES = {9: "\\t", 10: "\\n", 13: "\\r", 34: '\\"', 39: "\\'", 92: "\\\\"}
_BYTE_TEXT = tuple(_ESCAPES.get(b, chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}")
                   for b in range(256))


class _Bad(Exception):
    """The tnetstring ends or breaks here; str() says how, in condure's words."""


def _frame(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """The frame at `pos`: (type, start of its payload, end of its payload, end of frame)."""
    colon = data.find(b":", pos, pos + 10)
    if colon < 0 or colon == pos or not data[pos:colon].isdigit():
        raise _Bad("invalid length")
    size = int(data[pos:colon])
    start, end = colon + 1, colon + 1 + size
    if end >= len(data):
        raise _Bad("unexpected end")
    kind = data[end]
    if kind not in (_STRING, _INT, _FLOAT, _BOOL, _NULL, _MAP, _LIST):
        raise _Bad(f"invalid type {_BYTE_TEXT[kind]}")
    return kind, start, end, end + 1


def quote(data: bytes) -> str:
    """`data` as a double-quoted string with condure's escapes."""
    return '"' + "".join([_BYTE_TEXT[b] for b in data]) + '"'


def _string(data: bytes) -> str:
    # the middle of a long string is cut by trim() anyway: render only both
    # ends, so a megabyte body costs no more than a short one
    if len(data) > 4 * LIMIT:
        data = data[:2 * LIMIT] + data[-2 * LIMIT:]
    return quote(data)


def _value(data: bytes, kind: int, start: int, end: int, depth: int) -> str:
    raw = data[start:end]
    if kind == _STRING:
        return _string(raw)
    if kind == _INT:
        return raw.decode("ascii") if _is_int(raw) else "<invalid int>"
    if kind == _FLOAT:
        try:
            return repr(float(raw.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            return "<invalid float>"
    if kind == _BOOL:
        return {b"true": "true", b"false": "false"}.get(raw, "<invalid bool>")
    if kind == _NULL:
        return "null"
    if depth >= MAX_DEPTH:
        return "<too deep>"
    if kind == _LIST:
        return "[ " + ", ".join(_items(data, start, end, depth + 1)) + " ]"
    return _braced(_map_fields(data, start, end, depth + 1))


def _is_int(raw: bytes) -> bool:
    digits = raw[1:] if raw[:1] == b"-" else raw
    return digits.isdigit()


def _items(data: bytes, pos: int, end: int, depth: int) -> list[str]:
    out = []
    try:
        while pos < end:
            kind, start, stop, pos = _frame(data[:end], pos)
            out.append(_value(data, kind, start, stop, depth))
    except _Bad as e:
        out.append(f"<{e}>")
    return out


def _map_fields(data: bytes, pos: int, end: int,
                depth: int) -> list[tuple[str, str, bytes, tuple[int, int, int]]]:
    """(shown key, shown value, raw key, (type, start, end) of the value) in wire order.

    A broken field ends the list with a `<...>` entry, as far as it got."""
    out: list[tuple[str, str, bytes, tuple[int, int, int]]] = []
    view = data[:end]  # a frame must end inside its container
    shown = ""
    try:
        while pos < end:
            shown = ""
            kind, kstart, kend, pos = _frame(view, pos)
            if kind != _STRING:
                raise _Bad("invalid key")
            key = data[kstart:kend]
            shown = quote(key)
            if pos >= end:
                raise _Bad("unexpected end")
            vkind, vstart, vend, pos = _frame(view, pos)
            out.append((shown, _value(data, vkind, vstart, vend, depth), key,
                        (vkind, vstart, vend)))
    except _Bad as e:  # the key, if it was read, then what broke
        out.append((shown, f"<{e}>", b"", (0, 0, 0)) if shown else (f"<{e}>", "", b"", (0, 0, 0)))
    return out


def trim(text: str, limit: int = LIMIT) -> str:
    """`text` with its middle replaced by `...` if it is longer than `limit`
    characters (the result is `limit` characters long)."""
    if len(text) <= limit or limit < 7:
        return text
    half = limit // 2
    return text[:half] + ELLIPSIS + text[len(text) - half + len(ELLIPSIS):]


def _show_content(ptype: bytes | None, condition: bytes | None) -> bool:
    """condure shows the content of data, close and `rejected` packets only."""
    return ptype in (None, b"", b"close") or (ptype == b"error" and condition == b"rejected")


def _braced(fields: list[tuple[str, str, bytes, tuple[int, int, int]]]) -> str:
    return "{ " + ", ".join(f"{k}: {v}" if v else k for k, v, _raw, _where in fields) + " }"


def _map_text(data: bytes) -> str:
    """A whole payload `T<map>` (the `T` already removed)."""
    try:
        kind, start, end, _ = _frame(data, 0)
    except _Bad as e:
        return f"<parse failed: {e}>"
    if kind != _MAP:
        return "<not a map>"
    fields = _map_fields(data, start, end, 1)
    strings = {raw: data[s:e] for _k, _v, raw, (t, s, e) in fields if t == _STRING}
    if not _show_content(strings.get(b"type"), strings.get(b"condition")):
        return trim(_braced(fields))
    content = [where for _k, _v, raw, where in fields if raw == CONTENT_FIELD]
    if not content:  # no body: its length alone, as condure shows it
        return trim(_braced(fields)) + " 0"
    kind, start, end = content[0]
    meta = trim(_braced([f for f in fields if f[2] != CONTENT_FIELD]))
    return f"{meta} {end - start} {trim(_value(data, kind, start, end, 1))}"


def packet_text(message: bytes) -> str:
    """One ZHTTP message as condure traces it: `T<map>` or `<addr> T<map>`."""
    try:
        return _packet_text(bytes(message))
    except Exception as e:  # noqa: BLE001 - a trace line must never break the I/O path
        return f"<unprintable packet: {type(e).__name__}>"


def _packet_text(message: bytes) -> str:
    if not message:
        return "<packet is 0 bytes>"
    if message[:1] == b"T":
        return _map_text(message[1:])
    addr, space, payload = message.partition(b" ")
    if not space:
        return "<unexpected format>"
    try:
        addr_text = addr.decode("utf-8")
    except UnicodeDecodeError:
        return "<addr parse failed>"
    if not payload:
        return "<payload is 0 bytes>"
    if payload[:1] != b"T":
        return "<unexpected format>"
    return f"{addr_text} {_map_text(payload[1:])}"
