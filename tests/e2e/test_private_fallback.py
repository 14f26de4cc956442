"""condure with the public fallbacks of condure.private (CONDURE_PUBLIC_APIS=1):
the ZeroMQ sockets' own send/recv, gevent's own accept, `socket.socket`
instead of `_socket.socket`, no reused connection greenlets. Real requests
through a `python -m condure` subprocess (which inherits the environment)
and a handler on ipc sockets, as in test_http.py."""
from __future__ import annotations

import pytest

from rawhttp import Client, get

CT = (b"Content-Type", b"text/plain")
FORCED = "CONDURE_PUBLIC_APIS is set"


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDURE_PUBLIC_APIS", "1")


def exchange(client: Client, h, path: str) -> None:
    client.send(get(path))
    req = h.recv_request()
    assert req[b"uri"] == f"http://example.com{path}".encode()
    h.respond(req, 200, b"OK", [CT], path.encode())
    assert client.read_response().body == path.encode()


def test_requests_through_the_public_apis(public: None, condure, handler_factory) -> None:
    c = condure()
    h = handler_factory(c.base)
    with Client(c.port) as client:  # keep-alive: two requests on one connection
        exchange(client, h, "/a")
        exchange(client, h, "/b")
    for i in range(3):  # later connections: new greenlets (none is parked for reuse)
        with Client(c.port) as client:
            exchange(client, h, f"/n{i}")
    assert c.log_text().count("[WARN]") == 1
    assert FORCED in c.log_text()


def test_maxconn_through_the_public_accept(public: None, condure, handler_factory) -> None:
    """gevent's accept loop stops at the limit and resumes when a connection ends."""
    c = condure("--stream-maxconn", "1")
    h = handler_factory(c.base)
    first, second = Client(c.port), Client(c.port)
    try:
        exchange(first, h, "/first")
        second.send(get("/second"))
        h.expect_nothing(0.5)  # in the kernel's backlog
        first.close()
        req = h.recv_request(5)
        assert req[b"uri"] == b"http://example.com/second"
        h.respond(req, 200, b"OK", [CT], b"2")
        assert second.read_response().body == b"2"
    finally:
        first.close()
        second.close()


def test_one_warning_with_workers(public: None, condure, handler_factory) -> None:
    """Workers (the parent's proxies, the workers' PUSH sockets) in public
    mode; only the parent reports it."""
    c = condure("--workers", "2")
    h = handler_factory(c.base, wait=False)
    subs = set()
    while len(subs) < 2:  # both workers' subscriptions (condure-0, condure-1)
        assert h.pub.poll(5000), subs
        subs.add(h.pub.recv())
    for i in range(6):
        with Client(c.port) as client:
            client.send(get(f"/w{i}"))
            req = h.recv_request()
            h.send({b"id": req[b"id"], b"code": 200, b"reason": b"OK", b"headers": [],
                    b"body": b"w"}, instance=req[b"from"])
            assert client.read_response().body == b"w"
    assert c.log_text().count(FORCED) == 1


def test_no_warning_on_the_tested_versions(condure) -> None:
    c = condure()
    c.wait_log("started")
    assert "[WARN]" not in c.log_text()
