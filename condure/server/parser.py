"""HTTP/1.x request parsing behind one small event interface.

Pure. The connection code sees only these events:

* `RequestHead` - method, target, version and raw headers (client's case);
* `Body` - a piece of de-chunked body;
* `End` - the request body is complete;
* `NEED_DATA` - feed more bytes (or b"" at EOF);
* a raised `BadRequest` carrying the HTTP status to answer with (D1).

One behaviour, whichever parser (`--http-parser`). The framing of the byte
stream is this module's own code, shared by every parser: where a head
starts and ends, which bytes a head may hold (`_HEAD`, one compiled regex,
checked before any library sees the head), the limits, and the body
(Content-Length or chunked, `_Framing`). A parser library (llhttp through
httptools, or h11) only splits a head that already passed that check into
method, target, version and fields; where it refuses one anyway (llhttp
knows only its own list of methods, h11 judges Transfer-Encoding itself),
the head is split here instead (`_split_head`), so the library can never
change what a client or handler sees. Bodies never reach a library:
neither shows a chunk's size (h11 takes 2^64 and waits for it), h11 refuses
a Content-Length among the trailers, they disagree on whitespace before a
chunk extension; so chunked framing is done once, here. `check_head`
(server/request.py) then applies the rules above the syntax: version
(505), CONNECT (501), target form and Host (400, D16), at most 64 fields
(431), framing headers (400/501).

Refusals come as soon as the input shows them, never after a timeout: a
first byte that cannot start a method (a TLS ClientHello on a plain port),
a CR followed by anything but LF, a line that breaks the syntax as soon as
its LF arrives, a head over the size limit as soon as it passes it. The
first error in arrival order wins, so the status does not depend on how the
client's bytes were split into reads.
"""
from __future__ import annotations

import re
import string
from typing import Any

import h11

try:
    import httptools as httptools  # re-exported: __main__ reports which parser runs
except ImportError:  # h11 is the always-available reference
    httptools = None  # type: ignore[assignment]

from ..errors import BadRequest, ClientGone, HeadTooLarge
from .request import END, NEED_DATA, Body, End, RequestHead, check_head

MAX_CHUNK_SIZE = (1 << 63) - 1  # larger sizes overflow a signed 64-bit count: refused




# --- syntax ------------------------------------------------------------------
#
# RFC 9112 sections 2-3 and 5 (RFC 9110 5.6.2 for tokens), with condure's
# leniencies: a line may end in a bare LF (RFC 9112 2.2 allows it, and
# condure's httparse takes it anywhere in the head); a bare CR never ends a
# line and is refused wherever it is (RFC 9112 2.2: "MUST ... reject").

TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"  # RFC 9110 5.6.2 (http1.py checks handler names with it)
_TCHARS = frozenset((string.ascii_letters + string.digits + "-!#$%&'*+.^_`|~").encode())
# request-target bytes: visible ASCII except < and >, as condure's httparse
# (RFC 3986 has neither, but clients send | { } ^ raw; non-ASCII is refused)
_TARGET = rb"[!-;=?-~]"
_EOL = rb"\r?\n"
# The quantifiers are possessive (*+, ++: Python 3.11): no part of a head can
# match in two ways (a token stops at ":" or SP, a value at CR or LF, a field
# line is never empty), so nothing needs giving back, and the engine keeps no
# backtracking state: a quarter faster on the usual head.
_REQUEST_LINE = TCHAR + rb"++ " + _TARGET + rb"++ HTTP/[0-9]\.[0-9]" + _EOL
# field-value: VCHAR, obs-text, SP and HTAB; no other control (DEL, NUL, CR...)
_FIELD_LINE = TCHAR + rb"++:[\t\x20-\x7e\x80-\xff]*+" + _EOL
_HEAD = re.compile(_REQUEST_LINE + rb"(?:" + _FIELD_LINE + rb")*+" + _EOL)
_FIRST_LINES = re.compile(_REQUEST_LINE + rb"(?:" + _FIELD_LINE + rb")*+")
_FIELD_LINES = re.compile(rb"(?:" + _FIELD_LINE + rb")*+")
_TRAILERS = re.compile(rb"(?:" + _FIELD_LINE + rb")*+" + _EOL)
_SECTION_END = re.compile(rb"\n\r?\n")  # the first empty line ends a head or trailers
_EMPTY_LINES = re.compile(rb"(?:\r?\n)+")  # skipped before a request line (RFC 9112 2.2)
# name and value (trimmed) of the field lines of a head `_HEAD` accepted; the
# value ends at its last non-blank byte (linear: no lazy match over blanks)
_FIELD = re.compile(rb"([^:\r\n]+):[ \t]*((?:[^\r\n]*[^ \t\r\n])?)[ \t]*\r?\n")

