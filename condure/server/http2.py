"""HTTP/2 for clients (issue 16): h2c with prior knowledge, each stream a ZHTTP session.

A connection whose first head is the HTTP/2 preface (`Connection._serve_one`
sees `request.Http2Preface`) is handed to `serve`, in the connection's own
greenlet. The protocol engine is the `h2` library (sans-IO): the connection
greenlet reads the socket, feeds h2 and dispatches its events to the streams;
each request stream gets a greenlet of its own running the unchanged
`Exchange` logic against an `H2Stream`, which is that exchange's
`ClientStream` and `HandlerLink` (server/ports.py), and its own ZHTTP session
(id, seq, timers, keep-alives, handler expiry) exactly as one HTTP/1 request.

What differs from HTTP/1 is kept to two places:

- the request head is built from the HEADERS (`request_head`): `:authority`
  becomes the first field, `host`, then the same `check_head` an HTTP/1 head
  goes through (so the ZHTTP request packet is the one the same HTTP/1.1
  request produces, with field names lower case as HTTP/2 sends them);
- the response is written as HEADERS and DATA instead of an HTTP/1 head
  (`H2Exchange` overrides the two methods of `Exchange` that frame the
  response; everything else - credits, handoff, keep-alives, cancel, errors,
  the access log - is `Exchange`'s).

Flow control: the receive windows (the stream's and the connection's, 65,535
bytes each) are reopened (WINDOW_UPDATE) only for bytes an exchange has taken
in, which it does only while its handler has credits: the HTTP/1
back-pressure, with the windows in the place of the socket buffer; what the
streams of a connection hold unread is bounded by the connection's window. Response DATA goes out within the peer's
window; `write` waits for it to open, and the handler's credits come back
only after that, so a client that does not open its window slows its handler.

Writes are batched: the greenlets of a connection only act on h2 (which
never waits), and the connection's greenlet takes h2's output and writes it
when it runs next (`H2Connection.flush`, once per hub turn: the frames of
all the streams that answered meanwhile in one socket write), through the
connection's write queue (`OutputQueue`: what the socket does not take goes
out as it becomes writable, while the connection goes on reading). Frames
keep h2's order. Response DATA waits while more than `OUT_HIGH` bytes are
queued unwritten, so a client that does not read holds its streams back.

Safety (D34): the stream limit and --stream-maxconn are checked in
`H2Connection._start`; a request head is bounded as an HTTP/1 one
(`request_head`, `H2Connection.head_capacity`); h2's HPACK decoder stops at
`list_max`; `FrameGuard` reads the frame headers before h2 parses them
(CONTINUATION and control-frame floods); each stream has the timers of an
HTTP/1 request. The constants below say why their numbers.
"""
from __future__ import annotations

import base64
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame

from .. import private
from ..errors import (INVALID_WEBSOCKET, BadHandlerResponse, BadRequest, BufferExceeded,
                      ClientGone, CondureError, HeadTooLarge, Stopped, Timeout)
from ..log import ConnLogger
from ..zhttp import packet as zp
from ..zhttp.session import Session
from . import access, http1
from .connection import Connection, flagged
from .exchange import Exchange
from .ports import Inbound
from .request import END, MAX_HEADERS, NEED_DATA, Body, RequestHead, check_head
from .timers import Armed
from .wshandshake import WsHandshake
from .wshead import valid_upgrade

if TYPE_CHECKING:
    from ..context import Server

log = logging.getLogger("condure.http2")

PREFACE_HEAD = b"PRI * HTTP/2.0\r\n\r\n"  # what the HTTP/1 parser took of the preface
PREFACE_SIZE = 24  # the client's whole preface, PREFACE_HEAD + b"SM\r\n\r\n"
# streams a connection may have open at once (announced); the next is refused
# with RST_STREAM(REFUSED_STREAM) and its handler never hears of it. 100 is
# what RFC 9113 6.5.2 recommends as the least, and what most servers announce.
MAX_CONCURRENT_STREAMS = 100
# h2's own limit is checked before the HEADERS are decoded and ends the whole
# connection (TooManyStreamsError: GOAWAY(PROTOCOL_ERROR), every stream lost);
# RFC 9113 5.1.2 makes it a stream error. h2's limit is therefore set out of
# reach once our SETTINGS are queued, and ours is checked in `_start`, after
# the decoding (the HPACK context stays in step), with REFUSED_STREAM.
H2_STREAMS_CAP = 2**31 - 1
JOIN_TIME = 5.0  # seconds the streams get to end after the connection did
# rapid reset (CVE-2023-44487): more resets than this within RESET_PERIOD
# seconds end the connection with GOAWAY(ENHANCE_YOUR_CALM). Counted: the
# client's RST_STREAMs, and the streams we refuse (over the limits above):
# both cost a request head decoded and a stream set up for nothing.
RESETS_MAX = 200
RESET_PERIOD = 1.0
# SETTINGS/PING floods and the like (CVE-2019-9512, -9515, -9518): frames that
# cost us work, often an answer, and carry no request data - SETTINGS and PING
# (each gets an ACK), PRIORITY, RST_STREAM, an empty DATA without END_STREAM,
# an empty CONTINUATION, a frame of an unknown type - more than CONTROL_MAX of
# them within CONTROL_PERIOD seconds end the connection with
# GOAWAY(ENHANCE_YOUR_CALM). A client sends a few per connection (its
# SETTINGS, an ACK, a keep-alive PING now and then; browsers a PRIORITY per
# stream at most, 100 streams at once): 1000 a second leaves them ten times
# that, and bounds the ACKs a flood makes us write to about 17 KB a second
# (nghttp2 allows 1000 queued control frames). WINDOW_UPDATE is not counted:
# it makes no answer, and a client reading a fast download legitimately sends
# one for every DATA frame or two (h2 refuses an increment of 0 itself).
CONTROL_MAX = 1000
CONTROL_PERIOD = 1.0
# HPACK: the dynamic table we announce (HEADER_TABLE_SIZE, h2's default), and
# the most our encoder keeps for a client, whatever larger table it offers
# (the responses' fields would otherwise stay in memory for the connection's
# life, up to 4 GiB of table).
ENCODER_TABLE_MAX = 4096
OUT_HIGH = 65536  # bytes queued for the socket beyond which response DATA waits
# finished stream greenlets a connection keeps for its next streams (each holds its
# saved stack, a few KB, until the connection ends)
IDLE_STREAM_GREENLETS = 16
_NEXT = object()  # marks the switch that hands an idle stream greenlet its next stream

