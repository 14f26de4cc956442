"""In-process: the real App with real ipc sockets, timer constants shortened.

Keep-alives (45 s) and handler silence (60 s) are too slow for a subprocess
test, so these tests run the App in this process's gevent hub and set the
Server's intervals to fractions of a second. The handler is played with
zmq.green sockets in the same hub.
"""
from __future__ import annotations

import gevent
import gevent.socket as gsocket

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
