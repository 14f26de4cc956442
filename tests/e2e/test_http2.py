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
import signal
import socket
import ssl
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import pytest

from h2client import H2Client
from rawhttp import Client

CT = (b"Content-Type", b"text/plain")


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


def test_split_cookies_are_joined_where_the_first_was(ch) -> None:
    """RFC 9113 8.2.3: a client may send the cookie in pieces; the handler gets
    the one field the same HTTP/1.1 request carries, in its place."""
    c, h = ch
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/c", [(b"a", b"1"), (b"cookie", b"x=1"), (b"b", b"2"),
                                         (b"cookie", b"y=2")])
        req = h.recv_request()
        assert req[b"headers"] == [[b"host", b"example.com"], [b"a", b"1"],
                                   [b"cookie", b"x=1; y=2"], [b"b", b"2"]]
        h.respond(req, 200, b"OK", [CT], b"ok")
        assert cl.response(sid)["body"] == b"ok"


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
        # the default window (see http2.py), opened as the handlers take the bodies
        assert cl.conn.remote_settings.initial_window_size == 65535
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


# ---------------------------------------------------------------------------
# shutdown (D12): GOAWAY, the streams in flight finish


def test_shutdown_sends_goaway_and_lets_the_stream_finish(condure, handler_factory) -> None:
    c = condure("--shutdown-timeout", "5")
    h = handler_factory(c.base)
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/slow")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"first,", more=True)
        h.recv_type(b"credit")
        c.proc.send_signal(signal.SIGTERM)
        while cl.terminated is None:
            cl.pump()
        assert cl.terminated.error_code == 0
        assert cl.terminated.last_stream_id == sid
        h.body(req, b"last")
        # the client's h2 is closed for sending after a GOAWAY: read the rest raw
        data = b""
        while chunk := cl.sock.recv(65536):
            data += chunk
        assert b"last" in data
    assert c.proc.wait(10) == 0


def test_shutdown_closes_an_idle_http2_connection_at_once(condure) -> None:
    c = condure("--shutdown-timeout", "5")
    with H2Client(c.port) as cl:
        cl.pump()  # the server's SETTINGS
        started = time.monotonic()
        c.proc.send_signal(signal.SIGTERM)
        while cl.terminated is None:
            cl.pump()
        assert cl.terminated.error_code == 0
        while cl.sock.recv(100):  # a second GOAWAY (h2's own), then the end
            pass
        assert time.monotonic() - started < 2
    assert c.proc.wait(10) == 0


