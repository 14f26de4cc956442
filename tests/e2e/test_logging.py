"""Operator logging, end to end: the access log (`--access-log`, D21) in
stream mode (HTTP and WebSocket) and with --workers, and the readable packet
traces of --log-level 4.

Req mode's access lines and the TLS certificate message are tested in
test_listeners.py, next to the req-mode and TLS fixtures; the rate-limited
handler-silence warning (60 s) in tests/component/test_timers.py.
"""
from __future__ import annotations

import re
import socket
import threading
import time

import pytest
import tnetstring
import zmq
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

from rawhttp import Client, get

CT = (b"Content-Type", b"text/plain")
ACCESS = re.compile(
    r"^\[INFO\] \S+ \S+ \[condure::access\] peer=(?P<peer>\S+) method=(?P<method>\S+)"
    r" uri=(?P<uri>\S+) status=(?P<status>\S+) bytes=(?P<bytes>\d+) ms=(?P<ms>\d+\.\d)"
    r" by=(?P<by>\S+)(?: err=(?P<err>\S+))?$", re.M)


def access_lines(text: str) -> list[dict]:
    return [m.groupdict() for m in ACCESS.finditer(text)]


def wait_access(c, n: int = 1, timeout: float = 5.0) -> list[dict]:
    """The first `n` access lines of `c`'s log (waiting for them); asserts no more."""
    end = time.monotonic() + timeout
    while True:
        text = c.log_text()
        lines = access_lines(text)
        if len(lines) >= n:
            assert len(lines) == n, text
            assert text.count("[condure::access]") == n, text  # every line parses
            return lines
        if time.monotonic() > end:
            raise AssertionError(f"{n} access lines not logged within {timeout} s:\n{text}")
        time.sleep(0.05)


@pytest.fixture
def logged(shared_condure, handler_factory) -> tuple:
    """A condure with --access-log shared by this module's tests, and a handler."""
    c = shared_condure("--access-log")
    return c, handler_factory(c.base)


def test_handler_response_one_line(logged) -> None:
    c, h = logged
    with Client(c.port) as client:
        client.send(get("/x?y=1", extra=b"User-Agent: t\r\n"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"hello")
        assert client.read_response().body == b"hello"
        [line] = wait_access(c)
        assert line == {"peer": f"127.0.0.1:{client.local_port}", "method": "GET",
                        "uri": "http://example.com/x?y=1", "status": "200", "bytes": "5",
                        "ms": line["ms"], "by": "handler", "err": None}


def test_keepalive_requests_one_line_each_streamed_body_counted(logged) -> None:
    c, h = logged
    with Client(c.port) as client:
        client.send(get("/a"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"abc", more=True)  # chunked
        h.body(req, b"defg")
        client.read_response()
        client.send(b"HEAD /b HTTP/1.1\r\nHost: example.com\r\n\r\n")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT, (b"Content-Length", b"3")], b"xyz")  # D8: not written
        client.read_response(head_request=True)
        a, b = wait_access(c, 2)
    assert (a["method"], a["uri"], a["status"], a["bytes"]) == (
        "GET", "http://example.com/a", "200", "7")
    assert (b["method"], b["uri"], b["status"], b["bytes"]) == (
        "HEAD", "http://example.com/b", "200", "0")


def test_malformed_request_is_ours_400(logged) -> None:
    c, _h = logged
    with Client(c.port) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n")
        assert client.read_response().status == 400
        [line] = wait_access(c)
    assert (line["method"], line["uri"], line["status"], line["bytes"], line["by"],
            line["err"]) == ("-", "-", "400",
                             str(len(b"Failed to parse request: invalid header name\n")),
                             "condure", "BadRequest")


