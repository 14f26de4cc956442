#!/usr/bin/env python3
"""Benchmark suite: this condure (Python) against condure 1.9.1 (Rust, Debian package).

Usage (from anywhere; paths are resolved from this file)::

    .venv/bin/python loadtest/bench.py [--rounds 5] [--duration 5] [--quick]
                                       [--only NAME[,NAME...]] [--json FILE]

For every scenario and every round it runs ours (``.venv/bin/python -m
condure``) and then, when /usr/bin/condure exists, the Rust condure
(``--workers 1``), alternately (A B A B ...), each time with fresh
processes: the server, then a fresh ``loadtest/bench_handler.py`` on ipc
sockets in a short temporary directory. The load goes to
``127.0.0.1:PORT`` only, every wait is bounded, and the processes started
for a run are stopped (by PID) when it ends. The primary figure of every
throughput row is the server's CPU time per request (message, connection):
utime+stime of its whole process tree over the measured window only (issue
17), with req/s and latency beside it. The final table gives the median per
implementation, the ratio ours/condure, the target and a verdict, each
column's spread and the range of the rounds' A/B ratios; every round's
value is printed under it. See loadtest/README.md for what each row means.
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


def tree_ticks(pid: int) -> int:
    """CPU clock ticks of pid's process tree: for pid and each live descendant,
    utime + stime (all its threads) + cutime + cstime (its children that have
    exited and been reaped). A descendant that exits during a window is not
    lost: its whole time moves into its parent's cutime/cstime when the parent
    reaps it (a zombie not yet reaped still shows its own). 0 when pid is gone."""
    total = 0
    for p in [pid] + children_of(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, ValueError, IndexError):
            pass
    return total


def tree_cpu_s(pid: int) -> float:
    """tree_ticks in seconds."""
    return tree_ticks(pid) / CLK_TCK


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


def count_lines(proc: subprocess.Popen, prefixes: tuple[str, ...], want: int,
                timeout: float) -> int:
    """Wait (bounded) until `want` stdout lines start with one of prefixes; the count seen."""
    fd = proc.stdout.fileno()
    buf = b""
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < want and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if not r:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.decode("utf-8", "replace").startswith(prefixes):
                seen += 1
    return seen


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

    def __init__(self, impl: str, workers: int = 1, connect: bool = False,
                 extra_args: tuple[str, ...] = (), opts: dict | None = None) -> None:
        self.impl = impl
        self.workers = workers
        self.connect = connect  # --zclient-connect: the handler binds
        self.extra_args = list(extra_args)  # more server options (this scenario's)
        self.opts = opts or {}  # scenario options of this column (e.g. idle connections)
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
        if self.connect:
            common.append("--zclient-connect")
        extra = list(self.extra_args)
        while "--stream-maxconn" in extra:  # replaces the default (given once only)
            i = extra.index("--stream-maxconn")
            common[common.index("--stream-maxconn") + 1] = extra[i + 1]
            del extra[i:i + 2]
        common += extra
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
        self.handler = subprocess.Popen([PY, HANDLER, "--base", self.base, "--id", HANDLER_ID]
                                        + (["--bind"] if self.connect else []),
                                        cwd=ROOT, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        # ours: one SUB subscription per worker (its own `from`), seen by the
        # handler's XPUB whether the parent proxies or the workers connect
        want = self.workers if self.impl == OURS else 1
        self.subscriptions = count_lines(self.handler, ("ready", "subscribed"), want,
                                         10 if want == 1 else 15)
        if self.subscriptions == 0:
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


CLIENT_CONNS_MAX = 25000  # per idle client: its fds, and ~28k ephemeral ports per source


def measure_idle_rss(stack: Stack, proto: str, conns: int) -> dict:
    """Open `conns` idle connections from client processes; server RSS delta per connection.

    Up to CLIENT_CONNS_MAX (and the fd limit) one client from 127.0.0.1; more
    are split over several clients, each from its own source address
    (127.0.0.2, 127.0.0.3, ...: each has its own ephemeral ports)."""
    time.sleep(0.5)
    before = rss_kb(stack.server.pid)
    scheme = "ws" if proto == "ws" else "http"
    per = max(1, min(CLIENT_CONNS_MAX, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 500))
    nclients = -(-conns // per)
    big = nclients > 1
    clients: list[subprocess.Popen] = []
    opened = failed = 0
    setup = 0.0
    try:
        for i in range(nclients):
            n = conns // nclients + (1 if i < conns % nclients else 0)
            cmd = [PY, WSLOAD, "idle", "--proto", proto,
                   "--url", f"{scheme}://127.0.0.1:{stack.port}/", "--conns", str(n),
                   "--hold", "900" if big else "120", "--stdin", "--json",
                   "--connect-timeout", "240" if big else "90"]
            if big:
                cmd += ["--source", f"127.0.0.{2 + i}"]
            clients.append(subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for client in clients:
            line = read_line(client, "ready", 300 if big else 120)
            if line is None:
                raise RunError(f"idle client did not get ready: {client.stderr.read(500) if client.poll() is not None else ''}")
            _, o, f, t = line.split()
            opened += int(o)
            failed += int(f)
            setup = max(setup, float(t))
        time.sleep(1.0)  # let the server settle (lazy allocations, handler replies)
        after = rss_kb(stack.server.pid)
        alive = stack.alive()
    finally:
        for client in clients:
            try:
                client.stdin.close()  # EOF: the client closes everything (RST) and exits
            except OSError:
                pass
        for client in clients:
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
           "rss_after_kb": after, "opened": opened, "failed": failed,
           "setup_s": setup, "clients": nclients}
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
    impls: tuple[tuple, ...] = ((OURS, OURS, 1), (RUST, RUST, 1))
    # (column label, implementation, workers[, options]); options: "connect" (our
    # --zclient-connect, the handler binds), "args" (more server options), "conns"
    ref_label: str = "condure 1.9.1"


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def children_cpu_s() -> float:
    """utime + stime of this script's reaped children (the load generators)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


