"""The WSGI gateway (`python -m condure.wsgi`, issue 18) with Flask applications
(tests/wsgi_apps.py) behind a real condure: GET, POST with a large body,
streamed responses, a slow client, the environ, errors, and a gateway
restarted under load while another one keeps serving.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO_ROOT
from rawhttp import Client, get


class Gateway:
    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def gateway(processes, tmp_path: Path) -> Callable[..., Gateway]:
    count = [0]

    def start(base: str, app: str = "wsgi_apps:app", *args: str) -> Gateway:
        count[0] += 1
        log_path = tmp_path / f"gateway{count[0]}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with open(log_path, "wb") as out:
            proc = processes([sys.executable, "-m", "condure.wsgi", app, "--chdir", "tests",
                              "--zclient-stream", base, *args],
                             env=env, stdout=out, stderr=subprocess.STDOUT)
        gw = Gateway(proc, log_path)
        end = time.monotonic() + 10
        while "connected to" not in gw.text():
            assert proc.poll() is None, gw.text()
            assert time.monotonic() < end, gw.text()
            time.sleep(0.05)
        return gw
    return start


def test_get(target, gateway) -> None:
    t = target()
    gateway(t.base)
    with Client(t.port) as c:
        for _ in range(2):
            c.send(get("/", host=b"localhost"))
            r = c.read_response()
            assert r.status == 200 and r.body == b"hello world\n"
            assert r.header(b"Content-Length") == b"12"


@pytest.mark.deadline(60)
def test_post_large_body(target, gateway) -> None:
    t = target()
    gateway(t.base)
    body = os.urandom(5_000_000)
    with Client(t.port, timeout=30) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream"
               b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        r = c.read_response()
        assert r.status == 200, r.raw[:300]
        assert json.loads(r.body) == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        c.send(get("/", host=b"localhost"))  # the connection persists
        assert c.read_response().body == b"hello world\n"


def test_chunked_post(target, gateway) -> None:
    t = target()
    gateway(t.base)
    with Client(t.port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.read_response()
        assert json.loads(r.body) == {"bytes": 11,
                                      "sha256": hashlib.sha256(b"hello world").hexdigest()}


def test_streamed_response(target, gateway) -> None:
    t = target()
    gateway(t.base)
    with Client(t.port, timeout=20) as c:
        c.send(get("/stream?n=100&size=20000", host=b"localhost"))
        r = c.read_response()
        assert r.status == 200 and r.header(b"Transfer-Encoding") == b"chunked"
        assert r.body == b"".join(bytes([65 + i % 26]) * 20000 for i in range(100))
        c.send(get("/sized", host=b"localhost"))  # the application's own length
        r = c.read_response()
        assert r.header(b"Content-Length") == b"100" and r.body == b"0123456789" * 10


@pytest.mark.deadline(60)
def test_slow_client(target, gateway) -> None:
    """A client reading 1 MB slowly gets all of it; meanwhile the gateway
    goes on serving other clients (its greenlet waits for credits)."""
    t = target()
    gateway(t.base)
    want = b"".join(bytes([65 + i % 26]) * 10000 for i in range(100))
    with socket.create_connection(("127.0.0.1", t.port), timeout=20) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.sendall(get("/stream?n=100&size=10000", host=b"localhost"))
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 OK")
        with Client(t.port) as other:  # not held up by the slow one
            other.send(get("/", host=b"localhost"))
            assert other.read_response().body == b"hello world\n"
        got = bytearray(first)
        reads = 0
        while not got.endswith(b"0\r\n\r\n"):
            data = s.recv(8192)
            assert data, "closed early"
            got += data
            reads += 1
            if reads < 30:
                time.sleep(0.02)
    chunked = bytes(got).partition(b"\r\n\r\n")[2]
    body = bytearray()
    while True:
        size_line, _, rest = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        chunked = rest[size + 2:]
    assert bytes(body) == want


def test_environ(target, gateway) -> None:
    t = target()
    gateway(t.base)
    with Client(t.port) as c:
        c.send(b"POST /env?a=1&b=%20 HTTP/1.1\r\nHost: example.org:8443\r\nX-Test: yes\r\n"
               b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi")
        env = json.loads(c.read_response().body)
    assert env == {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/env",
                   "QUERY_STRING": "a=1&b=%20", "SERVER_NAME": "example.org",
                   "SERVER_PORT": "8443", "SERVER_PROTOCOL": "HTTP/1.1",
                   "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "text/plain",
                   "CONTENT_LENGTH": "2", "HTTP_X_TEST": "yes", "wsgi.url_scheme": "http"}


def test_errors_and_bare_app(condure, gateway) -> None:
    c = condure()
    gw = gateway(c.base, "wsgi_apps:bare")
    with Client(c.port) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 8\r\n\r\nab\ncd\nef")
        r = client.read_response()
        assert r.status == 201 and r.body == b"lines=3\nlast=ef"
    assert "bare app says hi" in gw.text()


def test_application_error_is_a_500(condure, gateway) -> None:
    c = condure()
    gw = gateway(c.base)
    with Client(c.port) as client:
        client.send(get("/fail", host=b"localhost"))
        assert client.read_response().status == 500
    assert "failing on purpose" in gw.text()


def test_websocket_is_refused(condure, gateway) -> None:
    c = condure()
    gateway(c.base)
    with Client(c.port) as client:
        client.send(get("/", host=b"localhost", extra=b"Upgrade: websocket\r\nConnection: Upgrade"
                        b"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
        assert client.read_response().status == 400


CLIENTS = 6
REQUESTS = 120
CLIENT_TIMEOUT = 3.0


@pytest.mark.deadline(90)
def test_restart_under_load(target, gateway) -> None:
    """Two gateways share one condure; one gets SIGTERM in the middle of a
    load of CLIENTS keep-alive connections. Precisely:

    * the stopped gateway finishes every request it has taken and exits 0
      by itself;
    * a request fails only if no gateway ever took it (each gateway logs
      every request it takes): one that condure had pushed towards the
      stopping gateway's socket but the gateway had not read when it
      disconnected, since libzmq discards what a socket has not read then.
      That is at most one per connection (the client waits for it), and
      such a failure is a timeout with no response, after which the client
      opens a new connection;
    * every other request completes, on connections that go on through the
      restart. A SIGKILL instead would fail this test: the requests the
      gateway had taken and not answered would be lost too.
    """
    t = target()
    survivor = gateway(t.base)
    victim = gateway(t.base)
    results: list[dict] = [{"ok": 0, "lost": [], "reconnects": 0} for _ in range(CLIENTS)]
    started = threading.Barrier(CLIENTS + 1)

    def client(i: int) -> None:
        res = results[i]
        conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=CLIENT_TIMEOUT)
        started.wait()
        for n in range(REQUESTS):
            token = f"{i}.{n}"
            try:
                conn.request("GET", f"/slowish?t={token}")
                r = conn.getresponse()
                assert r.status == 200 and r.read() == b"done"
                res["ok"] += 1
            except (TimeoutError, socket.timeout):
                res["lost"].append(token)
                conn.close()  # the request went nowhere: a new connection
                res["reconnects"] += 1
                conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=CLIENT_TIMEOUT)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for th in threads:
        th.start()
    started.wait()
    time.sleep(1.0)  # both gateways busy
    victim.proc.send_signal(signal.SIGTERM)
    assert victim.proc.wait(30) == 0, victim.text()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    log = victim.text()
    assert "stopping: finishing" in log, log
    took = set()
    for gw in (survivor, victim):
        took.update(line.rpartition("took ")[2] for line in gw.text().splitlines()
                    if " took " in line)
    lost = [token for r in results for token in r["lost"]]
    assert not took.intersection(lost), (lost, "taken by a gateway but never answered")
    assert all(len(r["lost"]) <= 1 for r in results), results
    assert sum(r["ok"] for r in results) + len(lost) == CLIENTS * REQUESTS
    assert len(took) == CLIENTS * REQUESTS - len(lost)


@pytest.mark.deadline(90)
def test_rolling_restart_with_workers_loses_nothing(target, gateway) -> None:
    """--workers 2: the parent holds condure's PULL and hands a request only to
    a worker that asked for one; a stopping worker gives its credits back
    and serves what was already sent to it. SIGHUP mid-load restarts both
    workers: every request completes on its own connection, and both
    generations served some."""
    t = target()
    parent = gateway(t.base, "wsgi_apps:app", "--workers", "2")
    end = time.monotonic() + 10
    while parent.text().count("connected to") < 2:  # both workers attached
        assert time.monotonic() < end, parent.text()
        time.sleep(0.05)
    results: list[dict] = [{"ok": 0, "errors": []} for _ in range(CLIENTS)]
    started = threading.Barrier(CLIENTS + 1)

    def client(i: int) -> None:
        res = results[i]
        conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=10)
        started.wait()
        for n in range(REQUESTS):
            try:
                conn.request("GET", f"/slowish?t={i}.{n}")
                r = conn.getresponse()
                assert r.status == 200 and r.read() == b"done"
                res["ok"] += 1
            except (OSError, http.client.HTTPException) as e:
                res["errors"].append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", t.port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for th in threads:
        th.start()
    started.wait()
    time.sleep(1.0)
    parent.proc.send_signal(signal.SIGHUP)
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    assert [r["errors"] for r in results] == [[]] * CLIENTS
    assert sum(r["ok"] for r in results) == CLIENTS * REQUESTS
    log = parent.text()
    assert "restarting workers" in log and log.count("exited with 0") == 2, log
    workers = {line.split("condure-handler.")[1].split(".")[0] for line in log.splitlines()
               if "connected to" in line}
    assert len(workers) == 4, log  # two generations
    parent.proc.send_signal(signal.SIGTERM)
    assert parent.proc.wait(30) == 0, parent.text()


def test_a_worker_that_dies_is_replaced(condure, gateway) -> None:
    """A worker killed outright loses only what it had; the parent forgets its
    credits, the next requests go to the other one, and a new worker starts."""
    c = condure()
    parent = gateway(c.base, "wsgi_apps:app", "--workers", "2")
    end = time.monotonic() + 10
    while parent.text().count("connected to") < 2:
        assert time.monotonic() < end, parent.text()
        time.sleep(0.05)
    pids = [int(line.split("condure-handler.")[1].split(".")[0])
            for line in parent.text().splitlines() if "connected to" in line]
    os.kill(pids[0], signal.SIGKILL)  # a worker this test's parent started
    end = time.monotonic() + 10
    while f"worker {pids[0]} exited" not in parent.text():  # noticed within its 100 ms poll
        assert time.monotonic() < end, parent.text()
        time.sleep(0.05)
    with Client(c.port, timeout=5) as client:
        for _ in range(20):
            client.send(get("/pid", host=b"localhost"))
            r = client.read_response()
            assert r.status == 200 and int(r.body) != pids[0]
    end = time.monotonic() + 10
    while parent.text().count("connected to") < 3:  # the replacement
        assert time.monotonic() < end, parent.text()
        time.sleep(0.05)


def test_req_mode_gateway(target_kind_req, gateway) -> None:
    """--zclient-req: the gateway on condure's req interface (whole body in,
    one response out, condure's Content-Length)."""
    port, spec = target_kind_req
    gateway("ipc://unused", "wsgi_apps:app", "--zclient-req", spec)
    end = time.monotonic() + 10
    while True:  # the ROUTER connects in the background: retry until it has
        try:
            with Client(port, timeout=2) as c:
                c.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
                r = c.read_response()
                break
        except (TimeoutError, socket.timeout, AssertionError):
            assert time.monotonic() < end
    assert json.loads(r.body) == {"bytes": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
