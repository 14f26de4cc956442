#!/usr/bin/env python3
"""Benchmark suite: this condure (Python) against condure 1.9.1 (Rust, Debian package).

Usage (from anywhere; paths are resolved from this file)::

    .venv/bin/python loadtest/bench.py [--rounds 3] [--duration 5] [--quick]
                                       [--only NAME[,NAME...]] [--json FILE]

For every scenario and every round it runs ours (``.venv/bin/python -m
condure``) and then, when /usr/bin/condure exists, the Rust condure
(``--workers 1``), alternately (A B A B ...), each time with fresh
processes: the server, then a fresh ``loadtest/bench_handler.py`` on ipc
sockets in a short temporary directory. The load goes to
``127.0.0.1:PORT`` only, every wait is bounded, and the processes started
for a run are stopped (by PID) when it ends. The final table gives the
median per implementation, the ratio ours/condure, the target and a
verdict. See loadtest/README.md for what each row means.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
SERVER_PY = PY  # runs our condure; --server-python compares interpreters
SERVER_ARGS: list[str] = []  # --server-args: more options for our condure only
RUST_CONDURE = "/usr/bin/condure"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
HANDLER = str(HERE / "bench_handler.py")
WSLOAD = str(HERE / "wsload.py")
H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"
HYPERCORN_APP = str(HERE / "hypercorn_app.py")
HYPERCORN_PY = PY  # --hypercorn-python: the interpreter with hypercorn (loadtest/requirements.txt)
HANDLER_ID = "bench-handler"
NOFILE_WANT = 65536

OURS = "ours"
RUST = "condure"
HYPERCORN = "hypercorn"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- process helpers ----------------------------------------------------------


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to 65536 (raising the hard limit too when allowed).

    Children inherit it, so the servers and the load clients get it as well."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    attempts = []
    if hard != inf and hard < NOFILE_WANT:
        attempts.append((NOFILE_WANT, NOFILE_WANT))  # needs CAP_SYS_RESOURCE
    attempts.append((NOFILE_WANT if hard == inf else min(NOFILE_WANT, hard), hard))
    for new_soft, new_hard in attempts:
        if new_soft <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """All descendants of pid (from /proc), so forked workers are stopped too."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
            parent[int(d)] = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out


