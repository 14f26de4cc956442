"""HTTP/2 for clients (issue 16), end to end: h2c with prior knowledge.

condure runs as a `python -m condure` subprocess; the handler is a real
ZeroMQ one (zhttp_handler.Handler); the client is the `h2` library over a
real socket (`H2Client`), and curl where it is installed. The request
packets are compared field by field with those of the same request over
HTTP/1.1 (rawhttp.Client): an HTTP/2 stream must look to its handler like
one HTTP/1.1 request, with the field names lower case as HTTP/2 sends them.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import pytest

from rawhttp import Client
from zhttp_handler import Handler

CT = (b"Content-Type", b"text/plain")


class H2Client:
    """A minimal HTTP/2 client (h2c, prior knowledge) for the tests."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.local_port = self.sock.getsockname()[1]
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.flush()
        self.responses: dict[int, dict] = {}
        self.events: list = []

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: bytes, path: bytes, headers: list = (), body: bytes | None = None,
                authority: bytes = b"example.com") -> int:
        sid = self.conn.get_next_available_stream_id()
        hs = [(b":method", method), (b":scheme", b"http"), (b":authority", authority),
              (b":path", path), *headers]
        self.conn.send_headers(sid, hs, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        self.responses[sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        return sid

    def pump(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        for ev in self.conn.receive_data(data):
            self.events.append(ev)
            r = self.responses.get(getattr(ev, "stream_id", 0))
            if isinstance(ev, h2.events.ResponseReceived):
                r["headers"] = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                r["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                r["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                r["reset"] = ev.error_code
        self.flush()

    def response(self, sid: int, timeout: float = 5.0) -> dict:
        end = time.monotonic() + timeout
        r = self.responses[sid]
        while not (r["ended"] or r["reset"] is not None):
            if time.monotonic() > end:
                raise AssertionError(f"no complete response on stream {sid}: {r}")
            self.pump()
        return r


@pytest.fixture
def ch(condure, handler_factory) -> tuple:
    c = condure()
    return c, handler_factory(c.base)


def _same_but_names(h2_req: dict, h1_req: dict, h2_port: int, h1_port: int) -> None:
    """The two request packets agree field by field: the id differs, the peer
    port is each client's, and HTTP/2 sends field names in lower case."""
    assert list(h2_req) == list(h1_req)
    for key in h1_req:
        if key == b"id":
            assert h2_req[key] != h1_req[key]
        elif key == b"peer-port":
            assert (h2_req[key], h1_req[key]) == (h2_port, h1_port)
        elif key == b"headers":
            assert h2_req[key] == [[n.lower(), v] for n, v in h1_req[key]]
        else:
            assert h2_req[key] == h1_req[key], key


def test_get_is_the_http1_request_packet(ch) -> None:
    c, h = ch
    with Client(c.port) as c1:
        c1.send(b"GET /path?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: probe\r\n"
                b"X-Dup: a\r\nx-dup: b\r\n\r\n")
        h1 = h.recv_request()
        h.respond(h1, 200, b"OK", [CT], b"hello\n")
        c1.read_response()
        port1 = c1.local_port
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/path?x=1", [(b"user-agent", b"probe"), (b"x-dup", b"a"),
                                                (b"x-dup", b"b")], authority=b"example.com:8080")
        req = h.recv_request()
        _same_but_names(req, h1, cl.local_port, port1)
        assert req[b"uri"] == b"http://example.com:8080/path?x=1"
        assert req[b"headers"][0] == [b"host", b"example.com:8080"]
        assert b"more" not in req and b"body" not in req
        h.respond(req, 200, b"OK", [CT, (b"X-Thing", b"1"), (b"Connection", b"keep-alive")],
                  b"hello\n")
        r = cl.response(sid)
        assert r["headers"] == [(b":status", b"200"), (b"content-type", b"text/plain"),
                                (b"x-thing", b"1"), (b"content-length", b"6")]
        assert r["body"] == b"hello\n"


def test_post_with_body_is_the_http1_request_packet(ch) -> None:
    c, h = ch
    with Client(c.port) as c1:
        c1.send(b"POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 5\r\n\r\nhello")
        h1 = h.recv_request()
        h.credit(h1, 8192)
        data = h.recv_type(None)
        assert data[b"body"] == b"hello" and b"more" not in data
        h.respond(h1, 200, b"OK", [CT], b"ok\n")
        c1.read_response()
        port1 = c1.local_port
    with H2Client(c.port) as cl:
        sid = cl.request(b"POST", b"/submit", [(b"content-type", b"text/plain"),
                                               (b"content-length", b"5")], body=b"hello")
        req = h.recv_request()
        _same_but_names(req, h1, cl.local_port, port1)
        assert req[b"more"] is True
        # the body comes once the handler's first packet gave credits, as over HTTP/1
        h.credit(req, 8192)
        data = h.recv_type(None)
        assert data[b"body"] == b"hello" and b"more" not in data
        h.respond(req, 201, b"Created", [CT], b"made\n")
        r = cl.response(sid)
        assert r["headers"][0] == (b":status", b"201")
        assert r["body"] == b"made\n"


def test_streamed_response_and_credits(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/stream")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"part1,", more=True)
        credit = h.recv_type(b"credit")
        assert credit[b"credits"] == 6
        h.body(req, b"part2", more=False)
        r = cl.response(sid)
        assert (b"content-length", b"11") not in r["headers"]
        assert r["body"] == b"part1,part2"


def test_two_concurrent_streams_are_two_sessions(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        s1 = cl.request(b"GET", b"/one")
        s2 = cl.request(b"GET", b"/two")
        r1, r2 = h.recv_request(), h.recv_request()
        assert {r1[b"uri"], r2[b"uri"]} == {b"http://example.com/one", b"http://example.com/two"}
        assert r1[b"id"] != r2[b"id"]
        # answered in the other order
        second = r2 if r2[b"uri"].endswith(b"/two") else r1
        first = r1 if second is r2 else r2
        h.respond(second, 200, b"OK", [CT], b"two\n")
        assert cl.response(s2)["body"] == b"two\n"
        h.respond(first, 200, b"OK", [CT], b"one\n")
        assert cl.response(s1)["body"] == b"one\n"


def test_reset_stream_cancels_the_session(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/slow")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"a", more=True)
        h.recv_type(b"credit")
        cl.conn.reset_stream(sid)
        cl.flush()
        cancel = h.recv_type(b"cancel")
        assert cancel[b"id"] == req[b"id"]


def test_handler_refusal_is_condures_answer_on_the_stream(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/bad")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [(b"X-Bad", b"a\r\nb")], b"x")
        r = cl.response(sid)
        assert r["headers"][0] == (b":status", b"502")


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_http2_prior_knowledge(ch) -> None:
    c, h = ch
    proc = subprocess.Popen(["curl", "-s", "-i", "--http2-prior-knowledge", "-d", "ping",
                             f"http://127.0.0.1:{c.port}/curl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        req = h.recv_request()
        assert req[b"method"] == b"POST"
        assert req[b"uri"] == f"http://127.0.0.1:{c.port}/curl".encode()
        assert req[b"headers"][0] == [b"host", f"127.0.0.1:{c.port}".encode()]
        h.credit(req, 8192)
        assert h.recv_type(None)[b"body"] == b"ping"
        h.respond(req, 200, b"OK", [CT], b"pong\n")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.startswith(b"HTTP/2 200"), (out, err)
    assert out.endswith(b"\r\n\r\npong\n")


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REFUSED_505 = (b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\n"
               b"Connection: close\r\nContent-Length: 46\r\n\r\n"
               b"Failed to parse request: invalid HTTP version\n")


def test_no_http2_answers_the_preface_505_as_before(condure) -> None:
    """`--no-http2`: the preface is the HTTP/1 request it looks like, with an
    unknown version (what every listener did before HTTP/2)."""
    from conftest import get_free_port

    port2 = get_free_port()
    c = condure("--no-http2", "--listen", f"127.0.0.1:{port2},stream")
    for port in (c.port, port2):
        with Client(port) as client:
            client.send(PREFACE)
            assert client.read_until_close() == REFUSED_505


def test_no_http2_listener_param(condure) -> None:
    from conftest import get_free_port, wait_for_port

    port2 = get_free_port()
    c = condure("--listen", f"127.0.0.1:{port2},stream,no-http2")
    wait_for_port(port2, c.proc, c.log_path)
    with Client(port2) as client:
        client.send(PREFACE)
        assert client.read_until_close() == REFUSED_505
    with H2Client(c.port) as cl:  # the other listener serves HTTP/2
        cl.pump()
        assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in cl.events)
        # a stream's window is --buffer-size: it opens as the handler takes the body
        assert cl.conn.remote_settings.initial_window_size == 8192
        assert cl.conn.remote_settings.max_concurrent_streams == 100
        assert cl.conn.remote_settings.enable_push == 0


def test_bad_preface_gets_goaway_and_close(ch) -> None:
    c, h = ch
    with Client(c.port) as client:
        client.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        data = client.read_until_close()
    # a SETTINGS frame, then GOAWAY (type 7) with PROTOCOL_ERROR
    assert data[3] == 4
    assert b"\x07\x00\x00\x00\x00\x00" in data
