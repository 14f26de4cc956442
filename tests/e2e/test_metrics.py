"""--prometheus: metrics served from the same hub, in the text exposition format."""
from __future__ import annotations

import grp
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import get_free_port, run_cli
from exposition import parse
from zhttp_handler import Handler


def scrape(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"Content-Type: text/plain" in head
    return body.decode()


def value(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in:\n{text}"
    return float(m.group(1))


def test_metrics_count_requests_packets_and_bytes(condure):
    mport = get_free_port()
    cd = condure("--prometheus", f"127.0.0.1:{mport},prefix=cd_")
    before = scrape(mport)
    assert value(before, "cd_condure_requests_total") == 0
    assert value(before, 'cd_condure_connections{mode="stream",protocol="http"}') == 0
    assert value(before, "cd_process_resident_memory_bytes") > 1_000_000
    assert value(before, "cd_process_open_fds") > 3
    h = Handler(cd.base)
    c = socket.create_connection(("127.0.0.1", cd.port), timeout=5)
    for i in range(3):
        c.sendall(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        h.respond(h.recv_request(), 200, "OK", [], "hello")
        assert c.recv(4096).endswith(b"hello")
    after = scrape(mport)
    assert value(after, "cd_condure_requests_total") == 3
    assert value(after, 'cd_condure_connections{mode="stream",protocol="http"}') == 1
    assert value(after, "cd_condure_connections_accepted_total") >= 1
    assert value(after, 'cd_condure_zhttp_packets_out_total{type="request"}') == 3
    assert value(after, 'cd_condure_zhttp_packets_in_total{type="data"}') == 3
    assert value(after, 'cd_condure_bytes_total{direction="in"}') > 0
    c.sendall(b"NOT HTTP\r\n\r\n")
    c.recv(4096)
    c.close()
    h.send_raw(b"condure Tgarbage")
    time.sleep(0.3)
    final = scrape(mport)
    assert value(final, "cd_condure_http_parse_errors_total") == 1
    assert value(final, "cd_condure_zhttp_packets_dropped_total") >= 1
    assert value(final, 'cd_condure_connections{mode="stream",protocol="http"}') == 0
    h.close()


def test_metrics_are_off_by_default(condure):
    cd = condure()
    assert "prometheus" not in cd.log_text()


# --- what pushpin-connmgr's counter counts, and the exposition's form --------

WS_BAD_VERSION = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 12\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(data)
        out = b""
        while chunk := c.recv(4096):
            out += chunk
    return out


def test_requests_counted_as_connmgr_counts_them(condure, zdir):
    """connmgr.md scenario 29 (prefix=x_, 3 requests of which one has a bad
    header: 2), plus what else connmgr counts: a head parsed but refused (an
    invalid WebSocket upgrade, a WebSocket upgrade on a req listener)."""
    mport, rport = get_free_port(), get_free_port()
    cd = condure("--prometheus", f"127.0.0.1:{mport},prefix=x_",
                 "--listen", f"127.0.0.1:{rport},req", "--zclient-req", f"ipc://{zdir}/req")
    h = Handler(cd.base)
    c = socket.create_connection(("127.0.0.1", cd.port), timeout=5)
    for i in range(2):
        c.sendall(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        h.respond(h.recv_request(), 200, "OK", [], "hello")
        assert c.recv(4096).endswith(b"hello")
    c.close()
    assert _exchange(cd.port, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n") \
        .startswith(b"HTTP/1.1 400")
    text = scrape(mport)
    assert value(text, "x_connmgr_requests_total") == 2
    assert value(text, "x_condure_requests_total") == 2
    assert "# TYPE x_connmgr_requests_total counter" in text
    assert "# HELP x_connmgr_requests_total " in text
    assert _exchange(cd.port, WS_BAD_VERSION).startswith(b"HTTP/1.1 400")  # counted
    assert _exchange(rport, WS_BAD_VERSION.replace(b"12", b"13")).startswith(b"HTTP/1.1 400")
    text = scrape(mport)
    assert value(text, "x_condure_requests_total") == 4
    assert value(text, "x_condure_http_parse_errors_total") == 1
    h.close()


def test_exposition_is_strict_text_format_with_everything_at_zero(condure):
    mport = get_free_port()
    condure("--prometheus", f"127.0.0.1:{mport}")
    fams = parse(scrape(mport))
    assert fams["condure_build_info"]["samples"]
    assert fams["condure_zhttp_packets_in_total"]["samples"][(("type", "data"),)] == 0
    assert fams["condure_websocket_messages_total"]["samples"][(("direction", "out"),)] == 0
    assert fams["condure_connections"]["samples"][
        (("mode", "stream"), ("protocol", "websocket"))] == 0
    assert fams["process_start_time_seconds"]["samples"][()] > 1_600_000_000
    assert all(n.startswith(("condure_", "process_")) or n == "connmgr_requests_total"
               for n in fams)


PROMTOOL = shutil.which("promtool")


def test_promtool_accepts_the_exposition(condure):
    """promtool's lint (names, HELP, units, counters). CI installs Debian's
    `prometheus` package for it: without promtool this test fails, not skips."""
    assert PROMTOOL, "promtool not found: apt-get install prometheus (see .ci/run)"
    mport = get_free_port()
    condure("--prometheus", f"127.0.0.1:{mport},prefix=pp_")
    text = scrape(mport)
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        (r.stdout, r.stderr)
    # promtool does complain about what it should (the check can fail)
    bad = text.replace("pp_condure_requests_total", "pp_condure_requests")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=bad, capture_output=True,
                       text=True, timeout=20)
    assert r.returncode != 0 and "_total" in r.stdout + r.stderr


# --- --workers N: one scrape of the configured port covers the whole process --


def _get_from(port: int, h: Handler) -> bytes:
    """One request on a new connection (the kernel picks the worker); the
    handler answers with the request's `from`, which names the worker."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        req = h.recv_request()
        h.send({b"id": req[b"id"], b"code": 200, b"reason": b"OK", b"body": req[b"from"]},
               instance=req[b"from"])
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    return data.rpartition(b"\r\n\r\n")[2]


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_workers_one_scrape_sums_the_whole_process(condure):
    mport = get_free_port()
    cd = condure("--workers", "2", "--prometheus", f"127.0.0.1:{mport}")
    h = Handler(cd.base, wait=False)
    subscribed: set[bytes] = set()
    while len(subscribed) < 2:  # both workers' subscriptions, through the parent
        assert h.pub.poll(5000), subscribed
        subscribed.add(h.pub.recv())
    froms = [_get_from(cd.port, h) for _ in range(20)]
    assert len(set(froms)) == 2, froms  # both workers served some
    text = scrape(mport)
    fams = parse(text)
    assert value(text, "condure_requests_total") == 20
    assert value(text, "connmgr_requests_total") == 20
    assert value(text, 'condure_zhttp_packets_out_total{type="request"}') == 20
    assert value(text, "condure_connections_accepted_total") >= 20  # + the start-up probe
    assert value(text, "condure_workers_up") == 2
    assert len(fams["condure_build_info"]["samples"]) == 1
    # the process figures are the tree's: more than the parent's own memory
    assert value(text, "process_resident_memory_bytes") > _rss(cd.proc.pid) + 10_000_000
    start = value(text, "process_start_time_seconds")
    # a worker killed and restarted starts from 0: the counters still go on from 20
    log = cd.log_path.read_text()
    pids = [int(m) for m in re.findall(r"worker \d started \(pid (\d+)\)", log)]
    os.kill(pids[0], signal.SIGKILL)
    _wait_for(lambda: len(re.findall(r"worker \d started", cd.log_path.read_text())) == 3)
    _wait_for(lambda: value(scrape(mport), "condure_workers_up") == 2)
    assert value(scrape(mport), "condure_requests_total") == 20
    for _ in range(6):
        _get_from(cd.port, h)
    text = scrape(mport)
    assert value(text, "condure_requests_total") == 26
    assert value(text, "process_start_time_seconds") == start  # the parent's
    assert value(text, "process_cpu_seconds_total") > 0
    h.close()


# --- connmgr's spec forms: a Unix socket, bad params, bind errors -------------


def scrape_unix(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        c.connect(path)
        c.sendall(b"GET /anything HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"Content-Type: text/plain" in head
    return body.decode()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unix_socket_with_mode_and_prefix(condure, zdir: str, workers: str) -> None:
    path = f"{zdir}/metrics.sock"
    with open(path, "w"):  # a file in the way is removed first
        pass
    cd = condure("--workers", workers,
                 "--prometheus", f"{path},local,mode=600,group=nogroup,prefix=u_")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.stat(path).st_gid == grp.getgrnam("nogroup").gr_gid
    h = Handler(cd.base, wait=False)
    subscribed: set[bytes] = set()
    while len(subscribed) < int(workers):
        assert h.pub.poll(5000), subscribed
        subscribed.add(h.pub.recv())
    for _ in range(2):
        _get_from(cd.port, h)
    text = scrape_unix(path)
    assert "# HELP u_connmgr_requests_total " in text
    assert "# TYPE u_connmgr_requests_total counter" in text
    assert value(text, "u_connmgr_requests_total") == 2
    assert value(text, "u_condure_requests_total") == 2
    assert f"prometheus metrics on {path}" in cd.log_text()
    h.close()
    cd.stop()
    assert not os.path.exists(path)  # removed at stop


@pytest.mark.parametrize("spec,message", [
    ("9100,foo=1", "failed to parse prometheus: invalid param: foo"),
    ("9100,mode=600", "failed to parse prometheus: invalid param: mode"),
    ("127.0.0.1:9100,local2", "failed to parse prometheus: invalid param: local2"),
    ("D/m.sock,local,tls", "failed to parse prometheus: invalid param: tls"),
    ("D/m.sock,local,mode=8", "failed to parse prometheus: invalid mode 8: invalid digit"),
    ("x", "failed to parse prometheus: invalid port x"),
    ("D/missing/m.sock,local",
     "prometheus listener: failed to bind D/missing/m.sock: No such file or directory"),
    ("D/m.sock,local,group=no-such-group-x",
     "prometheus listener: failed to set owner of D/m.sock: getgrnam(): name not found"),
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_spec_or_bind_error_exits_1(zdir: str, spec: str, message: str, workers: str) -> None:
    r = run_cli("--listen", f"127.0.0.1:{get_free_port()}", "--zclient-stream",
                f"ipc://{zdir}/c", "--workers", workers,
                "--prometheus", spec.replace("D/", zdir + "/"), timeout=8)
    assert r.returncode == 1, r
    errors = [line for line in r.stdout.splitlines() if line.startswith("[ERR]")]
    assert len(errors) == 1 and message.replace("D/", zdir + "/") in errors[0], r.stdout
    assert "Traceback" not in r.stdout + r.stderr and "worker 0 started" not in r.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_at_most_10_scrapes_at_once(condure, workers: str) -> None:
    """connmgr.md 5.2: an 11th concurrent connection is closed, with a WARN."""
    mport = get_free_port()
    cd = condure("--workers", workers, "--prometheus", f"127.0.0.1:{mport}", log_level=1)
    waiting = [socket.create_connection(("127.0.0.1", mport), timeout=5) for _ in range(10)]
    time.sleep(0.3)  # all ten accepted, each waiting for its request head
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as extra:
        assert extra.recv(100) == b""
    cd.wait_log("[WARN]")
    assert "too many prometheus connections, rejecting" in cd.log_text()
    waiting.pop().close()
    time.sleep(0.3)
    assert "_requests_total" in scrape(mport)  # a place is free again
    for c in waiting:
        c.close()
