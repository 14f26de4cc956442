"""ZHTTP packets: parsing what handlers send, building what condure sends.

Pure: bytes in, packets out (and back). This is the only module that
imports tnetstring. Wire rules are in shared/zhttp/server.md section 3:

* a payload is ``T`` followed by one tnetstring map with byte-string keys;
* handlers publish ``<instance-id> SP T<map>`` on the SUB socket;
* condure is strict about value types and drops a malformed packet whole.

tnetstring3's C encoder writes a dict's items last-to-first, so `encode`
reverses the field list to put fields on the wire in condure's own order
(from, id, seq, ext, type, ...), which keeps captures byte-comparable.
"""
from __future__ import annotations

from typing import Any, Iterable

import tnetstring

MAX_IDS = 128
MAX_HEADERS = 64
MAX_FROM_LEN = 64
MAX_ID_LEN = 128

DATA = b""
# every type a handler may send; anything else parses but aborts the session
KNOWN_TYPES = frozenset([
    DATA, b"error", b"credit", b"keep-alive", b"cancel", b"handoff-start",
    b"handoff-proceed", b"close", b"ping", b"pong",
])

EXT_MULTI = {b"multi": True}

# metric label of each known type, looked up per packet instead of decoded
_METRIC_NAMES = {t: t.decode() or "data" for t in KNOWN_TYPES}


def metric_name(type_: bytes) -> str:
    """The packets_in/packets_out label: the type, "data", or "unknown" (a
    handler-chosen string must not grow the metrics without bound)."""
    return _METRIC_NAMES.get(type_, "unknown")


class ParseError(ValueError):
    """A handler packet that cannot be used at all; it is dropped."""


Header = tuple[bytes, bytes]


class Packet:
    """One packet from a handler. ``type`` is b"" for data packets.

    ``ids`` holds (id, seq-or-None) pairs: one for the plain form, up to
    128 for the multi-id list form; each addressed session checks its own
    seq. The other fields default to the class attributes below, and a
    parsed packet sets only those it carries: packets are made per message,
    and a dozen assignments per packet showed in the profiles.
    """
    from_: bytes = b""
    type: bytes = DATA
    code: int | None = None
    reason: bytes = b""
    headers: list[Header] = []  # shared default: packets are read, never changed in place
    body: bytes = b""
    more: bool = False
    credits: int = 0
    content_type: bytes | None = None
    condition: bytes = b""
    # pushpin-connmgr's permission to answer on the requester's ROUTER (first packet only)
    router_resp: bool = False
    raw: dict[bytes, Any] = {}  # the decoded map (client-mode fields); shared default as above

    def __init__(self, ids: list[tuple[bytes, int | None]], **fields: Any) -> None:
        self.ids = ids
        for name, value in fields.items():
            if name not in _PACKET_FIELDS:
                raise TypeError(f"Packet has no field {name!r}")
            setattr(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _PACKET_FIELDS)

    def __eq__(self, other: object) -> bool:
        return type(other) is Packet and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "raw")
        return f"Packet({fields})"

    @property
    def type_name(self) -> str:
        return self.type.decode("ascii", "replace") or "data"


_PACKET_FIELDS = ("ids", "from_", "type", "code", "reason", "headers", "body", "more", "credits",
                  "content_type", "condition", "router_resp", "raw")


def _want(value: Any, kind: type, name: str) -> Any:
    # bool is an int subclass in Python; tnetstring keeps them apart
    if type(value) is not kind:
        raise ParseError(f"{name} must be of type {_type_name(kind)}")
    return value


def _type_name(kind: type) -> str:
    return {bytes: "string", int: "int", bool: "bool", list: "array", dict: "object"}[kind]


def _uint(value: Any, name: str) -> int:
    n: int = _want(value, int, name)
    if n < 0:
        raise ParseError(f"{name} must not be negative")
    return n


def _parse_ids(value: Any, seq: Any) -> list[tuple[bytes, int | None]]:
    if type(value) is bytes:
        if not value or len(value) > MAX_ID_LEN:
            raise ParseError("id has a bad length")
        return [(value, None if seq is None else _uint(seq, "seq"))]
    if type(value) is not list:
        raise ParseError("id must be of type string or array")
    if not value or len(value) > MAX_IDS:
        raise ParseError("too many ids" if value else "empty id list")
    out = []
    for item in value:
        _want(item, dict, "id item")
        rid = _want(item.get(b"id"), bytes, "id")
        s = item.get(b"seq")
        out.append((rid, None if s is None else _uint(s, "seq")))
    return out


