"""--workers 2 --zclient-connect: the scale-out topology with workers (D15).

The handler binds (PULL on BASE-out, ROUTER on BASE-out-stream, XPUB on
BASE-in, ROUTER on the req spec); each worker connects to it straight, as a
condure of its own named by its `from` (`condure-0`, `condure-1`), and the
parent runs no proxy. So each worker's ROUTER has its own name and requests
carry router-resp again (D27): a handler's answer over its ROUTER to the
request's `from` reaches the worker that sent the request.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import tnetstring
import zmq

from e2e.test_workers import wait_started

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_MS = 10000
WORKERS = {b"condure-0", b"condure-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BoundHandler:
    """A handler that binds, driven by the test itself (blocking calls, bounded)."""

    def __init__(self, base: str, req: str) -> None:
        self.ctx = zmq.Context()
        self.pull = self._sock(zmq.PULL, base + "-out")
        self.router = self._sock(zmq.ROUTER, base + "-out-stream", b"h")
        self.pub = self._sock(zmq.XPUB, base + "-in")
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # a restarted worker's subscription shows
        self.req = self._sock(zmq.ROUTER, req)
        self.subscribed: set[bytes] = set()

    def _sock(self, kind: int, endpoint: str, identity: bytes | None = None) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            s.setsockopt(zmq.IDENTITY, identity)
        s.bind(endpoint)
        return s

    def wait_subscribed(self, names: set[bytes]) -> None:
        """Until each of `names` has subscribed to its `from`."""
        while not names <= self.subscribed:
            self.next_subscription()

    def next_subscription(self) -> None:
        """One (un)subscription: a worker's SUB connected, or its connection ended.
        The ROUTER is polled meanwhile, as a handler's poll loop does: libzmq
        (without ROUTER_HANDOVER) refuses a peer whose name is still taken,
        and only a call on the socket ends the connection of a worker gone."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while not self.pub.poll(50):
            self.router.poll(0)
            assert time.monotonic() < deadline, self.subscribed
        msg = self.pub.recv()
        topic = msg[1:].rstrip(b" ")
        if msg[:1] == b"\x01":
            self.subscribed.add(topic)
        else:
            self.subscribed.discard(topic)

    def request(self) -> dict:
        assert self.pull.poll(WAIT_MS)
        return tnetstring.loads(self.pull.recv()[1:])

    def answer(self, req: dict, routed: bool = False) -> None:
        """200 with the request's `from` as body, over the PUB or the ROUTER."""
        resp = tnetstring.dumps({b"from": b"h", b"id": req[b"id"], b"seq": 0, b"code": 200,
                                 b"reason": b"OK", b"body": req[b"from"]})
        if routed:
            self.router.send_multipart([req[b"from"], b"", b"T" + resp])
        else:
            self.pub.send(req[b"from"] + b" T" + resp)

    def close(self) -> None:
        self.ctx.destroy(0)


