"""Listeners end to end: req mode, several listeners, Unix sockets, TLS, bad specs.

Every test starts its own `python -m condure` subprocess (never a bare
`condure`), plays the handler with real ZeroMQ sockets over ipc in a short
temporary directory and the client with real sockets on 127.0.0.1 (or
AF_UNIX). References: shared/zhttp/server.md sections 1.2, 2.4, 3.5 and 7;
shared/zhttp/client.md section 12 (req mode on the listen side);
docs/deviations.md D1 (413 for a req-mode body over
--body-buffer-size) and D13 (504 on --req-timeout).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tnetstring
import trustme
import zmq
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from conftest import (REPO_ROOT, START_TIMEOUT, CondureProcess, condure_command,
                      get_free_port, run_cli, stop_process)
from rawhttp import Client, get
from zhttp_handler import Handler, to_bytes

ID_RE = re.compile(rb"\d+-\d+-[0-9a-f]+")
EXT = {b"multi": True}
CT = (b"Content-Type", b"text/plain")
REQ_GET_FIELDS = [b"id", b"ext", b"method", b"uri", b"headers", b"peer-address", b"peer-port"]
REQ_BODY_FIELDS = [b"id", b"ext", b"method", b"uri", b"headers", b"body", b"peer-address",
                   b"peer-port"]
# router-resp: pushpin-connmgr puts it on stream-mode requests only (connmgr.md 1.2, #3)
STREAM_ONLY_FIELDS = (b"from", b"seq", b"credits", b"stream", b"more", b"router-resp")
WS_REFUSAL_BODY = b"WebSockets not supported on req mode interface.\n"
WS_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


# ---------------------------------------------------------------------------
# processes


def wait_started(cp: CondureProcess, timeout: float = START_TIMEOUT) -> None:
    """Wait for the `started` log line (every listener is then bound)."""
    end = time.monotonic() + timeout
    while True:
        text = cp.log_text()
        if "] started" in text:
            return
        if cp.proc.poll() is not None:
            raise AssertionError(f"condure exited with {cp.proc.returncode}:\n{text}")
        if time.monotonic() > end:
            raise AssertionError(f"condure did not start within {timeout} s:\n{text}")
        time.sleep(0.02)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., CondureProcess]]:
    """launch(*args, log_level=3, wait=True) -> a CondureProcess with exactly these
    arguments (the shared `condure` fixture always adds a TCP stream listener).
    Stopped (SIGTERM, then SIGKILL, by PID) at teardown."""
    started: list[CondureProcess] = []

    def start(*args: str, log_level: int = 3, wait: bool = True) -> CondureProcess:
        argv = [f"--log-level={log_level}", *args]
        log_path = tmp_path / f"condure{len(started) + 1}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(condure_command(*argv), cwd=REPO_ROOT,
                                    stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        cp = CondureProcess(proc, 0, "", log_path, argv)
        started.append(cp)
        if wait:
            wait_started(cp)
        return cp

    try:
        yield start
    finally:
        for cp in reversed(started):
            stop_process(cp.proc)


def wait_exit_or_started(cp: CondureProcess, timeout: float = START_TIMEOUT) -> int | None:
    """The exit status if condure exits, None once it has started."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cp.proc.poll() is not None:
            return cp.proc.returncode
        if "] started" in cp.log_text():
            return None
        time.sleep(0.02)
    raise AssertionError(f"condure neither started nor exited:\n{cp.log_text()}")


def err_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[ERR]")]


# ---------------------------------------------------------------------------
# req-mode handler: ROUTER, DEALER or REP connected to condure's DEALER


class ReqHandler:
    """A req-mode handler (client.md 12): ROUTER gets [peer, "", T...], DEALER
    ["", T...], REP [T...]; the reply goes back with the same envelope."""

    def __init__(self, endpoint: str, kind: int = zmq.ROUTER) -> None:
        self.kind = kind
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.connect(endpoint)
        try:
            assert monitor.poll(5000), f"no ZMTP handshake with {endpoint}"
            monitor.recv_multipart()
        finally:
            self.sock.disable_monitor()
            monitor.close(0)
        self.envelopes: dict[bytes, list[bytes]] = {}
        self.last_raw = b""

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    def recv_request(self, timeout: float = 5.0) -> dict:
        if not self.sock.poll(timeout * 1000):
            raise AssertionError(f"no req-mode request within {timeout} s")
        frames = self.sock.recv_multipart()
        if self.kind == zmq.ROUTER:
            assert len(frames) == 3 and frames[1] == b"", frames
            envelope = frames[:2]
        elif self.kind == zmq.DEALER:
            assert len(frames) == 2 and frames[0] == b"", frames
            envelope = frames[:1]
        else:
            assert len(frames) == 1, frames
            envelope = []
        payload = frames[-1]
        assert payload[:1] == b"T", payload
        self.last_raw = payload
        req = tnetstring.loads(payload[1:])
        self.envelopes[req[b"id"]] = envelope
        return req

    def send(self, msg: dict, envelope_of: bytes) -> None:
        """Send a packet exactly as given, with the envelope of request `envelope_of`."""
        payload = b"T" + tnetstring.dumps(to_bytes(msg))
        self.sock.send_multipart(self.envelopes[envelope_of] + [payload])

    def respond(self, req: dict, code: int = 200, reason: bytes = b"OK",
                headers: list | tuple = (), body: bytes = b"", **extra: Any) -> None:
        msg: dict[bytes, Any] = {b"id": req[b"id"], b"code": code, b"reason": reason,
                                 b"headers": [list(h) for h in headers]}
        if body:
            msg[b"body"] = body
        msg.update({k.replace("_", "-").encode(): v for k, v in extra.items()})
        self.send(msg, req[b"id"])

    def expect_nothing(self, seconds: float = 0.3) -> None:
        if self.sock.poll(seconds * 1000):
            raise AssertionError(f"unexpected message: {self.sock.recv_multipart()!r}")


