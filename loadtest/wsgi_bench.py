#!/usr/bin/env python3
"""WSGI benchmark (issue 18): a hello-world Flask app through condure + the
WSGI gateway (`python -m condure.wsgi`), against the same app under gunicorn
with its gevent worker. wrk, 50 keep-alive connections, req/s and p99.

    .venv/bin/python loadtest/wsgi_bench.py [--duration 10] [--rounds 3]
        [--gunicorn-python PATH] [--concurrency 100]

gunicorn and gevent are benchmark requirements (loadtest/requirements.txt),
never the project's: `--gunicorn-python` names an interpreter that has them
(default: this one). Every process is started here and stopped by PID; the
load goes to 127.0.0.1 only; every wait is bounded. It prints a table (and
each run) to stdout; the rows are medians over the rounds, the two stacks
alternating (A B A B ...) so that machine noise hits both alike.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench import WRK, run_wrk  # noqa: E402  (the same wrk runner and parser as bench.py)

APP = "wsgi_bench_app:app"  # loadtest/wsgi_bench_app.py
START_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, procs: list[subprocess.Popen]) -> None:
    """Until GET / answers 200 (the whole stack is up)."""
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args} exited with {p.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the stack did not answer in time")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def start_condure(zdir: str, concurrency: int) -> tuple[int, list[subprocess.Popen]]:
    port = free_port()
    base = f"ipc://{zdir}/client"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "stdin": subprocess.DEVNULL}
    cd = subprocess.Popen([sys.executable, "-m", "condure", "--listen", f"127.0.0.1:{port}",
                           "--zclient-stream", base], cwd=ROOT, env=env, **quiet)
    gw = subprocess.Popen([sys.executable, "-m", "condure.wsgi", APP, "--chdir", str(HERE),
                           "--zclient-stream", base, "--concurrency", str(concurrency),
                           "--log-level", "warning"], cwd=ROOT, env=env, **quiet)
    return port, [cd, gw]


def start_gunicorn(python: str, concurrency: int) -> tuple[int, list[subprocess.Popen]]:
    port = free_port()
    g = subprocess.Popen([python, "-m", "gunicorn", "-k", "gevent", "-w", "1",
                          "--worker-connections", "1000", "--keep-alive", "60",
                          "--log-level", "warning", "--chdir", str(HERE),
                          "-b", f"127.0.0.1:{port}", APP],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    return port, [g]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=100, help="the gateway's --concurrency")
    ap.add_argument("--gunicorn-python", default=sys.executable,
                    help="an interpreter with gunicorn and gevent installed")
    a = ap.parse_args()
    if not shutil.which(WRK):
        ap.error("wrk not found (sudo apt-get install wrk)")
    stacks = {
        "condure + condure.wsgi": lambda zdir: start_condure(zdir, a.concurrency),
        "gunicorn -k gevent -w 1": lambda zdir: start_gunicorn(a.gunicorn_python, a.concurrency),
    }
    results: dict[str, list[dict]] = {name: [] for name in stacks}
    for rnd in range(a.rounds):
        for name, start in stacks.items():
            zdir = tempfile.mkdtemp(prefix="wb", dir="/tmp")
            procs: list[subprocess.Popen] = []
            try:
                port, procs = start(zdir)
                wait_http(port, procs)
                r = run_wrk(port, 2, a.conns, a.duration, latency=True)
                results[name].append(r)
                print(f"round {rnd + 1} {name}: {r['rps']:.0f} req/s, "
                      f"p99 {r.get('p99_ms', float('nan')):.2f} ms", flush=True)
            finally:
                stop(procs)
                shutil.rmtree(zdir, ignore_errors=True)
    print()
    print(f"| stack (Flask hello world, wrk -t2 -c{a.conns} keep-alive, {a.duration:g} s, "
          f"median of {a.rounds}) | req/s | p99 ms |")
    print("|---|---|---|")
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        p99 = statistics.median(r.get("p99_ms") or 0.0 for r in runs)
        print(f"| {name} | {rps:.0f} | {p99:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
