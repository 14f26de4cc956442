"""In-process: keep-alives and handler silence on HTTP/2 streams.

As test_timers.py does for HTTP/1: the real App in this hub on real ipc
sockets, the Server's intervals shortened; the client is the h2 library over a
gevent socket (tests/h2client.py). Each stream is its own ZHTTP session, so
its timers are its own: one stream's handler going silent ends that stream,
not the connection.
"""
from __future__ import annotations

import gevent
import gevent.socket as gsocket

from greenhandler import GreenHandler
from h2client import H2Client


def _h2(port: int) -> H2Client:
    return H2Client(port, sock=gsocket.create_connection(("127.0.0.1", port)))


def test_keepalives_reach_the_handler_of_each_stream(app):
    app.server.keepalive_interval = 0.5
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10), _h2(app.port) as cl:
        ids = []
        for i in range(2):
            cl.request(b"GET", b"/%d" % i)
            req = h.request()
            ids.append(req[b"id"])
            h.send({b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK", b"more": True})
        assert ids[0] != ids[1]
        got: dict[bytes, int] = {}
        while len(got) < 2:
            m = h.recv()
            assert m[b"type"] == b"keep-alive"
            entries = m[b"id"] if isinstance(m[b"id"], list) else [{b"id": m[b"id"], b"seq": m[b"seq"]}]
            for e in entries:
                got[e[b"id"]] = e[b"seq"]
        assert set(got) == set(ids) and all(seq == 1 for seq in got.values())
    h.close()


def test_handler_silence_ends_the_stream_with_504_not_the_connection(app):
    app.server.handler_timeout = 0.5
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10), _h2(app.port) as cl:
        silent = cl.request(b"GET", b"/silent")
        h.request()
        r = cl.response(silent)
        assert dict(r["headers"])[b":status"] == b"504"
        assert r["body"] == b"Gateway Timeout\n"
        assert r["ended"] and r["reset"] is None
        assert app.server.metrics.handler_timeouts == 1
        # the connection goes on: a new stream is served
        sid = cl.request(b"GET", b"/next")
        req = h.request()
        h.send({b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK", b"body": b"hi"})
        r = cl.response(sid)
        assert dict(r["headers"])[b":status"] == b"200" and r["body"] == b"hi"
        assert cl.terminated is None
    h.close()


def test_handler_keepalive_keeps_a_stream_alive(app):
    app.server.handler_timeout = 0.6
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10), _h2(app.port) as cl:
        sid = cl.request(b"GET", b"/")
        req = h.request()
        for seq in range(4):  # 1.2 s in all, well past one timeout
            gevent.sleep(0.3)
            h.send({b"id": req[b"id"], b"seq": seq, b"type": b"keep-alive"})
        h.send({b"id": req[b"id"], b"seq": 4, b"code": 200, b"reason": b"OK", b"body": b"hi"})
        r = cl.response(sid)
    assert dict(r["headers"])[b":status"] == b"200" and r["body"] == b"hi"
    h.close()