def test_bad_handler_response_is_ours_502(logged) -> None:
    c, h = logged
    with Client(c.port) as client:
        client.send(get("/bad"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [(b"X-A", b"a\r\nInjected: 1")], b"x")  # D9
        assert client.read_response().status == 502
        [line] = wait_access(c)
    assert (line["uri"], line["status"], line["by"], line["err"]) == (
        "http://example.com/bad", "502", "condure", "BadHandlerResponse")


def test_client_gone_before_the_answer_status_dash(logged) -> None:
    c, h = logged
    with Client(c.port) as client:
        client.send(get("/gone"))
        req = h.recv_request()
    h.respond(req, 200, b"OK", [CT], b"late", more=True)  # condure finds the client gone
    [line] = wait_access(c)
    assert (line["status"], line["by"], line["err"]) in {
        ("-", "-", "ClientGone"),  # seen before the response was written
        ("200", "handler", "ClientGone"),  # or at the socket, once written
    }


def test_odd_uri_bytes_are_quoted(logged) -> None:
    c, h = logged
    with Client(c.port) as client:
        client.send(b'GET /q"x\\ HTTP/1.1\r\nHost: example.com\r\n\r\n')
        req = h.recv_request()
        h.respond(req, 204, b"No Content", [])
        client.read_response()
    text = c.wait_log("[condure::access]")
    assert 'uri="http://example.com/q\\"x\\\\" status=204 bytes=0 ' in text, text


def test_stream_timeout_is_ours_504(condure, handler_factory) -> None:
    c = condure("--access-log", "--stream-timeout", "1")
    h = handler_factory(c.base)
    with Client(c.port) as client:
        client.send(get("/slow"))
        h.recv_request()  # and never answered
        assert client.read_response().status == 504
        [line] = wait_access(c)
    assert (line["uri"], line["status"], line["by"], line["err"]) == (
        "http://example.com/slow", "504", "condure", "Timeout")
    assert float(line["ms"]) >= 900


def test_websocket_one_line_when_the_session_ends(logged) -> None:
    c, h = logged
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as sock:
        sock.sendall(ws.send(Request(host="example.com", target="/chat")))
        req = h.recv_request()
        h.respond(req, 101, b"Switching Protocols", [])
        data = sock.recv(4096)
        ws.receive_data(data)
        assert any(isinstance(e, AcceptConnection) for e in ws.events())
        h.body(req, b"hello there", content_type=b"text")  # a 13-byte frame
        time.sleep(0.3)
        assert "[condure::access]" not in c.log_text()  # not at the handshake
        sock.sendall(ws.send(CloseConnection(code=1000)))
        p = h.recv()
        while p.get(b"type") != b"close":
            p = h.recv()
        h.packet(req, b"close", code=1000)
        while sock.recv(4096):
            pass
    [line] = wait_access(c)
    assert (line["method"], line["uri"], line["status"], line["by"], line["err"]) == (
        "GET", "ws://example.com/chat", "101", "handler", None)
    assert line["bytes"] == str(2 + 11 + 4)  # the text frame and the close frame (code 1000)


def test_websocket_rejected_by_the_handler(logged) -> None:
    c, h = logged
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as sock:
        sock.sendall(ws.send(Request(host="example.com", target="/chat")))
        req = h.recv_request()
        h.packet(req, b"error", condition=b"rejected", code=403, reason=b"Forbidden",
                 headers=[], body=b"no")
        data = sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 403 ")
    [line] = wait_access(c)
    assert (line["status"], line["bytes"], line["by"]) == ("403", "2", "handler")


def test_no_access_log_without_the_flag(shared_condure, handler_factory) -> None:
    c = shared_condure()
    h = handler_factory(c.base)
    with Client(c.port) as client:
        client.send(get("/x"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"hello")
        client.read_response()
        client.send(b"GET / HTTP/1.1\r\nNo colon\r\n\r\n")
        client.read_response()
    time.sleep(0.2)
    assert "[condure::access]" not in c.log_text()


def _answer_all(base: str, count: int) -> None:
    """A handler for --workers: answers `count` requests, each to its own `from`."""
    ctx = zmq.Context()
    try:
        pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
        pull.connect(base + "-out")
        pub.connect(base + "-in")
        pull.setsockopt(zmq.RCVTIMEO, 5000)
        for _ in range(count):
            req = tnetstring.loads(pull.recv()[1:])
            resp = {b"from": b"h", b"id": req[b"id"], b"code": 200, b"reason": b"OK",
                    b"body": req[b"from"]}
            pub.send(req[b"from"] + b" T" + tnetstring.dumps(resp))
    finally:
        ctx.destroy(0)


@pytest.mark.deadline(60)
def test_access_log_with_workers(condure) -> None:
    c = condure("--access-log", "--workers", "2")
    n = 8
    t = threading.Thread(target=_answer_all, args=(c.base, n))
    t.start()
    time.sleep(0.5)  # subscriptions reach the parent's XSUB
    bodies = []
    for i in range(n):
        with Client(c.port) as client:
            client.send(get(f"/w{i}", extra=b"Connection: close\r\n"))
            bodies.append(client.read_response().body)
    t.join(10)
    lines = wait_access(c, n)
    assert sorted(line["uri"] for line in lines) == sorted(
        f"http://example.com/w{i}" for i in range(n))
    assert all(line["status"] == "200" and line["by"] == "handler" for line in lines)
    assert sorted(int(line["bytes"]) for line in lines) == sorted(len(b) for b in bodies)


# --- --log-level 4 ----------------------------------------------------------


def test_trace_lines_are_readable(shared_condure, handler_factory) -> None:
    c = shared_condure(log_level=4)
    h = handler_factory(c.base)
    with Client(c.port) as client:
        client.send(get("/t"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"hi\n")
        client.read_response()
    rid = req[b"id"].decode()
    text = c.wait_log('} 3 "hi\\n"')  # the handler's response, traced
    out = re.search(rf'\[condure::zhttpsocket\] OUT stream \{{ "from": "condure", "id": "{rid}",'
                    r' "seq": 0, .*"method": "GET", "uri": "http://example.com/t", .*\} 0$',
                    text, re.M)
    assert out, text
    inn = re.search(rf'\[condure::zhttpsocket\] IN stream condure (\{{ .*"id": "{rid}".* \}})'
                    r' 3 "hi\\n"$', text, re.M)
    assert inn and '"code": 200' in inn.group(1), text
    assert "b'" not in text and "(b\"" not in text, text  # no Python reprs
