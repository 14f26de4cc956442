#!/usr/bin/env python3
"""Soak test: clients come and go while handlers restart; does condure leak?

    .venv/bin/python loadtest/soak.py [--minutes 3] [--http 40] [--ws 20]

Starts `python -m condure` and loadtest/bench_handler.py, then:

1. warm-up: 30 s of the load below, then 20 s of quiet; the RSS and
   open file descriptors of condure are the baseline (the allocator's pools
   have grown to the working size by then, so a later rise means a leak);
2. soak: for --minutes, --http threads each open a keep-alive connection,
   make 1-50 requests and drop it (some mid-request), --ws threads open a
   WebSocket, echo 1-20 messages and close it (some drop TCP without a
   close frame), and every 15 s the handler is killed and started again
   (sessions it owned are cancelled or time out: condure runs with
   --stream-timeout 10 so that they end quickly);
3. quiet: 20 s, then RSS and fds again.

Prints the figures and the ratios after/baseline; exit status 1 if either
is more than 5% above its baseline. Everything goes to 127.0.0.1 and every
loop is bounded in time.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
WS_REQUEST = (b"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_figures(pid: int) -> tuple[int, int]:
    """(RSS in KB, open fds) of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = int(f.read().split("VmRSS:")[1].split()[0])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="cs", dir="/tmp")
        self.base = f"ipc://{self.dir}/client"
        self.port = free_port()
        self.condure: subprocess.Popen | None = None
        self.handler: subprocess.Popen | None = None
        self.stop_at = 0.0
        self.counts = {"requests": 0, "ws": 0, "errors": 0}
        self.lock = threading.Lock()

    # --- processes ---------------------------------------------------------

    def start(self) -> None:
        log = open(os.path.join(self.dir, "condure.log"), "w")
        self.condure = subprocess.Popen(
            [PY, "-m", "condure", "--listen", f"127.0.0.1:{self.port},stream",
             "--zclient-stream", self.base, "--stream-timeout", "10", "--log-level", "1"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        self.start_handler()

    def start_handler(self) -> None:
        self.handler = subprocess.Popen(
            [PY, os.path.join(REPO, "loadtest", "bench_handler.py"), "--base", self.base],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def restart_handler(self) -> None:
        assert self.handler is not None
        self.handler.kill()
        self.handler.wait()
        self.start_handler()

    def stop(self) -> None:
        for p in (self.handler, self.condure):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- clients -------------------------------------------------------------

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def http_client(self) -> None:
        rnd = random.Random()
        while time.monotonic() < self.stop_at:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=3) as c:
                    for _ in range(rnd.randint(1, 50)):
                        c.sendall(b"GET /soak HTTP/1.1\r\nHost: soak\r\n\r\n")
                        if rnd.random() < 0.02:
                            break  # leave with a request in flight
                        if not c.recv(4096):
                            break
                        self._count("requests")
            except OSError:
                self._count("errors")
                time.sleep(0.05)

    def ws_client(self) -> None:
        rnd = random.Random()
        while time.monotonic() < self.stop_at:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=3) as c:
                    c.sendall(WS_REQUEST)
                    if not c.recv(4096).startswith(b"HTTP/1.1 101"):
                        continue
                    for _ in range(rnd.randint(1, 20)):
                        c.sendall(_masked(0x81, b"soak message"))
                        if not c.recv(4096):
                            break
                    if rnd.random() < 0.8:
                        c.sendall(_masked(0x88, b"\x03\xe8"))
                        c.recv(4096)
                    self._count("ws")
            except OSError:
                self._count("errors")
                time.sleep(0.05)

    def load(self, seconds: float, restart_every: float | None) -> None:
        self.stop_at = time.monotonic() + seconds
        threads = [threading.Thread(target=self.http_client) for _ in range(self.args.http)]
        threads += [threading.Thread(target=self.ws_client) for _ in range(self.args.ws)]
        for t in threads:
            t.start()
        next_restart = time.monotonic() + (restart_every or seconds + 1)
        while time.monotonic() < self.stop_at:
            time.sleep(0.5)
            if restart_every and time.monotonic() >= next_restart:
                self.restart_handler()
                next_restart += restart_every
                if self.condure is not None:
                    rss, fds = proc_figures(self.condure.pid)
                    print(f"  load: RSS {rss} KB, fds {fds}", flush=True)
        for t in threads:
            t.join(10)


def _masked(first: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((first, 0x80 | len(payload))) + mask + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--http", type=int, default=40, help="HTTP client threads")
    ap.add_argument("--ws", type=int, default=20, help="WebSocket client threads")
    ap.add_argument("--quiet", type=float, default=20.0, help="seconds of quiet before measuring")
    args = ap.parse_args()
    soak = Soak(args)
    try:
        soak.start()
        assert soak.condure is not None
        soak.load(30, 15.0)  # one cycle of the same load, handler restart included
        time.sleep(args.quiet)
        rss0, fds0 = proc_figures(soak.condure.pid)
        print(f"baseline: RSS {rss0} KB, fds {fds0}", flush=True)
        soak.load(args.minutes * 60, 15.0)
        peak = proc_figures(soak.condure.pid)
        print(f"end of load: RSS {peak[0]} KB, fds {peak[1]}; {soak.counts}", flush=True)
        time.sleep(args.quiet)
        rss1, fds1 = proc_figures(soak.condure.pid)
    finally:
        soak.stop()
    r_rss, r_fds = rss1 / rss0, fds1 / fds0
    print(f"after quiet: RSS {rss1} KB ({r_rss:.3f}x baseline), fds {fds1} ({r_fds:.3f}x baseline)")
    ok = r_rss <= 1.05 and r_fds <= 1.05
    print("OK: back within 5% of baseline" if ok else "FAIL: above baseline by more than 5%")
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