# chunk-size [BWS chunk-ext] CRLF (RFC 9112 7.1.1; whitespace after the size
# and before ";" as condure takes it). At most 16 digits: leading zeros beyond
# that are refused like condure's parser does, and the value is checked
# against MAX_CHUNK_SIZE. The extension is skipped; it may hold anything but
# controls. Unlike head lines, a chunk line must end in CRLF, as in condure:
# a bare LF here is where front ends disagree on body framing (smuggling).
_CHUNK_EXT = rb"[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?"
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})" + _CHUNK_EXT + rb"\r\n")
_CHUNK_LINE_START = re.compile(rb"[0-9A-Fa-f]{0,16}(?:" + _CHUNK_EXT + rb"\r?)?")


def _bad(message: str, status: int = 400, parse_error: str | None = None) -> BadRequest:
    return BadRequest(message, status, parse_error)


# --- naming a syntax error as connmgr does ---------------------------------------
#
# pushpin-connmgr answers a head its parser (httparse) refuses with
# `Failed to parse request: <httparse's name for the fault>` (connmgr.md 4.3
# A). Our syntax check is one regex, which says only that a head is wrong;
# `syntax_error` finds the first fault again and names it the way httparse
# does: a byte outside a token in the method or target (or no single space
# after them) is `invalid token`, a version that is not `HTTP/d.d` `invalid
# HTTP version`, a line end that is not CRLF or LF `invalid new line`, a
# field name that is not a token followed by `:` `invalid header name`, a
# control byte in a field value `invalid header value`. Only refused input
# comes here, so it can be slow.

_TOKEN = re.compile(TCHAR + rb"*")
_TARGET_RUN = re.compile(_TARGET + rb"*")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_VALUE_RUN = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def syntax_error(buf: bytes, request_line: bool) -> str:
    """httparse's name for the first fault in `buf`, a head (`request_line`)
    or a trailer section that the syntax refused (possibly unfinished)."""
    pos = 0
    if request_line:
        m = _EMPTY_LINES.match(buf)
        pos = m.end() if m is not None else 0
        for part in (_TOKEN, _TARGET_RUN):  # method SP target SP
            end = part.match(buf, pos).end()  # type: ignore[union-attr]  # * always matches
            if end == len(buf):
                return "invalid token"  # unfinished: a bare CR or a byte no token has
            if end == pos or buf[end:end + 1] != b" ":
                return "invalid token"
            pos = end + 1
        if _VERSION.match(buf, pos) is None:
            return "invalid HTTP version"
        pos += 8
        if buf[pos:pos + 1] == b"\n":
            pos += 1
        elif buf[pos:pos + 2] == b"\r\n":
            pos += 2
        else:
            return "invalid new line"
    while pos < len(buf):
        if buf[pos:pos + 1] == b"\n" or buf[pos:pos + 2] == b"\r\n":
            break  # the end of the section: no fault before it
        if buf[pos:pos + 1] == b"\r":
            return "invalid new line"  # a CR at a line's start can only end the section
        end = _TOKEN.match(buf, pos).end()  # type: ignore[union-attr]
        if end == pos or buf[end:end + 1] != b":":
            return "invalid header name"
        pos = _VALUE_RUN.match(buf, end + 1).end()  # type: ignore[union-attr]
        if buf[pos:pos + 1] == b"\n":
            pos += 1
        elif buf[pos:pos + 2] == b"\r\n":
            pos += 2
        elif buf[pos:pos + 1] == b"\r":
            return "invalid new line"
        elif pos < len(buf):
            return "invalid header value"
    return "invalid new line"  # a bare CR at the very end (or nothing found)


def _syntax(message: str, buf: bytes, request_line: bool) -> BadRequest:
    return _bad(message, parse_error=syntax_error(buf, request_line))


# --- framing, shared by every parser --------------------------------------------