# ---------------------------------------------------------------------------
# TLS: ALPN offers h2


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("identities")
    cert = ca.issue_cert("localhost", common_name="localhost")
    (d / "localhost.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (d / "localhost.key").write_bytes(cert.private_key_pem.bytes())
    return ca, str(d)


def _tls_listener(condure, pki, *params: str) -> tuple:
    from conftest import get_free_port, wait_for_port

    ca, directory = pki
    port = get_free_port()
    c = condure("--listen", ",".join([f"127.0.0.1:{port}", "stream", "tls",
                                      "default-cert=localhost", *params]),
                "--tls-identities-dir", directory)
    wait_for_port(port, c.proc, c.log_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return c, port, ctx.wrap_socket(raw, server_hostname="localhost")


def test_tls_alpn_h2(condure, handler_factory, pki) -> None:
    c, port, tls = _tls_listener(condure, pki)
    h = handler_factory(c.base)
    assert tls.selected_alpn_protocol() == "h2"
    with H2Client(port, sock=tls, scheme=b"https") as cl:
        sid = cl.request(b"GET", b"/secure", authority=b"localhost")
        req = h.recv_request()
        assert req[b"uri"] == b"https://localhost/secure"
        assert req[b"headers"] == [[b"host", b"localhost"]]
        h.respond(req, 200, b"OK", [CT], b"secure\n")
        r = cl.response(sid)
        assert r["headers"][0] == (b":status", b"200")
        assert r["body"] == b"secure\n"



def test_tls_post_streamed_response_and_reset(condure, handler_factory, pki) -> None:
    """Over TLS as over h2c: a body under credits, a streamed response, and a
    reset stream that the handler hears of as `cancel`, on one connection."""
    c, port, tls = _tls_listener(condure, pki)
    h = handler_factory(c.base)
    with H2Client(port, sock=tls, scheme=b"https") as cl:
        sid = cl.request(b"POST", b"/up", [(b"content-length", b"5")], body=b"hello",
                         authority=b"localhost")
        req = h.recv_request()
        assert req[b"uri"] == b"https://localhost/up" and req[b"more"] is True
        h.credit(req, 8192)
        assert h.recv_type(None)[b"body"] == b"hello"
        h.respond(req, 200, b"OK", [CT], b"one,", more=True)
        assert h.recv_type(b"credit")[b"credits"] == 4
        h.body(req, b"two", more=False)
        r = cl.response(sid)
        assert r["body"] == b"one,two" and r["ended"]
        sid2 = cl.request(b"GET", b"/held", authority=b"localhost")
        req2 = h.recv_request()
        h.packet(req2, b"keep-alive")  # the handler's address: where a cancel can go
        time.sleep(0.1)
        cl.conn.reset_stream(sid2)
        cl.flush()
        assert h.recv_type(b"cancel")[b"id"] == req2[b"id"]


def test_upgrade_h2c_over_tls_is_ignored(condure, handler_factory, pki) -> None:
    """h2c is for cleartext (RFC 7540 3.2): over TLS the request is served as
    HTTP/1.1, with its Upgrade fields as sent (ALPN is the way to h2 there)."""
    ca, directory = pki
    from conftest import get_free_port, wait_for_port

    port = get_free_port()
    c = condure("--listen", f"127.0.0.1:{port},stream,tls,default-cert=localhost",
                "--tls-identities-dir", directory)
    wait_for_port(port, c.proc, c.log_path)
    h = handler_factory(c.base)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                         server_hostname="localhost") as tls:
        tls.sendall(b"GET /u HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        req = h.recv_request()
        assert [b"upgrade", b"h2c"] in [[n.lower(), v] for n, v in req[b"headers"]]
        h.respond(req, 200, b"OK", [CT], b"plain\n")
        data = b""
        while not data.endswith(b"plain\n"):
            chunk = tls.recv(4096)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")

def test_tls_listener_without_http2_offers_no_alpn(condure, handler_factory, pki) -> None:
    c, port, tls = _tls_listener(condure, pki, "no-http2")
    assert tls.selected_alpn_protocol() is None
    tls.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_http2_over_tls(condure, handler_factory, pki, tmp_path) -> None:
    from conftest import get_free_port, wait_for_port

    ca, directory = pki
    port = get_free_port()
    c = condure("--listen", f"127.0.0.1:{port},stream,tls,default-cert=localhost",
                "--tls-identities-dir", directory)
    wait_for_port(port, c.proc, c.log_path)
    h = handler_factory(c.base)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    proc = subprocess.Popen(["curl", "-s", "-i", "--http2", "--cacert", str(ca_file),
                             f"https://localhost:{port}/tls"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        req = h.recv_request()
        assert req[b"uri"] == f"https://localhost:{port}/tls".encode()
        h.respond(req, 200, b"OK", [CT], b"over h2\n")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.startswith(b"HTTP/2 200"), (out, err)
    assert out.endswith(b"\r\n\r\nover h2\n")


# ---------------------------------------------------------------------------
# flow control end to end


def _send_body(cl: H2Client, sid: int, body: bytes) -> None:
    """DATA within the server's windows, waiting for its WINDOW_UPDATEs; it
    stops when the server resets the stream (NO_ERROR after an early response)."""
    view = memoryview(body)
    while view:
        if cl.responses.get(sid, {}).get("reset") is not None:
            return
        n = min(len(view), cl.conn.local_flow_control_window(sid), cl.conn.max_outbound_frame_size)
        if n == 0:
            cl.pump()
            continue
        cl.conn.send_data(sid, bytes(view[:n]), end_stream=n == len(view))
        cl.flush()
        view = view[n:]


def test_large_request_body_under_credits_and_window(ch) -> None:
    import threading

    c, h = ch
    body = bytes(range(256)) * 400  # 102,400 bytes: many windows of 8192
    with H2Client(c.port) as cl:
        sid = cl.conn.get_next_available_stream_id()
        cl.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                   (b":authority", b"example.com"), (b":path", b"/upload"),
                                   (b"content-length", b"%d" % len(body))])
        cl.flush()
        cl.responses[sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        sender = threading.Thread(target=_send_body, args=(cl, sid, body))
        sender.start()
        req = h.recv_request()
        assert req[b"more"] is True
        got = b""
        h.credit(req, 8192)
        while True:
            d = h.recv_type(None)
            got += d[b"body"]
            assert len(d[b"body"]) <= 8192
            if not d.get(b"more"):
                break
            h.credit(req, len(d[b"body"]))
        sender.join(10)
        assert got == body
        h.respond(req, 200, b"OK", [CT], b"got it\n")
        assert cl.response(sid)["body"] == b"got it\n"


def test_large_streamed_response_within_the_window(ch) -> None:
    """The client reads (and opens its window) as the handler sends; every
    8192 bytes written come back to the handler as a credit."""
    import threading

    c, h = ch
    chunk = b"x" * 8192
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/download")
        req = h.recv_request()
        reader = threading.Thread(target=cl.response, args=(sid, 20.0))
        reader.start()
        h.respond(req, 200, b"OK", [CT], chunk, more=True)
        for i in range(20):
            assert h.recv_type(b"credit")[b"credits"] == 8192
            h.body(req, chunk, more=i < 19)
        reader.join(20)
        r = cl.responses[sid]
        assert r["ended"] and r["body"] == chunk * 21


def test_a_shut_window_holds_the_handlers_credits(ch) -> None:
    """The client opens no window: the response stops at its 65,535 bytes and the
    handler gets no credit for what could not be sent."""
    c, h = ch
    chunk = b"y" * 8192
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/stuck")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], chunk, more=True)
        credited = 8192
        h.recv_type(b"credit")
        while True:
            h.body(req, chunk, more=True)
            try:
                h.recv_type(b"credit", timeout=1.0)
            except AssertionError:
                break
            credited += 8192
        assert credited < 65535 + 8192
        # the client read it all but opened nothing (it does not acknowledge here)
        received = 0
        cl.sock.settimeout(0.5)
        try:
            while True:
                data = cl.sock.recv(65536)
                if not data:
                    break
                for ev in cl.conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        received += len(ev.data)
        except socket.timeout:
            pass
        assert received == 65535
        # now open it: the rest flows, and the credit comes back
        cl.conn.acknowledge_received_data(received, sid)
        cl.flush()
        assert h.recv_type(b"credit")[b"credits"] == 8192


# ---------------------------------------------------------------------------
# Upgrade: h2c (RFC 7540 3.2)


def _upgrade_request(path: bytes = b"/up", extra: bytes = b"") -> tuple:
    """A client h2 set up for the upgrade, and the HTTP/1.1 request to send."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None))
    settings = conn.initiate_upgrade_connection()
    return conn, (b"GET " + path + b" HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n"
                  b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: "
                  + settings + b"\r\n" + extra + b"\r\n")


def test_upgrade_h2c_serves_the_request_as_stream_1(ch) -> None:
    c, h = ch
    conn, request = _upgrade_request()
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
        s.sendall(request)
        req = h.recv_request()
        # the HTTP/1.1 request, without the fields of the upgrade
        assert req[b"uri"] == b"http://example.com/up"
        assert req[b"headers"] == [[b"Host", b"example.com"], [b"X-A", b"1"]]
        h.respond(req, 200, b"OK", [CT], b"upgraded\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        cl = H2Client.__new__(H2Client)
        cl.sock, cl.conn, cl.scheme = s, conn, b"http"
        cl.responses = {1: {"headers": None, "body": b"", "ended": False, "reset": None}}
        cl.events, cl.terminated = [], None
        s.sendall(conn.data_to_send())  # the client's preface and SETTINGS
        if rest:
            for ev in conn.receive_data(rest):
                if isinstance(ev, h2.events.ResponseReceived):
                    cl.responses[1]["headers"] = ev.headers
                elif isinstance(ev, h2.events.DataReceived):
                    cl.responses[1]["body"] += ev.data
                elif isinstance(ev, h2.events.StreamEnded):
                    cl.responses[1]["ended"] = True
        r = cl.response(1)
        assert r["headers"][0] == (b":status", b"200")
        assert r["body"] == b"upgraded\n"
        # the connection goes on in HTTP/2
        sid = cl.request(b"GET", b"/after")
        req2 = h.recv_request()
        assert req2[b"headers"] == [[b"host", b"example.com"]]
        h.respond(req2, 200, b"OK", [CT], b"h2\n")
        assert cl.response(sid)["body"] == b"h2\n"


def test_upgrade_h2c_with_a_body_stays_http1(ch) -> None:
    c, h = ch
    conn, request = _upgrade_request(b"/body", b"Content-Length: 2\r\n")
    with Client(c.port) as client:
        client.send(request + b"hi")
        req = h.recv_request()
        assert [b"Upgrade", b"h2c"] in req[b"headers"]
        h.credit(req, 8192)
        h.recv_type(None)
        h.respond(req, 200, b"OK", [CT], b"plain\n")
        assert client.read_response().status == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_http2_upgrade(ch) -> None:
    c, h = ch
    proc = subprocess.Popen(["curl", "-s", "-i", "--http2", f"http://127.0.0.1:{c.port}/curl-up"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        req = h.recv_request()
        assert req[b"uri"] == f"http://127.0.0.1:{c.port}/curl-up".encode()
        h.respond(req, 200, b"OK", [CT], b"via upgrade\n")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols"), (out, err)
    assert b"HTTP/2 200" in out
    assert out.endswith(b"\r\n\r\nvia upgrade\n")


def test_early_response_gives_the_unread_body_window_back(ch) -> None:
    """The handler answers without reading the body: the stream's response
    ends it, the bytes it never took (and those that come after) do not keep
    the connection's window shut, so the next stream's body still flows."""
    import threading

    c, h = ch
    body = b"z" * 200_000  # more than the connection's window
    with H2Client(c.port) as cl:
        sid = cl.conn.get_next_available_stream_id()
        cl.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                   (b":authority", b"example.com"), (b":path", b"/early"),
                                   (b"content-length", b"%d" % len(body))])
        cl.flush()
        cl.responses[sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        sender = threading.Thread(target=_send_body, args=(cl, sid, body), daemon=True)
        sender.start()
        req = h.recv_request()
        h.respond(req, 413, b"Too Large", [CT], b"no\n")
        sender.join(10)
        assert not sender.is_alive()
        r = cl.response(sid)
        assert r["headers"][0] == (b":status", b"413") and r["body"] == b"no\n"
        while r["reset"] is None:  # the rest of the body is declined (RFC 9113 8.1)
            cl.pump()
        assert r["reset"] == 0  # NO_ERROR
        # a second stream with a body on the same connection
        sid2 = cl.conn.get_next_available_stream_id()
        cl.conn.send_headers(sid2, [(b":method", b"POST"), (b":scheme", b"http"),
                                    (b":authority", b"example.com"), (b":path", b"/next"),
                                    (b"content-length", b"4")])
        cl.flush()
        cl.responses[sid2] = {"headers": None, "body": b"", "ended": False, "reset": None}
        # the client stopped at the reset: the window its last DATA took opens
        # again as the server drops them (WINDOW_UPDATEs that may still come)
        _send_body(cl, sid2, b"next")
        req2 = h.recv_request()
        h.credit(req2, 8192)
        assert h.recv_type(None)[b"body"] == b"next"
        h.respond(req2, 200, b"OK", [CT], b"ok\n")
        assert cl.response(sid2)["body"] == b"ok\n"


def test_rapid_reset_ends_the_connection(ch) -> None:
    """CVE-2023-44487: streams opened and reset at once, past 200 a second."""
    c, h = ch
    with H2Client(c.port) as cl:
        for _ in range(300):
            sid = cl.conn.get_next_available_stream_id()
            cl.conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"),
                                       (b":authority", b"example.com"), (b":path", b"/r")],
                                 end_stream=True)
            cl.conn.reset_stream(sid)
        try:
            cl.flush()
            while cl.terminated is None:
                cl.pump()
        except (ConnectionError, OSError):
            pass
        assert cl.terminated is not None
        assert cl.terminated.error_code == 11  # ENHANCE_YOUR_CALM


def test_a_few_resets_are_fine(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        for _ in range(20):
            sid = cl.request(b"GET", b"/r")
            cl.conn.reset_stream(sid)
        cl.flush()
        sid = cl.request(b"GET", b"/after")
        while True:
            req = h.recv_request()
            if req[b"uri"].endswith(b"/after"):
                break
        h.respond(req, 200, b"OK", [CT], b"fine\n")
        assert cl.response(sid)["body"] == b"fine\n"


def test_expect_100_continue_gets_an_interim_100_headers(ch) -> None:
    """RFC 9113 8.1: the interim response is a HEADERS :status 100 before the
    final one; sent as on HTTP/1.1, once the handler answers (credits)."""
    c, h = ch
    with H2Client(c.port) as cl:
        sid = cl.conn.get_next_available_stream_id()
        cl.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                   (b":authority", b"example.com"), (b":path", b"/up"),
                                   (b"expect", b"100-continue"), (b"content-length", b"4")])
        cl.flush()
        cl.responses[sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        req = h.recv_request()
        assert req[b"more"] is True
        informational = [e for e in cl.events if isinstance(e, h2.events.InformationalResponseReceived)]
        assert informational == []  # nothing before the handler's word
        h.credit(req, 8192)
        deadline = time.monotonic() + 5
        while not informational:
            assert time.monotonic() < deadline, cl.events
            cl.pump()
            informational = [e for e in cl.events
                             if isinstance(e, h2.events.InformationalResponseReceived)]
        assert informational[0].headers == [(b":status", b"100")]
        cl.conn.send_data(sid, b"ping", end_stream=True)
        cl.flush()
        assert h.recv_type(None)[b"body"] == b"ping"
        h.respond(req, 200, b"OK", [CT], b"pong")
        r = cl.response(sid)
        assert r["headers"][0] == (b":status", b"200") and r["body"] == b"pong"


def test_handoff_midstream_to_a_second_handler(ch, handler_factory) -> None:
    """A stream's session is handed off as an HTTP/1 one: handoff-proceed,
    the new owner goes on with the same seq, the old one hears nothing."""
    c, h1 = ch
    h2_ = handler_factory(c.base, identity=b"second-handler", pull=False)
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/handoff")
        req = h1.recv_request()
        rid = req[b"id"]
        h1.respond(req, 200, b"OK", [CT], more=True)
        h1.body(req, b"from h1\n", more=True)
        assert h1.recv_type(b"credit")[b"seq"] == 1
        h1.packet(req, b"handoff-start")
        p = h1.recv_type(b"handoff-proceed")
        assert (p[b"id"], p[b"seq"]) == (rid, 2)
        h2_.seq[rid] = h1.seq[rid]
        h2_.body(req, b"from h2\n", more=True)
        p = h2_.recv_type(b"credit")
        assert (p[b"id"], p[b"seq"]) == (rid, 3)
        h2_.body(req, b"", more=False)
        r = cl.response(sid)
        assert r["body"] == b"from h1\nfrom h2\n" and r["ended"]
        h1.expect_nothing(0.2)
        # a later reset of another handed-off stream: the cancel goes to the new owner
        sid2 = cl.request(b"GET", b"/after")
        r2 = h1.recv_request()
        h1.respond(r2, 200, b"OK", [CT], more=True)
        h1.packet(r2, b"handoff-start")
        h1.recv_type(b"handoff-proceed")
        h2_.seq[r2[b"id"]] = h1.seq[r2[b"id"]]
        h2_.packet(r2, b"keep-alive")
        cl.conn.reset_stream(sid2)
        cl.flush()
        p = h2_.recv_type(b"cancel")
        assert p[b"id"] == r2[b"id"]
        h1.expect_nothing(0.2)
