"""HTTP/1.x in stream mode, end to end.

condure runs as a `python -m condure` subprocess (see conftest): one per
test where the test needs a process of its own (timeouts, limits, log
lines that are rate limited), otherwise one per distinct argument list,
shared by the tests of this module. Each test plays the handler with real
ZeroMQ sockets over ipc (zhttp_handler.Handler, an identity of its own) and
the client with raw TCP sockets (rawhttp.Client). Request parsing tests run
with both `--http-parser h11` and `httptools`.

References: shared/zhttp/server.md sections 3-6 and docs/deviations.md
(the D numbers in test names).
"""
from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

import pytest
import tnetstring

from rawhttp import Client, Response, get
from zhttp_handler import Handler, nested_lists

CT = (b"Content-Type", b"text/plain")
ID_RE = re.compile(rb"0-(\d+)-([0-9a-f]+)")
EXT = {b"multi": True}

Start = Callable[..., tuple]


@pytest.fixture
def start(condure, handler_factory) -> Start:
    """start(*condure_args) -> (a condure process of this test only, handler)."""

    def _start(*args: str, **kwargs: object) -> tuple:
        c = condure(*args, **kwargs)
        return c, handler_factory(c.base)

    return _start


@pytest.fixture
def sstart(shared_condure, handler_factory) -> Start:
    """Like `start`, on a process shared by the tests of this module that use the
    same arguments (see conftest.shared_condure), with a handler of this test."""

    def _start(*args: str, **kwargs: object) -> tuple:
        c = shared_condure(*args, **kwargs)
        return c, handler_factory(c.base)

    return _start


@pytest.fixture
def ch(sstart: Start) -> tuple:
    return sstart()


@pytest.fixture(params=["h11", "httptools"])
def parser(request: pytest.FixtureRequest) -> str:
    """The request parser (`--http-parser`) for tests of request parsing."""
    return request.param


@pytest.fixture
def pstart(sstart: Start, parser: str) -> Start:
    """Like `sstart`, with the parametrized --http-parser."""

    def _start(*args: str, **kwargs: object) -> tuple:
        return sstart("--http-parser", parser, *args, **kwargs)

    return _start


@pytest.fixture
def pch(pstart: Start) -> tuple:
    return pstart()


