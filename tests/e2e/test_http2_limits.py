"""HTTP/2 safety (issue 16 item 5), end to end: the limits and the known attacks.

condure runs as a `python -m condure` subprocess with a real ZeroMQ handler;
the attacks are raw frames (hyperframe, HPACK blocks made with `hpack` or by
hand) over a real socket, or the `h2` library where it lets a client
misbehave. Every attack is a bounded loop that stops by itself.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import h2.errors
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, SettingsFrame)

from h2client import H2Client
from rawhttp import Client

CT = (b"Content-Type", b"text/plain")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL = h2.errors.ErrorCodes.CANCEL
REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM
CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"example.com"),
       (b":path", b"/")]


@pytest.fixture
def ch(condure, handler_factory) -> tuple:
    c = condure()
    return c, handler_factory(c.base)


class Raw:
    """An HTTP/2 client made of raw frames: the preface and an empty SETTINGS,
    then whatever the test sends; `frames` parses what the server writes."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
        self.encoder = hpack.Encoder()
        self._buf = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, *frames: Frame | bytes) -> None:
        self.sock.sendall(b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames))

    def headers(self, sid: int, fields: list, end_stream: bool = True,
                end_headers: bool = True) -> HeadersFrame:
        f = HeadersFrame(sid, self.encoder.encode(fields))
        if end_headers:
            f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def frames(self) -> Iterator[Frame]:
        """The server's frames until it closes (or resets, or the timeout)."""
        while True:
            while len(self._buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(self._buf[:9]))
                if len(self._buf) < 9 + length:
                    break
                f.parse_body(memoryview(self._buf[9:9 + length]))
                self._buf = self._buf[9 + length:]
                yield f
            try:
                data = self.sock.recv(65536)
            except (ConnectionError, socket.timeout):
                return
            if not data:
                return
            self._buf += data

    def goaway(self) -> GoAwayFrame | None:
        for f in self.frames():
            if isinstance(f, GoAwayFrame):
                return f
        return None


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _served(c, h) -> None:
    """A new HTTP/2 connection is still served."""
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/still")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"fine\n")
        assert cl.response(sid)["body"] == b"fine\n"