SETTLE = 0.25  # s after the load ends before the window closes (connections' teardown)


def with_cpu(stack: Stack, load: Callable[[], dict], count_key: str) -> dict:
    """Run `load` (which returns the load generator's result) inside a CPU window.

    The window opens after the start-up and warm-up (Stack.start) and closes
    SETTLE s after the load generator has exited. Adds to the result:
    cpu_us (server CPU per unit, r[count_key] units: requests, messages,
    connections; the server's whole process tree, parent and workers,
    utime+stime, see tree_ticks), handler_cpu_us (bench_handler's, apart),
    loadgen_cpu_us (wrk / wsload / h2load), cpu_busy_pct (the machine's busy
    share, all cores) and other_cpu_pct (the share of all cores used by
    processes outside this run: other jobs on the machine)."""
    server = stack.server.pid
    handler = stack.handler.pid if stack.handler is not None else None
    m0 = cpu_times()
    c0 = children_cpu_s()
    s0 = tree_ticks(server)
    h0 = tree_ticks(handler) if handler else 0
    t0 = time.monotonic()
    r = load()
    time.sleep(SETTLE)
    s1 = tree_ticks(server)
    h1 = tree_ticks(handler) if handler else 0
    c1 = children_cpu_s()
    m1 = cpu_times()
    n = max(int(r.get(count_key) or 0), 1)
    server_s = (s1 - s0) / CLK_TCK
    handler_s = (h1 - h0) / CLK_TCK
    loadgen_s = c1 - c0
    busy_s = (m1[0] - m0[0]) / CLK_TCK
    total_s = max((m1[1] - m0[1]) / CLK_TCK, 1e-9)
    r.update({
        "units": n, "window_s": round(time.monotonic() - t0, 3),
        "server_cpu_s": server_s, "handler_cpu_s": handler_s, "loadgen_cpu_s": loadgen_s,
        "cpu_us": server_s / n * 1e6, "handler_cpu_us": handler_s / n * 1e6,
        "loadgen_cpu_us": loadgen_s / n * 1e6,
        "cpu_busy_pct": 100.0 * busy_s / total_s,
        "other_cpu_pct": max(0.0, 100.0 * (busy_s - server_s - handler_s - loadgen_s) / total_s),
    })
    if s1 < s0 or not stack.alive():  # the server (or a worker reaped outside the
        # tree) is gone: the window lost its time, the figure would be wrong
        r["cpu_us"] = None
        r["note"] = "; ".join(filter(None, [r.get("note"), "server CPU lost (server exited?)"]))
    return r


