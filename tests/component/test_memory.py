"""In-process: what a finished connection leaves behind.

A connection's objects must be freed by reference counting as it ends. A
reference cycle on the request path (for example the parser and llhttp
holding each other) leaves them to the cyclic collector instead: memory
then grows between collections and every collection gets slower.
"""
from __future__ import annotations

import gc

import gevent
import gevent.socket as gsocket
import pytest

from greenhandler import GreenHandler

REQUEST = b"GET / HTTP/1.1\r\nHost: a\r\n%s\r\n"


def _serve(h: GreenHandler, n: int) -> None:
    for _ in range(n):
        req = h.request()
        h.send({b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK", b"body": b"hi"})


def _read_response(c: gsocket.socket) -> bytes:
    data = b""
    while not data.endswith(b"hi"):
        chunk = c.recv(4096)
        assert chunk, data
        data += chunk
    return data


def _ours(objs: list) -> list:
    """The garbage that belongs to condure (or to the parsers it made)."""
    return [o for o in objs
            if type(o).__module__.startswith(("condure", "httptools", "h11"))]


@pytest.mark.parametrize("app", [{"http_parser": "httptools"}, {"http_parser": "h11"}],
                         indirect=True, ids=["httptools", "h11"])
def test_finished_connections_leave_no_cycles(app) -> None:
    h = GreenHandler(app.ctx, app.base, b"h1")
    answering = gevent.spawn(_serve, h, 30)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with gevent.Timeout(10):
            for _ in range(10):  # a connection per request
                c = gsocket.create_connection(("127.0.0.1", app.port))
                c.sendall(REQUEST % b"Connection: close\r\n")
                _read_response(c)
                assert c.recv(4096) == b""
                c.close()
            c = gsocket.create_connection(("127.0.0.1", app.port))
            for _ in range(20):  # keep-alive requests on one connection
                c.sendall(REQUEST % b"")
                _read_response(c)
            c.close()
            answering.join()
            gevent.sleep(0.2)  # let the server side of the last connection end
        gc.collect()
        leftovers = _ours(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        h.close()
    assert leftovers == []


# CPython 3.11 keeps an instance's attributes in a compact array with keys
# shared by all instances of the class, as long as there are at most 30 of
# them; past that each instance gets a dict of its own, and every attribute
# access on a connection takes a slower path (measured: 31 attributes cost
# 1.5% more instructions per keep-alive request than 29).
SHARED_KEYS_MAX = 30


@pytest.mark.parametrize("app", [{"http_parser": "httptools"}, {"http_parser": "h11"}],
                         indirect=True, ids=["httptools", "h11"])
def test_a_busy_connection_keeps_its_attributes_shared(app) -> None:
    h = GreenHandler(app.ctx, app.base, b"h1")
    answering = gevent.spawn(_serve, h, 3)
    try:
        with gevent.Timeout(10):
            c = gsocket.create_connection(("127.0.0.1", app.port))
            for _ in range(3):  # enough for every per-request attribute to be set
                c.sendall(REQUEST % b"")
                _read_response(c)
            (conn,) = app.server.connections
            attributes = sorted(vars(conn))
            c.close()
    finally:
        answering.kill()
        h.close()
    assert len(attributes) <= SHARED_KEYS_MAX, attributes