def _parse_headers(value: Any) -> list[Header]:
    _want(value, list, "headers")
    if len(value) > MAX_HEADERS:
        raise ParseError("too many headers")
    out = []
    for pair in value:
        # condure uses the first two items and ignores any others
        if type(pair) is not list or len(pair) < 2:
            raise ParseError("header must be a list of two strings")
        name, val = pair[0], pair[1]
        if type(name) is not bytes:
            raise ParseError("header name must be of type string")
        if type(val) is not bytes:
            raise ParseError("header value must be of type string")
        if not name.isascii():  # ASCII (nearly every name) is UTF-8: no decoding needed
            try:
                name.decode("utf-8")
            except UnicodeDecodeError:
                raise ParseError("header name is not valid utf-8") from None
        out.append((name, val))
    return out


# packet field -> (Packet attribute, the type condure insists on: ints unsigned,
# headers checked in full by _parse_headers)
_FIELDS: dict[bytes, tuple[str, type[Any]]] = {
    b"from": ("from_", bytes), b"type": ("type", bytes), b"code": ("code", int),
    b"reason": ("reason", bytes), b"headers": ("headers", list), b"body": ("body", bytes),
    b"more": ("more", bool), b"credits": ("credits", int),
    b"content-type": ("content_type", bytes), b"condition": ("condition", bytes),
    b"router-resp": ("router_resp", bool),
}


def _field_error(key: bytes, value: Any, kind: type) -> ParseError:
    if type(value) is kind:  # right type: a negative int
        return ParseError(f"{key.decode()} must not be negative")
    return ParseError(f"{key.decode()} must be of type {_type_name(kind)}")


def parse(payload: bytes, require_id: bool = True) -> Packet:
    """Parse ``T<tnetstring map>`` (without the address prefix).

    Whatever the decoder raises is a ParseError: the bytes come from a
    handler, so it is the handler's garbage (a warning), never our failure
    (an error with a traceback). tnetstring raises ValueError for bad syntax,
    but RecursionError for deep nesting (about 900 levels, 5 KB) and
    TypeError for a list or map used as a map key.
    """
    if not payload.startswith(b"T"):
        raise ParseError("unsupported packet format")
    try:
        m = tnetstring.loads(payload[1:])
    except Exception as e:
        raise ParseError(f"bad tnetstring: {e}") from None
    if type(m) is not dict:
        raise ParseError("packet is not a map")
    return _from_map(m, require_id)


NO_ID = b"\x00"  # the id of a client-mode REQ request that has none


def _from_map(m: dict[Any, Any], require_id: bool = True) -> Packet:
    if b"id" not in m:
        if require_id:
            raise ParseError("missing id")
        m = {**m, b"id": NO_ID}
    p = Packet(_parse_ids(m[b"id"], m.get(b"seq")))
    p.raw = m
    # only the fields present are visited (a packet carries a few of them); the
    # others keep Packet's class defaults
    fields = _FIELDS
    for key, v in m.items():
        spec = fields.get(key)
        if spec is None:
            continue  # id and seq are parsed above, ext below; unknown keys are ignored
        attr, kind = spec
        if kind is list:
            v = _parse_headers(v)
        elif type(v) is not kind or (kind is int and v < 0):  # checks inline: per packet
            raise _field_error(key, v, kind)
        setattr(p, attr, v)
    if (v := m.get(b"ext")) is not None:
        _want(v, dict, "ext")  # condure reads nothing from it, but insists on a map
    return p


def parse_message(frame: bytes) -> Packet:
    """Parse one SUB message: ``<instance-id> T<map>``."""
    sp = frame.find(b" ")
    if sp < 0:
        raise ParseError("missing address prefix")
    return parse(frame[sp + 1:])


# --- building packets condure sends -------------------------------------


def encode(fields: Iterable[tuple[bytes, Any]]) -> bytes:
    """Serialize (key, value) pairs, in the given order, as ``T<map>``."""
    return b"T" + tnetstring.dumps(dict(reversed(list(fields))))


def _put_flow(m: dict[bytes, Any], body: bytes | None, credits: int, more: bool) -> None:
    """body, credits, more: written in this order (so added in reverse)."""
    if more:
        m[b"more"] = True
    if credits:
        m[b"credits"] = credits
    if body:
        m[b"body"] = body


