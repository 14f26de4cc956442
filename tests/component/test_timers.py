"""In-process: the real App with real ipc sockets, timer constants shortened.

Keep-alives (45 s) and handler silence (60 s) are too slow for a subprocess
test, so these tests run the App in this process's gevent hub and set the
Server's intervals to fractions of a second. The handler is played with
zmq.green sockets in the same hub.
"""
from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import gevent
import gevent.socket as gsocket
import pytest

from condure import log as clog

from greenhandler import GreenHandler


def _client(port: int, data: bytes) -> gsocket.socket:
    c = gsocket.create_connection(("127.0.0.1", port))
    c.sendall(data)
    return c


def test_keepalives_are_sent_and_batched_per_handler(app):
    app.server.keepalive_interval = 0.5
    h = GreenHandler(app.ctx, app.base, b"h1")
    clients, ids = [], []
    with gevent.Timeout(10):
        for i in range(3):
            clients.append(_client(app.port, b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i))
            req = h.request()
            ids.append(req[b"id"])
            h.send({b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK", b"more": True})
        got: dict[bytes, int] = {}
        while len(got) < 3:
            m = h.recv()
            assert m[b"type"] == b"keep-alive"
            assert m[b"ext"] == {b"multi": True} and m[b"from"] == b"condure"
            entries = m[b"id"] if isinstance(m[b"id"], list) else [{b"id": m[b"id"], b"seq": m[b"seq"]}]
            for e in entries:
                got[e[b"id"]] = e[b"seq"]
        assert set(got) == set(ids)
        assert all(seq == 1 for seq in got.values())  # the request was seq 0
    for c in clients:
        c.close()
    h.close()


def test_handler_silence_closes_connection_with_504(app):
    app.server.handler_timeout = 0.5
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10):
        c = _client(app.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        h.request()
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert b"Connection: close\r\n" in data
    h.close()


def test_handler_keepalive_resets_silence_timer(app):
    app.server.handler_timeout = 0.6
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10):
        c = _client(app.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        req = h.request()
        for seq in range(4):  # 1.2 s in all, well past one timeout
            gevent.sleep(0.3)
            h.send({b"id": req[b"id"], b"seq": seq, b"type": b"keep-alive"})
        h.send({b"id": req[b"id"], b"seq": 4, b"code": 200, b"reason": b"OK", b"body": b"hi"})
        data = c.recv(4096)
    assert data == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    c.close()
    h.close()


def test_idle_keepalive_connection_is_closed_without_bytes(app):
    app.server.handler_timeout = 0.5
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10):
        c = _client(app.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        req = h.request()
        h.send({b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK", b"body": b"hi"})
        assert c.recv(4096).endswith(b"hi")
        assert c.recv(4096) == b""  # closed by the idle timer, nothing written
    c.close()
    h.close()


@pytest.fixture
def log_out() -> Iterator[io.StringIO]:
    """condure's log lines (INFO and up) while the test runs, in condure's format."""
    logger = logging.getLogger("condure")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    out = io.StringIO()
    clog.setup(logging.INFO, out)
    try:
        yield out
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def _read_all(c: gsocket.socket) -> bytes:
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    return data


@pytest.mark.parametrize("app", [{"access_log": True}], indirect=True)
def test_handler_silence_warns_rate_limited_and_logs_504(app, log_out) -> None:
    app.server.handler_timeout = 0.3
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10):
        clients = [_client(app.port, b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i) for i in range(3)]
        for _ in clients:
            h.request()  # never answered
        for c in clients:
            assert _read_all(c).startswith(b"HTTP/1.1 504 ")
        warnings = [line for line in log_out.getvalue().splitlines() if line.startswith("[WARN]")]
        assert len(warnings) == 1, log_out.getvalue()  # three timeouts within a second
        assert re.search(r"\[condure::connection\] handler timeout: session 0-\d+-\d+ got nothing"
                         r" from its handler within 0\.3 s$", warnings[0]), warnings
        gevent.sleep(1.0)  # past the rate limit's interval
        late = _client(app.port, b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
        h.request()
        assert _read_all(late).startswith(b"HTTP/1.1 504 ")
    text = log_out.getvalue()
    warnings = [line for line in text.splitlines() if line.startswith("[WARN]")]
    assert len(warnings) == 2 and warnings[1].endswith(" (2 more suppressed)"), text
    access = [line for line in text.splitlines() if "[condure::access]" in line]
    assert len(access) == 4, text
    assert all(" status=504 bytes=16 " in line and line.endswith(" by=condure err=Timeout")
               for line in access), access
    for c in clients + [late]:
        c.close()
    h.close()


def test_idle_keepalive_connection_timeout_is_no_warning(app, log_out) -> None:
    app.server.handler_timeout = 0.3
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10):
        c = _client(app.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        req = h.request()
        h.send({b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK", b"body": b"hi"})
        assert _read_all(c).endswith(b"hi")  # then closed by the idle timer
    assert "[WARN]" not in log_out.getvalue(), log_out.getvalue()
    assert "[condure::access]" not in log_out.getvalue()  # the flag is off
    c.close()
    h.close()