# states of _Framing (module constants: compared by identity in the hot path)
_HEAD_STATE = 0  # reading a request head
_END_DUE = 1  # the request is complete; END not handed out yet
_DONE = 2  # END handed out; next_request() starts the next one
_LENGTH_BODY = 3  # Content-Length body, `_remaining` bytes left
_CHUNK_SIZE = 4  # expecting a chunk-size line
_CHUNK_DATA = 5  # inside chunk data, `_remaining` bytes left
_CHUNK_CRLF = 6  # expecting the CRLF after chunk data
_TRAILERS_STATE = 7  # the trailer section after the last chunk


class _Framing:
    """The request byte stream as events; subclasses only split heads.

    A pull parser over one buffer: `feed` appends, `next_event` parses as
    far as the next event. The buffer holds the bytes not yet handed out,
    so `buffered` is its length and `leftover` (after a WebSocket head) is
    the buffer itself.
    """

    # the state every parser starts in (class attributes: one parser is made
    # per connection, so fewer assignments there count)
    _buf = b""
    _state = _HEAD_STATE
    _remaining = 0
    _checked = 0  # the bytes of an unfinished head or trailer section already checked
    _unfinished = False  # the head seen so far was not complete
    _eof = False

    def __init__(self, max_head: int) -> None:
        # the most bytes a head (or a trailer section, a chunk-size line) may
        # take: --buffer-size; while a head is read, the connection may raise
        # it a block at a time (HeadTooLarge, blocks.py) and sets it back
        # once the head is parsed, so a body's limits stay --buffer-size
        self.max_head = max_head

    @property
    def buffered(self) -> int:
        """Bytes received but not handed out as events yet."""
        return len(self._buf)

    def leftover(self) -> bytes:
        """Bytes after the request head, for a protocol switch (WebSocket)."""
        return bytes(self._buf)

    def close(self) -> None:
        """Release what the parser holds (see HttptoolsParser.close)."""

    def feed(self, data: bytes) -> None:
        """Add received bytes; b"" announces the end of the input."""
        if self._eof:
            if data:
                raise ClientGone("data after end of input")
            return
        if not data:
            self._eof = True
        elif self._buf:
            self._buf += data  # bytes: a head split over many reads is rare
        else:
            self._buf = data

    def next_request(self) -> None:
        """Start on the next request (pipelined bytes are already buffered).

        The connection calls this only after the whole request was read; the
        END of a request without a body need not have been asked for.
        """
        if self._state is _END_DUE or self._state is _DONE:
            self._state = _HEAD_STATE

    def next_event(self) -> RequestHead | Body | End | Any:
        state = self._state
        if state is _HEAD_STATE:
            return self._next_head()
        if state is _END_DUE or state is _DONE:
            self._state = _DONE
            return END
        if state is _LENGTH_BODY:
            return self._length_body()
        return self._chunked_body()

    def _need_data(self) -> Any:
        if self._eof:
            raise ClientGone("connection closed")
        return NEED_DATA

    # --- the head ---------------------------------------------------------------

    def _next_head(self) -> RequestHead | Any:
        buf = self._buf
        if buf[:1] == b"\r" or buf[:1] == b"\n":
            m = _EMPTY_LINES.match(buf)
            if m is not None:
                buf = self._buf = buf[m.end():]
        # usually the whole head is there and valid: one match finds its end
        # (field lines cannot be empty, so it ends at the first empty line)
        m = None if self._unfinished else _HEAD.match(buf)
        if m is not None and m.end() <= self.max_head:
            end = m.end()
        else:
            end = self._head_end(buf)
            if end < 0:
                return self._need_data()
        raw = buf if end == len(buf) else buf[:end]
        self._buf = buf[end:]
        self._checked = 0
        self._unfinished = False
        head = self._parse_head(raw)
        if head.chunked:
            self._state = _CHUNK_SIZE
        elif head.content_length:
            self._state = _LENGTH_BODY
            self._remaining = head.content_length
        else:
            self._state = _END_DUE
        return head

    def _head_end(self, buf: bytes) -> int:
        """The end of the head in `buf` (-1: not there yet), the slow way.

        For a head that arrives in pieces (or is refused): each piece is
        checked once, as `_check_unfinished` says, instead of matching the
        whole head again for every piece."""
        m = _SECTION_END.search(buf, self._checked - 1 if self._checked else 0)
        if m is None or m.end() > self.max_head:
            self._check_unfinished(buf, True)  # 431 past max_head, unless a line broke before
            self._unfinished = True
            return -1
        if _HEAD.fullmatch(buf, 0, m.end()) is None:
            raise _syntax("malformed request head", buf[:m.end()], True)
        return m.end()

    def _check_unfinished(self, buf: bytes, request_line: bool) -> None:
        """Refuse what the bytes of a head (or trailer section) received so far
        already show to be wrong: a line as soon as its LF arrives (each line
        is checked once), a bare CR as soon as the byte after it arrives, a
        first byte that cannot start a method. Only the first max_head bytes
        count; past them the section is too large (431). `buf` holds no end
        of section within max_head bytes."""
        size = len(buf)
        if size > self.max_head:
            buf = buf[:self.max_head]
        start = self._checked
        last = buf.rfind(b"\n")
        if last >= start:
            rx = _FIRST_LINES if request_line and start == 0 else _FIELD_LINES
            if rx.fullmatch(buf, start, last + 1) is None:
                raise _syntax("malformed request line or field line", buf[:last + 1],
                              request_line)
            self._checked = start = last + 1
        cr = buf.find(b"\r", start)
        if 0 <= cr < len(buf) - 1:
            raise _syntax("CR not followed by LF", buf[:cr + 2], request_line)
        if request_line and start == 0 and buf and buf[0] not in _TCHARS and buf != b"\r":
            # not the start of a method: not HTTP (e.g. a TLS ClientHello)
            raise _bad("request does not start with a method", parse_error="invalid token")
        if size > self.max_head:
            if request_line:
                raise HeadTooLarge(self.max_head)  # the connection may grow max_head and retry
            raise _bad("trailers too large", 431)

    def _parse_head(self, raw: bytes) -> RequestHead:
        """Split a head `_HEAD` accepted, then apply check_head."""
        return check_head(*_split_head(raw))

    # --- bodies -----------------------------------------------------------------

    def _length_body(self) -> Body | Any:
        buf = self._buf
        if not buf:
            return self._need_data()
        n = self._remaining
        if len(buf) <= n:
            self._buf = b""
            data = buf
        else:
            data, self._buf = buf[:n], buf[n:]
        n -= len(data)
        self._remaining = n
        if not n:
            self._state = _END_DUE
        return Body(data)

    def _chunked_body(self) -> Body | End | Any:
        """RFC 9112 7.1: chunks, the last chunk, trailers (checked, dropped)."""
        while True:
            state, buf = self._state, self._buf
            if state is _CHUNK_DATA:
                if not buf:
                    return self._need_data()
                n = self._remaining
                data, self._buf = buf[:n], buf[n:]
                self._remaining = n - len(data)
                if not self._remaining:
                    self._state = _CHUNK_CRLF
                return Body(data)
            if state is _CHUNK_CRLF:
                if buf[:2] == b"\r\n":
                    self._buf = buf[2:]
                    self._state = _CHUNK_SIZE
                    continue
                if buf == b"\r" or not buf:
                    return self._need_data()
                raise _bad("chunk data not followed by CRLF", parse_error="invalid chunk suffix")
            if state is _CHUNK_SIZE:
                if not self._chunk_size_line(buf):
                    return self._need_data()
                continue
            if not self._trailers(buf):
                return self._need_data()
            self._state = _DONE
            return END

    def _chunk_size_line(self, buf: bytes) -> bool:
        """Take one chunk-size line; False if it is not complete yet."""
        lf = buf.find(b"\n")
        if lf < 0:
            # refuse at once what cannot become a chunk-size line: its start
            # (the size and a few bytes after), a bare CR anywhere
            if (_CHUNK_LINE_START.fullmatch(buf, 0, 32) is None
                    or 0 <= buf.find(b"\r", 0, len(buf) - 1)):
                raise _bad("invalid chunk size line", parse_error="invalid chunk size")
            if len(buf) > self.max_head:
                raise _bad("chunk size line too long", parse_error="invalid chunk size")
            return False
        m = _CHUNK_LINE.fullmatch(buf, 0, lf + 1)
        if m is None:
            raise _bad("invalid chunk size line", parse_error="invalid chunk size")
        size = int(m.group(1), 16)
        if size > MAX_CHUNK_SIZE:
            raise _bad("chunk size too large", parse_error="chunk too large")
        self._buf = buf[lf + 1:]
        if size:
            self._state = _CHUNK_DATA
            self._remaining = size
        else:
            self._state = _TRAILERS_STATE
            self._checked = 0
        return True

    def _trailers(self, buf: bytes) -> bool:
        """Take the trailer section; False if it is not complete yet. Any
        field may be there (Content-Length and Transfer-Encoding too: they
        mean nothing after the body); all are dropped, as condure does."""
        if buf[:2] == b"\r\n" or buf[:1] == b"\n":  # no trailers: the usual case
            end = 1 if buf[:1] == b"\n" else 2
        else:
            m = _SECTION_END.search(buf, self._checked - 1 if self._checked else 0)
            if m is None:
                self._check_unfinished(buf, False)
                return False
            end = m.end()
            if end > self.max_head:
                self._check_unfinished(buf, False)
            if _TRAILERS.fullmatch(buf, 0, end) is None:
                raise _syntax("malformed trailer section", buf[:end], False)
        self._buf = buf[end:]
        self._checked = 0
        return True


