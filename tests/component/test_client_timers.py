"""In-process: client mode's keep-alives around a handoff, intervals shortened.

The real App in client mode only (--zserver-stream), in this process's hub,
with the ClientService's keep-alive interval set to a fraction of a second.
The handler is played with zmq.green sockets, the origin by a gevent server
that accepts and never answers (the session then waits on the handler).
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.server
import pytest
import tnetstring
import zmq.green as zmq

from condure.app import App
from condure.config import Config

INTERVAL = 0.3


class StreamHandler:
    """PUSH first messages, ROUTER later ones, SUB for condure's answers."""

    def __init__(self, ctx: Any, base: str, ident: bytes = b"h1") -> None:
        self.ident = ident
        self.push = ctx.socket(zmq.PUSH)
        self.push.connect(base + "-in")
        self.router = ctx.socket(zmq.ROUTER)
        self.router.connect(base + "-in-stream")
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, ident + b" ")
        self.sub.connect(base + "-out")
        gevent.sleep(0.3)  # subscription propagation

    def start(self, fields: dict) -> None:
        self.push.send(b"T" + tnetstring.dumps({b"from": self.ident, **fields}))

    def send(self, fields: dict) -> None:
        msg = b"T" + tnetstring.dumps({b"from": self.ident, **fields})
        self.router.send_multipart([b"condure", b"", msg])

    def recv(self, timeout: float) -> dict | None:
        if not self.sub.poll(int(timeout * 1000)):
            return None
        return tnetstring.loads(self.sub.recv()[len(self.ident) + 2:])

    def close(self) -> None:
        for s in (self.push, self.router, self.sub):
            s.close(0)


@pytest.fixture
def client_app() -> Iterator[App]:
    zdir = tempfile.mkdtemp(prefix="cdt", dir="/tmp")
    base = f"ipc://{zdir}/server"
    app = App(Config(log_level=2, zserver_stream=(base,)))
    app.start()
    app.base = base  # type: ignore[attr-defined]
    yield app
    app.stop()
    shutil.rmtree(zdir, ignore_errors=True)


@pytest.fixture
def silent_origin() -> Iterator[int]:
    def hold(sock: Any, addr: Any) -> None:
        gevent.sleep(30)  # the socket closes when this returns (or the server stops)

    server = gevent.server.StreamServer(("127.0.0.1", 0), hold)
    server.start()
    yield server.server_port
    server.stop(timeout=0)


def test_no_keepalives_during_a_handoff_pause(client_app: App, silent_origin: int) -> None:
    """client.md 7.5 with the server rule (zhttp.session.Session.keepalive):
    after handoff-proceed nothing goes to the handler, keep-alives neither,
    until its next packet; then they resume."""
    client_app.client.keepalive_interval = INTERVAL
    h = StreamHandler(client_app.ctx, client_app.base)  # type: ignore[attr-defined]
    try:
        with gevent.Timeout(10):
            h.start({b"id": b"r1", b"seq": 0, b"method": b"GET",
                     b"uri": f"http://127.0.0.1:{silent_origin}/".encode()})
            ack = h.recv(2)
            assert ack is not None and ack[b"type"] == b"keep-alive" and ack[b"seq"] == 0
            ka = h.recv(2)
            assert ka is not None and ka.get(b"type") == b"keep-alive" and ka[b"seq"] == 1, ka
            h.send({b"id": b"r1", b"seq": 1, b"type": b"handoff-start"})
            proceed = h.recv(2)
            assert proceed is not None and proceed[b"type"] == b"handoff-proceed", proceed
            assert h.recv(INTERVAL * 4) is None  # paused: no keep-alive
            h.send({b"id": b"r1", b"seq": 2, b"type": b"keep-alive"})  # resumes
            ka = h.recv(2)
            assert ka is not None and ka[b"type"] == b"keep-alive", ka
            assert ka[b"seq"] == proceed[b"seq"] + 1
    finally:
        h.close()


def test_no_cancel_during_a_handoff_pause(client_app: App, silent_origin: int) -> None:
    """connmgr.md 6, as in server mode: a session that fails while handed off (here its
    stream timeout) tells nobody, not even with a cancel; the new handler would have
    resumed it with its first packet."""
    client_app.client.stream_timeout = 0.5
    h = StreamHandler(client_app.ctx, client_app.base)  # type: ignore[attr-defined]
    try:
        with gevent.Timeout(10):
            h.start({b"id": b"r2", b"seq": 0, b"method": b"GET",
                     b"uri": f"http://127.0.0.1:{silent_origin}/".encode()})
            ack = h.recv(2)
            assert ack is not None and ack[b"type"] == b"keep-alive"
            h.send({b"id": b"r2", b"seq": 1, b"type": b"handoff-start"})
            proceed = h.recv(2)
            assert proceed is not None and proceed[b"type"] == b"handoff-proceed", proceed
            assert h.recv(1.5) is None  # timed out while paused: no error, no cancel
            assert (b"h1", b"r2") not in client_app.client.sessions  # the session ended
    finally:
        h.close()


def test_keepalives_go_on_each_sessions_own_path(client_app: App, silent_origin: int) -> None:
    """connmgr.md 8 #12: one requester, two sessions waiting on a slow origin,
    one with router-resp and one without: every keep-alive of the first comes
    on the ROUTER, of the second on the PUB, each naming only its own session."""
    client_app.client.keepalive_interval = INTERVAL
    h = StreamHandler(client_app.ctx, client_app.base)  # type: ignore[attr-defined]
    h.router.close(0)
    h.router = client_app.ctx.socket(zmq.ROUTER)  # named as the requester: routed to
    h.router.setsockopt(zmq.IDENTITY, h.ident)
    h.router.connect(client_app.base + "-in-stream")  # type: ignore[attr-defined]
    gevent.sleep(0.3)
    uri = f"http://127.0.0.1:{silent_origin}/".encode()
    routed: list[dict] = []
    published: list[dict] = []
    try:
        with gevent.Timeout(10):
            h.start({b"id": b"rr", b"seq": 0, b"method": b"GET", b"uri": uri,
                     b"stream": True, b"router-resp": True})
            h.start({b"id": b"pub", b"seq": 0, b"method": b"GET", b"uri": uri, b"stream": True})
            while len(routed) < 3 or len(published) < 3:  # the ack and two cycles each
                if h.router.poll(100):
                    frames = h.router.recv_multipart()
                    assert frames[:2] == [b"condure", b""], frames
                    routed.append(tnetstring.loads(frames[2][1:]))
                m = h.recv(0.01)
                if m is not None:
                    published.append(m)
    finally:
        h.close()
    for got, rid in ((routed, b"rr"), (published, b"pub")):
        assert [(m[b"type"], m[b"id"], m[b"seq"]) for m in got[:3]] == [
            (b"keep-alive", rid, 0), (b"keep-alive", rid, 1), (b"keep-alive", rid, 2)], got
