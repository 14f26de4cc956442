"""--workers N: a parent with libzmq proxies in front of N worker processes (D15)."""
from __future__ import annotations

import errno
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

from h2client import H2Client
from zhttp_handler import nested_lists

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workers2(zdir):
    port, rport = _free_port(), _free_port()
    base, req = f"ipc://{zdir}/client", f"ipc://{zdir}/req"
    log = open(os.path.join(zdir, "log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "condure", "--workers", "2",
         "--listen", f"127.0.0.1:{port},stream", "--listen", f"127.0.0.1:{rport},req",
         "--zclient-stream", base, "--zclient-req", req, "--log-level", "3"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield proc, port, rport, base, req, os.path.join(zdir, "log")
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


def _get(port: int, path: str = "/") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    return data


class StreamHandler:
    """Answers every request with its `from` in the body, for `count` requests."""

    def __init__(self, base: str) -> None:
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.connect(base + "-out")
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.connect(base + "-in")
        self.pull.setsockopt(zmq.RCVTIMEO, 5000)
        time.sleep(0.5)  # subscriptions reach the parent's XSUB

    def answer(self) -> bytes:
        req = tnetstring.loads(self.pull.recv()[1:])
        resp = {b"from": b"h", b"id": req[b"id"], b"code": 200, b"reason": b"OK",
                b"body": req[b"from"]}
        self.pub.send(req[b"from"] + b" T" + tnetstring.dumps(resp))
        return req[b"from"]

    def close(self) -> None:
        self.ctx.destroy(0)


def _listening(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (from /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f.readlines()[1:]
                   if line.split()[1] == want and line.split()[3] == "0A")


def test_each_worker_listens_on_the_port_and_a_burst_is_shared(workers2):
    """SO_REUSEPORT: one listening socket per worker (the parent only holds the
    port), and the kernel spreads a burst of connections over them. On one
    shared socket the first worker to wake took the whole burst."""
    proc, port, _rport, base, _req, _log = workers2
    assert _listening(port) == 2
    h = StreamHandler(base)
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(32)]
    for c in conns:
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    froms = [h.answer() for _ in conns]
    for c in conns:
        c.close()
    h.close()
    # 32 fair coin flips: fewer than 4 on one side has a probability of about 1e-6
    assert min(froms.count(b"condure-0"), froms.count(b"condure-1")) >= 4, froms


def test_the_port_is_held_against_other_programs(workers2):
    _proc, port, _rport, _base, _req, _log = workers2
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError) as e:
            s.bind(("127.0.0.1", port))
    assert e.value.errno == errno.EADDRINUSE


def test_requests_are_spread_over_workers_with_their_own_from(workers2):
    """Which worker takes a connection is up to the kernel, so send batches
    of parallel requests (bounded) until both have answered."""
    proc, port, _rport, base, _req, _log = workers2
    h = StreamHandler(base)
    froms: set[bytes] = set()
    for _batch in range(10):
        threads = [threading.Thread(target=_get, args=(port,)) for _ in range(8)]
        for t in threads:
            t.start()
        for _ in threads:
            froms.add(h.answer())
        for t in threads:
            t.join(5)
        if len(froms) == 2:
            break
    h.close()
    assert froms == {b"condure-0", b"condure-1"}



def test_http2_streams_are_served_by_each_worker(workers2):
    """An HTTP/2 connection is served whole by the worker that accepted it:
    every stream of it carries that worker's `from`; connections made until
    both workers took one (bounded) get both answered."""
    proc, port, _rport, base, _req, _log = workers2
    h = StreamHandler(base)
    froms: set[bytes] = set()
    try:
        for _attempt in range(20):
            with H2Client(port) as cl:
                sids = [cl.request(b"GET", b"/%d" % i) for i in range(3)]
                seen = {h.answer() for _ in sids}
                assert len(seen) == 1  # one connection, one worker
                for sid in sids:
                    r = cl.response(sid)
                    assert r["headers"][0] == (b":status", b"200")
                    assert r["body"] in seen
            froms |= seen
            if len(froms) == 2:
                break
    finally:
        h.close()
    assert froms == {b"condure-0", b"condure-1"}

def _req_handler(req: str) -> tuple[zmq.Context, zmq.Socket]:
    """A req-mode handler: a ROUTER connected to the parent's req endpoint."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.connect(req)
    router.setsockopt(zmq.RCVTIMEO, 5000)
    time.sleep(0.3)  # the connection is made in the background
    return ctx, router


def test_req_mode_replies_reach_the_right_worker(workers2):
    proc, _port, rport, _base, req, _log = workers2
    ctx, router = _req_handler(req)
    for _ in range(6):
        out: list[bytes] = []
        t = threading.Thread(target=lambda: out.append(_get(rport)))
        t.start()
        frames = router.recv_multipart()
        assert len(frames) == 3 and frames[1] == b""  # condure's envelope, unchanged
        msg = tnetstring.loads(frames[2][1:])
        body = b"worker " + msg[b"id"].split(b"-")[0]
        router.send_multipart([frames[0], b"", b"T" + tnetstring.dumps(
            {b"id": msg[b"id"], b"code": 200, b"reason": b"OK", b"body": body})])
        t.join(5)
        assert out and out[0].endswith(body)
    ctx.destroy(0)


def test_req_mode_garbage_replies_do_not_stop_the_forwarding(workers2):
    """The parent reads each reply's id to pick its worker: a reply nested deeper
    than tnetstring decodes (RecursionError) is dropped like other garbage, and
    the replies after it still arrive."""
    proc, _port, rport, _base, req, logpath = workers2
    ctx, router = _req_handler(req)
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(_get(rport)))
    t.start()
    frames = router.recv_multipart()
    msg = tnetstring.loads(frames[2][1:])
    for _ in range(20):
        router.send_multipart([frames[0], b"", b"T" + nested_lists(900)])
    router.send_multipart([frames[0], b"", b"T" + tnetstring.dumps(
        {b"id": msg[b"id"], b"code": 200, b"reason": b"OK", b"body": b"after garbage"})])
    t.join(5)
    ctx.destroy(0)
    assert out and out[0].endswith(b"after garbage"), out
    with open(logpath) as f:
        assert "Traceback" not in f.read()


def wait_started(logpath: str) -> None:
    """Until the parent logs "started": every worker has reported (bounded)."""
    deadline = time.monotonic() + 20
    while "[condure::workers] started" not in open(logpath).read():
        assert time.monotonic() < deadline, open(logpath).read()
        time.sleep(0.05)


def test_dead_worker_is_restarted_and_sigterm_stops_all(workers2):
    proc, port, _rport, base, _req, logpath = workers2
    wait_started(logpath)  # a worker killed before it reports is a failed start (exit 1)
    pids = [int(line.rsplit("pid ", 1)[1].rstrip(")\n"))
            for line in open(logpath) if "started (pid" in line]
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "restarting" not in open(logpath).read():
        time.sleep(0.1)
    assert "worker 0 exited" in open(logpath).read()
    time.sleep(1.5)
    h = StreamHandler(base)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(_get(port)))
    t.start()
    h.answer()
    t.join(5)
    h.close()
    assert got and got[0].startswith(b"HTTP/1.1 200 OK")
    proc.terminate()
    assert proc.wait(15) == 0
    for pid in pids[1:]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