@pytest.fixture
def req_handlers() -> Iterator[Callable[..., ReqHandler]]:
    made: list[ReqHandler] = []

    def make(endpoint: str, kind: int = zmq.ROUTER) -> ReqHandler:
        h = ReqHandler(endpoint, kind)
        made.append(h)
        return h

    try:
        yield make
    finally:
        for h in made:
            h.close()


@pytest.fixture
def req_mode(launch, req_handlers, zdir: str) -> Callable[..., tuple]:
    """req_mode(*extra_args, kind=zmq.ROUTER) -> (process, port, handler) for
    `--listen 127.0.0.1:P,req --zclient-req ipc://ZDIR/req`."""

    def start(*args: str, kind: int = zmq.ROUTER) -> tuple:
        port = get_free_port()
        endpoint = f"ipc://{zdir}/req"
        c = launch("--listen", f"127.0.0.1:{port},req", "--zclient-req", endpoint, *args)
        return c, port, req_handlers(endpoint, kind)

    return start


class SockClient(Client):
    """rawhttp.Client over an already connected socket (AF_UNIX, TLS)."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: example.com\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def chunked(body: bytes, size: int = 400) -> bytes:
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def assert_req_packet_clean(req: dict) -> None:
    for name in STREAM_ONLY_FIELDS:
        assert name not in req, (name, req)


# ---------------------------------------------------------------------------
# 1. req mode


def test_req_request_packet_exact_fields(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(b"GET /path?a=1 HTTP/1.1\r\nHost: example.org:18090\r\nX-A: 1\r\n"
                    b"x-a: 2\r\n\r\n")
        req = h.recv_request()
        assert list(req) == REQ_GET_FIELDS, req
        assert_req_packet_clean(req)
        assert ID_RE.fullmatch(req[b"id"]), req[b"id"]
        assert req[b"ext"] == EXT
        assert req[b"method"] == b"GET"
        assert req[b"uri"] == b"http://example.org:18090/path?a=1"
        assert req[b"headers"] == [[b"Host", b"example.org:18090"], [b"X-A", b"1"],
                                   [b"x-a", b"2"]]
        assert req[b"peer-address"] == b"127.0.0.1"
        assert req[b"peer-port"] == client.local_port
        assert h.last_raw.startswith(b"T") and b"3:ext,15:5:multi,4:true!}" in h.last_raw
        h.respond(req, 200, b"OK", [CT], b"hi\n")
        r = client.read_response()
        assert r.raw == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 3\r\n\r\nhi\n")


@pytest.mark.parametrize("kind", [zmq.REP, zmq.DEALER], ids=["REP", "DEALER"])
def test_req_rep_and_dealer_handlers(req_mode, kind: int) -> None:
    c, port, h = req_mode(kind=kind)
    with Client(port) as client:
        client.send(post("/p", b"ping"))
        req = h.recv_request()
        assert list(req) == REQ_BODY_FIELDS and req[b"body"] == b"ping", req
        h.respond(req, 201, b"Created", [], b"pong")
        r = client.read_response()
        assert r.raw == b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\npong"


def test_req_post_content_length_arrives_whole(req_mode) -> None:
    c, port, h = req_mode()
    body = bytes(range(256)) * 117  # 29952 bytes, several TCP reads
    data = post("/upload", body, b"Content-Type: application/octet-stream\r\n")
    with Client(port) as client:
        for i in range(0, len(data), 7000):
            client.send(data[i:i + 7000])
            time.sleep(0.02)
        req = h.recv_request()
        assert list(req) == REQ_BODY_FIELDS, list(req)
        assert req[b"method"] == b"POST"
        assert req[b"body"] == body
        assert [b"Content-Length", b"29952"] in req[b"headers"]
        h.respond(req, 200, b"OK", [], b"got it")
        assert client.read_response().body == b"got it"


def test_req_post_chunked_arrives_whole_and_dechunked(req_mode) -> None:
    c, port, h = req_mode()
    body = b"hello chunked world " * 100
    with Client(port) as client:
        client.send(b"POST /c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
        encoded = chunked(body, 333)
        for i in range(0, len(encoded), 500):
            client.send(encoded[i:i + 500])
            time.sleep(0.01)
        req = h.recv_request()
        assert list(req) == REQ_BODY_FIELDS, list(req)
        assert req[b"body"] == body
        assert [b"Transfer-Encoding", b"chunked"] in req[b"headers"]
        h.respond(req, 200, b"OK", [], b"ok")
        assert client.read_response().body == b"ok"


def test_req_empty_body_has_no_body_field(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(post("/empty", b""))
        req = h.recv_request()
        assert list(req) == REQ_GET_FIELDS, req
        h.respond(req)
        assert client.read_response().status == 200


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_req_body_exactly_body_buffer_size_is_accepted(req_mode, framing: str) -> None:
    c, port, h = req_mode("--body-buffer-size", "1000")
    body = b"x" * 1000
    with Client(port) as client:
        if framing == "length":
            client.send(post("/b", body))
        else:
            client.send(b"POST /b HTTP/1.1\r\nHost: example.com\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 300))
        req = h.recv_request()
        assert req[b"body"] == body
        h.respond(req, 200, b"OK", [], b"ok")
        assert client.read_response().body == b"ok"


@pytest.mark.parametrize("framing,size", [("length", 1001), ("chunked", 1001),
                                          ("length", 20000)])
def test_req_body_over_body_buffer_size_gets_413_d1(req_mode, framing: str, size: int) -> None:
    c, port, h = req_mode("--body-buffer-size", "1000")
    body = b"y" * size
    with Client(port) as client:
        if framing == "length":
            client.send(post("/big", body))
        else:
            client.send(b"POST /big HTTP/1.1\r\nHost: example.com\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 250))
        r = client.read_response()
        assert r.status == 413, r.raw
        assert r.version == b"HTTP/1.1"
        assert r.header(b"Connection") == b"close", r.raw
        assert client.read_until_close(3) == b""
    h.expect_nothing(0.3)
    assert c.alive()


@pytest.mark.parametrize("size", [1000, 1001])
def test_req_reply_body_over_body_buffer_size_closes_with_nothing(req_mode, size: int) -> None:
    """A handler reply body larger than --body-buffer-size: closed with nothing
    written, as condure 1.10; exactly the size is served."""
    c, port, h = req_mode("--body-buffer-size", "1000")
    with Client(port) as client:
        client.send(get("/reply"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [], b"z" * size)
        if size <= 1000:
            assert client.read_response().body == b"z" * size
        else:
            assert client.read_until_close(3) == b""
    assert c.alive()


def test_req_reply_always_framed_with_content_length(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(get("/frame"))
        req = h.recv_request()
        # more, credits, from, seq and the handler's own Content-Length are all ignored
        h.respond(req, 200, b"OK", [(b"Content-Length", b"999"), (b"X-A", b"1")], b"hello",
                  more=True, credits=100, seq=7, **{"from": b"someone"})
        r = client.read_response()
        assert r.raw == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"
        h.expect_nothing(0.2)  # condure sends no credit or anything else back


def test_req_missing_reason(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(get("/nr"))
        req = h.recv_request()
        h.send({b"id": req[b"id"], b"code": 404, b"body": b"nope"}, req[b"id"])
        r = client.read_response()
        assert r.raw.startswith(b"HTTP/1.1 404 \r\n"), r.raw
        assert r.header(b"Content-Length") == b"4" and r.body == b"nope"


def test_req_refused_replies_get_502_d9_d17(req_mode) -> None:
    """Req mode writes the reply through the same head builder: what stream
    mode refuses (D9, D17) gets the client a 502 here too, with one warning."""
    c, port, h = req_mode()
    refused = [{b"reason": b"NoCode"}, {b"code": 100, b"reason": b"Continue"},
               {b"code": 200, b"headers": [[b"X Bad", b"v"]]},
               {b"code": 200, b"headers": [[b"X-A", b"a\r\nEvil: 1"]]}]
    for fields in refused:
        with Client(port) as client:
            client.send(get("/refused"))
            req = h.recv_request()
            h.send({b"id": req[b"id"], b"body": b"x", **fields}, req[b"id"])
            raw = client.read_until_close()
            assert raw.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), (fields, raw)
            assert b"Evil" not in raw
    log = c.log_text()
    assert log.count("[WARN]") == len(refused) and "Traceback" not in log, log


def test_req_non_data_and_wrong_id_replies_are_skipped(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(get("/skip"))
        req = h.recv_request()
        rid = req[b"id"]
        h.send({b"id": rid, b"type": b"keep-alive"}, rid)
        h.send({b"id": rid, b"type": b"error", b"condition": b"bad-request"}, rid)
        h.send({b"id": rid + b"0", b"code": 500, b"reason": b"Wrong", b"headers": [],
                b"body": b"wrong id"}, rid)
        client.expect_silence(0.4)
        h.respond(req, 200, b"OK", [], b"right")
        r = client.read_response()
        assert (r.status, r.body) == (200, b"right")


@pytest.mark.deadline(15)
def test_req_timeout_gives_504_d13(req_mode) -> None:
    c, port, h = req_mode("--req-timeout", "2")
    with Client(port, timeout=8) as client:
        t0 = time.monotonic()
        client.send(get("/slow"))
        h.recv_request()  # and never answer
        r = client.read_response()
        elapsed = time.monotonic() - t0
        assert r.status == 504 and r.reason == b"Gateway Timeout", r.raw
        assert r.header(b"Connection") == b"close"
        assert 1.5 <= elapsed <= 4.0, elapsed
        assert client.read_until_close(3) == b""
    assert c.alive()


def test_req_keep_alive_after_requests_with_bodies(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        ids = []
        for n in range(3):
            client.send(post(f"/k{n}", b"body%d" % n))
            req = h.recv_request()
            assert (req[b"uri"], req[b"body"]) == (f"http://example.com/k{n}".encode(),
                                                   b"body%d" % n)
            assert req[b"peer-port"] == client.local_port
            ids.append(req[b"id"])
            h.respond(req, 200, b"OK", [], b"n%d" % n)
            r = client.read_response()
            assert r.body == b"n%d" % n and r.header(b"Connection") is None, r.raw
        assert len(set(ids)) == 3 and all(ID_RE.fullmatch(i) for i in ids), ids


def test_req_keep_alive_two_requests_different_ids(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        ids = []
        for n in range(2):
            client.send(get(f"/k{n}"))
            req = h.recv_request()
            assert req[b"uri"] == f"http://example.com/k{n}".encode()
            assert req[b"peer-port"] == client.local_port
            ids.append(req[b"id"])
            h.respond(req, 200, b"OK", [], b"n%d" % n)
            r = client.read_response()
            assert r.body == b"n%d" % n and r.header(b"Connection") is None, r.raw
        assert ids[0] != ids[1] and all(ID_RE.fullmatch(i) for i in ids), ids


def test_req_connection_stays_quiet_after_a_get_response(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(get("/quiet"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [], b"done")
        assert client.read_response().body == b"done"
        client.expect_silence(0.3)  # no unsolicited bytes, no close


def test_req_pipelined_requests_answered_in_order(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(get("/p1") + get("/p2"))
        req1 = h.recv_request()
        assert req1[b"uri"] == b"http://example.com/p1"
        h.respond(req1, 200, b"OK", [], b"one")
        req2 = h.recv_request()
        assert req2[b"uri"] == b"http://example.com/p2"
        h.respond(req2, 200, b"OK", [], b"two")
        assert client.read_response().body == b"one"
        assert client.read_response().body == b"two"


def test_req_connection_close(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(get("/cc", extra=b"Connection: close\r\n"))
        req = h.recv_request()
        assert [b"Connection", b"close"] in req[b"headers"]
        h.respond(req, 200, b"OK", [], b"bye")
        r = client.read_response()
        assert r.raw == b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye"
        assert client.read_until_close(3) == b""


def test_req_http10(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(b"GET /old HTTP/1.0\r\n\r\n")
        req = h.recv_request()
        assert req[b"uri"] == b"http://localhost/old"
        assert req[b"headers"] == []
        h.respond(req, 200, b"OK", [], b"old")
        r = client.read_response()
        assert r.raw.startswith(b"HTTP/1.0 200 OK\r\n"), r.raw
        assert r.header(b"Content-Length") == b"3" and r.body == b"old"
        assert r.header(b"Connection") in (None, b"close"), r.raw
        assert client.read_until_close(3) == b""


def test_req_websocket_upgrade_refused_with_400(req_mode) -> None:
    c, port, h = req_mode()
    with Client(port) as client:
        client.send(WS_UPGRADE)
        r = client.read_response()
        assert r.raw.startswith(b"HTTP/1.1 400 Bad Request\r\n"), r.raw
        assert r.header(b"Content-Type") == b"text/plain"
        assert r.body == WS_REFUSAL_BODY
        assert client.read_until_close(3) == b""
    h.expect_nothing(0.3)
    assert c.alive()


@pytest.mark.deadline(20)
def test_req_maxconn_1_serves_one_connection_at_a_time(req_mode) -> None:
    c, port, h = req_mode("--req-maxconn", "1")
    first = Client(port)
    second = Client(port)  # accepted by the kernel (backlog), not by condure
    try:
        first.send(get("/first"))
        req1 = h.recv_request()
        assert req1[b"uri"] == b"http://example.com/first"
        second.send(get("/second"))
        h.expect_nothing(0.8)
        h.respond(req1, 200, b"OK", [], b"1")
        assert first.read_response().body == b"1"
        h.expect_nothing(0.5)  # the idle keep-alive connection still holds the only slot
        first.close()  # the first connection ends: its slot frees
        req2 = h.recv_request(5)
        assert req2[b"uri"] == b"http://example.com/second"
        h.respond(req2, 200, b"OK", [], b"2")
        assert second.read_response().body == b"2"
    finally:
        first.close()
        second.close()


ACCESS_RE = re.compile(r"\[condure::access\] (peer=.*)$", re.M)


def access_lines(c: CondureProcess, n: int, timeout: float = 5.0) -> list[str]:
    """The `n` access log lines (D21) of `c`, without their prefix; no more."""
    end = time.monotonic() + timeout
    while True:
        lines = ACCESS_RE.findall(c.log_text())
        if len(lines) >= n or time.monotonic() > end:
            assert len(lines) == n, c.log_text()
            return lines
        time.sleep(0.05)


def test_req_access_log_d21(req_mode) -> None:
    c, port, h = req_mode("--access-log")
    with Client(port) as client:
        client.send(post("/p?x=1", b"ping"))
        req = h.recv_request()
        h.respond(req, 201, b"Created", [], b"pong!")
        client.read_response()
        client.send(b"HEAD /h HTTP/1.1\r\nHost: example.com\r\n\r\n")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [], b"body")
        client.read_response(head_request=True)
        client.send(b"GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [(b"X-A", b"a\nb")], b"x")  # refused (D9): ours 502
        assert client.read_response().status == 502
    with Client(port) as client:
        client.send(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        assert client.read_response().status == 400
    lines = access_lines(c, 4)
    fields = [re.sub(r" ms=\d+\.\d ", " ", re.sub(r"^peer=\S+ ", "", line)) for line in lines]
    assert fields == [
        "method=POST uri=http://example.com/p?x=1 status=201 bytes=5 by=handler",
        "method=HEAD uri=http://example.com/h status=200 bytes=0 by=handler",
        "method=GET uri=http://example.com/b status=502 bytes=12 by=condure err=BadHandlerResponse",
        "method=GET uri=http://example.com/ws status=400 bytes=48 by=condure",
    ], lines


def test_req_timeout_access_line_and_handler_warning(req_mode) -> None:
    c, port, h = req_mode("--access-log", "--req-timeout", "1")
    with Client(port) as client:
        client.send(get("/slow"))
        h.recv_request()  # never answered
        assert client.read_response().status == 504
    [line] = access_lines(c, 1)
    assert re.fullmatch(r"peer=127\.0\.0\.1:\d+ method=GET uri=http://example\.com/slow"
                        r" status=504 bytes=16 ms=\d+\.\d by=condure err=Timeout", line), line
    assert re.search(r"^\[WARN\] .* \[condure::connection\] handler timeout: session \S+ got"
                     r" nothing from its handler within 1 s$", c.log_text(), re.M), c.log_text()


# ---------------------------------------------------------------------------
# 2. several listeners in one process


def test_several_listeners_share_handler_sockets(launch, handler_factory, req_handlers,
                                                 zdir: str) -> None:
    a, b, r = get_free_port(), get_free_port(), get_free_port()
    base = f"ipc://{zdir}/client"
    req_ep = f"ipc://{zdir}/req"
    c = launch("--listen", f"127.0.0.1:{a},stream", "--listen", f"127.0.0.1:{b}",
               "--listen", f"127.0.0.1:{r},req", "--zclient-stream", base,
               "--zclient-req", req_ep)
    sh = handler_factory(base)
    rh = req_handlers(req_ep)
    log = c.log_text()
    for port in (a, b, r):
        assert f"listening on 127.0.0.1:{port}" in log, log

    for port, host in ((a, b"a.example:81"), (b, b"b.example")):
        with Client(port) as client:
            client.send(get("/s", host=host))
            req = sh.recv_request()
            assert req[b"stream"] is True and req[b"from"] == b"condure", req
            assert req[b"uri"] == b"http://" + host + b"/s"
            assert req[b"peer-port"] == client.local_port
            sh.respond(req, 200, b"OK", [], b"stream")
            assert client.read_response().body == b"stream"
        rh.expect_nothing(0.1)

    with Client(r) as client:
        client.send(get("/r", host=b"r.example:8080"))
        req = rh.recv_request()
        assert list(req) == REQ_GET_FIELDS, req
        assert req[b"uri"] == b"http://r.example:8080/r"
        rh.respond(req, 200, b"OK", [], b"req")
        assert client.read_response().body == b"req"
    sh.expect_nothing(0.2)


# ---------------------------------------------------------------------------
# 3. Unix sockets


def unix_client(path: str) -> SockClient:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return SockClient(s)


@pytest.fixture
def local_stream(launch, handler_factory, zdir: str) -> Callable[..., tuple]:
    """local_stream(params="") -> (process, path, handler) for `--listen PATH,local...`."""

    def start(params: str = "", path: str | None = None) -> tuple:
        path = path or f"{zdir}/http.sock"
        base = f"ipc://{zdir}/client"
        c = launch("--listen", f"{path},local{params}", "--zclient-stream", base)
        return c, path, handler_factory(base)

    return start


def unix_exchange(path: str, h: Handler, host: bytes = b"x") -> dict:
    with unix_client(path) as client:
        client.send(get("/u", host=host))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"unix\n")
        r = client.read_response()
        assert r.raw == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 5\r\n\r\nunix\n")
        return req


def test_unix_stream_raw_client_has_no_peer_fields(local_stream) -> None:
    c, path, h = local_stream()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert f'listening on "{path}" (pathname)' in c.log_text()
    req = unix_exchange(path, h)
    assert list(req) == [b"from", b"id", b"seq", b"ext", b"method", b"uri", b"headers",
                         b"credits", b"stream", b"router-resp"], req  # router-resp: D27
    assert req[b"uri"] == b"http://x/u"


@needs_curl
def test_unix_stream_curl(local_stream, processes) -> None:
    c, path, h = local_stream()
    curl = processes([CURL, "-sS", "--max-time", "8", "--unix-socket", path, "http://x/curl"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    req = h.recv_request()
    assert req[b"uri"] == b"http://x/curl"
    assert b"peer-address" not in req and b"peer-port" not in req
    h.respond(req, 200, b"OK", [CT], b"via curl\n")
    out, err = curl.communicate(timeout=10)
    assert curl.returncode == 0, err
    assert out == b"via curl\n"


def test_unix_req_mode_has_no_peer_fields(launch, req_handlers, zdir: str) -> None:
    path = f"{zdir}/req.sock"
    endpoint = f"ipc://{zdir}/req"
    launch("--listen", f"{path},local,req", "--zclient-req", endpoint)
    h = req_handlers(endpoint)
    with unix_client(path) as client:
        client.send(get("/ur"))
        req = h.recv_request()
        assert list(req) == [b"id", b"ext", b"method", b"uri", b"headers"], req
        h.respond(req, 200, b"OK", [], b"r")
        assert client.read_response().body == b"r"


def test_unix_stale_socket_file_is_replaced(local_stream, zdir: str) -> None:
    path = f"{zdir}/stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    with pytest.raises(ConnectionRefusedError):
        unix_client(path)
    c, path, h = local_stream(path=path)
    unix_exchange(path, h)


def test_unix_mode_600(local_stream) -> None:
    c, path, h = local_stream(",mode=600")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    unix_exchange(path, h)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@pytest.mark.parametrize("user,group", [("root", "root"), ("nobody", "nogroup")])
def test_unix_user_group(local_stream, user: str, group: str) -> None:
    import grp
    import pwd
    try:
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        pytest.skip(f"no {user}/{group} on this machine")
    c, path, h = local_stream(f",user={user},group={group}")
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (uid, gid)
    unix_exchange(path, h)


def test_unix_regular_file_at_path_is_replaced(launch, handler_factory, zdir: str) -> None:
    """condure deletes whatever file is at a local listener's path first."""
    path = f"{zdir}/plain-file"
    Path(path).write_bytes(b"not a socket\n")
    base = f"ipc://{zdir}/client"
    c = launch("--listen", f"{path},local", "--zclient-stream", base, wait=False)
    status = wait_exit_or_started(c)
    log = c.log_text()
    assert status is None and "Traceback" not in log, log
    unix_exchange(path, handler_factory(base))