# fields HTTP/2 forbids (RFC 9113 8.2.2), dropped from the handler's response
_CONNECTION_SPECIFIC = frozenset([b"connection", b"keep-alive", b"proxy-connection",
                                  b"transfer-encoding", b"upgrade", b"te"])
# a DATA payload from h2 is a new bytes object, never this one: recv_now's
# answer when the stream ended without data left (b"" would mean "gone")
END_MARK = b"<end of HTTP/2 stream>"


def serve(conn: Connection) -> None:
    """Serve the HTTP/2 connection `conn` (its parser holds what followed
    `PRI * HTTP/2.0\\r\\n\\r\\n`) until it ends; the caller closes it."""
    H2Connection(conn).run()


# --- Upgrade: h2c (RFC 7540 3.2) -------------------------------------------------------

SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
# the fields of the upgrade, hop by hop: not forwarded with the request of stream 1
_UPGRADE_FIELDS = frozenset([b"connection", b"upgrade", b"http2-settings"])


def wants_upgrade(head: RequestHead) -> bool:
    """`Upgrade: h2c` that we take: HTTP/1.1, no body (RFC 7540 3.2 lets the
    server ignore the others; they are served as HTTP/1), one HTTP2-Settings
    field, named in Connection."""
    if b"h2c" not in head.upgrade or head.version != b"1.1" or head.has_body:
        return False
    if b"http2-settings" not in head.connection:
        return False
    return sum(1 for n, _ in head.headers if n.lower() == b"http2-settings") == 1


def upgrade(conn: Connection, head: RequestHead) -> bool:
    """Switch `conn` to HTTP/2 and serve `head` as its stream 1; False: the
    connection ends with the HTTP/2 connection."""
    settings = head.header(b"http2-settings")
    assert settings is not None
    conn.end_session()  # stream 1 gets a session of its own
    head.headers = [(n, v) for n, v in head.headers if n.lower() not in _UPGRADE_FIELDS]
    head.connection = head.upgrade = ()
    head.version = b"2"
    try:
        conn.write(SWITCHING)
    except CondureError:
        return False
    H2Connection(conn).run(upgrade=(head, settings))
    return False


# --- the request head -------------------------------------------------------------


def request_head(headers: list[tuple[bytes, bytes]], ended: bool,
                 capacity: Callable[[int], int] | None = None) -> RequestHead:
    """The head an HTTP/1.1 request with these fields would have: `:authority`
    as the first field, `host` (replacing a `host` field that agrees with it;
    one that does not is a 400, RFC 9113 8.3.1),
    `cookie` fields joined with "; " where the first was (RFC 9113 8.2.3),
    the other fields in order as received. The pseudo-fields were checked
    by h2. `ended`: END_STREAM came with the HEADERS (no body); a body
    without content-length is marked `chunked` (its length unknown).

    `capacity(size)`: the most an HTTP/1 head of `size` bytes could grow to
    now (`H2Connection.head_capacity`); a request whose HTTP/1.1 head would
    be larger is refused as that head is (`HeadTooLarge`, 431)."""
    method = path = b""
    authority = protocol = None
    fields: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":  # h2 lets it through with CONNECT only
                protocol = value
            continue
        if name == b"cookie":
            if not cookies:
                fields.append((b"cookie", b""))  # its place; filled below
            cookies.append(value)
            continue
        fields.append((name, value))
    if cookies:
        joined = b"; ".join(cookies)
        fields = [(n, joined) if n == b"cookie" else (n, v) for n, v in fields]
    if authority is not None:
        # RFC 9113 8.3.1: a host field naming another entity makes the request
        # malformed (compared without case, as host names are)
        low = authority.lower()
        if any(n == b"host" and v.lower() != low for n, v in fields):
            raise BadRequest("host field and :authority disagree")
        fields = [(b"host", authority)] + [(n, v) for n, v in fields if n != b"host"]
    if capacity is not None:
        size = head_size(method, path, fields)
        reached = capacity(size)
        if size > reached:
            raise HeadTooLarge(reached)
    if protocol is not None:  # an extended CONNECT (RFC 8441)
        return websocket_head(protocol, path, fields, ended)
    head = check_head(method, path, b"1.1", fields)
    head.version = b"2"
    if not ended and head.content_length is None:
        head.chunked = True  # a body of unknown length (DATA until END_STREAM)
    elif ended and head.content_length:
        raise BadRequest("content-length without a body")  # RFC 9113 8.1.1
    return head


def head_size(method: bytes, path: bytes, fields: list[tuple[bytes, bytes]]) -> int:
    """The bytes of the HTTP/1.1 head of this request (`M P HTTP/1.1`, a
    `name: value` line per field, the empty line): what --buffer-size bounds."""
    return len(method) + len(path) + 14 + sum(len(n) + len(v) + 4 for n, v in fields)


def websocket_head(protocol: bytes, path: bytes, fields: list[tuple[bytes, bytes]],
                   ended: bool) -> RequestHead:
    """The head of the HTTP/1.1 upgrade an extended CONNECT (RFC 8441 4)
    stands for: `GET path`, `fields` (from `request_head`: `host` first) with
    the fields only an HTTP/1.1 client sends put after `host`: `upgrade:
    websocket`, `connection: Upgrade` (h2 refuses both in a request: they
    are connection-specific) and a `sec-websocket-key` of 16 random bytes
    unless the client sent one (RFC 8441 drops it: no Sec-WebSocket-Accept
    is answered). The handler so gets the request packet of an HTTP/1.1
    upgrade, names lower case, and accepts it as it accepts one.

    A `:protocol` other than `websocket` is refused with 501 as a plain
    CONNECT is (nothing else has a ZHTTP mapping); a CONNECT that ended its
    stream at once has no session to carry: 400. Whether the upgrade is
    valid (version 13, extensions) is for the caller (`valid_upgrade`)."""
    if protocol != b"websocket":
        raise BadRequest(f"CONNECT :protocol {protocol.decode('latin-1')!r} is not supported", 501)
    if ended:
        raise BadRequest("extended CONNECT without a stream (END_STREAM)")
    added = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
    if not any(n == b"sec-websocket-key" for n, _ in fields):
        added.append((b"sec-websocket-key", base64.b64encode(os.urandom(16))))
    at = 1 if fields and fields[0][0] == b"host" else 0
    head = check_head(b"GET", path, b"1.1", fields[:at] + added + fields[at:])
    head.version = b"2"
    return head