@pytest.fixture
def connect2(zdir):
    port, rport = _free_port(), _free_port()
    base, req = f"ipc://{zdir}/client", f"ipc://{zdir}/req"
    h = BoundHandler(base, req)
    logpath = os.path.join(zdir, "log")
    log = open(logpath, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "condure", "--workers", "2", "--zclient-connect",
         "--listen", f"127.0.0.1:{port},stream", "--listen", f"127.0.0.1:{rport},req",
         "--zclient-stream", base, "--zclient-req", req, "--log-level", "3"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        h.wait_subscribed(WORKERS)  # both workers are up and connected
        yield proc, port, rport, h, logpath
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        h.close()


def _get(port: int, out: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    out.append(data)


def _serve_until_both(port: int, h: BoundHandler, routed: bool, want: set[bytes]) -> set[bytes]:
    """Batches of parallel requests (bounded) until each worker of `want` has
    sent one; each is answered to its `from` and the client gets that body."""
    froms: set[bytes] = set()
    for _batch in range(20):
        out: list[bytes] = []
        threads = [threading.Thread(target=_get, args=(port, out)) for _ in range(6)]
        for t in threads:
            t.start()
        for _ in threads:
            req = h.request()
            assert req[b"router-resp"] is True  # each worker has a ROUTER of its own
            froms.add(req[b"from"])
            h.answer(req, routed)
        for t in threads:
            t.join(10)
        assert len(out) == len(threads)
        for data in out:
            assert data.startswith(b"HTTP/1.1 200 OK"), data
            assert data.rsplit(b"\r\n\r\n", 1)[1] in WORKERS
        if want <= froms:
            break
    return froms


@pytest.mark.parametrize("routed", [False, True], ids=["pub", "router"])
def test_both_workers_serve_with_their_own_from(connect2, routed: bool) -> None:
    """Answers over the PUB (by subscription) and over the handler's ROUTER
    (to the worker's ROUTER, named by its `from`) reach the right worker."""
    _proc, port, _rport, h, _log = connect2
    assert _serve_until_both(port, h, routed, WORKERS) == WORKERS


def test_directed_packets_come_from_the_workers_router(connect2) -> None:
    """A packet condure addresses to the handler (here: the cancel of a client
    that leaves mid-response) comes on the handler's ROUTER from the
    worker's own ROUTER, named by its `from`."""
    _proc, port, _rport, h, _log = connect2
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    req = h.request()
    head = tnetstring.dumps({b"from": b"h", b"id": req[b"id"], b"seq": 0, b"code": 200,
                             b"reason": b"OK", b"headers": [], b"body": b"x", b"more": True})
    h.router.send_multipart([req[b"from"], b"", b"T" + head])
    assert c.recv(4096).startswith(b"HTTP/1.1 200 OK")
    c.close()
    while True:
        assert h.router.poll(WAIT_MS)
        frames = h.router.recv_multipart()
        packet = tnetstring.loads(frames[-1][1:])
        if packet.get(b"type") == b"cancel":
            break
    assert frames[0] == req[b"from"]
    assert packet[b"id"] == req[b"id"]


def test_req_mode_replies_reach_the_right_worker(connect2) -> None:
    """Each worker's DEALER connects to the handler's ROUTER: the reply goes
    back on the connection it came from, the envelope as in one process."""
    _proc, _port, rport, h, _log = connect2
    seen: set[bytes] = set()
    for _ in range(40):
        out: list[bytes] = []
        t = threading.Thread(target=_get, args=(rport, out))
        t.start()
        assert h.req.poll(WAIT_MS)
        frames = h.req.recv_multipart()
        assert len(frames) == 3 and frames[1] == b""
        msg = tnetstring.loads(frames[2][1:])
        body = b"worker " + msg[b"id"].split(b"-")[0]
        h.req.send_multipart([frames[0], b"", b"T" + tnetstring.dumps(
            {b"id": msg[b"id"], b"code": 200, b"reason": b"OK", b"body": body})])
        t.join(10)
        assert out and out[0].endswith(body), out
        seen.add(body)
        if len(seen) == 2:
            break
    assert seen == {b"worker 0", b"worker 1"}


def _zmq_threads(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return [n for n in names if n.startswith("ZMQbg")]


def test_parent_runs_no_proxy(connect2) -> None:
    """The parent has no ZeroMQ socket at all: no libzmq thread (a proxy needs
    the context's I/O thread), and the log names the handlers' endpoints
    once, as a single process does."""
    proc, _port, _rport, _h, logpath = connect2
    assert _zmq_threads(proc.pid) == []
    with open(logpath) as f:
        text = f.read()
    assert text.count("zhttp client connect ipc://") == 1
    assert text.count("zhttp client connect req ipc://") == 1


def test_bind_mode_parent_runs_proxies(condure) -> None:
    """The control of the test above: in bind mode the parent proxies, in
    libzmq threads."""
    c = condure("--workers", "2")
    assert _zmq_threads(c.proc.pid)


def test_restarted_worker_reconnects(connect2) -> None:
    """A worker killed is started again and connects again under the same
    name: its subscription comes back, and answers to it over the PUB and
    over the ROUTER reach it."""
    proc, port, _rport, h, logpath = connect2
    wait_started(logpath)  # a worker killed before it reports is a failed start (exit 1)
    with open(logpath) as f:
        pids = [int(line.rsplit("pid ", 1)[1].rstrip(")\n")) for line in f
                if "started (pid" in line]
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    while b"condure-0" in h.subscribed:  # its unsubscription: the connection ended
        h.next_subscription()
    h.wait_subscribed({b"condure-0"})  # the new worker 0
    with open(logpath) as f:
        assert "worker 0 exited" in f.read()
    for routed in (False, True):
        assert _serve_until_both(port, h, routed, {b"condure-0"}) >= {b"condure-0"}
    proc.terminate()
    assert proc.wait(15) == 0
