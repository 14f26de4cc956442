"""HTTP/1.x request parsing behind one small event interface.

Pure. The connection code sees only these events:

* `RequestHead` - method, target, version and raw headers (client's case);
* `Body` - a piece of de-chunked body;
* `End` - the request body is complete;
* `NEED_DATA` - feed more bytes (or b"" at EOF);
* a raised `BadRequest` carrying the HTTP status to answer with (D1).

The limits and the D1 decisions live here, above the parser library, so that
every parser behaves the same: head <= buffer size (431), <= 64 headers
(431), only HTTP/1.0 and 1.1 (505), no Content-Length together with
Transfer-Encoding (400), only the `chunked` coding (501).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import h11

from ..errors import BadRequest, ClientGone

MAX_HEADERS = 64
MAX_URI = 4096


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes  # b"1.0" or b"1.1"
    headers: list[tuple[bytes, bytes]]
    chunked: bool = False
    content_length: int | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length is not None

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (name compared case-insensitively)."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def tokens(self, name: bytes) -> list[bytes]:
        """Comma-separated tokens of every `name` header, lower-cased (RFC 9110)."""
        out = []
        for n, v in self.headers:
            if n.lower() == name:
                out += [t.strip().lower() for t in v.split(b",") if t.strip()]
        return out


@dataclass(slots=True)
class Body:
    data: bytes


class End:
    __slots__ = ()


END = End()
NEED_DATA = h11.NEED_DATA


class H11Parser:
    """h11 as a request parser only; responses are written by our own code.

    h11 wants to see a response before it parses the next request, so a new
    h11 connection is made per request, seeded with the bytes the previous
    one had buffered (pipelined requests). The raw head bytes are kept while
    the head is incomplete so the rules h11 is more lenient about than
    condure's parser (blank lines before the request line are skipped,
    obs-fold is refused, duplicate headers are kept as sent) apply here.
    """

    def __init__(self, max_head: int) -> None:
        self.max_head = max_head
        self._conn = self._new(b"")

    def _new(self, leftover: bytes) -> h11.Connection:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        self._head_bytes = bytearray()
        self._head_done = False
        self._conn = conn
        if leftover:
            self._feed_head(leftover)
        return conn

    @property
    def buffered(self) -> int:
        """Bytes received but not parsed yet."""
        return len(self._conn.trailing_data[0])

    def leftover(self) -> bytes:
        """Bytes after the request head, for a protocol switch (WebSocket)."""
        return bytes(self._conn.trailing_data[0])

    def feed(self, data: bytes) -> None:
        """Add received bytes; b"" announces the end of the input."""
        if not self._head_done and data:
            self._feed_head(data)
            return
        self._receive(data)

    def _feed_head(self, data: bytes) -> None:
        if not self._head_bytes:
            data = data.lstrip(b"\r\n")  # empty lines before a request are skipped
            if not data:
                return
        self._head_bytes += data[:self.max_head + 1 - len(self._head_bytes)]
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        try:
            self._conn.receive_data(data)
        except RuntimeError:
            # data after EOF was announced: nothing more can be parsed
            raise ClientGone("data after end of input") from None

    def next_request(self) -> None:
        """Start parsing the next request with whatever is left over."""
        leftover, closed = self._conn.trailing_data
        self._new(bytes(leftover))
        if closed:
            self._conn.receive_data(b"")

    def next_event(self) -> RequestHead | Body | End | type[h11.NEED_DATA]:
        try:
            ev = self._conn.next_event()
        except h11.RemoteProtocolError as e:
            raise BadRequest(str(e), e.error_status_hint) from None
        if ev is h11.NEED_DATA or ev is h11.PAUSED:
            if self._conn.their_state is h11.ERROR:
                raise BadRequest("bad request")
            if ev is h11.PAUSED and not self._head_done:
                return NEED_DATA
            return NEED_DATA if ev is h11.NEED_DATA else END
        if type(ev) is h11.Request:
            return self._head(ev)
        if type(ev) is h11.Data:
            return Body(bytes(ev.data))
        if type(ev) is h11.EndOfMessage:
            return END
        if type(ev) is h11.ConnectionClosed:
            raise ClientGone("connection closed")
        raise BadRequest(f"unexpected event {type(ev).__name__}")

    def _head(self, ev: h11.Request) -> RequestHead:
        raw = bytes(self._head_bytes)
        end = _head_end(raw)
        if end < 0 or end > self.max_head:
            raise BadRequest("request head too large", 431)
        raw = raw[:end]
        self._head_done = True
        self._head_bytes = bytearray()
        if _OBS_FOLD.search(raw):
            raise BadRequest("obsolete line folding in header")
        headers = list(ev.headers.raw_items())
        if raw.lower().count(b"content-length") > 1:
            headers = _raw_headers(raw)  # h11 merges identical Content-Length lines
        return check_head(ev.method, ev.target, ev.http_version, headers)


_OBS_FOLD = re.compile(rb"\n[ \t]")


def _head_end(raw: bytes) -> int:
    """Length of the head (through its blank line) in `raw`, or -1."""
    m = re.search(rb"\r?\n\r?\n", raw)
    return m.end() if m else -1


def _raw_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Header pairs from a head h11 has already validated."""
    out = []
    for line in raw.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        if line:
            name, _, value = line.partition(b":")
            out.append((name, value.strip(b" \t")))
    return out


def check_head(method: bytes, target: bytes, version: bytes,
               headers: list[tuple[bytes, bytes]]) -> RequestHead:
    """Apply the limits and framing rules every parser shares (D1)."""
    if version not in (b"1.0", b"1.1"):
        raise BadRequest(f"unsupported HTTP version {version.decode('latin-1')}", 505)
    if len(headers) > MAX_HEADERS:
        raise BadRequest("too many headers", 431)
    head = RequestHead(method, target, version, headers)
    lengths = []
    te = []
    for n, v in headers:
        ln = n.lower()
        if ln == b"content-length":
            lengths.append(v)
        elif ln == b"transfer-encoding":
            te += [t.strip().lower() for t in v.split(b",")]
    if te:
        if lengths:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if te != [b"chunked"]:
            raise BadRequest("unsupported transfer coding", 501)
        head.chunked = True
    elif lengths:
        head.content_length = _content_length(lengths)
    return head


def _content_length(values: list[bytes]) -> int:
    parsed = set()
    for v in values:
        for part in v.split(b","):
            part = part.strip()
            if not part.isdigit() or len(part) > 18:
                raise BadRequest("invalid Content-Length")
            parsed.add(int(part))
    if len(parsed) != 1:
        raise BadRequest("conflicting Content-Length values")
    return parsed.pop()


def make_parser(kind: str, max_head: int) -> H11Parser:
    """The parser selected by --http-parser (only h11 for now)."""
    return H11Parser(max_head)