def _split_head(raw: bytes) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]:
    """Method, target, version and fields of a head `_HEAD` accepted (so the
    request line is exactly `method SP target SP HTTP/x.y`)."""
    lf = raw.find(b"\n")
    method, target, version = raw[:lf].rstrip(b"\r").split(b" ")
    return method, target, version[5:], _FIELD.findall(raw, lf + 1)


# --- the parsers --------------------------------------------------------------


class H11Parser(_Framing):
    """h11 splits each head, as the reference parser; the framing and the
    rules are the shared ones. A head h11 refuses although `_HEAD` and
    check_head take it is split by `_split_head`, so h11's own verdicts
    (which differ in places: a Transfer-Encoding next to a Content-Length
    gets 501 from it) never reach the client. The fields are taken from the
    raw head: h11 lower-cases names and some values, and handlers must see
    the originals."""

    def _parse_head(self, raw: bytes) -> RequestHead:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(raw) + 1)
        conn.receive_data(raw)
        try:
            ev = conn.next_event()
        except h11.RemoteProtocolError:
            ev = None
        if type(ev) is not h11.Request:
            return check_head(*_split_head(raw))
        return check_head(ev.method, ev.target, ev.http_version,
                          _FIELD.findall(raw, raw.find(b"\n") + 1))


class HttptoolsParser(_Framing):
    """llhttp (through httptools) splits each head; the framing and the rules
    are the shared ones.

    llhttp is fed exactly one head at a time (never a body: the bodies are
    framed above). It is kept across requests without a body and made anew
    after one with a body or an upgrade, which it would still be waiting
    for. It refuses some heads the rules accept - methods outside its list
    (BREW, MKCALENDAR, any extension token), a bare LF after the request
    line, versions it does not know (the 505 is ours to give), Content-Length
    together with Transfer-Encoding (the 400 is ours too): those are split by
    `_split_head`, which is slower than llhttp (1.5 against 1 us for a
    five-field head), hence llhttp first.
    """

    _llhttp: Any = None  # made on first use (see the class comment)
    _url = b""
    _fields: list[tuple[bytes, bytes]]  # set for each head, before llhttp calls on_header

    # llhttp callbacks
    def on_url(self, url: bytes) -> None:
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value.rstrip(b" \t")))  # llhttp keeps trailing OWS

    def close(self) -> None:
        """Break the cycle with llhttp (it holds us for its callbacks), so the
        pair is freed as the connection ends instead of by the cyclic GC."""
        self._llhttp = None

    def _parse_head(self, raw: bytes) -> RequestHead:
        p = self._llhttp
        if p is None:
            p = self._llhttp = httptools.HttpRequestParser(self)
            # a bare LF after a field line; HTTP/1.0 or `Connection: close`
            # must not stop it from taking the next head
            p.set_dangerous_leniencies(lenient_optional_cr_before_lf=True,
                                       lenient_keep_alive=True)
        fields = self._fields = []
        try:
            p.feed_data(raw)
        except httptools.HttpParserUpgrade:
            self._llhttp = None  # paused for the other protocol
        except httptools.HttpParserError:
            self._llhttp = None
            return check_head(*_split_head(raw))
        head = check_head(p.get_method(), self._url, _VERSIONS.get(p.get_http_version()) or
                          p.get_http_version().encode(), fields)
        if head.has_body:
            self._llhttp = None  # it would take the next head for the body
        return head


_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}


def make_parser(kind: str, max_head: int) -> Any:
    """The parser selected by --http-parser: auto prefers httptools."""
    if kind == "h11" or httptools is None:
        return H11Parser(max_head)
    return HttptoolsParser(max_head)
