"""HTTP/2 (issue 16, items 6 and 7): what metrics and logs show of it, and real
HTTP/2 clients (nghttp, h2load from Debian's nghttp2-client) against a real
condure and real ZeroMQ handlers.

nghttp and h2load are required: without them these tests fail (`.ci/run`
installs nghttp2-client), as the promtool test does without promtool.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h2.errors
import h2.settings

from conftest import get_free_port
from h2client import H2Client
from rawhttp import Client
from e2e.test_metrics import scrape, value

CT = (b"Content-Type", b"text/plain")
NGHTTP = shutil.which("nghttp")
H2LOAD = shutil.which("h2load")
BENCH_HANDLER = Path(__file__).resolve().parents[2] / "loadtest" / "bench_handler.py"
ACCESS_RE = re.compile(r"\[condure::access\] (peer=.*)$", re.M)


def frame_types(data: bytes) -> list[int]:
    """The types of the HTTP/2 frames in `data` (a server's bytes)."""
    types = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        types.append(data[3])
        data = data[9 + length:]
    return types


# --- metrics ------------------------------------------------------------------------


def test_metrics_tell_http2_from_http1(condure, handler_factory) -> None:
    mport = get_free_port()
    c = condure("--prometheus", f"127.0.0.1:{mport}")
    h = handler_factory(c.base)
    text = scrape(mport)
    assert value(text, 'condure_requests_by_protocol_total{protocol="h2"}') == 0
    assert value(text, 'condure_connections{mode="stream",protocol="h2"}') == 0
    with Client(c.port) as c1:  # one HTTP/1.1 request
        c1.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        h.respond(h.recv_request(), 200, b"OK", [CT], b"1")
        c1.read_response()
    with H2Client(c.port) as cl:
        sids = [cl.request(b"GET", b"/%d" % i) for i in range(3)]
        reqs = [h.recv_request() for _ in sids]
        text = scrape(mport)  # three streams open, waiting for their handler
        assert value(text, "condure_http2_streams") == 3
        assert value(text, 'condure_connections{mode="stream",protocol="h2"}') == 1
        assert value(text, 'condure_connections{mode="stream",protocol="http"}') == 0
        for req in reqs:
            h.respond(req, 200, b"OK", [CT], b"x")
        for sid in sids:
            assert cl.response(sid)["body"] == b"x"
        # a stream the client resets: counted, and its handler gets a cancel
        sid = cl.request(b"GET", b"/reset")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"a", more=True)
        h.recv_type(b"credit")
        cl.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        cl.flush()
        assert h.recv_type(b"cancel")[b"id"] == req[b"id"]
    # a bad preface: GOAWAY(PROTOCOL_ERROR)
    with socket.create_connection(("127.0.0.1", c.port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\0" * 16)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert 0x7 in frame_types(data)  # a GOAWAY
    deadline = time.monotonic() + 5
    while True:
        text = scrape(mport)
        if value(text, 'condure_connections{mode="stream",protocol="h2"}') == 0 \
                or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert value(text, "condure_requests_total") == 5
    assert value(text, "connmgr_requests_total") == 5
    assert value(text, 'condure_requests_by_protocol_total{protocol="h2"}') == 4
    assert value(text, 'condure_requests_by_protocol_total{protocol="http1"}') == 1
    assert value(text, "condure_http2_streams") == 0
    assert value(text, "condure_http2_resets_received_total") == 1
    assert value(text, "condure_http2_goaways_sent_total") == 1
    assert value(text, 'condure_connections{mode="stream",protocol="h2"}') == 0
    assert value(text, 'condure_connections{mode="stream",protocol="http"}') == 0


# --- logs ----------------------------------------------------------------------------


def test_access_log_and_debug_lines_name_http2_and_the_stream(condure, handler_factory) -> None:
    c = condure("--access-log", log_level=3)
    h = handler_factory(c.base)
    with Client(c.port) as c1:
        c1.send(b"GET /h1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        h.respond(h.recv_request(), 200, b"OK", [CT], b"hello")
        c1.read_response()
    with H2Client(c.port) as cl:
        sid = cl.request(b"GET", b"/h2")
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"hello")
        assert cl.response(sid)["headers"][0] == (b":status", b"200")
        many = [(b"x-f%d" % i, b"v") for i in range(70)]  # check_head: 431, condure's answer
        bad = cl.request(b"GET", b"/many", many)
        assert cl.response(bad)["headers"][0] == (b":status", b"431")
    c.wait_log("stream=3", timeout=5)
    lines = ACCESS_RE.findall(c.log_text())
    fields = [re.sub(r" ms=\d+\.\d ", " ", re.sub(r"^peer=\S+ ", "", ln)) for ln in lines]
    assert fields == [
        "method=GET uri=http://example.com/h1 status=200 bytes=5 by=handler",
        "method=GET uri=http://example.com/h2 status=200 bytes=5 by=handler proto=HTTP/2 stream=1",
        "method=- uri=- status=431 bytes=" + fields[2].split("bytes=")[1].split()[0]
        + " by=condure proto=HTTP/2 stream=3 err=" + fields[2].rsplit("err=", 1)[-1],
    ], lines
    sess = req[b"id"].decode()
    log = c.log_text()
    assert re.search(rf"conn {re.escape(sess)} stream 1: request: GET http://example\.com/h2"
                     r" HTTP/2$", log, re.M), log
    assert re.search(r"conn \S+: request: GET http://example\.com/h1$", log, re.M), log


# --- nghttp: multiplexing on one connection ------------------------------------------


def test_nghttp_multiplexes_several_sessions_on_one_connection(condure, handler_factory) -> None:
    """`nghttp -nv` with three URIs, each twice (`-m 2`): six streams on one
    connection, all at the handler before any is answered (six sessions),
    answered in the reverse order."""
    assert NGHTTP, "nghttp not found: apt-get install nghttp2-client (see .ci/run)"
    c = condure()
    h = handler_factory(c.base)
    base = f"http://127.0.0.1:{c.port}"
    proc = subprocess.Popen([NGHTTP, "-nv", "-m", "2", "-t", "20", f"{base}/a", f"{base}/b",
                             f"{base}/c"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        reqs = [h.recv_request(timeout=10) for _ in range(6)]
        assert len({r[b"id"] for r in reqs}) == 6
        assert len({r[b"peer-port"] for r in reqs}) == 1  # one connection
        assert sorted(r[b"uri"].rsplit(b"/", 1)[1] for r in reqs) == [b"a", b"a", b"b", b"b",
                                                                       b"c", b"c"]
        for r in reversed(reqs):
            h.respond(r, 200, b"OK", [CT], b"body of " + r[b"uri"])
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert len(re.findall(r"recv \(stream_id=\d+\) :status: 200", text)) == 6, text
    assert text.count("send HEADERS frame") == 6, text
    assert len(re.findall(r"\] Connected", text)) == 1, text


def test_nghttp_upgrade_and_window_flow(condure, handler_factory) -> None:
    """`nghttp -u` (HTTP/1.1 Upgrade: h2c) with a 16 KiB stream window
    (`-w 14`): a 40,000-byte streamed response arrives whole, through several
    WINDOW_UPDATEs."""
    assert NGHTTP, "nghttp not found: apt-get install nghttp2-client (see .ci/run)"
    c = condure()
    h = handler_factory(c.base)
    proc = subprocess.Popen([NGHTTP, "-uv", "-w", "14", "-t", "20",
                             f"http://127.0.0.1:{c.port}/big"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        req = h.recv_request(timeout=10)
        h.respond(req, 200, b"OK", [CT], b"x" * 8000, more=True)
        for i in range(4):
            h.recv_type(b"credit", timeout=10)  # condure wrote what it had
            h.body(req, b"x" * 8000, more=i < 3)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "HTTP Upgrade response" in text and ":status: 200" in text, text
    assert "send WINDOW_UPDATE frame" in text, text
    received = sum(int(n) for n in re.findall(r"recv DATA frame <length=(\d+)", text))
    assert received == 40000, text


# --- h2load: a bounded load -----------------------------------------------------------


def test_h2load_bounded_run_all_succeed(condure) -> None:
    """`h2load -n 200 -c 2 -m 10` (h2c prior knowledge) against condure and
    loadtest/bench_handler.py: every request 2xx, and the metrics count them
    as h2. No timing is asserted."""
    assert H2LOAD, "h2load not found: apt-get install nghttp2-client (see .ci/run)"
    mport = get_free_port()
    c = condure("--prometheus", f"127.0.0.1:{mport}", log_level=2)
    handler = subprocess.Popen([sys.executable, str(BENCH_HANDLER), "--base", c.base,
                                "--id", f"h2load-{os.getpid()}"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = handler.stdout.readline()  # "ready <topic>" once condure subscribed
        assert line.startswith(b"ready"), line
        p = subprocess.run([H2LOAD, "-n", "200", "-c", "2", "-m", "10",
                            f"http://127.0.0.1:{c.port}/"],
                           capture_output=True, text=True, timeout=60)
    finally:
        handler.terminate()
        try:
            handler.wait(10)
        except subprocess.TimeoutExpired:
            handler.kill()
            handler.wait()
        handler.stdout.close()
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.search(r"requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, "
                     r"0 errored, 0 timeout", p.stdout), p.stdout
    assert re.search(r"status codes: 200 2xx", p.stdout), p.stdout
    assert "h2c" in p.stdout  # the protocol h2load used
    text = scrape(mport)
    assert value(text, 'condure_requests_by_protocol_total{protocol="h2"}') == 200
    assert value(text, 'condure_requests_by_protocol_total{protocol="http1"}') == 0


# --- writes: batched, and held back for a client that does not read ----------------------


def test_response_waits_for_a_client_that_does_not_read(condure, handler_factory) -> None:
    """The client opens its windows wide (so flow control does not stop the
    response) but does not read its socket: condure's write queue fills, the
    stream's DATA waits, and the handler's credits stop; once the client
    reads, the rest flows and the whole body arrives."""
    c = condure()
    h = handler_factory(c.base)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.settimeout(10)
    s.connect(("127.0.0.1", c.port))
    cl = H2Client(c.port, sock=s, timeout=10)
    cl.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 1})
    cl.conn.increment_flow_control_window(2 ** 30)
    cl.flush()
    sid = cl.request(b"GET", b"/big")
    req = h.recv_request()
    piece = b"y" * 8000
    h.respond(req, 200, b"OK", [CT], piece, more=True)
    sent = len(piece)
    stalled = False
    while sent < 4_000_000:
        try:
            h.recv_type(b"credit", timeout=1.0)
        except AssertionError:  # no credit: the response is held back
            stalled = True
            break
        h.body(req, piece, more=True)
        sent += len(piece)
    assert stalled, f"{sent} bytes written to a client that reads nothing"
    got: dict = {}

    def read() -> None:
        try:
            got["r"] = cl.response(sid, timeout=20)
        except Exception as e:  # reported by the assert below
            got["e"] = e

    reader = threading.Thread(target=read)
    reader.start()
    h.recv_type(b"credit", timeout=10)  # the client reads: the stream goes on
    h.body(req, piece)  # the last piece
    sent += len(piece)
    reader.join(30)
    s.close()
    assert "r" in got, got
    assert len(got["r"]["body"]) == sent