def rss_kb(pid: int) -> int:
    """VmRSS of pid plus its descendants, in KB (0 when gone)."""
    total = 0
    for p in [pid] + children_of(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total


def tree_cpu_s(pid: int) -> float:
    """utime + stime of pid and its live descendants, in seconds (0 when gone)."""
    total = 0
    for p in [pid] + children_of(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


CLK_TCK = os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM the process (and the descendants it had), SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    kids = children_of(proc.pid)
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    except ProcessLookupError:
        pass
    for k in kids:
        try:
            os.kill(k, 0)
        except OSError:
            continue
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass


def read_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str | None:
    """Wait (bounded) for a stdout line starting with prefix; None on timeout/exit."""
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if not r:
            if proc.poll() is not None:
                return None
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            text = line.decode("utf-8", "replace")
            if text.startswith(prefix):
                return text
    return None


def http_get_ok(port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Unsupported(Exception):
    """The server refused the configuration (e.g. --workers 2 'not supported yet')."""


class RunError(Exception):
    pass


# --- one server + handler ---------------------------------------------------------


class Stack:
    """A server (ours or condure) plus a fresh bench_handler, on a fresh port."""

    def __init__(self, impl: str, workers: int = 1) -> None:
        self.impl = impl
        self.workers = workers
        self.dir = tempfile.mkdtemp(prefix="cb", dir="/tmp")
        self.base = f"ipc://{self.dir}/z"
        self.port = free_port()
        self.server: subprocess.Popen | None = None
        self.handler: subprocess.Popen | None = None
        self.log_path = os.path.join(self.dir, "server.log")
        self.label = impl  # the column this run is for (set by run_scenario)

    def server_cmd(self) -> list[str]:
        common = ["--listen", f"127.0.0.1:{self.port},stream", "--zclient-stream", self.base,
                  "--log-level", "1", "--stream-maxconn", "20000", "--workers", str(self.workers)]
        if self.impl == RUST:
            return [RUST_CONDURE] + common
        if self.impl == HYPERCORN:  # no handler: the response is made in-process
            return [HYPERCORN_PY, HYPERCORN_APP, "--port", str(self.port)]
        return [SERVER_PY, "-m", "condure"] + common + SERVER_ARGS

    def server_log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        with open(self.log_path, "wb") as logf:
            self.server = subprocess.Popen(self.server_cmd(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                           stdout=logf, stderr=subprocess.STDOUT)
        # the server binds the ipc sockets and the port; wait until it accepts
        deadline = time.monotonic() + 20
        while True:
            if self.server.poll() is not None:
                text = self.server_log()
                if "not supported" in text or "not installed" in text:
                    raise Unsupported(text.strip().splitlines()[-1])
                raise RunError(f"{self.impl} exited with {self.server.returncode}: {text}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RunError(f"{self.impl} did not listen within 20 s: {self.server_log()}")
            time.sleep(0.05)
        if self.impl == HYPERCORN:
            self.warm_up()
            return
        self.handler = subprocess.Popen([PY, HANDLER, "--base", self.base, "--id", HANDLER_ID],
                                        cwd=ROOT, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if read_line(self.handler, "ready", 10) is None:
            time.sleep(0.3)  # no subscription seen: fall back to the classic wait
        self.warm_up()
        if self.workers > 1:
            time.sleep(0.5)  # let every worker's SUB subscription settle

    def warm_up(self) -> None:
        """End to end check (also warms up the processes): 20 answers 200."""
        deadline = time.monotonic() + 10
        ok = 0
        while ok < 20:
            if http_get_ok(self.port):
                ok += 1
            elif time.monotonic() > deadline:
                raise RunError(f"{self.impl}: no 200 answer within 10 s: {self.server_log()}")
            else:
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.handler, 5)
        stop_process(self.server, 15)
        if self.handler is not None and self.handler.stdout:
            self.handler.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def alive(self) -> bool:
        return self.server is not None and self.server.poll() is None


# --- load generators ------------------------------------------------------------


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(value: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else None


def run_wrk(port: int, threads: int, conns: int, duration: float, headers: list[str] = (),
            latency: bool = False, timeout_s: int = 2) -> dict:
    cmd = [WRK, f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s",
           "--timeout", f"{timeout_s}s"]
    for h in headers:
        cmd += ["-H", h]
    if latency:
        cmd.append("--latency")
    cmd.append(f"http://127.0.0.1:{port}/")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    out = p.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if p.returncode != 0 or not m:
        raise RunError(f"wrk failed ({p.returncode}): {out[-500:]} {p.stderr[-500:]}")
    res: dict[str, Any] = {"rps": float(m.group(1))}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                        map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if m:
            res[f"p{pct}_ms"] = _ms(m.group(1))
    return res


def wrk_note(res: dict) -> str:
    notes = []
    errs = res.get("socket_errors")
    if errs and any(errs.values()):
        notes.append("socket errors " + ",".join(f"{k}={v}" for k, v in errs.items() if v))
    if res.get("non2xx"):
        notes.append(f"non-2xx {res['non2xx']}")
    return "; ".join(notes)


def run_ws_echo(port: int, conns: int, duration: float) -> dict:
    cmd = [PY, WSLOAD, "echo", "--url", f"ws://127.0.0.1:{port}/", "--conns", str(conns),
           "--duration", str(duration), "--json", "--connect-timeout", "20"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, cwd=ROOT)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RunError(f"wsload failed ({p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}")
    return json.loads(lines[-1])


def measure_idle_rss(stack: Stack, proto: str, conns: int) -> dict:
    """Open `conns` idle connections from a client process; server RSS delta per connection."""
    time.sleep(0.5)
    before = rss_kb(stack.server.pid)
    scheme = "ws" if proto == "ws" else "http"
    cmd = [PY, WSLOAD, "idle", "--proto", proto, "--url", f"{scheme}://127.0.0.1:{stack.port}/",
           "--conns", str(conns), "--hold", "120", "--stdin", "--json",
           "--connect-timeout", "90"]
    client = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        line = read_line(client, "ready", 120)
        if line is None:
            raise RunError(f"idle client did not get ready: {client.stderr.read(500) if client.poll() is not None else ''}")
        _, opened, failed, setup = line.split()
        opened = int(opened)
        time.sleep(1.0)  # let the server settle (lazy allocations, handler replies)
        after = rss_kb(stack.server.pid)
        alive = stack.alive()
    finally:
        try:
            client.stdin.close()  # EOF: the client closes everything (RST) and exits
        except OSError:
            pass
        try:
            client.wait(30)
        except subprocess.TimeoutExpired:
            stop_process(client, 5)
        for f in (client.stdout, client.stderr):
            if f:
                f.close()
    if opened == 0:
        raise RunError("no connection could be opened")
    res = {"kb_per_conn": (after - before) / opened, "rss_before_kb": before,
           "rss_after_kb": after, "opened": opened, "failed": int(failed),
           "setup_s": float(setup)}
    if not alive:
        res["note"] = "server died"
    return res


def run_h2load(port: int, conns: int, streams: int, duration: float, h1: bool = False) -> dict:
    """`h2load -cC -mM -DD` (h2c with prior knowledge; `h1`: HTTP/1.1) against the port."""
    cmd = [H2LOAD, f"-c{conns}", f"-m{streams}", "-D", str(max(1, round(duration))),
           *(["--h1"] if h1 else []), f"http://127.0.0.1:{port}/"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    out = p.stdout
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if p.returncode != 0 or not m or not r:
        raise RunError(f"h2load failed ({p.returncode}): {out[-500:]} {p.stderr[-500:]}")
    total, _, done, ok, failed, errored, timeouts = map(int, r.groups())
    res: dict[str, Any] = {"rps": float(m.group(3)), "requests": done, "succeeded": ok,
                           "failed": failed, "errored": errored, "timeout": timeouts}
    s = re.search(r"status codes: (\d+) 2xx", out)
    res["2xx"] = int(s.group(1)) if s else 0
    return res


# --- scenarios -------------------------------------------------------------------


@dataclass
class Metric:
    key: str  # key in the run's result dict
    label: str
    unit: str
    target: float | None = None  # ratio target
    higher_is_better: bool = True


@dataclass
class Scenario:
    name: str
    description: str
    metrics: list[Metric]
    run: Callable[["Stack", argparse.Namespace], dict]
    impls: tuple[tuple[str, str, int], ...] = ((OURS, OURS, 1), (RUST, RUST, 1))
    # (column label, implementation, workers)
    ref_label: str = "condure 1.9.1"


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def sc_ka(threads: int, conns: int) -> Callable:
    def run(stack: Stack, a: argparse.Namespace) -> dict:
        busy0, total0 = cpu_times()
        r = run_wrk(stack.port, threads, conns, a.duration)
        busy1, total1 = cpu_times()
        # how much of the machine the run used (server, handler and wrk together):
        # what a second worker can add is bounded by what is left
        r["cpu_busy_pct"] = 100.0 * (busy1 - busy0) / max(total1 - total0, 1)
        r["note"] = wrk_note(r)
        return r
    return run


def sc_conn_per_req(stack: Stack, a: argparse.Namespace) -> dict:
    r = run_wrk(stack.port, 1, 50, a.duration, headers=["Connection: close"])
    r["note"] = wrk_note(r)
    return r


def sc_ws_echo(stack: Stack, a: argparse.Namespace) -> dict:
    r = run_ws_echo(stack.port, 50, a.duration)
    if not r.get("connected"):
        raise RunError(f"no WebSocket connection: {r.get('error')}")
    notes = []
    if r.get("connected") != 50:
        notes.append(f"connected {r.get('connected')}/50")
    if r.get("errors"):
        notes.append(f"errors {r['errors']}")
    if r.get("error"):
        notes.append(str(r["error"]))
    r["note"] = "; ".join(notes)
    return r


def sc_lat(stack: Stack, a: argparse.Namespace) -> dict:
    r = run_wrk(stack.port, 2, 1000, a.duration, latency=True, timeout_s=10)
    r["note"] = wrk_note(r)
    return r


def sc_rss(proto: str) -> Callable:
    def run(stack: Stack, a: argparse.Namespace) -> dict:
        r = measure_idle_rss(stack, proto, a.idle_conns)
        notes = [r.pop("note", "")] if r.get("note") else []
        if r["failed"]:
            notes.append(f"opened {r['opened']}/{r['opened'] + r['failed']}")
        r["note"] = "; ".join(notes)
        return r
    return run


def sc_h2load(conns: int, streams: int, h1: tuple[int, int] | None = None) -> Callable:
    """h2load against ours (with bench_handler) or hypercorn; with the server's
    CPU time per request (its whole process tree, the handler not included:
    the handler's is given apart). `h1`: (connections, requests in flight per
    connection) of an `h2load --h1` run instead, in the column whose label
    ends with "h1"."""
    def run(stack: Stack, a: argparse.Namespace) -> dict:
        c, m, use_h1 = conns, streams, False
        if h1 is not None and stack.label.endswith("h1"):
            (c, m), use_h1 = h1, True
        server = stack.server.pid
        handler = stack.handler.pid if stack.handler is not None else None
        cpu0 = tree_cpu_s(server)
        hcpu0 = tree_cpu_s(handler) if handler else 0.0
        r = run_h2load(stack.port, c, m, a.duration, use_h1)
        cpu = tree_cpu_s(server) - cpu0
        n = max(r["succeeded"], 1)
        r["cpu_us_per_req"] = cpu / n * 1e6
        r["cpu_s"] = cpu
        if handler:
            r["handler_cpu_us_per_req"] = (tree_cpu_s(handler) - hcpu0) / n * 1e6
        notes = []
        if r["failed"] or r["errored"] or r["timeout"]:
            notes.append(f"failed {r['failed']}, errored {r['errored']}, timeout {r['timeout']}")
        if r["2xx"] < r["succeeded"]:  # (with -D it counts a few answers not "done" too)
            notes.append(f"2xx {r['2xx']}/{r['succeeded']}")
        r["note"] = "; ".join(notes)
        return r
    return run


def sc_rss_h2(stack: Stack, a: argparse.Namespace) -> dict:
    """RSS per idle connection: h2c (preface + SETTINGS) in the ours-h2 column,
    HTTP/1.1 (one request answered) in the ours-http1 column."""
    proto = "h2" if stack.label.endswith("h2") else "http"
    r = measure_idle_rss(stack, proto, a.h2_idle_conns)
    notes = [r.pop("note", "")] if r.get("note") else []
    if r["failed"]:
        notes.append(f"opened {r['opened']}/{r['opened'] + r['failed']}")
    r["note"] = "; ".join(notes)
    return r


SCENARIOS = [
    Scenario("ka50", "keep-alive, wrk -t1 -c50",
             [Metric("rps", "req/s", "req/s", 0.5)], sc_ka(1, 50)),
    Scenario("ka500", "keep-alive, wrk -t2 -c500",
             [Metric("rps", "req/s", "req/s")], sc_ka(2, 500)),
    Scenario("conn_per_req", "new connection per request, wrk -t1 -c50 Connection: close",
             [Metric("rps", "req/s", "req/s", 1.0)], sc_conn_per_req),
    Scenario("ws_echo50", "WebSocket echo, 50 connections (wsload.py)",
             [Metric("msgs_per_s", "msgs/s", "msgs/s", 0.5)], sc_ws_echo),
    Scenario("lat1000", "latency, wrk -t2 -c1000 --latency",
             [Metric("p50_ms", "p50", "ms", None, False),
              Metric("p99_ms", "p99", "ms", 2.0, False),
              Metric("rps", "req/s", "req/s")], sc_lat),
    Scenario("rss_http10k", "RSS per idle keep-alive HTTP connection (after one request)",
             [Metric("kb_per_conn", "RSS/conn", "KB", 0.6, False)], sc_rss("http")),
    Scenario("rss_ws10k", "RSS per idle WebSocket connection (after the handshake)",
             [Metric("kb_per_conn", "RSS/conn", "KB", 0.6, False)], sc_rss("ws")),
    Scenario("workers", "ours --workers 2 vs ours --workers 1, keep-alive wrk -t1 -c50",
             [Metric("rps", "req/s", "req/s", 1.2),
              Metric("cpu_busy_pct", "machine CPU busy", "%", None)], sc_ka(1, 50),
             impls=(("ours-w2", OURS, 2), ("ours-w1", OURS, 1)), ref_label="ours --workers 1"),
    # the same comparison for condure itself: how much a second worker can give on
    # this machine at all, with the handler and wrk sharing its cores (no target)
    Scenario("workers_condure", "condure --workers 2 vs condure --workers 1, as `workers`",
             [Metric("rps", "req/s", "req/s", None),
              Metric("cpu_busy_pct", "machine CPU busy", "%", None)], sc_ka(1, 50),
             impls=(("condure-w2", RUST, 2), ("condure-w1", RUST, 1)),
             ref_label="condure --workers 1"),
    # HTTP/2 (issue 16): ours (h2c, bench_handler behind it) against hypercorn (the
    # pure-Python HTTP/2 server on the same h2 library, in-process ASGI app)
    Scenario("h2_c10m10", "HTTP/2 h2c, h2load -c10 -m10 (100 streams over 10 connections)",
             [Metric("rps", "req/s", "req/s", 1.5),
              Metric("cpu_us_per_req", "server CPU/req", "us", None, False),
              Metric("handler_cpu_us_per_req", "handler CPU/req", "us", None, False)],
             sc_h2load(10, 10), impls=((OURS, OURS, 1), (HYPERCORN, HYPERCORN, 1)),
             ref_label="hypercorn"),
    # what an HTTP/2 request costs ours next to an HTTP/1.1 one, at the same
    # concurrency (100 requests in flight): h2load --h1 -c100 -m1 in the second column
    Scenario("h2_vs_h1", "ours: h2c h2load -c10 -m10 vs HTTP/1.1 h2load --h1 -c100 -m1",
             [Metric("rps", "req/s", "req/s", None),
              Metric("cpu_us_per_req", "server CPU/req", "us", None, False)],
             sc_h2load(10, 10, h1=(100, 1)), impls=(("ours-h2", OURS, 1), ("ours-h1", OURS, 1)),
             ref_label="ours HTTP/1.1"),
    Scenario("rss_h2_1k", "RSS per idle h2c connection (preface + SETTINGS) vs HTTP/1.1",
             [Metric("kb_per_conn", "RSS/conn", "KB", None, False)], sc_rss_h2,
             impls=(("ours-h2", OURS, 1), ("ours-http1", OURS, 1)),
             ref_label="ours HTTP/1.1"),
]


# --- driver ----------------------------------------------------------------------


@dataclass
class Outcome:
    runs: dict[str, list[dict]] = field(default_factory=dict)  # column label -> results
    unsupported: str = ""
    errors: list[str] = field(default_factory=list)


def run_scenario(sc: Scenario, args: argparse.Namespace, have_rust: bool) -> Outcome:
    out = Outcome()
    impls = [i for i in sc.impls if i[1] != RUST or have_rust]
    for label, _, _ in impls:
        out.runs[label] = []
    for rnd in range(1, args.rounds + 1):
        for label, impl, workers in impls:
            if out.unsupported:
                return out
            tag = f"[{sc.name} round {rnd}/{args.rounds}] {label}"
            try:
                with Stack(impl, workers) as stack:
                    stack.label = label
                    res = sc.run(stack, args)
                    if not stack.alive():
                        res["note"] = ("; ".join(filter(None, [res.get("note"),
                                                               "server exited during run"])))
            except Unsupported as e:
                out.unsupported = str(e)
                log(f"{tag}: not supported: {e}")
                return out
            except (RunError, subprocess.TimeoutExpired, OSError) as e:
                msg = f"{tag}: failed: {e}"
                out.errors.append(msg[:300])
                log(msg[:1000])
                continue
            out.runs[label].append(res)
            shown = ", ".join(f"{m.label} {fmt(res.get(m.key), m.unit)} {m.unit}"
                              for m in sc.metrics)
            log(f"{tag}: {shown}" + (f" ({res['note']})" if res.get("note") else ""))
            time.sleep(args.pause)
    return out


def _spread(values: list[Any]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    if len(vals) < 2 or not statistics.median(vals):
        return None
    return (max(vals) - min(vals)) / statistics.median(vals)


def median(values: list[float]) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit in ("req/s", "msgs/s"):
        return f"{v:,.0f}"
    if unit == "ms":
        return f"{v:.2f}"
    if unit == "us":
        return f"{v:.0f}"
    return f"{v:.2f}"


def build_rows(results: list[tuple[Scenario, Outcome]], have_rust: bool) -> list[dict]:
    rows = []
    for sc, out in results:
        labels = [lab for lab, _, _ in sc.impls]
        for m in sc.metrics:
            a_vals = [r.get(m.key) for r in out.runs.get(labels[0], [])]
            b_vals = [r.get(m.key) for r in out.runs.get(labels[1], [])]
            a, b = median(a_vals), median(b_vals)
            ratio = a / b if a is not None and b not in (None, 0) else None
            if out.unsupported:
                verdict = "n/a"
            elif m.target is None:
                verdict = "-"
            elif ratio is None:
                verdict = "n/a"
            elif m.higher_is_better:
                verdict = "OK" if ratio >= m.target else "FAIL"
            else:
                verdict = "OK" if ratio <= m.target else "FAIL"
            target = None if m.target is None else (
                (">= " if m.higher_is_better else "<= ") + f"{m.target:g}x")
            notes = sorted({r.get("note") for rs in out.runs.values() for r in rs
                            if r.get("note")})
            if out.unsupported:
                notes.insert(0, out.unsupported)
            if out.errors:
                notes.append(f"{len(out.errors)} run(s) failed")
            if sc.impls[1][1] == HYPERCORN and ratio is not None and m.key == "rps":
                spread = {lab: _spread([r.get(m.key) for r in rs]) for lab, rs in out.runs.items()}
                notes.append("spread (max-min)/median: " + ", ".join(
                    f"{lab} {v:.0%}" for lab, v in spread.items() if v is not None))
            if sc.impls[1][1] == RUST and not have_rust:
                notes.append("no /usr/bin/condure")
            rows.append({
                "scenario": sc.name, "description": sc.description, "metric": m.label,
                "unit": m.unit, "ours": a, "reference": b, "reference_is": sc.ref_label,
                "ratio": ratio, "target": target, "verdict": verdict,
                "runs": {lab: [r.get(m.key) for r in rs] for lab, rs in out.runs.items()},
                "details": out.runs if m is sc.metrics[0] else None,
                "notes": notes, "errors": out.errors,
            })
    return rows


def print_table(rows: list[dict]) -> None:
    head = ["scenario", "metric", "unit", "ours", "condure", "ratio", "target", "verdict"]
    table = [head]
    for r in rows:
        table.append([r["scenario"], r["metric"], r["unit"],
                      "n/a" if r["verdict"] == "n/a" and r["ours"] is None else fmt(r["ours"], r["unit"]),
                      fmt(r["reference"], r["unit"]),
                      "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}",
                      r["target"] or "-", r["verdict"]])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    right = {3, 4, 5}
    lines = []
    for k, row in enumerate(table):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                 for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    print("\n".join(lines))
    print()
    print("medians over the rounds; ratio = ours / condure; the 'workers' rows compare "
          "--workers 2 (ours column) with --workers 1 (condure column), of ours and of condure;\n"
          "h2_c10m10 compares with hypercorn (condure column), server CPU/req in us "
          "(the server's process tree; ours' handler apart); h2_vs_h1 and rss_h2_1k compare "
          "ours over h2c (ours column) with ours over HTTP/1.1 (condure column).")
    for r in rows:
        if r["notes"]:
            print(f"  {r['scenario']} {r['metric']}: " + "; ".join(r["notes"])[:400])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="benchmark ours against condure 1.9.1")
    ap.add_argument("--rounds", type=int, default=3, help="runs per implementation (default 3)")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="seconds per throughput/latency run (default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 round, 2 s runs (explicit --rounds/--duration win)")
    ap.add_argument("--only", action="append", default=[],
                    help="scenario name(s) to run, comma-separated or repeated; "
                         "one of " + ", ".join(s.name for s in SCENARIOS))
    ap.add_argument("--idle-conns", type=int, default=10000,
                    help="connections for the RSS scenarios (default 10000)")
    ap.add_argument("--h2-idle-conns", type=int, default=1000,
                    help="connections for the rss_h2_1k scenario (default 1000)")
    ap.add_argument("--hypercorn-python", metavar="PATH",
                    help="interpreter with hypercorn for the h2_c10m10 reference (default: "
                         "the venv's; pip install -r loadtest/requirements.txt)")
    ap.add_argument("--pause", type=float, default=0.5, help="pause between runs (s)")
    ap.add_argument("--no-condure", action="store_true", help="skip the Rust condure column")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--server-python", metavar="PATH",
                    help="interpreter for our condure (default: the venv's); the handler "
                         "and the load clients keep the venv's")
    ap.add_argument("--server-args", metavar="ARGS", default="",
                    help="more options for our condure (not the Rust one), one shell-quoted "
                         "string, e.g. \"--blocks-max 60000 --connection-blocks-max 8\"")
    args = ap.parse_args(argv)
    explicit = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
    if args.quick:
        if "--rounds" not in explicit:
            args.rounds = 1
        if "--duration" not in explicit:
            args.duration = 2.0
    if not 1 <= args.rounds <= 50:
        ap.error("--rounds must be 1..50")
    if not 1 <= args.duration <= 600:
        ap.error("--duration must be 1..600")
    if not 1 <= args.idle_conns <= 30000:
        ap.error("--idle-conns must be 1..30000")
    if not 1 <= args.h2_idle_conns <= 30000:
        ap.error("--h2-idle-conns must be 1..30000")
    wanted = [n.strip() for a in args.only for n in a.split(",") if n.strip()]
    names = {s.name for s in SCENARIOS}
    for n in wanted:
        if n not in names:
            ap.error(f"unknown scenario {n!r}; known: {', '.join(sorted(names))}")
    scenarios = [s for s in SCENARIOS if not wanted or s.name in wanted]

    if not os.path.exists(WRK) and any(
            s.name not in ("ws_echo50", "rss_http10k", "rss_ws10k", "h2_c10m10", "h2_vs_h1",
                           "rss_h2_1k")
            for s in scenarios):
        ap.error("wrk not found (sudo apt-get install wrk)")
    if not os.path.exists(H2LOAD) and any(s.name in ("h2_c10m10", "h2_vs_h1") for s in scenarios):
        ap.error("h2load not found (sudo apt-get install nghttp2-client)")
    have_rust = os.path.exists(RUST_CONDURE) and not args.no_condure
    soft, hard = raise_nofile()
    global SERVER_PY, HYPERCORN_PY
    if args.server_python:
        SERVER_PY = args.server_python
    if args.hypercorn_python:
        HYPERCORN_PY = args.hypercorn_python
    SERVER_ARGS[:] = shlex.split(args.server_args)
    version = subprocess.run([SERVER_PY, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True).stdout.strip()
    log(f"python {SERVER_PY} ({os.path.realpath(SERVER_PY)} {version}); condure {'%s' % RUST_CONDURE if have_rust else 'absent (no Rust column)'}"
        f"; fd limit {soft}/{hard}; rounds {args.rounds}; duration {args.duration:g} s")
    if soft < args.idle_conns + 256 and any(s.name.startswith("rss") for s in scenarios):
        log(f"note: fd limit {soft} is too low for {args.idle_conns} idle connections "
            "(the client and the server each need one fd per connection)")

    started = time.monotonic()
    results = []
    for sc in scenarios:
        log(f"== {sc.name}: {sc.description}")
        results.append((sc, run_scenario(sc, args, have_rust)))
    rows = build_rows(results, have_rust)
    print()
    print_table(rows)
    if args.json:
        doc = {"config": {"rounds": args.rounds, "duration": args.duration,
                          "idle_conns": args.idle_conns, "quick": args.quick,
                          "condure": RUST_CONDURE if have_rust else None,
                          "nofile": [soft, hard], "elapsed_s": round(time.monotonic() - started, 1)},
               "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2, default=str)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