def response_headers(code: int, reason: bytes, headers: list[tuple[bytes, bytes]]
                     ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """`:status` and the handler's fields, names lower case, without the
    connection-specific ones; and the handler's content-length, if any.
    Refused as HTTP/1 refuses them (D9, D17): a code that is not a final
    status, CR, LF or NUL anywhere, a name that is not a token."""
    if not 200 <= code <= 599:
        raise BadHandlerResponse(f"handler status code {code} is not a final status (200-599)")
    out = [(b":status", b"%d" % code)]
    length = None
    for name, value in headers:
        low = name.lower()
        if low in _CONNECTION_SPECIFIC:
            continue
        if low == b"content-length" and length is None:
            length = value
        out.append((low, value))
    # the checks of the HTTP/1 head, on the same fields (the reason is not sent)
    http1.status_line(b"2", code, reason)
    http1.header_lines(headers, _CONNECTION_SPECIFIC)
    return out, length


# --- the exchange over HTTP/2 -------------------------------------------------------


class H2Exchange(Exchange):
    """`Exchange`, with the response written as HEADERS and DATA frames."""

    stream: H2Stream

    def _start_response(self, pkt: zp.Packet) -> None:
        stream = self.stream
        code = 0 if pkt.code is None else pkt.code
        self.code = code
        headers, length = response_headers(code, pkt.reason, pkt.headers)
        head_only = self.head.method == b"HEAD"
        if code == 204 or code == 304:
            body = http1.ResponseBody(http1.NO_BODY, 0, head_only)
        elif length is not None:
            v = length.strip()
            if not v.isdigit() or len(v) > 18:
                raise BadHandlerResponse("invalid Content-Length in handler response")
            body = http1.ResponseBody(http1.LENGTH, int(v), head_only)
        elif not pkt.more:
            headers.append((b"content-length", b"%d" % len(pkt.body)))
            body = http1.ResponseBody(http1.LENGTH, len(pkt.body), head_only)
        else:
            body = http1.ResponseBody(http1.UNTIL_CLOSE, 0, head_only)
        if len(pkt.body) > stream.buffer_size:
            raise BufferExceeded("response does not fit the write buffer")
        self.response = body
        self.written = True
        data = body.frame(pkt.body, not pkt.more)
        last = not pkt.more
        stream.send_headers(headers, end=last and not data)
        if data:
            stream.write_data(data, last)
        self._after_write(pkt.body, pkt.more)

    def _send_continue(self) -> None:
        self.stream.send_headers([(b":status", b"100")], end=False)  # RFC 9113 8.1

    def _write_body(self, data: bytes, more: bool) -> None:
        if len(data) > self.stream.buffer_size:
            raise BufferExceeded("handler sent more than its credits")
        assert self.response is not None
        out = self.response.frame(data, not more)
        if out or not more:
            self.stream.write_data(out, not more)
        self._after_write(data, more)


# --- WebSocket over HTTP/2 (RFC 8441) ---------------------------------------------------

# handler fields the answer to an extended CONNECT loses: the connection-specific
# ones, and those of the HTTP/1.1 handshake condure writes itself there (wshead's list)
_WS_DROPPED = _CONNECTION_SPECIFIC | frozenset([b"sec-websocket-accept",
                                               b"sec-websocket-extensions", b"content-length"])


def _fields(headers: list[tuple[bytes, bytes]], dropped: frozenset[bytes]
            ) -> list[tuple[bytes, bytes]]:
    """The handler's fields lower case, without `dropped`, after the checks
    the HTTP/1.1 head makes of all of them (D9, D17)."""
    http1.header_lines(headers, dropped)
    return [(n.lower(), v) for n, v in headers if n.lower() not in dropped]


def accept_headers(reason: bytes, headers: list[tuple[bytes, bytes]],
                   extension: bytes | None) -> list[tuple[bytes, bytes]]:
    """The HEADERS that accept an extended CONNECT (RFC 8441 5): `:status 200`
    where HTTP/1.1 has the 101, the handler's fields as the 101 carries
    them, and the permessage-deflate answer negotiated as for HTTP/1.1."""
    http1.status_line(b"2", 101, reason, interim=True)  # the 101's check of the reason
    out = [(b":status", b"200")] + _fields(headers, _WS_DROPPED)
    if extension:
        out.append((b"sec-websocket-extensions", extension))
    return out


class H2WsHandshake(WsHandshake, H2Exchange):
    """`WsHandshake` on an HTTP/2 stream: the accept is a 200 HEADERS, a
    rejection HEADERS and DATA. A non-101 answer is the plain response of
    `H2Exchange` (WsHandshake's `_plain_response` reaches it through the
    method order: WsHandshake, H2Exchange, Exchange). After the accept the
    `WebSocketSession` runs unchanged on the stream (`H2Stream.upgraded`)."""

    def _write_accept(self, pkt: zp.Packet, extension: bytes | None) -> None:
        headers = accept_headers(pkt.reason, pkt.headers, extension)
        self.written = True
        self.code = 101  # what the handler answered (the access log's, as over HTTP/1.1)
        self.stream.send_headers(headers, end=False)

    def _write_rejection(self, code: int, pkt: zp.Packet) -> None:
        http1.status_line(b"2", code, pkt.reason)  # a final status (D17), the reason's check
        headers = [(b":status", b"%d" % code)] + _fields(pkt.headers, _WS_DROPPED)
        headers.append((b"content-length", b"%d" % len(pkt.body)))
        self.written = True
        self.code = code
        stream = self.stream
        stream.send_headers(headers, end=not pkt.body)
        if pkt.body:
            stream.write_data(pkt.body, True)

    def _fail(self, e: CondureError) -> None:
        super()._fail(e)  # shutdown: WsHandshake's 1001 close
        if isinstance(e, Stopped) and self.ws is not None:
            # then END_STREAM, where HTTP/1.1 closes the socket (a FIN, RFC 8441
            # 7); the other failures reset the stream (H2Connection.stream_done)
            self.stream.close_gracefully()


# --- a stream -------------------------------------------------------------------------


class StreamBody:
    """The request body of a stream, as the HTTP/1 parser hands a body out
    (`Body` events, then `END`): what `Exchange` reads through `parser`."""

    buffered = 0  # nothing is ever pipelined behind an HTTP/2 request
    _ended = False

    def __init__(self) -> None:
        self._data: deque[bytes] = deque()

    def feed(self, data: bytes) -> None:
        if data is END_MARK:
            self._ended = True
        elif data:
            self._data.append(data)

    def end(self) -> None:
        self._ended = True

    def next_event(self) -> Any:
        if self._data:
            return Body(self._data.popleft())
        return END if self._ended else NEED_DATA

    def next_request(self) -> None:
        pass

    def leftover(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _take(chunks: deque[bytes], limit: int) -> bytes:
    """Up to `limit` bytes from the front of `chunks` (a chunk split if need be)."""
    out: list[bytes] = []
    n = 0
    while chunks and n < limit:
        c = chunks.popleft()
        if n + len(c) > limit:
            c, rest = c[:limit - n], c[limit - n:]
            chunks.appendleft(rest)
        out.append(c)
        n += len(c)
    return b"".join(out)


class H2Stream(Armed):
    """One HTTP/2 request stream: its exchange's `ClientStream` and
    `HandlerLink`, and what the timer wheel and the SUB reader call (as for a
    `Connection`). Its methods run in the stream's greenlet, except the
    `on_*` ones (the connection greenlet), `deliver` (the SUB reader) and
    `on_timer`/`flag` (the sweeper), which only queue and wake."""

    waiting_for_request = False
    session: Session | None = None
    _timeout: str | None = None
    _gone = False  # reset by the client, or the connection ended
    _ended = False  # END_STREAM received (the body is complete)
    _closed = False  # we sent END_STREAM or RST_STREAM
    _logger: ConnLogger | None = None
    websocket = False  # upgraded (RFC 8441): the DATA both ways are WebSocket frames
    # the write queue of a WebSocket (`queue_write`), made by its first use as
    # in outqueue.py: frames wait here for the peer's windows
    _out: deque[bytes] = ()  # type: ignore[assignment]
    _out_done: deque[tuple[int, Callable[[], None]]] = ()  # type: ignore[assignment]
    _out_total = _out_sent = 0

    def __init__(self, owner: H2Connection, sid: int) -> None:
        conn = owner.conn
        self.owner = owner
        self.sid = sid
        self.server: Server = conn.server
        self.mode = conn.mode
        self.peer = conn.peer
        self.scheme = conn.scheme
        self.buffer_size = conn.buffer_size
        self.stream_timeout = conn.stream_timeout
        self.io_timeout = conn.io_timeout
        self.debug = conn.debug
        self.last_io = time.monotonic()
        self.parser = StreamBody()
        self._pending: deque[bytes] = deque()  # DATA not yet taken by the exchange
        self._inbox: deque[Inbound] = deque()
        self._hub = private.hub()
        self._greenlet: Any = None  # the stream's greenlet, once it runs

    @property
    def stopping(self) -> bool:
        return self.owner.conn.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.owner.conn.stopping = value

    @property
    def log(self) -> ConnLogger:
        """Lines prefixed `conn <session id> stream <HTTP/2 stream id>: `."""
        if self._logger is None:
            self._logger = ConnLogger(log, "")
        self._logger.conn_id = (self.session.id if self.session is not None else b"-") + \
            b" stream %d" % self.sid
        return self._logger

    # --- waking (as ClientIO's: a hub callback resumes the parked greenlet) ------------

    _parked = False
    _wake_queued = False

    def _wake(self) -> None:
        """From any greenlet: resume the stream's greenlet if it is parked (it
        checks again what it waits for; a wake-up while it runs is not kept)."""
        if self._parked and not self._wake_queued:
            self._wake_queued = True
            self._hub.loop.run_callback(self._resume)

    def _resume(self) -> None:
        self._wake_queued = False
        if self._parked:
            self._parked = False
            self._greenlet.switch()

    def _park(self) -> None:
        self._parked = True
        try:
            private.park(self._hub)
        finally:
            self._parked = False

    # --- from the connection greenlet ----------------------------------------------

    def on_data(self, data: bytes, ended: bool) -> None:
        if data:
            self._pending.append(data)
        if ended:
            self._ended = True
        self.last_io = time.monotonic()
        self._wake()

    def on_end(self) -> None:
        self._ended = True
        self._wake()

    def on_gone(self) -> None:
        self._gone = True
        self._wake()

    def on_window(self) -> None:
        self._wake()

    # --- ClientStream: waiting and reading ---------------------------------------------

    def _readable(self) -> bool:
        # a WebSocket reads the end of the stream as a TCP close (recv_now's b"")
        return bool(self._pending) or self._gone or (
            self._ended and (self.websocket or not self.parser._ended))

    def wait(self, read: bool) -> bool:
        if self._out and not self._gone:
            self._flush_out()
        if self._inbox or self._timeout or self._gone:
            return False
        if read and self._readable():
            return True
        self._park()
        if self._out and not self._gone:
            self._flush_out()  # woken by a WINDOW_UPDATE, perhaps
        return read and self._readable()

    def check_timeout(self) -> None:
        if self._gone:  # noticed even while the exchange does not read (unlike HTTP/1)
            raise ClientGone("stream reset by the client, or the connection ended")
        if self._timeout:
            reason, self._timeout = self._timeout, None
            raise flagged(reason)

    def recv(self) -> bytes:
        while True:
            self.check_timeout()
            if self.wait(read=True):
                return self.recv_now()

    def recv_now(self) -> bytes:
        if self._gone:
            return b""
        pending = self._pending
        if pending:
            if self.websocket:  # a buffer at most, as an HTTP/1.1 read: the window
                data = _take(pending, self.buffer_size)  # opens no faster than credits
            else:
                data = b"".join(pending)
                pending.clear()
            self.owner.acknowledge(self.sid, len(data))  # the window opens as the body is taken
            if self._ended and not pending:
                self.parser.end()
            return data
        if self.websocket:
            return b""  # END_STREAM without a close frame: as a TCP close (ClientGone)
        return END_MARK  # wait() said readable: the end of the stream, without data

    # --- ClientStream: writing -------------------------------------------------------

    def send_headers(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if self._gone:
            raise ClientGone("stream reset by the client")
        self.owner.send(lambda h2c: h2c.send_headers(self.sid, headers, end_stream=end))
        if end:
            self._closed = True
        self.last_io = time.monotonic()

    def write_data(self, data: bytes, end: bool) -> None:
        """DATA frames within the peer's windows, waiting for them to open."""
        owner = self.owner
        view = memoryview(data)
        while True:
            if self._gone:
                raise ClientGone("stream reset by the client")
            self.check_timeout()
            if owner.backlog() > OUT_HIGH:  # the client does not read: wait for room
                owner.wait_room(self)
                self._park()
                continue
            n = min(len(view), owner.window(self.sid))
            if n or not view:
                piece = bytes(view[:n])
                view = view[n:]
                last = end and not view
                owner.send(lambda h2c: h2c.send_data(self.sid, piece, end_stream=last))
                self.last_io = time.monotonic()
                if last:
                    self._closed = True
                if not view:
                    return
                continue
            self._park()

    def write(self, data: bytes) -> None:
        self.write_data(data, False)

    # --- the write queue (a WebSocket's frames) -------------------------------------

    def queue_write(self, data: bytes, on_written: Callable[[], None] | None = None) -> None:
        """DATA without waiting: what the peer's windows do not take now goes
        out as they open (`wait` flushes); `on_written` runs once `data` is out,
        so a WebSocket's credits go back to its handler only for frames sent."""
        if type(self._out) is tuple:  # the class default: first use
            self._out = deque()
            self._out_done = deque()
        if data:
            self._out.append(data)
            self._out_total += len(data)
        if on_written is not None:
            self._out_done.append((self._out_total, on_written))
        self._flush_out()

    def _flush_out(self) -> None:
        """Hand h2 what the windows take now, then run the callbacks of what
        got out: the bytes are in the connection's write queue, which holds
        at most about OUT_HIGH (past it the frames wait here, as the DATA of
        `write_data` does), so credits still follow a client that reads."""
        out, sid = self._out, self.sid
        sent = 0

        def action(h2c: h2.connection.H2Connection) -> None:
            nonlocal sent
            while out:
                n = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if n <= 0:
                    return
                piece = out[0]
                if len(piece) > n:
                    piece, out[0] = piece[:n], piece[n:]
                else:
                    out.popleft()
                h2c.send_data(sid, piece)
                sent += len(piece)

        if out:
            if self.owner.backlog() > OUT_HIGH:  # the client does not read: wait for room
                self.owner.wait_room(self)
                return
            self.owner.send(action)
            if sent:
                self._out_sent += sent
                self.last_io = time.monotonic()
        done = self._out_done
        while done and done[0][0] <= self._out_sent:
            done.popleft()[1]()

    @property
    def queued_pieces(self) -> int:
        return len(self._out_done)

    @property
    def queued_bytes_sent(self) -> int:
        return self._out_sent

    def flush_all(self) -> None:
        """Wait until the write queue is out (within the windows as they open)."""
        while self._out:
            self._flush_out()
            if not self._out:
                break
            self.check_timeout()  # ClientGone once reset, the stream timeout
            self._park()  # until a WINDOW_UPDATE or room in the write queue

    def close_gracefully(self) -> None:
        """A WebSocket's close ends the stream (END_STREAM); a response ended
        it already. The connection goes on. Frames still queued (the peer's
        window stayed shut) are not cut short by an END_STREAM: the stream
        is reset then (stream_done)."""
        if self.websocket and not self._closed and not self._gone and not self._out:
            try:
                self.write_data(b"", True)
            except CondureError:
                pass

    def answer_and_close(self, status: int, text: str | None = None) -> None:
        """condure's own answer on this stream (the HTTP/1 one's status and body)."""
        body = http1.error_body(status, text)
        try:
            self.send_headers([(b":status", b"%d" % status), (b"content-type", b"text/plain"),
                               (b"content-length", b"%d" % len(body))], end=False)
            self.write_data(body, True)
        except CondureError:
            pass

    def upgraded(self) -> None:
        """The stream carries a WebSocket from now on (RFC 8441). A shutdown
        that began meanwhile reaches it as it reaches an HTTP/1.1 one (D12)."""
        self.websocket = True
        if self.owner.draining:
            self.flag("stopped")

    def end_session(self) -> None:
        s = self.session
        if s is not None:
            self.server.registry.unregister(s.id)
            self.session = None

    # --- HandlerLink -----------------------------------------------------------------

    def send_first(self, rid: bytes, payload: bytes) -> None:
        self.server.registry.register(rid, self)
        self.server.zsockets.send_first(payload)  # type: ignore[union-attr]  # stream mode

    def send_to(self, addr: bytes, payload: bytes) -> None:
        self.server.zsockets.send_to(addr, payload)  # type: ignore[union-attr]  # stream mode

    def next_packet(self) -> Inbound | None:
        if self._inbox:
            return self._inbox.popleft()
        return None

    def deliver(self, rid: bytes, pkt: zp.Packet, seq: int | None) -> None:
        """Called by the SUB reader for each packet addressed to this stream."""
        self._inbox.append((rid, pkt, seq))
        self._wake()

    # --- timers (on_timer and arm: Armed's, as a Connection's) ----------------------------

    def flag(self, reason: str) -> None:
        self._timeout = reason
        self._wake()

    # --- the stream's greenlet ---------------------------------------------------------------

    def run(self, headers: list[tuple[bytes, bytes]], ended: bool,
            head: RequestHead | None = None) -> None:
        """`head`: the request already parsed (that of an `Upgrade: h2c`)."""
        server = self.server
        metrics = server.metrics
        self._greenlet = private.current()
        now = time.monotonic()
        self.session = Session(server.registry.new_id(self.owner.conn.slot), now,
                               server.keepalive_interval)
        metrics.h2_streams += 1
        try:
            if head is None:  # (an upgrade's head was counted as an HTTP/1 one)
                try:
                    head = request_head(headers, ended, self.owner.head_capacity)
                except BadRequest as e:
                    metrics.parse_errors += 1
                    self.log.info("bad request: %s", e)
                    status = e.status or 400
                    if server.access_log:
                        access.own_answer(self.peer, None, None, status, now, e, self.sid)
                    self.answer_and_close(status, e.text)
                    return
                metrics.requests += 1
                metrics.h2_requests += 1
            self.arm()
            # h2 refuses an `upgrade` field in a request: only an extended
            # CONNECT (websocket_head) makes this head a WebSocket one
            if not http1.is_websocket(head):
                ex: H2Exchange = H2Exchange(self, self, server, head, self.session)
            elif not valid_upgrade(head):  # as HTTP/1.1's invalid upgrade (D1)
                self.log.debug("process error: InvalidWebSocketRequest")
                self.answer_and_close(400, INVALID_WEBSOCKET)
                return
            else:
                ex = H2WsHandshake(self, self, server, head, self.session)
            ex.h2_stream = self.sid
            ex.run()
        except Exception:
            self.log.exception("stream failed")
        finally:
            metrics.h2_streams -= 1
            self.end_session()
            server.wheel.remove(self)
            self.owner.stream_done(self)


# --- the frames a client sends, before h2 sees them -----------------------------------


class FrameGuard:
    """Reads the frame headers of what a client sends, before h2 parses it,
    for two floods h2 does not stop soon enough:

    - CONTINUATION (CVE-2024-27316): h2 buffers a header block until
      END_HEADERS and refuses only the 65th CONTINUATION frame, by then up
      to 1 MiB (64 frames of 16 KiB); here the block's bytes are bounded by
      `block_max`;
    - control frames (`CONTROL_MAX` within `CONTROL_PERIOD`, see there).

    `feed` returns what is wrong (the connection then ends with
    GOAWAY(ENHANCE_YOUR_CALM)) or None. It only reads the 9-byte headers,
    skipping the payloads; h2 still checks everything else."""

    __slots__ = ("block_max", "_skip", "_partial", "_block", "_count", "_start")

    def __init__(self, block_max: int, skip: int = PREFACE_SIZE) -> None:
        self.block_max = block_max
        self._skip = skip  # bytes before the next frame header (the preface first)
        self._partial = b""  # the first bytes of a frame header cut by a read
        self._block = -1  # bytes of the header block being received (-1: none)
        self._count = 0  # control frames since _start
        self._start = 0.0

    def feed(self, data: bytes) -> str | None:
        n = len(data)
        skip = self._skip
        if skip >= n:
            self._skip = skip - n
            return None
        if self._partial:
            data = self._partial + data
            n = len(data)
        i = skip
        control = 0
        fault = None
        while i + 9 <= n:
            length = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2]
            kind = data[i + 3]
            flags = data[i + 4]
            i += 9 + length
            if kind == 0:  # DATA: empty, and not the end of its stream
                if length == 0 and not flags & 1:
                    control += 1
            elif kind == 1 or kind == 9:  # HEADERS, CONTINUATION
                if kind == 1:
                    self._block = length
                else:
                    if length == 0:
                        control += 1
                    if self._block >= 0:
                        self._block += length
                if flags & 4:  # END_HEADERS
                    self._block = -1
                elif self._block > self.block_max:
                    fault = f"a header block over {self.block_max} bytes (CONTINUATION flood)"
                    break
            elif kind == 4 or kind == 6:  # SETTINGS, PING: an ACK is not counted
                if not flags & 1:
                    control += 1
            elif kind == 2 or kind == 3 or kind > 9:  # PRIORITY, RST_STREAM, unknown
                control += 1
        if i >= n:
            self._skip, self._partial = i - n, b""
        else:
            self._skip, self._partial = 0, data[i:]
        if control and fault is None:
            now = time.monotonic()
            if now - self._start > CONTROL_PERIOD:
                self._start, self._count = now, 0
            self._count += control
            if self._count > CONTROL_MAX:
                fault = f"more than {CONTROL_MAX} control frames in {CONTROL_PERIOD:g} s"
        return fault


# --- the connection -----------------------------------------------------------------------


class H2Connection:
    """The HTTP/2 side of one client connection: h2's state machine, the
    socket reads (in the connection's greenlet) and the streams."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # h2's checks of the fields we send are skipped: `response_headers` sends
        # `:status` first and alone among pseudo-fields, the handler's field names
        # checked as tokens and without the connection-specific ones (what those
        # checks look for); h2 still normalizes them (whitespace, never-indexed)
        # h2's inbound normalization is off too: all it does is join the cookie
        # fields, at the end of the list; `request_head` joins them where the
        # first was, as they stand in the same request over HTTP/1.1
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False,
            normalize_inbound_headers=False))
        self.streams: dict[int, H2Stream] = {}
        self.greenlets: set[gevent.Greenlet] = set()
        self._flush_queued = False  # h2 has output the connection greenlet will flush
        self._room_waiters: list[H2Stream] = []  # streams waiting for the write queue to drain
        self._idle: list[Any] = []  # stream greenlets waiting for a stream
        self._hub = private.hub()
        self._keep = IDLE_STREAM_GREENLETS if private.HUB_OK else 0
        self.draining = False  # shutting down: GOAWAY sent, the streams finish
        self._resets = 0  # client resets since _reset_start
        self._reset_start = 0.0
        self.last_stream = 0  # the last stream served once draining
        # the request head bound of HTTP/1 (--buffer-size, more with spare
        # blocks: blocks.py), announced as SETTINGS_MAX_HEADER_LIST_SIZE
        # (advisory) and applied to each request as its HTTP/1.1 head size
        # (`request_head`: a 431 as for HTTP/1)
        blocks = conn.mode.blocks
        self.head_max = (blocks.max_capacity if blocks is not None and blocks.spare
                         else conn.buffer_size)
        # HPACK bombs: h2's decoder stops (GOAWAY(ENHANCE_YOUR_CALM), the
        # list never built whole) at twice that in RFC 9113's measure, which
        # counts 32 bytes more per field than a field line: room for every
        # head that could pass the bound (and its 64 fields) to get its 431.
        # The encoded header block is held to the same (FrameGuard): a block
        # longer than that could not decode to less, bar a perverse Huffman
        # coding.
        self.list_max = 2 * self.head_max + 32 * (MAX_HEADERS + 4)

    # --- output --------------------------------------------------------------------

    def send(self, action: Callable[[h2.connection.H2Connection], None]) -> None:
        """Apply `action` to h2; what it produced goes out with the connection
        greenlet's next `flush` (woken for it if it waits)."""
        try:
            action(self.h2)
        except h2.exceptions.ProtocolError as e:  # a stream (or h2) closed meanwhile
            raise ClientGone(f"HTTP/2: {e}") from None
        if not self._flush_queued:
            self._flush_queued = True
            self.conn._wake_soon()

    def flush(self) -> None:
        """(The connection greenlet) h2's output to the write queue, written
        as far as the socket takes it now; streams waiting for room woken."""
        self._flush_queued = False
        data = self.h2.data_to_send()
        if data:
            self.conn.queue_write(data)
        if self._room_waiters and len(self.conn._out) <= OUT_HIGH:
            waiters, self._room_waiters = self._room_waiters, []
            for st in waiters:
                st.on_window()

    def backlog(self) -> int:
        """Bytes queued for the socket and not written yet."""
        return len(self.conn._out)

    def wait_room(self, st: H2Stream) -> None:
        self._room_waiters.append(st)

    def window(self, sid: int) -> int:
        """How many DATA bytes may go out on `sid` now (0: wait)."""
        try:
            return min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            raise ClientGone("stream closed") from None

    def head_capacity(self, size: int) -> int:
        """What a request head of `size` bytes could grow to now, as an
        HTTP/1 one (`Connection._grow_head`): spare blocks borrowed one at a
        time, and given back at once (the head is parsed already)."""
        cap = self.conn.buffer_size
        blocks = self.conn.mode.blocks
        if size <= cap or blocks is None:
            return cap
        while size > cap:
            grown = blocks.grow(cap)
            if grown == cap:
                break
            cap = grown
        blocks.release(cap)
        return cap

    def acknowledge(self, sid: int, size: int) -> None:
        try:
            self.send(lambda h2c: h2c.acknowledge_received_data(size, sid))
        except ClientGone:
            pass  # the stream is closed: h2 has opened the connection's window

    # --- the read loop -----------------------------------------------------------------

    def run(self, upgrade: tuple[RequestHead, bytes] | None = None) -> None:
        """`upgrade`: the request of an `Upgrade: h2c` and its HTTP2-Settings;
        it becomes stream 1, and the client's preface follows in full."""
        conn = self.conn
        conn.http2 = True  # Connection.stop flags it (a graceful GOAWAY, below)
        gauges = conn.server.metrics.connections  # counted as h2 while served here
        gauges[(conn.mode.name, "http")] -= 1
        gauges[(conn.mode.name, "h2")] += 1
        h2c = self.h2
        codes = h2.settings.SettingCodes
        # announced by initiate_connection and in force at once: the stream
        # limit (a client that opens more before it saw it gets them refused)
        settings = {
            codes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            codes.ENABLE_PUSH: 0,
            codes.ENABLE_CONNECT_PROTOCOL: 1,  # WebSocket over HTTP/2 (RFC 8441)
            codes.MAX_HEADER_LIST_SIZE: self.head_max,
        }
        h2c.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        h2c.decoder.max_header_list_size = self.list_max
        # the dynamic table a client may make us keep: what we announce (h2's
        # default, 4096); a size update past it is a COMPRESSION_ERROR (run)
        h2c.decoder.max_allowed_table_size = h2c.local_settings.header_table_size
        # the windows stay at the default 65,535: a client may send that much
        # before it saw our SETTINGS, and h2 refuses a window that a smaller
        # INITIAL_WINDOW_SIZE would take below zero (RFC 9113 6.9.2 allows it).
        # The connection's window bounds what all streams hold unread.
        if upgrade is None:
            h2c.initiate_connection()
        else:
            h2c.initiate_upgrade_connection(upgrade[1])  # stream 1: half-closed (remote)
        # our SETTINGS are queued: h2's own stream limit out of reach (see H2_STREAMS_CAP)
        h2c.local_settings = h2.settings.Settings(client=False, initial_values={
            **settings, codes.MAX_CONCURRENT_STREAMS: H2_STREAMS_CAP})
        self._clamp_encoder()
        guard = FrameGuard(self.list_max)
        if conn.debug:
            conn.log.debug("HTTP/2 connection")
        try:
            if upgrade is None:
                data = PREFACE_HEAD + conn.parser.leftover()
            else:
                data = conn.parser.leftover()
                self.flush()  # our preface, before stream 1's response
                self._start(1, [], True, upgrade[0])
            while True:
                fault = guard.feed(data)
                if fault is not None:
                    self._calm(fault)
                    return
                try:
                    events = h2c.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    conn.log.info("HTTP/2 protocol error: %s", e)
                    if (isinstance(e.__cause__, hpack.HPACKError)
                            and not isinstance(e, h2.exceptions.DenialOfServiceError)):
                        # RFC 9113 4.3: COMPRESSION_ERROR (h2 queued a PROTOCOL_ERROR)
                        self._raw_goaway(h2.errors.ErrorCodes.COMPRESSION_ERROR,
                                         h2c.highest_inbound_stream_id, replace=True)
                        self._linger()
                    else:  # h2's GOAWAY (ENHANCE_YOUR_CALM for an HPACK bomb)
                        self._goaway(h2.errors.ErrorCodes.PROTOCOL_ERROR)
                    return
                if not self._dispatch(events):
                    return
                self.flush()  # our answers to the client's frames (SETTINGS ACK, ...)
                data = self._read()
                if not data:
                    return
        except CondureError as e:
            conn.log.debug("HTTP/2 connection ended: %s", type(e).__name__)
            if isinstance(e, Timeout):  # the connection's stream timeout: an idle client
                self._goaway_nowait(h2.errors.ErrorCodes.NO_ERROR)
        finally:
            try:  # what the streams answered last, as far as the socket takes it
                self.flush()
            except CondureError:
                pass
            for st in list(self.streams.values()):
                st.on_gone()
            gauges[(conn.mode.name, "h2")] -= 1
            gauges[(conn.mode.name, "http")] += 1  # (the listener takes it off there)
            self._keep = 0
            if self._idle:  # nothing more for them to serve
                gevent.killall(list(self._idle), block=False)
            if self.greenlets:
                gevent.joinall(list(self.greenlets), timeout=JOIN_TIME)
                gevent.killall(list(self.greenlets), block=False)

    def _read(self) -> bytes:
        """The client's next bytes (b"": the connection ends), waiting through the
        connection's `wait`, so that its flags (the stream timeout, shutdown)
        wake this loop as they wake an HTTP/1 one."""
        conn = self.conn
        while True:
            # h2's output to the socket, and room for the streams waiting for it (the
            # write queue drains in `conn.wait`); a TLS write may let a stream send meanwhile
            while self._flush_queued or (self._room_waiters and self.backlog() <= OUT_HIGH):
                self.flush()
            if conn._timeout == "stopped" and not self.draining:
                conn._timeout = None  # the first stop: finish the streams we have
                self._drain()
            if self.draining and not self.streams:
                self._goaway(h2.errors.ErrorCodes.NO_ERROR)
                return b""
            conn.check_timeout()  # a second stop (forced), a stream timeout
            if self.backlog() > OUT_HIGH:
                # the client does not read what we write: nor do we read it until it
                # does (its PINGs and SETTINGS would queue ACKs without bound)
                conn.wait(read=False)
                continue
            if conn.wait(read=True):
                return conn.recv_now()

    def _goaway(self, code: int) -> None:
        """GOAWAY (unless h2 queued one already), written before the close."""
        def close(h2c: h2.connection.H2Connection) -> None:
            try:
                h2c.close_connection(code)
            except h2.exceptions.ProtocolError:
                pass  # closed already: h2 queued its GOAWAY
        self.conn.server.metrics.h2_goaways_sent += 1
        try:
            self.send(close)
            self.flush()
            self.conn.flush_all()  # waits (under the stream timeout): the close follows
        except CondureError:
            return
        self._linger()

    def _goaway_nowait(self, code: int) -> None:
        """A GOAWAY, written as far as the socket takes it at once: it does
        not wait for a client that may not read."""
        self.conn.server.metrics.h2_goaways_sent += 1
        try:
            self.h2.close_connection(code)
            self.flush()  # the write queue: as far as the socket takes it now
        except (h2.exceptions.ProtocolError, CondureError):
            pass

    def _linger(self) -> None:
        """Before the close: a client still sending (a flood, say) would get an
        RST that can destroy the GOAWAY before it reads it; its input is read
        and dropped for a while first, as after an early HTTP/1 answer
        (`ClientIO.close_gracefully`: at most 64 KiB, for at most a second)."""
        self.conn.close_gracefully()

    def _calm(self, why: str) -> None:
        """A flood: GOAWAY(ENHANCE_YOUR_CALM), and the connection ends."""
        self.conn.log.info("HTTP/2: %s", why)
        self._goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def _raw_goaway(self, code: int, last: int, replace: bool = False) -> None:
        """A GOAWAY of our own after what h2 queued (`replace`: instead of it)."""
        frame = hyperframe.frame.GoAwayFrame(0)
        frame.last_stream_id = last
        frame.error_code = code
        raw = frame.serialize()
        self.conn.server.metrics.h2_goaways_sent += 1
        try:
            if replace:
                self.h2.data_to_send()  # dropped
            else:
                self.flush()  # h2's frames first
            self.conn.queue_write(raw)
        except CondureError:
            pass

    def _clamp_encoder(self) -> None:
        encoder = self.h2.encoder
        if encoder.header_table_size > ENCODER_TABLE_MAX:
            encoder.header_table_size = ENCODER_TABLE_MAX

    def _drain(self) -> None:
        """Shutdown (D12): GOAWAY naming the last stream we serve, as a frame of
        our own (h2's close_connection would end the connection at once);
        newer streams are refused (`_start`) and the connection ends when the
        last one is done."""
        self.draining = True
        self.last_stream = self.h2.highest_inbound_stream_id
        self._raw_goaway(h2.errors.ErrorCodes.NO_ERROR, self.last_stream)
        for st in list(self.streams.values()):
            if st.websocket:
                st.flag("stopped")  # closed with 1001, as an HTTP/1.1 WebSocket (D12)
            else:
                st.on_window()  # nothing to do; their exchanges see `stopping`

    def _dispatch(self, events: list[Any]) -> bool:
        """h2's events to the streams; False when the connection ends."""
        ev_ = h2.events
        for ev in events:
            t = type(ev)
            if t is ev_.RequestReceived:
                if not self._start(ev.stream_id, ev.headers, ev.stream_ended is not None):
                    self._calm(f"more than {RESETS_MAX} streams refused or reset "
                               f"in {RESET_PERIOD:g} s")
                    return False
            elif t is ev_.DataReceived:
                st = self.streams.get(ev.stream_id)
                padding = ev.flow_controlled_length - len(ev.data)
                if st is None:  # a stream we are done with: its bytes go nowhere
                    self.acknowledge(ev.stream_id, ev.flow_controlled_length)
                    continue
                if padding:
                    self.acknowledge(ev.stream_id, padding)
                st.on_data(ev.data, ev.stream_ended is not None)
            elif t is ev_.StreamEnded:
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st.on_end()
            elif t is ev_.StreamReset:
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st.on_gone()
                if ev.remote_reset:
                    self.conn.server.metrics.h2_resets_received += 1
                if ev.remote_reset and self._too_many_resets():
                    self._calm(f"more than {RESETS_MAX} stream resets in {RESET_PERIOD:g} s")
                    return False
            elif t is ev_.WindowUpdated or t is ev_.RemoteSettingsChanged:
                if t is ev_.RemoteSettingsChanged:
                    self._clamp_encoder()
                sid = getattr(ev, "stream_id", 0)
                for st in ([self.streams[sid]] if sid in self.streams else
                           list(self.streams.values()) if not sid else []):
                    st.on_window()
            elif t is ev_.ConnectionTerminated:
                return False
        return True

    def _too_many_resets(self) -> bool:
        now = time.monotonic()
        if now - self._reset_start > RESET_PERIOD:
            self._reset_start, self._resets = now, 0
        self._resets += 1
        return self._resets > RESETS_MAX

    def _start(self, sid: int, headers: list[tuple[bytes, bytes]], ended: bool,
               head: RequestHead | None = None) -> bool:
        """A new stream's exchange, or its refusal (REFUSED_STREAM: shutting
        down, MAX_CONCURRENT_STREAMS, --stream-maxconn); False: too many
        refusals and resets (the connection ends)."""
        refuse = (self.draining and sid > self.last_stream
                  or len(self.streams) >= MAX_CONCURRENT_STREAMS)
        limit = self.conn.mode.limit
        if not refuse and self.streams and limit is not None:
            # --stream-maxconn: the connection's slot is its first stream's;
            # each stream beside it takes one more (given back in stream_done)
            if limit.active >= limit.size:
                refuse = True
            else:
                limit.active += 1
        if refuse:
            try:
                self.send(lambda h2c: h2c.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM))
            except ClientGone:
                pass  # reset by the client already (h2 read its RST_STREAM with the HEADERS)
            return not self._too_many_resets()
        st = self.streams[sid] = H2Stream(self, sid)
        if ended:
            st.on_end()
        if self._idle:
            private.run_callback(self._idle.pop().switch, _NEXT, st, headers, ended, head)
            return True
        g = gevent.spawn(self._serve_streams, st, headers, ended, head)
        self.greenlets.add(g)
        g.link(self.greenlets.discard)
        return True

    def _serve_streams(self, st: H2Stream, headers: list[tuple[bytes, bytes]], ended: bool,
                       head: RequestHead | None) -> None:
        """A stream greenlet. Once its stream is done it waits for the next one
        of the connection (while fewer than IDLE_STREAM_GREENLETS wait), as
        the listener's connection greenlets do: making a greenlet per stream
        costs more than this."""
        me = private.current()
        while True:
            st.run(headers, ended, head)
            if len(self._idle) >= self._keep:
                return
            self._idle.append(me)
            try:
                while True:
                    resumed = private.park(self._hub)
                    if type(resumed) is tuple and resumed[0] is _NEXT:
                        break
                    # anything else is a stray wake-up: keep waiting
            except BaseException:
                self._idle.remove(me)  # killed while waiting: never hand it a stream
                raise
            _, st, headers, ended, head = resumed

    def stream_done(self, st: H2Stream) -> None:
        """The stream's exchange is over: a stream we did not end is reset
        (CANCEL); one whose request the client did not finish is reset too
        (NO_ERROR, RFC 9113 8.1), or h2 would keep it for the connection's life."""
        if self.streams.pop(st.sid, None) is None:
            return
        limit = self.conn.mode.limit
        if limit is not None and self.streams:
            limit.leave()  # it was not the connection's only stream: a slot of its own
        unread = sum(map(len, st._pending))
        if unread:  # a body the exchange left unread: its share of the connection window
            self.acknowledge(st.sid, unread)
        if self.draining and not self.streams:
            self.conn._wake_soon()  # the read loop ends the connection
        if st._gone or (st._closed and st._ended):
            return
        code = h2.errors.ErrorCodes.NO_ERROR if st._closed else h2.errors.ErrorCodes.CANCEL
        try:
            self.send(lambda h2c: h2c.reset_stream(st.sid, code))
        except CondureError:
            pass
