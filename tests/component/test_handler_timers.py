"""condure.handler's timers against the real App in this process (issue 18):
condure's 60 s session timer and 45 s keep-alives are shortened on the App,
the library's keep-alive interval, sweep and expiry on its modules; the
handler runs in the same gevent hub on the App's zmq.green context."""
from __future__ import annotations

import gevent
import gevent.socket as gsocket
import pytest

import condure.handler.session as hsession
import condure.handler.sockets as hsockets
from condure.handler import Handler, SessionLost


@pytest.fixture
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hsession, "KEEPALIVE_INTERVAL", 0.3)
    monkeypatch.setattr(hsockets, "SWEEP_INTERVAL", 0.05)


def serve(app, fn) -> Handler:  # type: ignore[no-untyped-def]
    h = Handler(fn, app.base, context=app.ctx, identity=b"lib-handler")
    with gevent.Timeout(5):
        h.start()
    return h


def read_response(c: gsocket.socket) -> bytes:
    """Until the body `ok` (or the connection closes)."""
    data = b""
    while not data.endswith(b"ok") and (chunk := c.recv(4096)):
        data += chunk
    return data


def test_library_keepalives_keep_a_slow_answer_alive(app, fast_timers) -> None:
    """The application takes 2 s, twice condure's (shortened) session timer:
    the library's keep-alives keep the session, and the answer arrives."""
    app.server.handler_timeout = 1.0

    def slow(req) -> None:  # type: ignore[no-untyped-def]
        gevent.sleep(2.0)
        req.respond(200, body=b"ok")
    h = serve(app, slow)
    try:
        with gevent.Timeout(10):
            c = gsocket.create_connection(("127.0.0.1", app.port))
            c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert read_response(c) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            c.close()
    finally:
        h.stop(1)


def test_condures_batched_keepalives_are_accepted(app, fast_timers) -> None:
    """condure's keep-alives (multi-id, with their own seq) go through the
    library's seq check while three responses wait: none breaks."""
    app.server.keepalive_interval = 0.2
    outcomes: list[str] = []

    def waiting(req) -> None:  # type: ignore[no-untyped-def]
        req.start(200, headers=[("Content-Type", "text/plain")])
        gevent.sleep(1.0)  # several keep-alives from condure meanwhile
        req.end(b"ok")
        outcomes.append("done")
    h = serve(app, waiting)
    try:
        with gevent.Timeout(10):
            clients = [gsocket.create_connection(("127.0.0.1", app.port)) for _ in range(3)]
            for c in clients:
                c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            for c in clients:
                data = b""
                while not data.endswith(b"0\r\n\r\n"):
                    chunk = c.recv(4096)
                    assert chunk, data
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200 OK") and b"2\r\nok\r\n" in data
                c.close()
    finally:
        h.stop(1)
    assert outcomes == ["done"] * 3


def test_a_session_condure_forgot_expires(app, fast_timers, monkeypatch) -> None:
    """condure silent past the expiry (a restarted condure would be): the
    request's greenlet gets SessionLost."""
    monkeypatch.setattr(hsession, "EXPIRY", 0.5)
    seen: list[BaseException] = []

    def waiting(req) -> None:  # type: ignore[no-untyped-def]
        req.start(200)
        try:
            req.ended.wait(5)
            req.write(b"late")
        except SessionLost as e:
            seen.append(e)
    h = serve(app, waiting)
    try:
        with gevent.Timeout(10):
            c = gsocket.create_connection(("127.0.0.1", app.port))
            c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            while not seen:
                gevent.sleep(0.05)
            c.close()
    finally:
        h.stop(1)
    assert "silent" in str(seen[0])