def sc_ka(threads: int, conns: int) -> Callable:
    def run(stack: Stack, a: argparse.Namespace) -> dict:
        r = with_cpu(stack, lambda: run_wrk(stack.port, threads, conns, a.duration), "requests")
        r["note"] = "; ".join(filter(None, [r.get("note"), wrk_note(r)]))
        return r
    return run


def sc_conn_per_req(stack: Stack, a: argparse.Namespace) -> dict:
    r = with_cpu(stack, lambda: run_wrk(stack.port, 1, 50, a.duration,
                                        headers=["Connection: close"]), "requests")
    r["note"] = "; ".join(filter(None, [r.get("note"), wrk_note(r)]))
    return r


def sc_ws_echo(stack: Stack, a: argparse.Namespace) -> dict:
    r = with_cpu(stack, lambda: run_ws_echo(stack.port, 50, a.duration), "messages")
    if not r.get("connected"):
        raise RunError(f"no WebSocket connection: {r.get('error')}")
    notes = [r["note"]] if r.get("note") else []
    if r.get("connected") != 50:
        notes.append(f"connected {r.get('connected')}/50")
    if r.get("errors"):
        notes.append(f"errors {r['errors']}")
    if r.get("error"):
        notes.append(str(r["error"]))
    r["note"] = "; ".join(notes)
    return r


def sc_lat(stack: Stack, a: argparse.Namespace) -> dict:
    r = with_cpu(stack, lambda: run_wrk(stack.port, 2, 1000, a.duration, latency=True,
                                        timeout_s=10), "requests")
    r["note"] = "; ".join(filter(None, [r.get("note"), wrk_note(r)]))
    return r


def sc_rss(proto: str) -> Callable:
    def run(stack: Stack, a: argparse.Namespace) -> dict:
        r = measure_idle_rss(stack, proto, stack.opts.get("conns", a.idle_conns))
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
        r = with_cpu(stack, lambda: run_h2load(stack.port, c, m, a.duration, use_h1),
                     "succeeded")
        r["cpu_us_per_req"] = r["cpu_us"]  # (the names of the JSON before issue 17)
        r["cpu_s"] = r["server_cpu_s"]
        if stack.handler is not None:
            r["handler_cpu_us_per_req"] = r["handler_cpu_us"]
        else:
            r.pop("handler_cpu_us", None)
        notes = [r["note"]] if r.get("note") else []
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


def cpu(label: str = "server CPU/req", target: float | None = None) -> Metric:
    """The primary figure of a throughput row: the server's CPU per unit (us)."""
    return Metric("cpu_us", label, "us", target, False)


BIG_IDLE = 50000  # connections of the rss_*50k rows
CONNECT = {"connect": True}  # --zclient-connect (the handler binds)

