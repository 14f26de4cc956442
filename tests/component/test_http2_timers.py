"""In-process: the handler timers of HTTP/2 streams (issue 16 item 5).

Each stream is a ZHTTP session of its own, with the same timers as an
HTTP/1 request (server/timers.py: StreamTimers): the 60 s handler silence
(D13) and the 45 s keep-alives, shortened here as in test_timers.py.
"""
from __future__ import annotations

import gevent
import gevent.socket as gsocket

from greenhandler import GreenHandler
from h2client import H2Client


def _client(port: int) -> H2Client:
    return H2Client(port, sock=gsocket.create_connection(("127.0.0.1", port)))


def test_a_stream_whose_handler_is_silent_gets_504_and_the_others_go_on(app):
    app.server.handler_timeout = 0.5
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10):
        cl = _client(app.port)
        silent = cl.request(b"GET", b"/silent")
        h.request()
        r = cl.response(silent)
        assert r["headers"][0] == (b":status", b"504")
        assert r["body"] == b"Gateway Timeout\n"
        assert app.server.metrics.handler_timeouts == 1
        # the connection and its next stream are not touched
        sid = cl.request(b"GET", b"/next")
        req = h.request()
        h.send({b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK", b"body": b"hi"})
        assert cl.response(sid)["body"] == b"hi"
        assert cl.terminated is None
    cl.sock.close()
    h.close()


def test_each_stream_gets_its_keepalives(app):
    app.server.keepalive_interval = 0.5
    h = GreenHandler(app.ctx, app.base, b"h1")
    with gevent.Timeout(10):
        cl = _client(app.port)
        ids = []
        for path in (b"/a", b"/b"):
            cl.request(b"GET", path)
            req = h.request()
            ids.append(req[b"id"])
            h.send({b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK",
                    b"more": True})
        got: dict[bytes, int] = {}
        while len(got) < 2:
            m = h.recv()
            if m.get(b"type") != b"keep-alive":
                continue
            entries = (m[b"id"] if isinstance(m[b"id"], list)
                       else [{b"id": m[b"id"], b"seq": m[b"seq"]}])
            for e in entries:
                got[e[b"id"]] = e[b"seq"]
        assert set(got) == set(ids)
    cl.sock.close()
    h.close()