@pytest.mark.parametrize("param", ["user=no-such-user-x", "group=no-such-group-x"])
def test_unix_unknown_user_or_group_is_one_line_error(zdir: str, param: str) -> None:
    r = run_cli("--listen", f"{zdir}/s.sock,local,{param}", "--zclient-stream",
                f"ipc://{zdir}/client")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out, out
    errors = err_lines(out)
    assert len(errors) == 1 and "no-such-" in errors[0], out


# ---------------------------------------------------------------------------
# 4. TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A CA and identities NAME.crt (chain) + NAME.key in one directory."""
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("identities")
    for name, identity in (("localhost", "localhost"), ("example.com", "example.com"),
                           ("_.example.org", "*.example.org")):
        cert = ca.issue_cert(identity, common_name=identity)
        (d / f"{name}.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
        (d / f"{name}.key").write_bytes(cert.private_key_pem.bytes())
    ca_path = d.parent / f"{d.name}-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return SimpleNamespace(ca=ca, dir=str(d), ca_path=str(ca_path))


@pytest.fixture
def tls_server(launch, handler_factory, pki, zdir: str) -> SimpleNamespace:
    """One process: a TLS listener with default-cert=localhost, a TLS listener
    without a default cert, and a plain listener, sharing one handler."""
    port, nodefault, plain = get_free_port(), get_free_port(), get_free_port()
    base = f"ipc://{zdir}/client"
    c = launch("--listen", f"127.0.0.1:{port},tls,default-cert=localhost",
               "--listen", f"127.0.0.1:{nodefault},stream,tls",
               "--listen", f"127.0.0.1:{plain},stream",
               "--tls-identities-dir", pki.dir, "--zclient-stream", base)
    return SimpleNamespace(c=c, port=port, nodefault=nodefault, plain=plain,
                           h=handler_factory(base))


def client_context(pki: SimpleNamespace, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pki.ca.configure_trust(ctx)
    ctx.check_hostname = check_hostname  # verification of the chain stays on
    return ctx


def tls_connect(port: int, ctx: ssl.SSLContext, server_hostname: str | None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def cert_names(tls: ssl.SSLSocket) -> tuple[set[str], set[str]]:
    """(subject commonNames, DNS subjectAltNames) of the server certificate."""
    cert = tls.getpeercert()
    assert cert, "no verified peer certificate"
    cns = {v for rdn in cert["subject"] for k, v in rdn if k == "commonName"}
    sans = {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}
    return cns, sans


def tls_exchange(tls: ssl.SSLSocket, h: Handler, host: bytes, path: str = "/t") -> dict:
    client = SockClient(tls)
    client.send(get(path, host=host))
    req = h.recv_request()
    h.respond(req, 200, b"OK", [CT], b"secure\n")
    r = client.read_response()
    assert (r.status, r.body) == (200, b"secure\n"), r.raw
    return req


@pytest.mark.parametrize("sni,expected", [
    ("example.com", "example.com"),
    ("a.example.org", "*.example.org"),
    ("localhost", "localhost"),
], ids=["exact", "wildcard", "localhost"])
def test_tls_identity_by_sni(tls_server, pki, sni: str, expected: str) -> None:
    s = tls_server
    with tls_connect(s.port, client_context(pki), sni) as tls:  # hostname verified too
        assert cert_names(tls) == ({expected}, {expected})
        req = tls_exchange(tls, s.h, sni.encode() + b":%d" % s.port)
        assert req[b"uri"] == b"https://%s:%d/t" % (sni.encode(), s.port)
        assert req[b"peer-address"] == b"127.0.0.1"


@pytest.mark.parametrize("sni", [None, "unknown.test", "b.a.example.org"],
                         ids=["no-sni", "unknown-sni", "two-levels-below-wildcard"])
def test_tls_default_cert(tls_server, pki, sni: str | None) -> None:
    s = tls_server
    with tls_connect(s.port, client_context(pki, check_hostname=False), sni) as tls:
        assert cert_names(tls) == ({"localhost"}, {"localhost"})
        req = tls_exchange(tls, s.h, b"whatever.example")
        assert req[b"uri"] == b"https://whatever.example/t"


@pytest.mark.parametrize("sni", [None, "unknown.test"], ids=["no-sni", "unknown-sni"])
def test_tls_without_default_cert_handshake_fails_cleanly(tls_server, pki,
                                                          sni: str | None) -> None:
    s = tls_server
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(s.nodefault, client_context(pki, check_hostname=False), sni).close()
    s.h.expect_nothing(0.2)
    assert s.c.alive()
    # a known name still works on that listener, and the process is fine
    with tls_connect(s.nodefault, client_context(pki), "example.com") as tls:
        assert cert_names(tls)[1] == {"example.com"}
        tls_exchange(tls, s.h, b"example.com")
    assert "Traceback" not in s.c.log_text()


@pytest.mark.parametrize("sni,looked_for", [
    ("Unknown.Test", ["unknown.test.crt", "_.test.crt"]),
    ("nodots", ["nodots.crt"]),
    (None, None),
], ids=["two-names", "one-name", "no-sni"])
def test_tls_no_certificate_names_the_files(tls_server, pki, sni: str | None,
                                            looked_for: list[str] | None) -> None:
    s = tls_server
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(s.nodefault, client_context(pki, check_hostname=False), sni).close()
    log = s.c.wait_log("no tls certificate")
    if looked_for is None:
        expected = ("no tls certificate for a client without server name (SNI): looked for"
                    " nothing; the listener has no default-cert")
    else:
        files = ", ".join(os.path.join(pki.dir, name) for name in looked_for)
        expected = (f'no tls certificate for server name "{sni}": looked for {files}'
                    " (each with its .key); the listener has no default-cert")
    assert re.search(rf"^\[WARN\] .* \[condure::tls\] {re.escape(expected)}$", log, re.M), log


def test_tls_missing_default_cert_is_named(launch, pki, tmp_path: Path, zdir: str) -> None:
    port = get_free_port()
    c = launch("--listen", f"127.0.0.1:{port},tls,default-cert=gone",
               "--tls-identities-dir", pki.dir, "--zclient-stream", f"ipc://{zdir}/client")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(port, client_context(pki, check_hostname=False), "x.test").close()
    d = pki.dir
    c.wait_log(f'no tls certificate for server name "x.test": looked for {d}/x.test.crt,'
               f" {d}/_.test.crt, default-cert {d}/gone.crt (each with its .key)\n")


def test_tls_server_name_is_not_a_path(launch, pki, tmp_path: Path, zdir: str) -> None:
    """D24: a server name that is not a host name (`../outside`) looks up no file,
    so an identity outside the directory is never served; the default cert is."""
    ids = tmp_path / "ids"
    ids.mkdir()
    for suffix in (".crt", ".key"):
        shutil.copy(os.path.join(pki.dir, "localhost" + suffix), ids / ("localhost" + suffix))
        shutil.copy(os.path.join(pki.dir, "example.com" + suffix), tmp_path / ("outside" + suffix))
        shutil.copy(os.path.join(pki.dir, "example.com" + suffix), ids / ("in" + suffix))
    port = get_free_port()
    c = launch("--listen", f"127.0.0.1:{port},tls,default-cert=localhost",
               "--tls-identities-dir", str(ids), "--zclient-stream", f"ipc://{zdir}/client")
    for name in ("../outside", "in/../../outside", "./in"):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                              "-servername", name, "-brief"],
                             input=b"", capture_output=True, timeout=10)
        text = (out.stdout + out.stderr).decode(errors="replace")
        assert re.search(r"CN ?= ?localhost", text), (name, text)
        assert "example.com" not in text, (name, text)
    # a host name still finds its own file
    with tls_connect(port, client_context(pki, check_hostname=False), "in") as tls:
        assert cert_names(tls) == ({"example.com"}, {"example.com"})
    assert c.alive()


def test_tls_no_certificate_warning_is_rate_limited(tls_server, pki) -> None:
    s = tls_server
    for _ in range(10):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls_connect(s.nodefault, client_context(pki, check_hostname=False),
                        "unknown.test").close()
    time.sleep(0.2)
    lines = [line for line in s.c.log_text().splitlines() if "no tls certificate" in line]
    assert 1 <= len(lines) <= 3, lines  # one a second, the rest counted
    assert s.c.alive()


def test_tls_and_plain_listener_side_by_side(tls_server) -> None:
    s = tls_server
    with Client(s.plain) as client:
        client.send(get("/plain"))
        req = s.h.recv_request()
        assert req[b"uri"] == b"http://example.com/plain"
        s.h.respond(req, 200, b"OK", [], b"p")
        assert client.read_response().body == b"p"


@needs_curl
def test_tls_curl_insecure_by_ip(tls_server, processes) -> None:
    s = tls_server
    curl = processes([CURL, "-sS", "-k", "--max-time", "8", f"https://127.0.0.1:{s.port}/k"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    req = s.h.recv_request()
    assert req[b"uri"] == b"https://127.0.0.1:%d/k" % s.port
    s.h.respond(req, 200, b"OK", [CT], b"curl -k\n")
    out, err = curl.communicate(timeout=10)
    assert curl.returncode == 0, err
    assert out == b"curl -k\n"


@needs_curl
def test_tls_curl_verified_with_ca(tls_server, pki, processes) -> None:
    s = tls_server
    curl = processes([CURL, "-sS", "--max-time", "8", "--cacert", pki.ca_path,
                      "--resolve", f"localhost:{s.port}:127.0.0.1",
                      f"https://localhost:{s.port}/v"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    req = s.h.recv_request()
    assert req[b"uri"] == b"https://localhost:%d/v" % s.port
    s.h.respond(req, 200, b"OK", [CT], b"verified\n")
    out, err = curl.communicate(timeout=10)
    assert curl.returncode == 0, err
    assert out == b"verified\n"


def ws_events(tls: ssl.SSLSocket, ws: WSConnection, want: type) -> Any:
    """Read until an event of type `want` arrives; return it."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        for event in ws.events():
            if isinstance(event, want):
                return event
        data = tls.recv(65536)
        assert data, "connection closed"
        ws.receive_data(data)
    raise AssertionError(f"no {want.__name__} within 5 s")


def recv_data(h: Handler) -> dict:
    """The next data packet on the ROUTER, skipping credits."""
    while True:
        p = h.recv()
        if p.get(b"type") != b"credit":
            assert b"type" not in p, p
            return p


def test_tls_websocket_wss(tls_server, pki) -> None:
    s = tls_server
    with tls_connect(s.port, client_context(pki), "example.com") as tls:
        ws = WSConnection(ConnectionType.CLIENT)
        tls.sendall(ws.send(Request(host=f"example.com:{s.port}", target="/chat")))
        req = s.h.recv_request()
        assert req[b"uri"] == b"wss://example.com:%d/chat" % s.port
        assert b"stream" not in req
        s.h.respond(req, 101, b"Switching Protocols", [])
        ws_events(tls, ws, AcceptConnection)
        tls.sendall(ws.send(TextMessage(data="hello over tls")))
        p = recv_data(s.h)
        assert (p[b"content-type"], p[b"body"]) == (b"text", b"hello over tls"), p
        s.h.body(req, b"hello back")
        msg = ws_events(tls, ws, TextMessage)
        assert msg.data == "hello back"


def client_hello(pki: SimpleNamespace) -> bytes:
    """The bytes of a real ClientHello for example.com."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="example.com")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends before closing; fails if it does not close."""
    sock.settimeout(0.2)
    got = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return got
        if not data:
            return got
        got += data
    raise AssertionError(f"not closed within {seconds} s (got {got!r})")


@pytest.mark.deadline(20)
def test_tls_handshake_failures_do_not_affect_established_connection(tls_server, pki) -> None:
    s = tls_server
    with tls_connect(s.port, client_context(pki), "example.com") as tls:
        client = SockClient(tls)
        client.send(get("/pending"))
        pending = s.h.recv_request()  # in flight while the failures happen

        # plain HTTP bytes on the TLS port: closed, never answered in plain text
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
            raw.sendall(get("/plain"))
            assert not closed_within(raw, 3).startswith(b"HTTP/")
        # a client that closes in the middle of its ClientHello
        hello = client_hello(pki)
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
            raw.sendall(hello[:len(hello) // 2])
        # a client that closes right after the server's first flight
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
            raw.sendall(hello)
            raw.settimeout(3)
            assert raw.recv(5)[:1] == b"\x16"  # a handshake record came back
        # garbage that is not TLS at all
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as raw:
            raw.sendall(b"\x00" * 64)
            closed_within(raw, 3)

        s.h.expect_nothing(0.2)
        s.h.respond(pending, 200, b"OK", [], b"still here")
        assert client.read_response().body == b"still here"
        tls_exchange(tls, s.h, b"example.com", "/again")  # keep-alive goes on
    assert s.c.alive()
    with tls_connect(s.port, client_context(pki), "a.example.org") as tls:
        tls_exchange(tls, s.h, b"a.example.org")
    assert "Traceback" not in s.c.log_text()


# ---------------------------------------------------------------------------
# 5. bad listen specs, port in use


@pytest.mark.parametrize("spec,message", [
    ("8000,bogus", "failed to parse listen: invalid param: bogus"),
    ("127.0.0.1:notaport", "failed to parse listen: invalid port notaport"),
    ("999999", "failed to parse listen: invalid port 999999"),
])
def test_bad_listen_spec_exits_1_with_one_line(zdir: str, spec: str, message: str) -> None:
    r = run_cli("--listen", spec, "--zclient-stream", f"ipc://{zdir}/client")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[ERR]"), out
    assert lines[0].endswith(message), out
    assert os.listdir(zdir) == [], "sockets were bound"


def test_second_process_on_same_req_port_exits_1(launch, req_handlers, zdir: str) -> None:
    port = get_free_port()
    endpoint = f"ipc://{zdir}/req"
    first = launch("--listen", f"127.0.0.1:{port},req", "--zclient-req", endpoint)
    h = req_handlers(endpoint)
    r = run_cli("--listen", f"127.0.0.1:{port},req", "--zclient-req", f"ipc://{zdir}/req2")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out, out
    errors = err_lines(out)
    assert len(errors) == 1, out
    assert f"failed to bind 127.0.0.1:{port}" in errors[0], errors
    assert first.alive()
    with Client(port) as client:
        client.send(get("/first"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [], b"first")
        assert client.read_response().body == b"first"