def post(path: str, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/" + version + b"\r\nHost: example.com\r\n"
            + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def chunked_post(path: str = "/c") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: example.com\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


def recv_body(h: Handler, rid: bytes, total: int | None = None,
              max_chunk: int | None = None) -> list[dict]:
    """Body packets from condure for `rid` until `total` bytes, or until one
    without `more` when total is None."""
    packets: list[dict] = []
    got = 0
    while True:
        p = h.recv()
        assert p[b"id"] == rid and b"type" not in p, p
        data = p.get(b"body", b"")
        if max_chunk is not None:
            assert len(data) <= max_chunk, (len(data), max_chunk)
        packets.append(p)
        got += len(data)
        if total is not None and got >= total:
            assert got == total, (got, total)
            return packets
        if not p.get(b"more"):
            assert total is None, f"body ended after {got} of {total} bytes"
            return packets


def simple_exchange(c, h: Handler, client: Client, path: str = "/next") -> Response:
    """One more plain request on an open connection: proves it is still usable."""
    client.send(get(path))
    req = h.recv_request()
    assert req[b"uri"] == b"http://example.com" + path.encode(), req
    h.respond(req, 200, b"OK", [CT], b"next\n")
    r = client.read_response()
    assert r.raw == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nnext\n"
    return r


def assert_alive_and_serving(c, h: Handler) -> None:
    """The process still runs and a fresh connection is served.

    The PULL socket is FIFO, so this also proves that no request packet of
    an earlier connection is still on its way to the handler.
    """
    assert c.alive(), c.log_text()
    with Client(c.port) as other:
        simple_exchange(c, h, other, "/alive")


# ---------------------------------------------------------------------------
# the request packet


def test_request_packet_fields_and_order(pch) -> None:
    c, h = pch
    with Client(c.port) as client:
        client.send(b"GET /path?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: probe\r\n"
                    b"X-Dup: a\r\nx-dup: b\r\nX-MiXeD-CaSe: V\r\n\r\n")
        req = h.recv_request()
        assert list(req) == [b"from", b"id", b"seq", b"ext", b"method", b"uri", b"headers",
                             b"credits", b"stream", b"router-resp", b"peer-address",
                             b"peer-port"]  # router-resp: D27, where connmgr puts it
        assert req[b"from"] == b"condure"
        assert ID_RE.fullmatch(req[b"id"]), req[b"id"]
        assert req[b"seq"] == 0
        assert req[b"ext"] == EXT
        assert req[b"method"] == b"GET"
        assert req[b"uri"] == b"http://example.com:8080/path?x=1"
        assert req[b"headers"] == [[b"Host", b"example.com:8080"], [b"User-Agent", b"probe"],
                                   [b"X-Dup", b"a"], [b"x-dup", b"b"], [b"X-MiXeD-CaSe", b"V"]]
        assert req[b"credits"] == 8192
        assert req[b"stream"] is True
        assert req[b"router-resp"] is True
        assert req[b"peer-address"] == b"127.0.0.1"
        assert req[b"peer-port"] == client.local_port
        assert b"body" not in req and b"more" not in req
        # bools travel as tnetstring booleans, ints as ints (server.md 12.16)
        assert b"6:stream,4:true!" in h.last_raw and b"7:credits,4:8192#" in h.last_raw


@pytest.mark.parametrize("args,credits", [((), 8192), (("--buffer-size", "4096"), 4096)])
def test_request_credits_are_the_buffer_size(sstart: Start, args: tuple, credits: int) -> None:
    c, h = sstart(*args)
    with Client(c.port) as client:
        client.send(get("/"))
        assert h.recv_request()[b"credits"] == credits


@pytest.mark.parametrize("request_bytes,more", [
    (get("/"), False),
    (post("/p", b"hello"), True),
    (post("/p", b""), False),
    (chunked_post(), True),
], ids=["get", "post-content-length", "post-content-length-0", "post-chunked"])
def test_request_more_only_with_a_body(pch, request_bytes: bytes, more: bool) -> None:
    c, h = pch
    with Client(c.port) as client:
        client.send(request_bytes)
        req = h.recv_request()
        assert b"body" not in req  # never body bytes in the first packet
        if more:
            assert req[b"more"] is True
            assert list(req)[7:10] == [b"credits", b"more", b"stream"]
        else:
            assert b"more" not in req


def test_method_is_passed_as_received(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/", method=b"PURGE"))
        assert h.recv_request()[b"method"] == b"PURGE"


def test_new_id_per_request_with_hex_counter(ch) -> None:
    c, h = ch
    ids = []
    with Client(c.port) as client:
        for i in range(12):
            client.send(get(f"/{i}"))
            req = h.recv_request()
            assert req[b"seq"] == 0
            ids.append(req[b"id"])
            h.respond(req, 200, b"OK", [CT], b"x")
            client.read_response()
    matches = [ID_RE.fullmatch(i) for i in ids]
    assert all(matches), ids
    assert len({m.group(1) for m in matches}) == 1, "one connection keeps its slot"
    counters = [int(m.group(2), 16) for m in matches]
    assert counters == list(range(counters[0], counters[0] + 12)), ids
    # lower-case hex without padding: after 9 comes a
    assert [m.group(2) for m in matches] == [b"%x" % n for n in counters]
    assert any(re.search(rb"[a-f]", m.group(2)) for m in matches)


def test_concurrent_connections_get_different_slots(ch) -> None:
    c, h = ch
    with Client(c.port) as a, Client(c.port) as b:
        a.send(get("/a"))
        ra = h.recv_request()
        b.send(get("/b"))
        rb = h.recv_request()
        slot_a = ID_RE.fullmatch(ra[b"id"]).group(1)
        slot_b = ID_RE.fullmatch(rb[b"id"]).group(1)
        assert slot_a != slot_b


@pytest.mark.parametrize("request_bytes,uri", [
    (b"GET /old HTTP/1.0\r\n\r\n", b"http://localhost/old"),
    (b"GET /a/b%20c;p=1?x=1&y=%2F&z HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
     b"http://example.com:8080/a/b%20c;p=1?x=1&y=%2F&z"),
    # D16: condure writes http:///x and http://[::1]:8080* for these
    (b"GET /x HTTP/1.1\r\nHost:\r\n\r\n", b"http://localhost/x"),
    (b"OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", b"http://[::1]:8080"),
], ids=["http10-no-host", "target-verbatim", "empty-host-d16", "options-asterisk-d16"])
def test_request_uri(ch, request_bytes: bytes, uri: bytes) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(request_bytes)
        assert h.recv_request()[b"uri"] == uri


def test_absolute_form_target_is_the_uri_d4(pch) -> None:
    c, h = pch
    with Client(c.port) as client:
        client.send(b"GET http://other.example/abs?q HTTP/1.1\r\nHost: a\r\n\r\n")
        assert h.recv_request()[b"uri"] == b"http://other.example/abs?q"


@pytest.mark.parametrize("request_bytes, method, uri", [
    (b"\r\n\r\nGET /lead HTTP/1.1\r\nHost: a\r\n\r\n", b"GET", b"http://a/lead"),
    (b"GET /lf HTTP/1.1\nHost: a\nX-A: 1\n\n", b"GET", b"http://a/lf"),
    (b"GET /lf HTTP/1.1\r\nHost: a\nX-A: 1\n\n", b"GET", b"http://a/lf"),
    (b"BREW /pot HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n", b"BREW", b"http://a/pot"),
    (b"MKCALENDAR /cal HTTP/1.1\nHost: a\nX-A: 1\n\n", b"MKCALENDAR", b"http://a/cal"),
], ids=["leading-empty-lines", "lf-line-endings", "lf-after-crlf-request-line",
        "extension-method", "extension-method-lf"])
def test_lenient_request_syntax_is_accepted(pch, request_bytes: bytes, method: bytes,
                                            uri: bytes) -> None:
    """server.md 6.1: empty lines before the request line are skipped,
    LF-only line endings are accepted anywhere in the head, and any token is
    a method, as httparse does - whichever parser (llhttp alone knows
    neither BREW nor a bare LF after a CRLF request line)."""
    c, h = pch
    with Client(c.port) as client:
        client.send(request_bytes)
        req = h.recv_request()
        assert (req[b"method"], req[b"uri"]) == (method, uri)
        assert req[b"headers"][-1:] in ([[b"Host", b"a"]], [[b"X-A", b"1"]])
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert client.read_response().body == b"ok\n"
        simple_exchange(c, h, client)  # the connection goes on with the next request


@pytest.mark.parametrize("name,value,body", [
    (b"Transfer-Encoding", b"Chunked", b"0\r\n\r\n"),
    (b"Content-Length", b"0, 0", b""),
], ids=["transfer-encoding-case", "content-length-list"])
def test_request_header_values_are_never_rewritten(pch, parser: str, name: bytes, value: bytes,
                                                   body: bytes, request) -> None:
    """A header the handler sees is exactly what the client sent (server.md 3.3,
    `headers`); a value condure would not take as is may instead be refused
    with a D1 response, but never forwarded altered."""
    c, h = pch
    with Client(c.port) as client:
        client.send(b"POST /v HTTP/1.1\r\nHost: a\r\n" + name + b": " + value + b"\r\n\r\n" + body)
        try:
            req = h.recv_request(timeout=0.5)
        except AssertionError:
            raw = client.read_until_close()
            assert raw.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 501 ")), raw
            return
        assert req[b"headers"] == [[b"Host", b"a"], [name, value]]


# ---------------------------------------------------------------------------
# request body


@pytest.mark.parametrize("buffer_size", [8192, 1024])
def test_content_length_body_flows_only_under_credits(pstart: Start, buffer_size: int) -> None:
    c, h = pstart("--buffer-size", str(buffer_size))
    body = bytes(range(256)) * 80  # 20480 bytes
    with Client(c.port) as client:
        client.send(post("/upload", body))
        req = h.recv_request()
        rid = req[b"id"]
        h.expect_nothing(0.3)  # no body before credits
        h.credit(req, 5000)
        first = recv_body(h, rid, total=5000, max_chunk=min(5000, buffer_size))
        h.expect_nothing(0.3)  # nothing beyond the credits
        h.credit(req, 100000)
        rest = recv_body(h, rid, max_chunk=buffer_size)
        packets = first + rest
        assert b"".join(p.get(b"body", b"") for p in packets) == body
        assert [p[b"seq"] for p in packets] == list(range(1, len(packets) + 1))
        assert all(p[b"more"] is True for p in packets[:-1])
        assert b"more" not in packets[-1]
        assert all(p[b"from"] == b"condure" and p[b"ext"] == EXT for p in packets)
        h.respond(req, 200, b"OK", [CT], b"done")
        r = client.read_response()
        assert r.raw == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\ndone"
        simple_exchange(c, h, client)  # the body was read: still persistent


def test_chunked_body_is_dechunked_with_an_empty_final_packet(pch) -> None:
    c, h = pch
    with Client(c.port) as client:
        client.send(chunked_post() + b"5\r\nhello\r\n")
        req = h.recv_request()
        rid = req[b"id"]
        h.credit(req, 10000)
        p = h.recv()
        assert (p[b"id"], p[b"seq"], p[b"body"], p[b"more"]) == (rid, 1, b"hello", True)
        client.send(b"7;ext=1\r\n, world\r\n")
        p = h.recv()
        assert (p[b"seq"], p[b"body"], p[b"more"]) == (2, b", world", True)
        client.send(b"0\r\nX-Trailer: t\r\n\r\n")
        p = h.recv()
        assert p[b"seq"] == 3 and b"more" not in p and p.get(b"body", b"") == b""
        h.expect_nothing(0.2)
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert client.read_response().body == b"ok\n"
        simple_exchange(c, h, client)


def test_chunked_body_sent_at_once(pch) -> None:
    c, h = pch
    with Client(c.port) as client:
        client.send(chunked_post() + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        req = h.recv_request()
        h.credit(req, 10000)
        packets = recv_body(h, req[b"id"])
        assert b"".join(p.get(b"body", b"") for p in packets) == b"hello world"


def test_content_length_zero_answered_directly_closes(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(post("/empty", b""))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        r = client.read_response()
        assert r.raw == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                         b"Content-Length: 3\r\n\r\nok\n")
        assert client.read_until_close() == b""


def test_content_length_zero_with_credits_stays_open(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(post("/empty", b""))
        req = h.recv_request()
        h.credit(req, 100)
        p = h.recv()  # the empty final body packet
        assert list(p) == [b"from", b"id", b"seq", b"ext"] and p[b"seq"] == 1
        h.expect_nothing(0.2)
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        r = client.read_response()
        assert r.raw == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
        simple_exchange(c, h, client)


def test_expect_100_continue_written_after_first_handler_packet(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(b"POST /expect HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 11\r\n\r\n")
        req = h.recv_request()
        client.expect_silence(0.3)  # nothing before the handler speaks
        h.credit(req, 1000)
        assert client.read_exact(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello world")
        packets = recv_body(h, req[b"id"])
        assert b"".join(p.get(b"body", b"") for p in packets) == b"hello world"
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        r = client.read_response()
        assert r.raw == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
        simple_exchange(c, h, client)


def test_expect_100_continue_then_immediate_response_closes(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(b"POST /expect HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 11\r\n\r\n")
        req = h.recv_request()
        h.respond(req, 403, b"Forbidden", [CT], b"no\n")
        assert client.read_until_close() == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: 3\r\n\r\nno\n")


def test_early_response_closes_when_body_unread(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(post("/early", b"0123456789"))
        req = h.recv_request()
        h.respond(req, 413, b"Payload Too Large", [CT], b"no\n")
        assert client.read_until_close() == (
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: 3\r\n\r\nno\n")
        h.expect_nothing(0.2)  # the unread body is not forwarded


def test_credits_in_the_response_packet_forward_a_buffered_body(ch) -> None:
    """server.md 5.7: `credits` in the response itself forward a body that is
    already buffered; the body was then read, so the connection persists."""
    c, h = ch
    with Client(c.port) as client:
        client.send(post("/small", b"hello"))  # one write: the body comes with the head
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"ok\n", credits=1000)
        p = h.recv()
        assert (p[b"seq"], p[b"body"]) == (1, b"hello") and b"more" not in p
        r = client.read_response()
        assert r.header(b"Connection") is None, r.raw
        simple_exchange(c, h, client)


@pytest.mark.parametrize("expect,version", [(b"100-continue", b"1.0"), (b"100-Continue", b"1.1")],
                         ids=["http10", "token-case"])
def test_no_100_continue(ch, expect: bytes, version: bytes) -> None:
    """Only HTTP/1.1 and only the exact token `100-continue` (server.md 5.2)."""
    c, h = ch
    with Client(c.port) as client:
        client.send(b"POST /e HTTP/" + version + b"\r\nHost: example.com\r\nExpect: " + expect
                    + b"\r\nContent-Length: 3\r\n\r\n")
        req = h.recv_request()
        h.credit(req, 100)
        client.expect_silence(0.3)
        client.send(b"abc")
        assert b"".join(p.get(b"body", b"") for p in recv_body(h, req[b"id"])) == b"abc"


# ---------------------------------------------------------------------------
# response head


@pytest.mark.parametrize("version,extra,expected,stays_open", [
    (b"1.1", b"", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n",
     True),
    (b"1.0", b"", b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n",
     False),
    (b"1.0", b"Connection: keep-alive\r\n",
     b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n"
     b"Content-Length: 3\r\n\r\nok\n", True),
    (b"1.1", b"Connection: close\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
     b"Content-Length: 3\r\n\r\nok\n", False),
    (b"1.1", b"Connection: Close\r\n",  # D7: tokens are case-insensitive
     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
     b"Content-Length: 3\r\n\r\nok\n", False),
    (b"1.1", b"Connection: keep-alive, close\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
     b"Content-Length: 3\r\n\r\nok\n", False),
], ids=["1.1", "1.0", "1.0-keep-alive", "1.1-close", "1.1-Close-D7", "1.1-token-list"])
def test_status_line_and_persistence(ch, version: bytes, extra: bytes, expected: bytes,
                                     stays_open: bool) -> None:
    c, h = ch
    with Client(c.port) as client:
        for i in range(2 if stays_open else 1):
            client.send(get(f"/{i}", version=version, extra=extra))
            req = h.recv_request()
            h.respond(req, 200, b"OK", [CT], b"ok\n")
            assert client.read_exact(len(expected)) == expected
        if stays_open:
            client.expect_silence(0.2)
        else:
            assert client.read_until_close() == b""


@pytest.mark.parametrize("code,reason,headers,body,expected", [
    (418, b"I'm a teapot", [CT], b"short and stout\n",
     b"HTTP/1.1 418 I'm a teapot\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\n"
     b"short and stout\n"),
    (599, b"Custom Thing Here", [], b"",
     b"HTTP/1.1 599 Custom Thing Here\r\nContent-Length: 0\r\n\r\n"),
    (200, b"", [CT], b"x", b"HTTP/1.1 200 \r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"),
    (200, b"OK", [(b"content-type", b"text/plain"), (b"X-MiXeD-CaSe", b"v"), (b"etag", b'"x"'),
                  (b"X-Multi", b"one"), (b"X-Multi", b"two"), (b"X-Empty", b"")], b"ok\n",
     b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nX-MiXeD-CaSe: v\r\netag: \"x\"\r\n"
     b"X-Multi: one\r\nX-Multi: two\r\nX-Empty: \r\nContent-Length: 3\r\n\r\nok\n"),
    (200, b"OK", [(b"X-A", b"1"), (b"Connection", b"close"), (b"transfer-encoding", b"gzip"),
                  (b"content-length", b"3"), (b"X-B", b"2")], b"abc",
     b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 3\r\n\r\nabc"),
], ids=["custom-reason", "no-headers-empty-body", "empty-reason", "order-case-duplicates",
        "hop-by-hop-dropped"])
def test_response_head_mapping(ch, code: int, reason: bytes, headers: list, body: bytes,
                               expected: bytes) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/"))
        req = h.recv_request()
        h.respond(req, code, reason, headers, body)
        assert client.read_exact(len(expected)) == expected
        # no Date/Server and nothing else after the body; the connection stays usable
        # (a handler `Connection: close` does not end it)
        simple_exchange(c, h, client)


# ---------------------------------------------------------------------------
# response framing


def test_handler_content_length_is_honoured_across_packets(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/stream"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT, (b"Content-Length", b"15")], more=True)
        head = client.read_head()
        assert head.head == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\n"
        for part, more in ((b"12345", True), (b"67890", True), (b"abcde", False)):
            h.body(req, part, more=more)
            assert client.read_exact(5) == part
        simple_exchange(c, h, client)


def test_more_on_http11_is_chunked_without_connection_header_d5(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/stream"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], more=True)
        head = client.read_head()
        assert head.head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
        big = b"z" * 5000
        for part in (b"first part\n", big):
            h.body(req, part, more=True)
            size_line, data = client.read_chunk()
            assert (size_line, data) == (b"%x" % len(part), part)
        assert size_line == b"1388"  # lower-case hex
        h.body(req, b"", more=False)
        assert client.read_exact(5) == b"0\r\n\r\n"
        simple_exchange(c, h, client)


def test_first_packet_body_with_more_is_the_first_chunk(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/stream"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"hello", more=True)
        client.read_head()
        assert client.read_exact(10) == b"5\r\nhello\r\n"
        h.body(req, b"bye")
        assert client.read_exact(13) == b"3\r\nbye\r\n0\r\n\r\n"


@pytest.mark.parametrize("extra", [b"", b"Connection: keep-alive\r\n"], ids=["plain", "keep-alive-D6"])
def test_more_on_http10_is_close_delimited(ch, extra: bytes) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/stream", version=b"1.0", extra=extra))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"one ", more=True)
        head = client.read_head()
        assert head.head == b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
        assert client.read_exact(4) == b"one "
        h.body(req, b"two ", more=True)
        assert client.read_exact(4) == b"two "
        h.body(req, b"three")
        assert client.read_until_close() == b"three"


@pytest.mark.parametrize("code,reason", [(204, b"No Content"), (304, b"Not Modified")])
def test_no_body_statuses_drop_the_body(ch, code: int, reason: bytes) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/nobody"))
        req = h.recv_request()
        h.respond(req, code, reason, [CT, (b"Content-Length", b"17")], b"should not appear")
        expected = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n\r\n" % (code, reason)
        assert client.read_exact(len(expected)) == expected
        simple_exchange(c, h, client)


@pytest.mark.parametrize("headers,body,more,length", [
    ([CT, (b"Content-Length", b"42")], b"", False, b"42"),
    ([CT], b"abcdef", False, b"6"),
    ([CT, (b"Content-Length", b"6")], b"abcdef", False, b"6"),
    ([CT], b"abc", True, None),
], ids=["length-no-body", "body-anyway", "length-and-body", "streamed"])
def test_head_request_never_gets_body_bytes_d8(ch, headers: list, body: bytes, more: bool,
                                               length: bytes | None) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/thing", method=b"HEAD"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", headers, body, more=more)
        head = client.read_head()
        assert head.header(b"Content-Length") == length
        if more:
            assert head.header(b"Transfer-Encoding") == b"chunked"
            h.body(req, b"more bytes", more=True)
            h.body(req, b"last")
        client.expect_silence(0.3)
        simple_exchange(c, h, client)


def test_code_and_headers_in_later_packets_are_ignored(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/stream"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], more=True)
        client.read_head()
        h.respond(req, 500, b"Oops", [(b"X-Late", b"1")], b"body", more=True)
        assert client.read_chunk() == (b"4", b"body")
        h.body(req, b"")
        assert client.read_chunk() == (b"0", b"")
        simple_exchange(c, h, client)


def test_handler_packets_before_the_response_write_nothing(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/ka"))
        req = h.recv_request()
        h.packet(req, b"keep-alive")
        h.credit(req, 10)  # no request body: nothing to forward
        h.expect_nothing(0.3)
        client.expect_silence(0.01)
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert client.read_response().body == b"ok\n"


def test_response_without_from_is_still_written(ch) -> None:
    """server.md 3.4: a packet without `from` is applied (replies to it
    cannot be routed)."""
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/nofrom"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"anonymous\n", **{"from": None})
        assert client.read_response().body == b"anonymous\n"


def test_large_body_streamed_under_credits(ch) -> None:
    """The handler never has more than its credits outstanding; condure
    returns them as bytes reach the client, so any size goes through."""
    c, h = ch
    total = 100_000
    body = bytes(i % 251 for i in range(total))
    with Client(c.port) as client:
        client.send(get("/big"))
        req = h.recv_request()
        credits = req[b"credits"]
        h.respond(req, 200, b"OK", [CT, (b"Content-Length", b"%d" % total)], more=True)
        head = client.read_head()
        assert head.header(b"Content-Length") == b"%d" % total
        sent = 0
        received = bytearray()
        while sent < total:
            if credits == 0:
                credits += h.recv_type(b"credit")[b"credits"]
                continue
            n = min(credits, total - sent, 5000)
            h.body(req, body[sent:sent + n], more=sent + n < total)
            sent += n
            credits -= n
            received += client.read_exact(n)
        assert bytes(received) == body
        simple_exchange(c, h, client)


# ---------------------------------------------------------------------------
# credits back to the handler


def test_credits_returned_after_write_and_none_after_final(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/stream"))
        req = h.recv_request()
        rid = req[b"id"]
        h.respond(req, 200, b"OK", [CT], b"head-body", more=True)
        client.read_head()
        client.read_chunk()
        p = h.recv_type(b"credit")
        assert p == {b"from": b"condure", b"id": rid, b"seq": 1, b"ext": EXT,
                     b"type": b"credit", b"credits": 9}
        assert list(p) == [b"from", b"id", b"seq", b"ext", b"type", b"credits"]
        h.body(req, b"part1\n", more=True)
        assert client.read_chunk()[1] == b"part1\n"
        p = h.recv_type(b"credit")
        assert (p[b"seq"], p[b"credits"]) == (2, 6)  # body bytes only, no chunk framing
        h.body(req, b"x" * 5000, more=True)
        client.read_chunk()
        p = h.recv_type(b"credit")
        assert (p[b"seq"], p[b"credits"]) == (3, 5000)
        h.body(req, b"end")
        assert client.read_chunk()[1] == b"end"
        assert client.read_chunk() == (b"0", b"")
        h.expect_nothing(0.3)


def test_no_credit_for_an_empty_body_packet(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/stream"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], more=True)
        client.read_head()
        h.expect_nothing(0.2)
        h.body(req, b"", more=True)
        h.expect_nothing(0.2)
        h.body(req, b"ok")
        assert client.read_chunk()[1] == b"ok"


@pytest.mark.parametrize("args,size,where", [
    ((), 9000, "later-packet"),
    ((), 9000, "first-packet"),
    (("--buffer-size", "1024"), 2000, "later-packet"),
], ids=["later-packet", "first-packet", "small-buffer"])
def test_handler_packet_larger_than_buffer_closes_and_cancels(sstart: Start, args: tuple,
                                                              size: int, where: str) -> None:
    """server.md 4.4 and 5.6: what does not fit the write buffer aborts the
    session: nothing of it is written, the connection closes, `cancel`. Before
    the response head the client gets a 502 (D9; condure closes silently,
    connmgr answers 500, its case H)."""
    c, h = sstart(*args)
    with Client(c.port) as client:
        client.send(get("/big"))
        req = h.recv_request()
        if where == "first-packet":
            h.respond(req, 200, b"OK", [CT], b"x" * size)
        else:  # (a head of any size is written: tests/e2e/test_blocks.py)
            h.respond(req, 200, b"OK", [CT], more=True)
            client.read_head()
            h.body(req, b"x" * size, more=True)
        raw = client.read_until_close()
        if where == "later-packet":
            assert raw == b""  # nothing of the offending packet
        else:
            error_head_ok(raw, 502)
            assert b"xx" not in raw and b"yy" not in raw
        p = h.recv_type(b"cancel")
        assert p[b"id"] == req[b"id"] and p[b"seq"] == 1
        h.expect_nothing(0.2)
    assert_alive_and_serving(c, h)


# ---------------------------------------------------------------------------
# persistent connections


def test_pipelined_requests_are_served_in_order(pch) -> None:
    c, h = pch
    with Client(c.port) as client:
        client.send(get("/p1") + get("/p2"))
        r1 = h.recv_request()
        assert r1[b"uri"].endswith(b"/p1")
        h.expect_nothing(0.3)  # the second only after the first response
        h.respond(r1, 200, b"OK", [CT], b"p1\n")
        r2 = h.recv_request()
        assert r2[b"uri"].endswith(b"/p2") and r2[b"id"] != r1[b"id"] and r2[b"seq"] == 0
        h.respond(r2, 200, b"OK", [CT], b"p2\n")
        assert client.read_response().body == b"p1\n"
        assert client.read_response().body == b"p2\n"


def test_pipelined_request_after_connection_close_is_dropped(pch) -> None:
    c, h = pch
    with Client(c.port) as client:
        client.send(get("/first", extra=b"Connection: close\r\n") + get("/second"))
        r1 = h.recv_request()
        h.respond(r1, 200, b"OK", [CT], b"first\n")
        r = client.read_response()
        assert r.body == b"first\n" and r.header(b"Connection") == b"close"
        assert client.read_until_close() == b""
    assert_alive_and_serving(c, h)  # /second never reached the handler


def test_bytes_sent_after_a_closing_request_do_not_reset_the_response(ch) -> None:
    # the extra bytes wait unread in the kernel while the handler answers; closing
    # over them would send an RST, which can destroy the response before it is read
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/first", extra=b"Connection: close\r\n"))
        r1 = h.recv_request()
        client.send(b"x" * 100)
        time.sleep(0.2)  # in condure's socket before the response goes out
        h.respond(r1, 200, b"OK", [CT], b"first\n" * 1000)
        r = client.read_response()
        assert r.body == b"first\n" * 1000 and r.header(b"Connection") == b"close"
        assert not client.buf
        client.sock.settimeout(5)
        assert client.sock.recv(1) == b""  # a FIN: ConnectionResetError would be the RST


def test_packets_for_a_finished_request_are_ignored(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/one"))
        r1 = h.recv_request()
        h.respond(r1, 200, b"OK", [CT], b"one\n")
        client.read_response()
        client.send(get("/two"))
        r2 = h.recv_request()
        h.respond(r1, 200, b"OK", [CT], b"stale\n", seq=1)  # superseded id
        client.expect_silence(0.3)
        h.respond(r2, 200, b"OK", [CT], b"two\n")
        assert client.read_response().body == b"two\n"


# ---------------------------------------------------------------------------
# seq checking


@pytest.mark.parametrize("midstream", [False, True])
def test_bad_seq_closes_without_cancel(ch, midstream: bool) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/seq"))
        req = h.recv_request()
        if midstream:
            h.respond(req, 200, b"OK", [CT], more=True)
            client.read_head()
            h.body(req, b"late", more=True, seq=5)
        else:
            h.respond(req, 200, b"OK", [CT], b"never", seq=1)
        # before the head: connmgr's 500 (its case H, D29)
        assert client.read_until_close() == (b"" if midstream else REFUSAL[500])
        h.expect_nothing(0.3)
        c.wait_log("bad seq")


def test_packets_without_seq_are_accepted_and_do_not_advance(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/seq"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], more=True, seq=None)
        client.read_head()
        h.body(req, b"a", more=True, seq=None)
        h.body(req, b"b", more=True, seq=None)
        h.body(req, b"c", more=True, seq=0)
        h.body(req, b"d", more=True, seq=None)
        h.body(req, b"e", seq=1)
        assert [client.read_chunk()[1] for _ in range(6)] == [b"a", b"b", b"c", b"d", b"e", b""]


# ---------------------------------------------------------------------------
# multi-id packets


@pytest.mark.parametrize("with_seq", [True, False])
def test_multi_id_packet_reaches_two_connections(ch, with_seq: bool) -> None:
    c, h = ch
    with Client(c.port) as c1, Client(c.port) as c2:
        c1.send(get("/sub1"))
        z1 = h.recv_request()
        c2.send(get("/sub2"))
        z2 = h.recv_request()
        for z, cl in ((z1, c1), (z2, c2)):
            h.respond(z, 200, b"OK", [CT], more=True)
            cl.read_head()
        ids = [{b"id": z[b"id"], b"seq": 1} if with_seq else {b"id": z[b"id"]} for z in (z1, z2)]
        h.send({b"id": ids, b"body": b"broadcast\n", b"more": True})
        assert c1.read_chunk()[1] == b"broadcast\n"
        assert c2.read_chunk()[1] == b"broadcast\n"
        credits = [h.recv_type(b"credit"), h.recv_type(b"credit")]
        assert sorted(p[b"id"] for p in credits) == sorted([z1[b"id"], z2[b"id"]])
        assert all(p[b"credits"] == 10 for p in credits)


def test_multi_id_packet_checks_seq_per_id(ch) -> None:
    c, h = ch
    with Client(c.port) as c1, Client(c.port) as c2:
        c1.send(get("/sub1"))
        z1 = h.recv_request()
        c2.send(get("/sub2"))
        z2 = h.recv_request()
        for z, cl in ((z1, c1), (z2, c2)):
            h.respond(z, 200, b"OK", [CT], more=True)
            cl.read_head()
        h.send({b"id": [{b"id": z1[b"id"], b"seq": 1}, {b"id": z2[b"id"], b"seq": 7}],
                b"body": b"x", b"more": True})
        assert c1.read_chunk()[1] == b"x"
        assert c2.read_until_close() == b""  # bad seq for the second id only
        h.body(z1, b"y", seq=2)
        assert c1.read_chunk()[1] == b"y"


# ---------------------------------------------------------------------------
# sessions ended by either side


@pytest.mark.parametrize("packet", [
    {b"type": b"cancel"},
    {b"type": b"error", b"condition": b"bad-request"},
    {b"type": b"close"},
    {b"type": b"no-such-type"},
], ids=["cancel", "error", "close-on-http", "unknown-type"])
@pytest.mark.parametrize("midstream", [False, True])
def test_handler_ends_the_session(ch, packet: dict, midstream: bool) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/end"))
        req = h.recv_request()
        if midstream:
            h.respond(req, 200, b"OK", [CT], more=True)
            client.read_head()
            h.body(req, b"partial\n", more=True)
            assert client.read_chunk()[1] == b"partial\n"
            h.recv_type(b"credit")
        h.send({b"id": req[b"id"], **packet})
        # closed at once; a chunked response is cut without its last chunk;
        # before the head, connmgr's 500 (D29)
        assert client.read_until_close() == (b"" if midstream else REFUSAL[500])
        h.expect_nothing(0.3)  # the handler ended it: no cancel back
    assert_alive_and_serving(c, h)


def test_client_disconnect_midstream_sends_cancel(ch) -> None:
    c, h = ch
    client = Client(c.port)
    client.send(get("/stream"))
    req = h.recv_request()
    h.respond(req, 200, b"OK", [CT], more=True)
    client.read_head()
    h.body(req, b"some data\n", more=True)
    client.read_chunk()
    assert h.recv_type(b"credit")[b"seq"] == 1
    client.close()
    p = h.recv_type(b"cancel")
    assert p == {b"from": b"condure", b"id": req[b"id"], b"seq": 2, b"ext": EXT,
                 b"type": b"cancel"}
    h.expect_nothing(0.3)


def test_client_gone_before_the_handler_spoke(ch) -> None:
    c, h = ch
    client = Client(c.port)
    client.send(get("/gone"))
    req = h.recv_request()
    client.close()
    h.expect_nothing(0.3)  # the handler address is not known yet
    h.packet(req, b"keep-alive")
    p = h.recv_type(b"cancel")
    assert (p[b"id"], p[b"seq"]) == (req[b"id"], 1)


# ---------------------------------------------------------------------------
# handoff


def test_handoff_midstream_to_a_second_handler(ch, handler_factory) -> None:
    c, h1 = ch
    h2 = handler_factory(c.base, identity=b"second-handler", pull=False)
    with Client(c.port) as client:
        client.send(get("/handoff"))
        req = h1.recv_request()
        rid = req[b"id"]
        h1.respond(req, 200, b"OK", [CT], more=True)
        client.read_head()
        h1.body(req, b"from h1\n", more=True)
        assert client.read_chunk()[1] == b"from h1\n"
        assert h1.recv_type(b"credit")[b"seq"] == 1
        h1.packet(req, b"handoff-start")
        p = h1.recv_type(b"handoff-proceed")
        assert p == {b"from": b"condure", b"id": rid, b"seq": 2, b"ext": EXT,
                     b"type": b"handoff-proceed"}
        h1.expect_nothing(0.2)
        h2.seq[rid] = h1.seq[rid]  # the new owner continues the numbering
        h2.body(req, b"from h2\n", more=True)
        assert client.read_chunk()[1] == b"from h2\n"
        p = h2.recv_type(b"credit")
        assert (p[b"id"], p[b"seq"], p[b"credits"]) == (rid, 3, 8)
        h2.body(req, b"", more=False)
        assert client.read_chunk() == (b"0", b"")
        h1.expect_nothing(0.2)
        h2.expect_nothing(0.2)
        # the cancel of a later disconnect goes to the new owner too
        client.send(get("/after"))
        r2 = h1.recv_request()
        h1.respond(r2, 200, b"OK", [CT], more=True)
        client.read_head()
        h1.packet(r2, b"handoff-start")
        h1.recv_type(b"handoff-proceed")
        h2.seq[r2[b"id"]] = h1.seq[r2[b"id"]]
        h2.packet(r2, b"keep-alive")
    p = h2.recv_type(b"cancel")
    assert p[b"id"] == r2[b"id"]
    h1.expect_nothing(0.2)


def test_handoff_before_the_response(ch, handler_factory) -> None:
    c, h1 = ch
    h2 = handler_factory(c.base, identity=b"second-handler", pull=False)
    with Client(c.port) as client:
        client.send(get("/early-handoff"))
        req = h1.recv_request()
        h1.packet(req, b"handoff-start")
        assert h1.recv_type(b"handoff-proceed")[b"seq"] == 1
        h2.seq[req[b"id"]] = h1.seq[req[b"id"]]
        h2.respond(req, 200, b"OK", [CT], b"from h2\n")
        r = client.read_response()
        assert r.body == b"from h2\n"
        h1.expect_nothing(0.2)


@pytest.mark.parametrize("length,ok", [(64, True), (65, False)])
def test_from_longer_than_64_bytes_aborts(ch, length: int, ok: bool) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/from"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"ok\n", **{"from": b"f" * length})
        if ok:
            assert client.read_response().body == b"ok\n"
        else:
            assert client.read_until_close() == REFUSAL[500]  # connmgr's case H (D29)
            h.expect_nothing(0.3)


# ---------------------------------------------------------------------------
# garbage from a handler

GARBAGE = {
    "no-T": b"condure Xnot a packet",
    "empty": b"condure ",
    "only-T": b"condure T",
    "bad-tnetstring": b"condure T12:4:from,}",
    "not-a-map": b"condure T" + tnetstring.dumps([b"a", 1]),
    "no-id": b"condure T" + tnetstring.dumps({b"from": b"x", b"code": 200}),
}
# typed garbage aimed at the open session (the id is filled in by the test)
TYPED_GARBAGE = {
    "code-as-string": {b"code": b"200", b"reason": b"OK"},
    "more-as-int": {b"code": 200, b"body": b"x", b"more": 1},
    "body-as-int": {b"code": 200, b"body": 5},
    "headers-not-pairs": {b"code": 200, b"headers": [[b"X-A"]]},
    "header-value-int": {b"code": 200, b"headers": [[b"X-A", 1]]},
    "too-many-headers": {b"code": 200, b"headers": [[b"X-%d" % i, b"v"] for i in range(65)]},
    "negative-credits": {b"type": b"credit", b"credits": -5},
    "seq-as-string": {b"code": 200, b"seq": b"0"},
    "type-as-int": {b"type": 3},
}


@pytest.mark.parametrize("name", list(GARBAGE) + list(TYPED_GARBAGE))
def test_handler_garbage_is_dropped(start: Start, name: str) -> None:
    c, h = start()  # own process: the parse-error warning is rate limited per process
    with Client(c.port) as victim, Client(c.port) as bystander:
        victim.send(get("/victim"))
        req = h.recv_request()
        bystander.send(get("/bystander"))
        other = h.recv_request()
        if name in GARBAGE:
            h.send_raw(GARBAGE[name])
        else:
            msg = {b"from": h.identity, b"id": req[b"id"], **TYPED_GARBAGE[name]}
            h.send_raw(b"condure T" + tnetstring.dumps(msg))
        c.wait_log("zhttp parse error")
        assert c.alive()
        # the packet was dropped whole: both sessions carry on, seq unchanged
        h.respond(other, 200, b"OK", [CT], b"bystander\n")
        assert bystander.read_response().body == b"bystander\n"
        h.respond(req, 200, b"OK", [CT], b"victim\n")
        assert victim.read_response().body == b"victim\n"
    assert "Traceback" not in c.log_text()


def flood(send: Callable[[bytes], object], payload: bytes, count: int = 2000,
          batch: int = 100) -> None:
    """`count` sends in batches, pausing between them so that no high-water mark
    on the way (PUB, SUB: about 500-1000 messages) drops what comes after."""
    for i in range(count):
        send(payload)
        if i % batch == batch - 1:
            time.sleep(0.02)
    time.sleep(0.2)


@pytest.mark.deadline(60)
def test_deeply_nested_handler_packets_are_one_warning_a_second(start: Start) -> None:
    """tnetstring raises RecursionError for deep nesting: still a parse error (a
    rate-limited warning), not an error with a traceback per packet (0.7 MB of
    log for these 2000 packets before)."""
    c, h = start()  # own process: the whole log is looked at
    garbage = b"condure T" + nested_lists(900)
    assert 5000 < len(garbage) < 5500
    with Client(c.port) as client:
        client.send(get("/after-garbage"))
        req = h.recv_request()
        flood(h.send_raw, garbage)
        h.respond(req, 200, b"OK", [CT], b"fine\n")
        assert client.read_response().body == b"fine\n"
    assert_alive_and_serving(c, h)
    log = c.log_text()
    assert "Traceback" not in log and "[ERR]" not in log, log[:3000]
    warnings = [line for line in log.splitlines() if "zhttp parse error" in line]
    assert 1 <= len(warnings) <= 5 and len(log) < 3000, log[:3000]
    assert "[WARN]" in warnings[0] and "nesting" in warnings[0], warnings


def test_unknown_type_ends_only_its_session(ch) -> None:
    c, h = ch
    with Client(c.port) as victim, Client(c.port) as bystander:
        victim.send(get("/victim"))
        req = h.recv_request()
        bystander.send(get("/bystander"))
        other = h.recv_request()
        h.packet(req, b"bogus")
        assert victim.read_until_close() == REFUSAL[500]  # connmgr's case H (D29)
        h.respond(other, 200, b"OK", [CT], b"bystander\n")
        assert bystander.read_response().body == b"bystander\n"
        h.expect_nothing(0.2)
    assert c.alive()


def test_packet_for_another_instance_is_not_seen(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/other"))
        req = h.recv_request()
        wrong = {b"from": h.identity, b"id": req[b"id"], b"seq": 0, b"code": 200, b"body": b"wrong"}
        h.send_raw(b"condure2 T" + tnetstring.dumps(wrong))
        h.send_raw(b"condureT" + tnetstring.dumps(wrong))
        client.expect_silence(0.3)
        h.respond(req, 200, b"OK", [CT], b"right")
        assert client.read_response().body == b"right"


# ---------------------------------------------------------------------------
# D1: malformed requests get one error response


def error_head_ok(raw: bytes, status: int) -> None:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 %d " % status), raw
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.lower()] = value.strip()
    assert headers.get(b"connection") == b"close", raw
    assert headers.get(b"content-type", b"").startswith(b"text/plain"), raw
    assert int(headers[b"content-length"]) == len(body) > 0, raw
    assert raw.count(b"HTTP/1.1 ") == 1, raw


MANY_HEADERS = b"".join(b"X-N%02d: %d\r\n" % (i, i) for i in range(64))  # + Host = 65

D1_CASES = {
    "malformed-request-line": ((), b"THIS IS NOT HTTP\r\n\r\n", 400),
    "header-without-colon": ((), b"GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n", 400),
    "header-space-before-colon": ((), b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    "obs-fold": ((), b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
    "lowercase-version": ((), b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    "bad-content-length": ((), b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\nhello",
                           400),
    "negative-content-length": ((), b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                                400),
    "conflicting-content-length": (
        (), b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400),
    "content-length-and-chunked": (
        (), b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n", 400),
    "transfer-encoding-gzip": (
        (), b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    "too-many-headers": ((), b"GET / HTTP/1.1\r\nHost: a\r\n" + MANY_HEADERS + b"\r\n", 431),
    "head-larger-than-buffer": (
        ("--buffer-size", "1024"),
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 1500 + b"\r\n\r\n", 431),
    "target-too-long": ((), b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    "http11-without-host": ((), b"GET /nohost HTTP/1.1\r\nUser-Agent: t\r\n\r\n", 400),
    "http2-version": ((), b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
}


PARSE = b"Failed to parse request: "
# the body of each answer: connmgr's text where connmgr refuses the same
# request (connmgr.md 4.3 A, A2, B, G), else our reason phrase
D1_TEXTS = {
    "malformed-request-line": PARSE + b"invalid HTTP version",  # `THIS IS NOT HTTP`
    "header-without-colon": PARSE + b"invalid header name",
    "header-space-before-colon": PARSE + b"invalid header name",
    "obs-fold": PARSE + b"invalid header name",
    "lowercase-version": PARSE + b"invalid HTTP version",
    "bad-content-length": PARSE + b"invalid content length",
    "negative-content-length": PARSE + b"invalid content length",
    "conflicting-content-length": b"Bad Request",  # connmgr takes the last one
    "content-length-and-chunked": b"Bad Request",  # connmgr lets chunked win
    "transfer-encoding-gzip": PARSE + b"unsupported transfer encoding",
    "too-many-headers": PARSE + b"too many headers",
    "target-too-long": b"Failed to process request.",  # connmgr: 500, case G
    "http11-without-host": b"Bad Request",  # connmgr takes it
    "http2-version": PARSE + b"invalid HTTP version",
}


@pytest.mark.parametrize("name", list(D1_CASES))
def test_malformed_request_gets_one_error_response_d1(pstart: Start, name: str) -> None:
    args, data, status = D1_CASES[name]
    c, h = pstart(*args)
    with Client(c.port) as client:
        client.send(data)
        raw = client.read_until_close()
        error_head_ok(raw, status)
        if name in D1_TEXTS:  # (the head too large is the buffer blocks' concern)
            assert raw.partition(b"\r\n\r\n")[2] == D1_TEXTS[name] + b"\n"
    assert_alive_and_serving(c, h)  # the handler saw nothing before this request


def test_64_headers_are_accepted(pch) -> None:
    c, h = pch
    with Client(c.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n" + MANY_HEADERS[:-len(b"X-N63: 63\r\n")]
                    + b"\r\n")
        req = h.recv_request()
        assert len(req[b"headers"]) == 64


def test_head_that_fits_the_buffer_is_accepted(pstart: Start) -> None:
    c, h = pstart("--buffer-size", "1024")
    with Client(c.port) as client:
        client.send(get("/fits", extra=b"X-Big: " + b"y" * 900 + b"\r\n"))
        req = h.recv_request()
        assert req[b"headers"][1] == [b"X-Big", b"y" * 900]
        assert req[b"credits"] == 1024


@pytest.mark.parametrize("good, bad, text", [
    (b"", b"zz\r\nhello\r\n0\r\n\r\n", b"invalid chunk size"),
    (b"5\r\nhello\r\n", b"8000000000000000\r\n", b"chunk too large"),
    (b"5\r\nhel", b"loX\r\n0\r\n\r\n", b"invalid chunk suffix"),
], ids=["size", "too-large", "suffix"])
def test_bad_chunk_after_credits_d1(pch, good: bytes, bad: bytes, text: bytes) -> None:
    """connmgr.md 4.3 D: a chunked body found malformed while it is forwarded,
    before the response: 400 with connmgr's text, `cancel` to the handler."""
    c, h = pch
    with Client(c.port) as client:
        client.send(chunked_post("/bad") + good)
        req = h.recv_request()  # the head is fine, so the handler has it
        h.credit(req, 1000)
        if good:  # what comes before the fault is forwarded
            assert h.recv()[b"body"] in (b"hello", b"hel")
        client.send(bad)
        assert client.read_until_close() == refusal(400, PARSE + text)
    p = h.recv_type(b"cancel")  # the handler spoke, so it is told (D14)
    assert p[b"id"] == req[b"id"]
    h.expect_nothing(0.2)


# the whole answer to a refused request, byte for byte (D1): the same whichever
# parser, so the parametrized tests below compare the parsers too
REFUSAL = {
    400: b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
         b"Content-Length: 12\r\n\r\nBad Request\n",
    501: b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain\r\nConnection: close\r\n"
         b"Content-Length: 16\r\n\r\nNot Implemented\n",
    505: b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\n"
         b"Connection: close\r\nContent-Length: 27\r\n\r\nHTTP Version Not Supported\n",
    502: b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
         b"Content-Length: 12\r\n\r\nBad Gateway\n",
    # connmgr.md scenario 25: the handler ended the exchange before the head (D29)
    500: b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
         b"Connection: close\r\nContent-Length: 27\r\n\r\nFailed to process request.\n",
}


def refusal(status: int, text: bytes) -> bytes:
    """condure's answer with `status` and connmgr's body `text` (connmgr.md 4.3)."""
    reason = REFUSAL[status].split(b"\r\n", 1)[0]
    return (reason + b"\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s\n" % (len(text) + 1, text))


# requests the two parsers used to treat differently (D1), and the Host and
# request-target checks of D16; unit cases in tests/unit/test_parser.py
REFUSED = {
    "two-spaces-in-request-line": (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400,
                                   PARSE + b"invalid token"),
    "del-in-field-value": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n", 400,
                           PARSE + b"invalid header value"),
    "control-in-field-value": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n", 400,
                               PARSE + b"invalid header value"),
    "http-1-2": (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, PARSE + b"invalid HTTP version"),
    "transfer-encoding-twice": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501,
                                PARSE + b"unsupported transfer encoding"),
    # connmgr.md scenarios 20 and 21: connmgr's texts, with our statuses (D1)
    "bad-header-scenario-20": (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400,
                               PARSE + b"invalid header name"),
    "gzip-scenario-21": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
                         PARSE + b"unsupported transfer encoding"),
    "host-with-path-d16": (b"GET / HTTP/1.1\r\nHost: evil/admin?\r\n\r\n", 400, None),
    "host-with-userinfo-d16": (b"GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n", 400, None),
    "host-not-ascii-d16": (b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n", 400, None),
    "relative-target-d16": (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    "asterisk-outside-options-d16": (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    "absolute-form-userinfo-d16": (b"GET http://u@b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    "connect-d16": (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501, None),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refusals_are_the_same_bytes_whatever_the_parser(pstart: Start, name: str) -> None:
    data, status, text = REFUSED[name]
    c, h = pstart()
    with Client(c.port) as client:
        client.send(data)
        assert client.read_until_close() == (REFUSAL[status] if text is None
                                             else refusal(status, text))
    assert_alive_and_serving(c, h)  # the handler saw nothing before this request


def test_connmgr_scenario_20_bytes(pch) -> None:
    """connmgr.md 8, scenario 20, byte for byte: connmgr's body (45 bytes) in
    our answer (HTTP/1.1 and `Connection: close`, D1; connmgr writes HTTP/1.0
    and no Connection header)."""
    c, h = pch
    with Client(c.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        assert client.read_until_close() == (
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: 45\r\n\r\nFailed to parse request: invalid header name\n")
    h.expect_nothing(0.2)


CLIENT_HELLO = bytes.fromhex("16030100f8010000f40303") + bytes(range(0x40, 0x60))


@pytest.mark.parametrize("data, text", [
    # no LF at all: a parser waiting for one waits forever
    (b"GET / HTTP/1.1\rHost: a\r\r", PARSE + b"invalid new line"),
    (CLIENT_HELLO, PARSE + b"invalid token"),  # https:// to a plain port; no LF in it either
], ids=["bare-cr", "tls-client-hello"])
def test_bare_cr_and_tls_are_refused_at_once_d1(pstart: Start, data: bytes, text: bytes) -> None:
    """Not after --stream-timeout: the client, which sends nothing more and
    keeps its side open, gets its 400 and the close right away."""
    c, h = pstart("--stream-timeout", "20")
    with Client(c.port, timeout=3.0) as client:
        start = time.monotonic()
        client.send(data)
        assert client.read_until_close() == refusal(400, text)
        assert time.monotonic() - start < 1.0
    assert_alive_and_serving(c, h)


# ---------------------------------------------------------------------------
# D9, D10: unsafe handler responses


@pytest.mark.parametrize("reason, header", [
    (b"OK", (b"X-Split", b"a\r\nSet-Cookie: evil=1")),
    (b"OK", (b"X-Lf", b"a\nb")),
    (b"OK", (b"X-Nul", b"a\x00b")),
    (b"OK", (b"X-Bad\r\nName", b"v")),
    (b"OK\r\nSet-Cookie: evil=1", (b"X-Ok", b"v")),  # the status line splits the same way
], ids=["crlf-value", "lf-value", "nul-value", "crlf-name", "crlf-reason"])
def test_header_injection_is_refused_with_502_d9(ch, reason: bytes, header: tuple) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/inject"))
        req = h.recv_request()
        h.respond(req, 200, reason, [CT, header], b"ok\n")
        raw = client.read_until_close()
        error_head_ok(raw, 502)
        assert b"evil" not in raw
    p = h.recv_type(b"cancel")
    assert (p[b"id"], p[b"seq"]) == (req[b"id"], 1)
    c.wait_log("[WARN]")


def refused_with_502_and_cancel(c, h: Handler, client: Client, req: dict) -> None:
    """The D9/D17 outcome: a 502 for the client, `cancel` for the handler, a warning."""
    raw = client.read_until_close()
    error_head_ok(raw, 502)
    p = h.recv_type(b"cancel")
    assert (p[b"id"], p[b"seq"]) == (req[b"id"], 1)
    h.expect_nothing(0.2)
    log = c.wait_log("[WARN]")
    assert log.count("[WARN]") == 1 and "Traceback" not in log, log


@pytest.mark.parametrize("code", [1099511627776, 0, None, 99, 600, 100, 101, 103],
                         ids=["2**40", "0", "missing", "99", "600", "100", "101", "103"])
def test_handler_code_that_is_not_a_final_status_is_502_d17(ch, code: int | None) -> None:
    # condure 1.9.1 writes `HTTP/1.1 0 OK` for 2**40 (16 bits), `HTTP/1.1 0 ...` for a
    # missing code, and a bodiless 1xx head after which the client waits forever
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/code"))
        req = h.recv_request()
        h.respond(req, code, b"OK", [CT], b"ok\n")  # code None: the field is left out
        refused_with_502_and_cancel(c, h, client, req)
    assert_alive_and_serving(c, h)


@pytest.mark.parametrize("name", [b"X Bad", b"", b"X:Y", b"X(", b"X\x01", b"caf\xc3\xa9"],
                         ids=["space", "empty", "colon", "paren", "ctl", "utf8"])
def test_handler_header_name_that_is_not_a_token_is_502_d17(ch, name: bytes) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/name"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT, (name, b"v")], b"ok\n")
        refused_with_502_and_cancel(c, h, client, req)


def test_invalid_handler_content_length_is_502_and_cancel_d9(ch) -> None:
    """condure closes silently, connmgr answers 500 (its case H): a response
    we refuse to write (D9)."""
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/cl"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT, (b"Content-Length", b"abc")], b"ok\n")
        assert client.read_until_close() == REFUSAL[502]
    assert h.recv_type(b"cancel")[b"id"] == req[b"id"]


@pytest.mark.parametrize("streamed", [False, True])
def test_body_beyond_handler_content_length_is_dropped_d10(ch, streamed: bool) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(get("/d10"))
        req = h.recv_request()
        if streamed:
            h.respond(req, 200, b"OK", [CT, (b"Content-Length", b"5")], b"abc", more=True)
            h.body(req, b"defgh")
        else:
            h.respond(req, 200, b"OK", [CT, (b"Content-Length", b"2")], b"abcdef")
        expected_body = b"abcde" if streamed else b"ab"
        raw = client.read_until_close()
        assert raw == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(expected_body), expected_body))
    c.wait_log("[WARN]")


# ---------------------------------------------------------------------------
# D13, D14: timeouts


def test_unanswered_request_gets_504_on_stream_timeout_d13(start: Start) -> None:
    c, h = start("--stream-timeout", "2")
    with Client(c.port) as client:
        client.send(get("/silent"))
        h.recv_request()
        client.expect_silence(1.0)
        raw = client.read_until_close(timeout=10)
        error_head_ok(raw, 504)
    h.expect_nothing(0.3)  # the handler never spoke: no address to cancel to


def test_504_and_cancel_when_the_handler_only_kept_alive_d13_d14(start: Start) -> None:
    c, h = start("--stream-timeout", "2")
    with Client(c.port) as client:
        client.send(get("/silent"))
        req = h.recv_request()
        h.packet(req, b"keep-alive")
        error_head_ok(client.read_until_close(timeout=10), 504)
    p = h.recv_type(b"cancel")
    assert (p[b"id"], p[b"seq"]) == (req[b"id"], 1)


def test_idle_keepalive_connection_is_just_closed_d13(start: Start) -> None:
    c, h = start("--stream-timeout", "2")
    with Client(c.port) as client, Client(c.port) as never_asked:
        client.send(get("/one"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"one\n")
        client.read_response()
        assert client.read_until_close(timeout=10) == b""
        assert never_asked.read_until_close(timeout=10) == b""
    h.expect_nothing(0.3)


@pytest.mark.deadline(40)
def test_writes_keep_the_stream_timeout_from_firing(start: Start) -> None:
    """server.md 4.3: the stream timeout measures client I/O inactivity, and
    written response bytes are activity."""
    c, h = start("--stream-timeout", "2")
    with Client(c.port) as client:
        client.send(get("/slow"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], more=True)
        client.read_head()
        for i in range(4):  # 4 x 0.8 s: well past the 2 s timeout
            client.expect_silence(0.8)
            h.body(req, b"tick %d\n" % i, more=True)
            assert client.read_chunk()[1] == b"tick %d\n" % i
        h.body(req, b"")
        assert client.read_chunk() == (b"0", b"")


def test_stream_timeout_after_response_head_cancels_d14(start: Start) -> None:
    c, h = start("--stream-timeout", "2")
    with Client(c.port) as client:
        client.send(get("/silent"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], more=True)
        client.read_head()
        assert client.read_until_close(timeout=10) == b""  # no 504 once a byte was written
    p = h.recv_type(b"cancel")
    assert (p[b"id"], p[b"seq"]) == (req[b"id"], 1)
    h.expect_nothing(0.2)


# ---------------------------------------------------------------------------
# limits


def test_stream_maxconn_holds_extra_connections_back(start: Start) -> None:
    c, h = start("--stream-maxconn", "2")
    with Client(c.port) as a, Client(c.port) as b, Client(c.port) as third:
        a.send(get("/a"))
        ra = h.recv_request()
        b.send(get("/b"))
        h.recv_request()
        third.send(get("/third"))  # the kernel accepts it; condure does not yet
        h.expect_nothing(0.5)
        h.respond(ra, 200, b"OK", [CT], b"a\n")
        a.read_response()
        a.close()
        r3 = h.recv_request()
        assert r3[b"uri"].endswith(b"/third")
        h.respond(r3, 200, b"OK", [CT], b"third\n")
        assert third.read_response().body == b"third\n"


def test_half_close_after_request(ch) -> None:
    """server.md 4.4: a client that shuts down its sending side is treated as gone."""
    c, h = ch
    client = Client(c.port)
    client.send(get("/half"))
    client.sock.shutdown(socket.SHUT_WR)
    req = h.recv_request()
    h.packet(req, b"keep-alive")
    assert h.recv_type(b"cancel")[b"id"] == req[b"id"]
    client.close()