def _pump_until(cl: H2Client, cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        cl.pump()


# ---------------------------------------------------------------------------
# MAX_CONCURRENT_STREAMS and --stream-maxconn


def test_the_101st_concurrent_stream_is_refused_and_its_handler_never_sees_it(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        # sent before the client read our SETTINGS: its h2 does not hold them back
        sids = [cl.request(b"GET", b"/%d" % i) for i in range(101)]
        reqs = [h.recv_request() for _ in range(100)]
        assert len({r[b"id"] for r in reqs}) == 100
        _pump_until(cl, lambda: cl.responses[sids[100]]["reset"] is not None)
        assert cl.responses[sids[100]]["reset"] == REFUSED
        h.expect_nothing(0.3)  # the 101st never reached the handler
        assert all(cl.responses[s]["reset"] is None for s in sids[:100])
        # one answered: its place is free for a new stream
        h.respond(reqs[0], 200, b"OK", [CT], b"one\n")
        first = next(s for s in sids if reqs[0][b"uri"].endswith(b"/%d" % (s // 2)))
        assert cl.response(first)["body"] == b"one\n"
        sid = cl.request(b"GET", b"/more")
        req = h.recv_request()
        assert req[b"uri"].endswith(b"/more")
        h.respond(req, 200, b"OK", [CT], b"more\n")
        assert cl.response(sid)["body"] == b"more\n"
        assert cl.terminated is None


def test_stream_maxconn_counts_streams(condure, handler_factory) -> None:
    """--stream-maxconn 3: a connection's first stream is the connection's
    slot, each other stream takes one more; a stream past the limit is
    refused; HTTP/1 connections count as before, and wait in the backlog."""
    c = condure("--stream-maxconn", "3")
    h = handler_factory(c.base)
    with H2Client(c.port) as cl:
        sids = [cl.request(b"GET", b"/%d" % i) for i in range(3)]
        reqs = [h.recv_request() for _ in range(3)]
        sid4 = cl.request(b"GET", b"/4")
        _pump_until(cl, lambda: cl.responses[sid4]["reset"] is not None)
        assert cl.responses[sid4]["reset"] == REFUSED
        h.expect_nothing(0.3)
        # the limit is full: an HTTP/1 client is not served yet
        with Client(c.port) as c1:
            c1.send(b"GET /h1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
            h.expect_nothing(0.5)
            # a stream ends: its slot takes the HTTP/1 connection
            h.respond(reqs[0], 200, b"OK", [CT], b"a\n")
            assert cl.response(sids[0])["body"] == b"a\n"
            req1 = h.recv_request()
            assert req1[b"uri"] == b"http://example.com/h1"
            # 2 streams + 1 HTTP/1 connection: full again
            sid5 = cl.request(b"GET", b"/5")
            _pump_until(cl, lambda: cl.responses[sid5]["reset"] is not None)
            assert cl.responses[sid5]["reset"] == REFUSED
            h.respond(req1, 200, b"OK", [CT], b"h1\n")
            assert c1.read_response().body == b"h1\n"
        for r in reqs[1:]:
            h.respond(r, 200, b"OK", [CT], b"x\n")
        for s in sids[1:]:
            assert cl.response(s)["body"] == b"x\n"


# ---------------------------------------------------------------------------
# the header list: the HTTP/1 head bound, HPACK bombs


def test_header_list_bound_is_announced_and_a_larger_request_gets_431(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        cl.pump()
        assert cl.conn.remote_settings.max_header_list_size == 8192
        big = b"v" * 8200
        sid = cl.request(b"GET", b"/big", [(b"x-big", big)])
        r = cl.response(sid)
        assert r["headers"][0] == (b":status", b"431")
        assert r["body"] == b"Request header size exceeded limit of 8192 bytes.\n"
        h.expect_nothing(0.3)
        # the HTTP/1.1 head of this one is 8192 bytes exactly: served
        size = len(b"GET /fit HTTP/1.1\r\nhost: example.com\r\nx-fit: \r\n\r\n")
        fields = [(b"x-fit", b"f" * (8192 - size))]
        sid = cl.request(b"GET", b"/fit", fields)
        req = h.recv_request()
        assert req[b"headers"][1] == [b"x-fit", fields[0][1]]
        h.respond(req, 200, b"OK", [CT], b"fits\n")
        assert cl.response(sid)["body"] == b"fits\n"
        assert cl.terminated is None


def test_header_list_bound_grows_with_spare_blocks(condure, handler_factory) -> None:
    """As an HTTP/1 head: --buffer-size 4096, up to 3 blocks per connection."""
    c = condure("--buffer-size", "4096", "--stream-maxconn", "10", "--blocks-max", "30",
                "--connection-blocks-max", "4")
    h = handler_factory(c.base)
    with H2Client(c.port) as cl:
        cl.pump()
        assert cl.conn.remote_settings.max_header_list_size == 12288
        sid = cl.request(b"GET", b"/ok", [(b"x-a", b"a" * 10000)])
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert cl.response(sid)["body"] == b"ok\n"
        sid = cl.request(b"GET", b"/no", [(b"x-a", b"a" * 12300)])
        r = cl.response(sid)
        assert r["headers"][0] == (b":status", b"431")
        assert r["body"] == b"Request header size exceeded limit of 12288 bytes.\n"
    with Client(c.port) as c1:  # the same bound over HTTP/1.1
        c1.send(b"GET /no HTTP/1.1\r\nHost: example.com\r\nX-A: " + b"a" * 12300 + b"\r\n\r\n")
        assert c1.read_response().status == 431


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with `first`'s high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@pytest.mark.parametrize("refs", [10, 4000])
def test_hpack_bomb_ends_the_connection_without_building_the_list(ch, refs) -> None:
    """One 4000-byte field put in the dynamic table, then named `refs` times
    by its index (one byte each): 4000 is 8 KB on the wire and 16 MB once
    decoded; 10 decode to 40 KB, under h2's own default bound (64 KiB), over
    ours (twice the head bound and room for the fields' overhead, 18,560)."""
    c, h = ch
    rss0 = _rss_kb(c.pid)
    literal = b"\x40" + _integer(6, 7, 0) + b"x-bomb" + _integer(4000, 7, 0) + b"B" * 4000
    block = (b"\x82\x86\x84"  # :method GET, :scheme http, :path / (static table)
             + b"\x01" + _integer(11, 7, 0) + b"example.com"  # :authority, not indexed
             + literal + b"\xbe" * refs)  # index 62: the newest dynamic entry
    with Raw(c.port) as raw:
        f = HeadersFrame(1, block, flags=("END_HEADERS", "END_STREAM"))
        raw.send(f)
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == CALM
    h.expect_nothing(0.3)
    assert _rss_kb(c.pid) - rss0 < 10_000
    _served(c, h)


def test_a_dynamic_table_larger_than_announced_is_a_compression_error(ch) -> None:
    """A table size update past our HEADER_TABLE_SIZE (4096): RFC 9113 4.3."""
    c, h = ch
    with Raw(c.port) as raw:
        block = _integer(8192, 5, 0x20) + b"\x82\x86\x84\x01\x0bexample.com"
        f = HeadersFrame(1, block, flags=("END_HEADERS", "END_STREAM"))
        raw.send(f)
        goaway = raw.goaway()
        assert goaway is not None
        assert goaway.error_code == h2.errors.ErrorCodes.COMPRESSION_ERROR
    h.expect_nothing(0.3)


def test_our_encoder_table_stays_small_whatever_the_client_offers(ch) -> None:
    """A client offering a 1 MiB table: our encoder keeps to 4096 (it tells
    the client's decoder so with a table size update)."""
    c, h = ch
    with H2Client(c.port) as cl:
        cl.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 1 << 20})
        cl.flush()
        sid = cl.request(b"GET", b"/table")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT, (b"X-Big", b"b" * 3000)], b"t\n")
        assert cl.response(sid)["body"] == b"t\n"
        assert cl.conn.decoder.header_table_size == 4096


# ---------------------------------------------------------------------------
# CONTINUATION flood (CVE-2024-27316)


def _flood_continuation(raw: Raw, frame_size: int, total: int, sent: list) -> None:
    """HEADERS without END_HEADERS, then CONTINUATIONs, never the end."""
    try:
        raw.send(raw.headers(1, GET, end_headers=False))
        piece = ContinuationFrame(1, b"\x00" * frame_size).serialize()  # never END_HEADERS
        n = 0
        while n < total:
            raw.sock.sendall(piece * 16)
            n += 16 * frame_size
            sent[0] = n
    except OSError:
        pass  # the server closed


def test_continuation_flood_ends_the_connection(ch) -> None:
    c, h = ch
    rss0 = _rss_kb(c.pid)
    total = 10 * 1024 * 1024
    with Raw(c.port, timeout=10) as raw:
        sent = [0]
        t = threading.Thread(target=_flood_continuation, args=(raw, 1024, total, sent),
                             daemon=True)
        t.start()
        goaway = raw.goaway()
        t.join(10)
        assert not t.is_alive()
        assert goaway is not None and goaway.error_code == CALM
        assert sent[0] < total  # cut off before all of it was taken
    assert "CONTINUATION flood" in c.log_text()
    assert _rss_kb(c.pid) - rss0 < 30_000
    h.expect_nothing(0.3)
    _served(c, h)


def test_continuation_blocks_stay_small_on_many_connections(ch) -> None:
    """h2 alone would hold 63 frames of 16 KiB (1 MiB) per connection until
    the 65th; the header block bound ends each one after ~20 KB."""
    c, h = ch
    rss0 = _rss_kb(c.pid)
    raws = [Raw(c.port) for _ in range(12)]
    try:
        threads = []
        for raw in raws:
            t = threading.Thread(target=_flood_continuation,
                                 args=(raw, 16384, 63 * 16384, [0]), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(10)
        for raw in raws:
            goaway = raw.goaway()
            assert goaway is not None and goaway.error_code == CALM
        assert _rss_kb(c.pid) - rss0 < 8_000
    finally:
        for raw in raws:
            raw.sock.close()
    _served(c, h)


# ---------------------------------------------------------------------------
# control frame floods


def _flood(kind: str) -> bytes:
    if kind == "ping":
        frame: Frame = PingFrame(0, b"12345678")
    elif kind == "settings":
        frame = SettingsFrame(0)
    elif kind == "priority":
        frame = PriorityFrame(3)  # an idle stream: allowed, and h2 only notes it
        frame.depends_on = 0
        frame.stream_weight = 15
    else:  # empty DATA on an open stream, without END_STREAM
        frame = DataFrame(1, b"")
    return frame.serialize() * 1500


@pytest.mark.parametrize("kind", ["ping", "settings", "priority", "empty-data"])
def test_control_frame_flood_gets_enhance_your_calm(ch, kind) -> None:
    c, h = ch
    with Raw(c.port) as raw:
        if kind == "empty-data":
            raw.send(raw.headers(1, [*GET[:3], (b":path", b"/upload"),
                                     (b"content-length", b"10")], end_stream=False))
            req = h.recv_request()
            h.credit(req, 8192)
        raw.send(_flood(kind))
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == CALM
    assert "control frames" in c.log_text()
    _served(c, h)


def test_a_few_pings_and_settings_are_fine(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        for i in range(20):
            cl.conn.ping(b"%08d" % i)
        cl.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10})
        cl.flush()
        _pump_until(cl, lambda: sum(isinstance(e, h2.events.PingAckReceived)
                                    for e in cl.events) == 20)
        sid = cl.request(b"GET", b"/after")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"calm\n")
        assert cl.response(sid)["body"] == b"calm\n"
        assert cl.terminated is None


def _server_recv_queue(server_port: int, client_port: int) -> int:
    """Bytes the kernel holds for condure on its side of this connection
    (/proc/net/tcp rx_queue): what condure has not read."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            local, remote = parts[1], parts[2]
            if (int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port):
                return int(parts[4].split(":")[1], 16)
    raise AssertionError("connection not found in /proc/net/tcp")


def test_a_client_that_does_not_read_stops_our_reading(ch) -> None:
    """Our output waits for the client: with the socket full (a response the
    client does not read), the ACKs of its PINGs (sent under the flood
    bound) cannot go out, and condure reads no more of what it sends; the
    kernel holds it (back-pressure), condure queues nothing."""
    c, h = ch
    codes = h2.settings.SettingCodes
    with H2Client(c.port) as cl:
        cl.conn.update_settings({codes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        cl.conn.increment_flow_control_window(2**31 - 1 - 65535)
        cl.flush()
        cl.request(b"GET", b"/fill")
        req = h.recv_request()
        chunk = b"f" * 8192
        h.respond(req, 200, b"OK", [CT], chunk, more=True)
        for _ in range(5000):  # until the socket is full: no credit comes back
            try:
                h.recv_type(b"credit", timeout=1.0)
            except AssertionError:
                break
            h.body(req, chunk, more=True)
        else:
            raise AssertionError("the socket never filled")
        ping = PingFrame(0, b"12345678").serialize()
        for _ in range(2):  # 800 a second: under CONTROL_MAX
            cl.sock.sendall(ping * 800)
            time.sleep(1.1)
        assert _server_recv_queue(c.port, cl.local_port) > 8 * 1024
        assert c.alive()


# ---------------------------------------------------------------------------
# stalls: a shut window, a body that never comes, a handler that never answers


def _keep_connection_busy(cl: H2Client, stop: threading.Event) -> None:
    """PINGs every 0.3 s: the connection sees client bytes (its own stream
    timeout does not run out), the stream does not."""
    i = 0
    while not stop.wait(0.3):
        cl.conn.ping(b"%08d" % i)
        i += 1
        try:
            cl.flush()
        except OSError:
            return


def test_a_zero_window_stall_resets_the_stream_after_the_stream_timeout(condure,
                                                                      handler_factory) -> None:
    c = condure("--stream-timeout", "2")
    h = handler_factory(c.base)
    chunk = b"z" * 8192
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/big")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], chunk, more=True)
        stop = threading.Event()
        pinger = threading.Thread(target=_keep_connection_busy, args=(cl, stop), daemon=True)
        pinger.start()
        try:
            # the client reads nothing: 65,535 bytes go out, then the window is shut
            for _ in range(7):
                h.recv_type(b"credit")
                h.body(req, chunk, more=True)
            started = time.monotonic()
            cancel = h.recv_type(b"cancel", timeout=6)
            assert cancel[b"id"] == req[b"id"]
            assert time.monotonic() - started > 1.0  # the timeout, not an error at once
        finally:
            stop.set()
            pinger.join(5)
        # the client now reads: its stream was reset (CANCEL), the connection lives
        _pump_until(cl, lambda: cl.responses[sid]["reset"] is not None)
        assert cl.responses[sid]["reset"] == CANCEL
        assert len(cl.responses[sid]["body"]) == 65535
        sid2 = cl.request(b"GET", b"/next")
        req2 = h.recv_request()
        h.respond(req2, 200, b"OK", [CT], b"next\n")
        assert cl.response(sid2)["body"] == b"next\n"
        assert cl.terminated is None


def test_a_body_that_never_comes_ends_the_stream_after_the_stream_timeout(
        condure, handler_factory) -> None:
    """As an HTTP/1 request whose body stops (D13, D14): 504 (nothing was
    written), the handler gets cancel; the stream is reset NO_ERROR after the
    504 since the client never finished it."""
    c = condure("--stream-timeout", "2")
    h = handler_factory(c.base)
    with H2Client(c.port) as cl:
        hs = [*GET[:3], (b":path", b"/upload"), (b"content-length", b"10")]
        sid = cl.conn.get_next_available_stream_id()
        cl.conn.send_headers(sid, hs, end_stream=False)
        cl.flush()
        cl.responses[sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        req = h.recv_request()
        assert req[b"more"] is True
        h.credit(req, 8192)
        stop = threading.Event()
        pinger = threading.Thread(target=_keep_connection_busy, args=(cl, stop), daemon=True)
        pinger.start()
        try:
            started = time.monotonic()
            cancel = h.recv_type(b"cancel", timeout=6)
            assert cancel[b"id"] == req[b"id"]
            assert time.monotonic() - started > 1.0  # the timeout, not an error at once
        finally:
            stop.set()
            pinger.join(5)
        _pump_until(cl, lambda: cl.responses[sid]["reset"] is not None)
        r = cl.responses[sid]
        assert r["headers"][0] == (b":status", b"504")
        assert r["reset"] == h2.errors.ErrorCodes.NO_ERROR
        sid2 = cl.request(b"GET", b"/next")
        req2 = h.recv_request()
        h.respond(req2, 200, b"OK", [CT], b"next\n")
        assert cl.response(sid2)["body"] == b"next\n"


# ---------------------------------------------------------------------------
# handler cancel


def test_handler_cancel_resets_only_its_stream(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        s1 = cl.request(b"GET", b"/one")
        s2 = cl.request(b"GET", b"/two")
        r1, r2 = h.recv_request(), h.recv_request()
        if r1[b"uri"].endswith(b"/two"):
            r1, r2 = r2, r1
        h.respond(r1, 200, b"OK", [CT], b"partial", more=True)
        h.recv_type(b"credit")
        h.packet(r1, b"cancel")
        _pump_until(cl, lambda: cl.responses[s1]["reset"] is not None)
        assert cl.responses[s1]["reset"] == CANCEL
        assert cl.responses[s1]["body"] == b"partial"
        # a cancel before any response: connmgr's 500 as over HTTP/1 (D29)
        s3 = cl.request(b"GET", b"/three")
        r3 = h.recv_request()
        h.packet(r3, b"cancel")
        r = cl.response(s3)
        assert r["headers"][0] == (b":status", b"500") and r["reset"] is None
        assert r["body"] == b"Failed to process request.\n"
        h.respond(r2, 200, b"OK", [CT], b"two\n")
        assert cl.response(s2)["body"] == b"two\n"
        assert cl.terminated is None


def test_an_idle_connection_gets_goaway_at_its_stream_timeout(condure) -> None:
    """No client bytes for --stream-timeout: GOAWAY(NO_ERROR), then the close."""
    c = condure("--stream-timeout", "1")
    with Raw(c.port) as raw:
        started = time.monotonic()
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert time.monotonic() - started > 0.5
        assert raw.sock.recv(100) == b""
