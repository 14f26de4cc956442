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
from collections import deque
from dataclasses import dataclass
from typing import Any

import h11

try:
    import httptools
except ImportError:  # h11 is the always-available reference
    httptools = None  # type: ignore[assignment]

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
    # gathered by check_head's one pass over the headers, for the per-request
    # decisions (http1.py): the first Host value, Connection and Upgrade tokens
    # (lower case), Expect values as sent
    host: bytes | None = None
    connection: tuple[bytes, ...] = ()
    upgrade: tuple[bytes, ...] = ()
    expect: tuple[bytes, ...] = ()

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length is not None

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (name compared case-insensitively)."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


def _tokens(value: bytes) -> tuple[bytes, ...]:
    """Comma-separated tokens of a header value, lower-cased (RFC 9110)."""
    if b"," not in value:  # the usual single token, without building a list
        token = value.strip().lower()
        return (token,) if token else ()
    return tuple([t.strip().lower() for t in value.split(b",") if t.strip()])


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

    def close(self) -> None:
        """Nothing to release (see HttptoolsParser.close)."""

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
        # the header lines as sent: h11's raw_items() lower-cases Transfer-Encoding
        # values and merges Content-Length lists, and handlers must see the originals
        return check_head(ev.method, ev.target, ev.http_version, _raw_headers(raw))


_OBS_FOLD = re.compile(rb"\n[ \t]")