SCENARIOS = [
    Scenario("ka50", "keep-alive, wrk -t1 -c50",
             [cpu("server CPU/req", 1.1), Metric("rps", "req/s", "req/s")], sc_ka(1, 50)),
    Scenario("ka500", "keep-alive, wrk -t2 -c500",
             [cpu(), Metric("rps", "req/s", "req/s")], sc_ka(2, 500)),
    Scenario("conn_per_req", "new connection per request, wrk -t1 -c50 Connection: close",
             [cpu("server CPU/conn", 0.8), Metric("rps", "req/s", "req/s")], sc_conn_per_req),
    Scenario("ws_echo50", "WebSocket echo, 50 connections (wsload.py)",
             [cpu("server CPU/msg", 1.3), Metric("msgs_per_s", "msgs/s", "msgs/s", 0.8)],
             sc_ws_echo),
    Scenario("lat1000", "latency, wrk -t2 -c1000 --latency",
             [cpu(),
              Metric("p50_ms", "p50", "ms", None, False),
              Metric("p99_ms", "p99", "ms", 2.0, False),
              Metric("rps", "req/s", "req/s")], sc_lat),
    Scenario("rss_http10k", "RSS per idle keep-alive HTTP connection (after one request)",
             [Metric("kb_per_conn", "RSS/conn", "KB", 0.45, False)], sc_rss("http")),
    Scenario("rss_ws10k", "RSS per idle WebSocket connection (after the handshake)",
             [Metric("kb_per_conn", "RSS/conn", "KB", 0.45, False)], sc_rss("ws")),
    # 50,000 idle connections: does the cost per connection stay flat? (impls are
    # set in main from the fd limit: ours vs condure when one process may hold
    # 50,000 fds, else ours --workers K at 50,000 vs the same at 10,000)
    Scenario("rss_http50k", "RSS per idle keep-alive HTTP connection at 50,000",
             [Metric("kb_per_conn", "RSS/conn", "KB", None, False)], sc_rss("http")),
    Scenario("rss_ws50k", "RSS per idle WebSocket connection at 50,000",
             [Metric("kb_per_conn", "RSS/conn", "KB", None, False)], sc_rss("ws")),
    Scenario("workers", "bind mode (the parent proxies): ours --workers 2 vs --workers 1, "
             "keep-alive wrk -t1 -c50",
             [cpu("server CPU/req", 1.2), Metric("rps", "req/s", "req/s"),
              Metric("cpu_busy_pct", "machine CPU busy", "%", None)], sc_ka(1, 50),
             impls=(("ours-w2", OURS, 2), ("ours-w1", OURS, 1)), ref_label="ours --workers 1"),
    Scenario("workers_connect", "--zclient-connect (the handler binds): ours --workers 2 vs "
             "--workers 1, keep-alive wrk -t1 -c50",
             [cpu("server CPU/req", 1.05), Metric("rps", "req/s", "req/s"),
              Metric("cpu_busy_pct", "machine CPU busy", "%", None)], sc_ka(1, 50),
             impls=(("ours-w2-connect", OURS, 2, CONNECT), ("ours-w1-connect", OURS, 1, CONNECT)),
             ref_label="ours --workers 1 --zclient-connect"),
    # the same comparison for condure itself: how much a second worker can give on
    # this machine at all, with the handler and wrk sharing its cores (no target)
    Scenario("workers_condure", "condure --workers 2 vs condure --workers 1, as `workers`",
             [cpu(), Metric("rps", "req/s", "req/s", None),
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
             [Metric("cpu_us_per_req", "server CPU/req", "us", None, False),
              Metric("rps", "req/s", "req/s", None)],
             sc_h2load(10, 10, h1=(100, 1)), impls=(("ours-h2", OURS, 1), ("ours-h1", OURS, 1)),
             ref_label="ours HTTP/1.1"),
    Scenario("rss_h2_1k", "RSS per idle h2c connection (preface + SETTINGS) vs HTTP/1.1",
             [Metric("kb_per_conn", "RSS/conn", "KB", None, False)], sc_rss_h2,
             impls=(("ours-h2", OURS, 1), ("ours-http1", OURS, 1)),
             ref_label="ours HTTP/1.1"),
]


def big_idle_impls(nofile: int, conns: int = BIG_IDLE) -> tuple[tuple, ...]:
    """The columns of the rss_*50k rows for this fd limit (the client side is split
    over processes; the server needs one fd per connection in one process)."""
    maxconn = ("--stream-maxconn", str(conns + 10000))
    if nofile >= conns + 1000:
        return ((OURS, OURS, 1, {"conns": conns, "args": maxconn}),
                (RUST, RUST, 1, {"conns": conns, "args": maxconn}))
    k = -(-conns // max(nofile - 2000, 1000))  # workers, each under the limit
    maxconn = ("--stream-maxconn", str(k * (nofile - 500)))
    return ((f"ours-w{k}-{conns // 1000}k", OURS, k, {"conns": conns, "args": maxconn}),
            (f"ours-w{k}-10k", OURS, k, {"conns": 10000, "args": maxconn}))


# --- driver ----------------------------------------------------------------------


@dataclass
class Outcome:
    runs: dict[str, list[dict]] = field(default_factory=dict)  # column label -> results
    unsupported: str = ""
    errors: list[str] = field(default_factory=list)


def run_scenario(sc: Scenario, args: argparse.Namespace, have_rust: bool) -> Outcome:
    out = Outcome()
    impls = [i for i in sc.impls if i[1] != RUST or have_rust]
    for label, *_ in impls:
        out.runs[label] = []
    for rnd in range(1, args.rounds + 1):
        for label, impl, workers, *more in impls:
            opts = more[0] if more else {}
            if out.unsupported:
                return out
            tag = f"[{sc.name} round {rnd}/{args.rounds}] {label}"
            try:
                for attempt in range(1 + (args.retries if args.max_others is not None else 0)):
                    with Stack(impl, workers, connect=bool(opts.get("connect")),
                               extra_args=tuple(opts.get("args", ())), opts=opts) as stack:
                        stack.label = label
                        res = sc.run(stack, args)
                        res["round"] = rnd
                        if not stack.alive():
                            res["note"] = ("; ".join(filter(None, [res.get("note"),
                                                                   "server exited during run"])))
                    others = res.get("other_cpu_pct")
                    if args.max_others is None or others is None or others <= args.max_others:
                        break
                    if attempt < args.retries:  # the machine was shared: run it again
                        log(f"{tag}: others {others:.0f}% > {args.max_others:g}%, again")
                        time.sleep(args.pause)
                    else:
                        res["note"] = "; ".join(filter(None, [
                            res.get("note"), f"others above {args.max_others:g}%"]))
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
            if "cpu_us" in res:
                shown += (f" (handler {res['handler_cpu_us']:.1f} us, machine busy "
                          f"{res['cpu_busy_pct']:.0f}%, others {res['other_cpu_pct']:.0f}%)")
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


def _by_round(runs: list[dict], key: str) -> dict[int, float]:
    return {r.get("round", i + 1): r[key] for i, r in enumerate(runs)
            if isinstance(r.get(key), (int, float))}


def build_rows(results: list[tuple[Scenario, Outcome]], have_rust: bool) -> list[dict]:
    rows = []
    for sc, out in results:
        labels = [i[0] for i in sc.impls]
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
            if sc.impls[1][1] == RUST and not have_rust:
                notes.append("no /usr/bin/condure")
            # A/B pairs: the runs of one round ran back to back, so their ratio
            # carries less of the machine's drift than the ratio of the medians
            ra = _by_round(out.runs.get(labels[0], []), m.key)
            rb = _by_round(out.runs.get(labels[1], []), m.key)
            round_ratios = [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k]]
            context = {}
            if m.key == "cpu_us":
                for lab in labels:
                    rs = out.runs.get(lab, [])
                    context[lab] = {
                        "handler_cpu_us": median([r.get("handler_cpu_us") for r in rs]),
                        "loadgen_cpu_us": median([r.get("loadgen_cpu_us") for r in rs]),
                        "cpu_busy_pct": median([r.get("cpu_busy_pct") for r in rs]),
                        "other_cpu_pct": [r.get("other_cpu_pct") for r in rs]}
            rows.append({
                "scenario": sc.name, "description": sc.description, "metric": m.label,
                "key": m.key, "unit": m.unit, "ours": a, "reference": b,
                "reference_is": sc.ref_label, "labels": labels,
                "ratio": ratio, "target": target, "verdict": verdict,
                "spread": {lab: _spread([r.get(m.key) for r in rs])
                           for lab, rs in out.runs.items()},
                "round_ratios": round_ratios, "context": context or None,
                "runs": {lab: [r.get(m.key) for r in rs] for lab, rs in out.runs.items()},
                "details": out.runs if m is sc.metrics[0] else None,
                "notes": notes, "errors": out.errors,
            })
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def print_table(rows: list[dict]) -> None:
    head = ["scenario", "metric", "unit", "ours", "condure", "ratio", "target", "verdict",
            "spread", "round ratios"]
    table = [head]
    for r in rows:
        sp = [r["spread"].get(lab) for lab in r["labels"]]
        rr = r["round_ratios"]
        table.append([r["scenario"], r["metric"], r["unit"],
                      "n/a" if r["verdict"] == "n/a" and r["ours"] is None else fmt(r["ours"], r["unit"]),
                      fmt(r["reference"], r["unit"]),
                      "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}",
                      r["target"] or "-", r["verdict"],
                      f"{_pct(sp[0])}/{_pct(sp[1])}",
                      f"{min(rr):.2f}-{max(rr):.2f}" if len(rr) > 1 else "-"])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    right = {3, 4, 5, 8}
    lines = []
    for k, row in enumerate(table):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                 for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    print("\n".join(lines))
    print()
    print("medians over the rounds; ratio = ours / condure (median over median); spread = "
          "(max-min)/median of each column's rounds (ours/condure);\n"
          "round ratios = the lowest and highest ours/condure of one round's back-to-back pair. "
          "Server CPU = utime+stime of the server's process tree\n"
          "(parent and workers) over the measured window, per request / message / connection; "
          "the handler's is apart (below).\n"
          "The 'workers*' rows compare --workers 2 (ours column) with --workers 1 (condure "
          "column); h2_c10m10 compares with hypercorn;\n"
          "h2_vs_h1 and rss_h2_1k compare ours over h2c with ours over HTTP/1.1; "
          "rss_*50k: see loadtest/README.md.")
    print()
    print("per round (in the order run):")
    for r in rows:
        if r["key"] not in ("cpu_us", "cpu_us_per_req", "kb_per_conn"):
            continue
        cols = []
        for lab in r["labels"]:
            vals = r["runs"].get(lab) or []
            shown = [fmt(v, r["unit"]) if r["unit"] != "us" else f"{v:.1f}"
                     for v in vals if isinstance(v, (int, float))]
            cols.append(f"{lab} " + (" ".join(shown) or "n/a"))
        line = f"  {r['scenario']} {r['metric']} ({r['unit']}): " + " | ".join(cols)
        if r["round_ratios"]:
            line += " | ratios " + " ".join(f"{x:.2f}" for x in r["round_ratios"])
        print(line)
        if r["context"]:
            parts = []
            for lab, c in r["context"].items():
                others = [v for v in c["other_cpu_pct"] if isinstance(v, (int, float))]
                if c["handler_cpu_us"] is None:
                    continue
                parts.append(f"{lab}: handler {c['handler_cpu_us']:.1f} us, load generator "
                             f"{c['loadgen_cpu_us']:.1f} us, machine busy "
                             f"{c['cpu_busy_pct']:.0f}%, others "
                             f"{min(others):.0f}-{max(others):.0f}%")
            if parts:
                print("      " + "; ".join(parts))
    notes = [r for r in rows if r["notes"]]
    if notes:
        print()
    for r in notes:
        print(f"  {r['scenario']} {r['metric']}: " + "; ".join(r["notes"])[:400])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="benchmark ours against condure 1.9.1")
    ap.add_argument("--rounds", type=int, default=5, help="runs per implementation (default 5)")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="seconds per throughput/latency run (default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 round, 2 s runs (explicit --rounds/--duration win)")
    ap.add_argument("--only", action="append", default=[],
                    help="scenario name(s) to run, comma-separated or repeated; "
                         "one of " + ", ".join(s.name for s in SCENARIOS))
    ap.add_argument("--idle-conns", type=int, default=10000,
                    help="connections for the RSS scenarios (default 10000)")
    ap.add_argument("--big-idle-conns", type=int, default=BIG_IDLE,
                    help=f"connections for the rss_*50k scenarios (default {BIG_IDLE})")
    ap.add_argument("--h2-idle-conns", type=int, default=1000,
                    help="connections for the rss_h2_1k scenario (default 1000)")
    ap.add_argument("--hypercorn-python", metavar="PATH",
                    help="interpreter with hypercorn for the h2_c10m10 reference (default: "
                         "the venv's; pip install -r loadtest/requirements.txt)")
    ap.add_argument("--pause", type=float, default=0.5, help="pause between runs (s)")
    ap.add_argument("--max-others", type=float, metavar="PCT",
                    help="run a throughput run again (up to --retries times) when other "
                         "processes took more than PCT%% of the machine during it")
    ap.add_argument("--retries", type=int, default=2,
                    help="with --max-others: how many times a run may be repeated (default 2)")
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
    if not 0 <= args.retries <= 10:
        ap.error("--retries must be 0..10")
    if not 1 <= args.duration <= 600:
        ap.error("--duration must be 1..600")
    if not 1 <= args.idle_conns <= 30000:
        ap.error("--idle-conns must be 1..30000")
    if not 10000 <= args.big_idle_conns <= 200000:
        ap.error("--big-idle-conns must be 10000..200000")
    if not 1 <= args.h2_idle_conns <= 30000:
        ap.error("--h2-idle-conns must be 1..30000")
    wanted = [n.strip() for a in args.only for n in a.split(",") if n.strip()]
    names = {s.name for s in SCENARIOS}
    for n in wanted:
        if n not in names:
            ap.error(f"unknown scenario {n!r}; known: {', '.join(sorted(names))}")
    scenarios = [s for s in SCENARIOS if not wanted or s.name in wanted]

    if not os.path.exists(WRK) and any(
            s.name not in ("ws_echo50", "rss_http10k", "rss_ws10k", "rss_http50k", "rss_ws50k",
                           "h2_c10m10", "h2_vs_h1", "rss_h2_1k")
            for s in scenarios):
        ap.error("wrk not found (sudo apt-get install wrk)")
    if not os.path.exists(H2LOAD) and any(s.name in ("h2_c10m10", "h2_vs_h1") for s in scenarios):
        ap.error("h2load not found (sudo apt-get install nghttp2-client)")
    have_rust = os.path.exists(RUST_CONDURE) and not args.no_condure
    soft, hard = raise_nofile()
    for sc in scenarios:
        if sc.name in ("rss_http50k", "rss_ws50k"):
            sc.impls = big_idle_impls(soft, args.big_idle_conns)
            sc.ref_label = "condure 1.9.1" if sc.impls[1][1] == RUST else (
                f"ours --workers {sc.impls[1][2]} at 10,000")
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
                          "idle_conns": args.idle_conns, "big_idle_conns": args.big_idle_conns, "quick": args.quick,
                          "condure": RUST_CONDURE if have_rust else None,
                          "nofile": [soft, hard], "elapsed_s": round(time.monotonic() - started, 1)},
               "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2, default=str)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