def request(from_: bytes, rid: bytes, method: bytes, uri: bytes, headers: list[Header],
            credits: int, more: bool, stream: bool,
            peer: tuple[bytes, int] | None, body: bytes | None = None,
            seq: bool = True, router_resp: bool = False) -> bytes:
    """The first packet of a session (stream mode) or the req-mode request.
    `router_resp`: the handler may answer on our ROUTER (pushpin-connmgr's
    field, written where connmgr writes it: after `stream`, before the peer)."""
    # built last field first (see the module docstring): this runs for every request
    m: dict[bytes, Any] = {}
    if peer is not None:
        m[b"peer-port"] = peer[1]
        m[b"peer-address"] = peer[0]
    if router_resp:
        m[b"router-resp"] = True
    if stream:
        m[b"stream"] = True
    _put_flow(m, body, credits, more)
    m[b"headers"] = [[n, v] for n, v in headers]
    m[b"uri"] = uri
    m[b"method"] = method
    m[b"ext"] = EXT_MULTI
    if seq:
        m[b"seq"] = 0
    m[b"id"] = rid
    if from_:
        m[b"from"] = from_
    return b"T" + tnetstring.dumps(m)


def session_packet(from_: bytes, rid: bytes, seq: int, type_: bytes = DATA, *,
                   content_type: bytes | None = None, body: bytes = b"",
                   credits: int = 0, more: bool = False,
                   code: int | None = None) -> bytes:
    """A later packet of one session (body, credit, keep-alive, cancel, ...)."""
    m: dict[bytes, Any] = {}  # last field first, as in `request`
    _put_flow(m, body, credits, more)
    if code is not None:
        m[b"code"] = code
    if content_type is not None:
        m[b"content-type"] = content_type
    if type_:
        m[b"type"] = type_
    m[b"ext"] = EXT_MULTI
    m[b"seq"] = seq
    m[b"id"] = rid
    m[b"from"] = from_
    return b"T" + tnetstring.dumps(m)


def multi_packet(from_: bytes, ids: list[tuple[bytes, int]], type_: bytes) -> bytes:
    """One packet for several sessions (batched keep-alives, shutdown cancels)."""
    if len(ids) == 1:
        rid, seq = ids[0]
        return session_packet(from_, rid, seq, type_)
    id_list = [{b"seq": seq, b"id": rid} for rid, seq in ids]  # reversed: see encode
    return encode([(b"from", from_), (b"id", id_list), (b"ext", EXT_MULTI), (b"type", type_)])


def batches(ids: list[tuple[bytes, int]], limit: int = MAX_IDS,
            max_bytes: int = 65000) -> Iterable[list[tuple[bytes, int]]]:
    """Split (id, seq) pairs into groups of at most `limit` ids and about
    `max_bytes` of id text, as condure bounds its multi-id packets."""
    group: list[tuple[bytes, int]] = []
    size = 0
    for rid, seq in ids:
        cost = len(rid) + 32
        if group and (len(group) >= limit or size + cost > max_bytes):
            yield group
            group, size = [], 0
        group.append((rid, seq))
        size += cost
    if group:
        yield group


# --- building packets a handler sends (condure.handler) ---------------------


def handler_packet(from_: bytes, rid: bytes, seq: int | None, type_: bytes = DATA,
                   fields: Iterable[tuple[bytes, Any]] = ()) -> bytes:
    """A packet of a handler library (the other end of the wire): `from`, `id`,
    `seq` (left out when None: req mode), `type` unless data, then `fields` in
    the given order. Condure's own hot path never calls this."""
    pairs: list[tuple[bytes, Any]] = [(b"from", from_), (b"id", rid)]
    if seq is not None:
        pairs.append((b"seq", seq))
    if type_:
        pairs.append((b"type", type_))
    pairs.extend(fields)
    return encode(pairs)


def request_info(p: Packet) -> tuple[bytes, bytes, tuple[bytes, int] | None]:
    """(method, uri, peer) of a request packet condure sent, checked as
    strictly as condure checks a handler's fields (a ParseError otherwise)."""
    m = p.raw
    method = _want(m.get(b"method", b""), bytes, "method")
    uri = _want(m.get(b"uri", b""), bytes, "uri")
    peer = None
    if b"peer-address" in m:
        peer = (_want(m[b"peer-address"], bytes, "peer-address"),
                _uint(m.get(b"peer-port", 0), "peer-port"))
    return method, uri, peer