def _raw_headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Header pairs from a head h11 has already validated (values trimmed)."""
    out = []
    for line in raw.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        if line:
            name, _, value = line.partition(b":")
            out.append((name, value.strip(b" \t")))
    return out


def _head_end(raw: bytes) -> int:
    """Length of the head (through its blank line) in `raw`, or -1."""
    m = re.search(rb"\r?\n\r?\n", raw)
    return m.end() if m else -1


# the headers check_head looks at; the others pass through untouched
_NOTED_HEADERS = frozenset([b"host", b"connection", b"content-length", b"transfer-encoding",
                              b"upgrade", b"expect"])


def check_head(method: bytes, target: bytes, version: bytes,
               headers: list[tuple[bytes, bytes]]) -> RequestHead:
    """Apply the limits and framing rules every parser shares (D1)."""
    if version not in (b"1.0", b"1.1"):
        raise BadRequest(f"unsupported HTTP version {version.decode('latin-1')}", 505)
    if len(headers) > MAX_HEADERS:
        raise BadRequest("too many headers", 431)
    head = RequestHead(method, target, version, headers)
    lengths = []
    te: list[bytes] = []
    hosts = 0
    for n, v in headers:
        ln = n.lower()
        if ln not in _NOTED_HEADERS:
            continue
        if ln == b"host":
            hosts += 1
            if head.host is None:
                head.host = v
        elif ln == b"connection":
            head.connection += _tokens(v)
        elif ln == b"content-length":
            lengths.append(v)
        elif ln == b"transfer-encoding":
            te += [t.strip().lower() for t in v.split(b",")]
        elif ln == b"upgrade":
            head.upgrade += _tokens(v)
        else:
            head.expect += (v,)
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        raise BadRequest("HTTP/1.1 request needs exactly one Host header")
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
    # one plain decimal only: duplicates, even identical ones, are refused so
    # that nothing downstream can read the length differently (smuggling)
    if len(values) != 1:
        raise BadRequest("more than one Content-Length")
    v = values[0].strip()
    if not v.isdigit() or len(v) > 18:
        raise BadRequest("invalid Content-Length")
    return int(v)


class HttptoolsParser:
    """llhttp (through httptools) behind the same pull interface as H11Parser.

    llhttp is a push parser that runs through everything it is fed, so its
    callbacks queue events (pipelined requests included) and `next_event`
    hands them out in order; an error is queued as an event too, so the
    requests before it are still served. Its own limits are none: head size
    and header count are counted here and refused like h11's (431).
    """

    # the state every parser starts in (class attributes: one parser is made
    # per connection, so fewer assignments there count)
    _pending = 0  # bytes represented by queued events
    _leftover = b""
    _failed = False
    _eof = False
    _done = False  # END handed out; the next request waits for next_request()
    _sniff: bytes | None = b""  # first request line, until we see its end
    _delegate: H11Parser | None = None  # takes over for a client using bare LFs
    _url = b""
    _head_size = 2  # the blank line

    def __init__(self, max_head: int) -> None:
        self.max_head = max_head
        self._events: deque = deque()
        self._headers: list[tuple[bytes, bytes]] = []
        self._parser = httptools.HttpRequestParser(self)

    # --- llhttp callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 2  # the blank line

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value.rstrip(b" \t")))  # llhttp keeps trailing OWS
        self._grow(len(name) + len(value) + 4)

    def _grow(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self.max_head:
            raise BadRequest("request head too large", 431)

    def on_headers_complete(self) -> None:
        p = self._parser
        method = p.get_method()
        version = p.get_http_version()
        if version == "0.9":
            raise BadRequest("illegal request line")  # no version: not an HTTP/1.x request
        self._grow(len(method) + 12)  # request line: "M SP target SP HTTP/x.y CRLF"
        headers, self._headers = self._headers, []  # trailers must not join the head
        head = check_head(method, self._url, version.encode(), headers)
        self._queue(head, self._head_size)

    def on_body(self, body: bytes) -> None:
        self._queue(Body(body), len(body))

    def on_message_complete(self) -> None:
        self._queue(END, 0)

    def _queue(self, ev: Any, size: int) -> None:
        self._events.append((ev, size))
        self._pending += size

    # --- the interface -------------------------------------------------------

    @property
    def buffered(self) -> int:
        if self._delegate is not None:
            return self._delegate.buffered
        return self._pending

    def close(self) -> None:
        """Break the cycle with llhttp (it holds us for its callbacks), so the
        pair is freed as the connection ends instead of by the cyclic GC."""
        self._parser = None

    def leftover(self) -> bytes:
        if self._delegate is not None:
            return self._delegate.leftover()
        return self._leftover

    def feed(self, data: bytes) -> None:
        if self._delegate is not None:
            self._delegate.feed(data)
            return
        if self._sniff is not None and data:
            data = self._sniff_first_line(data)
            if not data:
                return
        if self._eof and data:
            raise ClientGone("data after end of input")
        if self._failed:
            return
        if not data:
            self._eof = True
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._leftover = data[e.args[0]:]
        except httptools.HttpParserCallbackError as e:
            self._fail(e.__context__ if isinstance(e.__context__, BadRequest) else
                       BadRequest("bad request"))
        except httptools.HttpParserError as e:
            self._fail(_llhttp_error(str(e), self._headers))

    def _sniff_first_line(self, data: bytes) -> bytes:
        """Hold back the connection's first bytes until its first line ends.

        llhttp insists on CRLF in the request line; condure (and h11) accept
        bare LFs, so such a client is parsed by h11 from then on.
        """
        sniff = self._sniff
        assert sniff is not None
        if not sniff:  # usually the whole CRLF-ended request line is in the first read
            end = data.find(b"\n")
            if end > 0 and data[end - 1] == 0x0D and data[0] not in b"\r\n":
                self._sniff = None
                return data
        sniff += data  # bytes: a line split over many reads is rare
        if sniff.lstrip(b"\r\n").find(b"\n") < 0 and len(sniff) <= self.max_head:
            self._sniff = sniff
            return b""
        data, self._sniff = sniff, None
        if _bare_lf(data):
            self._delegate = H11Parser(self.max_head)
            self._delegate.feed(data)
            return b""
        return data

    def _fail(self, err: BadRequest) -> None:
        self._failed = True
        self._events.append((err, 0))

    def next_request(self) -> None:
        """Skip what is left of this request (its END when nobody asked for
        it); the next request's events are already queued."""
        if self._delegate is not None:
            self._delegate.next_request()
            return
        while not self._done and self._events and not isinstance(self._events[0][0], BadRequest):
            self.next_event()
        self._done = False

    def next_event(self) -> Any:
        if self._delegate is not None:
            return self._delegate.next_event()
        if self._done:
            return END
        if not self._events:
            if self._eof:
                raise ClientGone("connection closed")
            return NEED_DATA
        ev, size = self._events.popleft()
        self._pending -= size
        if isinstance(ev, BadRequest):
            raise ev
        if ev is END:
            self._done = True
        return ev


def _bare_lf(data: bytes) -> bool:
    """Does the first line (after any empty lines) end with LF alone?"""
    data = data.lstrip(b"\r\n")
    end = data.find(b"\n")
    return end > 0 and data[end - 1] != 0x0D


def _llhttp_error(message: str, headers: list[tuple[bytes, bytes]]) -> BadRequest:
    """Map an llhttp error to the status h11 (and D1) would give."""
    for n, v in headers:
        if n.lower() == b"transfer-encoding" and not any(
                n2.lower() == b"content-length" for n2, _ in headers):
            if [t.strip().lower() for t in v.split(b",")] != [b"chunked"]:
                return BadRequest("unsupported transfer coding", 501)
    return BadRequest(message)



def make_parser(kind: str, max_head: int) -> Any:
    """The parser selected by --http-parser: auto prefers httptools."""
    if kind == "h11" or httptools is None:
        return H11Parser(max_head)
    return HttptoolsParser(max_head)
