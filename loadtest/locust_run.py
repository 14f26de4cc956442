#!/usr/bin/env python3
"""A bounded headless Locust run against this condure, with everything it needs.

Usage (from anywhere; paths are resolved from this file)::

    .venv/bin/python loadtest/locust_run.py [--users 10] [--spawn-rate 10] [--time 10]
        [--csv PREFIX] [--think-time S] [--ws-message-size N] [--keep]

It starts, in a short temporary directory (/tmp/clXXXXXX):

1. ``python -m condure --listen 127.0.0.1:PORT --zclient-stream ipc://DIR/client``
   (PORT free, run from the repository root, log in DIR/condure.log);
2. ``loadtest/bench_handler.py --base ipc://DIR/client`` and waits for its
   ``ready`` line (condure's SUB has subscribed) and one 200 through condure;
3. ``python -m locust -f loadtest/locustfile.py --headless -u N -r R -t Ts
   --host http://127.0.0.1:PORT --csv PREFIX`` (HTTP and WebSocket echo users),

then prints the figures of PREFIX_stats.csv (locust's last once-a-second snapshot,
so up to the final second of the run may be missing from it; locust's own
summary above it is complete) and stops what it started, by PID.
Locust runs with this script's interpreter, so use the project venv (locust
is pinned in requirements-dev.txt). Every wait is bounded; locust is killed
if it overruns its time by more than a minute.

Exit status: 0 when the run made requests and none failed, 1 otherwise, 2 when
it could not start (locust missing, condure or the handler not coming up).
The temporary directory is removed unless --keep or the run failed.
"""
from __future__ import annotations

import argparse
import csv
import http.client
import importlib.util
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
HANDLER = HERE / "bench_handler.py"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
LOCUST_GRACE = 60.0


class StartError(Exception):
    """Something the run needs did not come up; the message says what."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; only the process we started."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise StartError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise StartError(f"{what} did not listen on {port} within {START_TIMEOUT:g} s")


def wait_ready(proc: subprocess.Popen) -> str:
    """The handler's `ready <topic>` line: condure's SUB subscription has arrived."""
    assert proc.stdout is not None
    end = time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < end:
            if sel.select(timeout=max(0.0, end - time.monotonic())):
                line = proc.stdout.readline().decode(errors="replace").strip()
                if line.startswith("ready"):
                    return line
                if not line and proc.poll() is not None:
                    break
    raise StartError(f"bench_handler.py was not ready within {START_TIMEOUT:g} s")


def warm_up(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
    except OSError as e:
        raise StartError(f"warm-up request failed: {e}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise StartError(f"warm-up request got {resp.status}, not 200")


def locust_argv(args: argparse.Namespace, port: int, prefix: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.time}s",
            "--host", f"http://127.0.0.1:{port}", "--csv", prefix, "--only-summary",
            "--stop-timeout", "2", "--loglevel", "WARNING",
            "--think-time", str(args.think_time), "--ws-message-size", str(args.ws_message_size)]


def read_stats(prefix: str) -> list[dict[str, str]]:
    path = Path(f"{prefix}_stats.csv")
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or 0)
    except ValueError:
        return 0.0


def report(rows: list[dict[str, str]]) -> tuple[int, int]:
    """Print one line per request kind and the ratios; (requests, failures) in total."""
    print(f"{'type':<6} {'name':<12} {'requests':>9} {'failures':>8} {'per s':>9} "
          f"{'median ms':>9} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>8}")
    total = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    for row in rows:
        print(f"{row.get('Type') or '':<6} {row.get('Name') or '':<12} "
              f"{int(number(row, 'Request Count')):>9} {int(number(row, 'Failure Count')):>8} "
              f"{number(row, 'Requests/s'):>9.1f} {number(row, 'Median Response Time'):>9.1f} "
              f"{number(row, '95%'):>7.0f} {number(row, '99%'):>7.0f} "
              f"{number(row, 'Max Response Time'):>8.0f}")
    if total is None:
        return 0, 0
    requests, failures = int(number(total, "Request Count")), int(number(total, "Failure Count"))
    rate = {(r.get("Type"), r.get("Name")): number(r, "Requests/s") for r in rows}
    http_rate, echo_rate = rate.get(("GET", "/"), 0.0), rate.get(("WS", "echo"), 0.0)
    print(f"failure ratio: {failures / requests if requests else 0:.4f}")
    if http_rate and echo_rate:
        print(f"ws echoes per http request: {echo_rate / http_rate:.2f}")
    return requests, failures


def run(args: argparse.Namespace, tmp: Path) -> int:
    port = free_port()
    base = f"ipc://{tmp}/client"
    prefix = args.csv or str(tmp / "locust")
    procs: list[subprocess.Popen] = []
    try:
        with open(tmp / "condure.log", "wb") as out:
            condure = subprocess.Popen(
                [sys.executable, "-m", "condure", "--listen", f"127.0.0.1:{port}",
                 "--zclient-stream", base, "--log-level", "1"],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        procs.append(condure)
        wait_port(port, condure, "condure")
        handler = subprocess.Popen([sys.executable, str(HANDLER), "--base", base],
                                   cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        procs.append(handler)
        log(f"condure on 127.0.0.1:{port} (pid {condure.pid}), handler pid {handler.pid}: "
            f"{wait_ready(handler)}")
        warm_up(port)
        argv = locust_argv(args, port, prefix)
        log("running: " + " ".join(argv[1:]))
        locust = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL)
        procs.append(locust)
        try:
            rc = locust.wait(args.time + LOCUST_GRACE)
        except subprocess.TimeoutExpired:
            log("locust overran its time; stopping it")
            stop(locust)
            rc = -1
        if condure.poll() is not None:
            log(f"condure exited with {condure.returncode} during the run")
            rc = rc or 1
    finally:
        for proc in reversed(procs):
            stop(proc)
    print(f"\nlocust: {args.users} users, {args.time} s, exit status {rc}; csv: {prefix}_stats.csv")
    requests, failures = report(read_stats(prefix))
    ok = rc == 0 and requests > 0 and failures == 0
    print("result:", "OK" if ok else "FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="bounded headless Locust run against condure")
    ap.add_argument("--users", "-u", type=int, default=10, help="concurrent users (default 10)")
    ap.add_argument("--spawn-rate", "-r", type=float, default=10.0,
                    help="users started per second (default 10)")
    ap.add_argument("--time", "-t", type=int, default=10, help="run time in seconds (default 10)")
    ap.add_argument("--csv", metavar="PREFIX",
                    help="where locust writes PREFIX_stats.csv etc. (default: the temporary dir)")
    ap.add_argument("--think-time", type=float, default=0.0,
                    help="seconds between a user's tasks (default 0)")
    ap.add_argument("--ws-message-size", type=int, default=16,
                    help="bytes per WebSocket echo (default 16)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    if args.users < 1 or args.time < 1 or args.spawn_rate <= 0 or args.ws_message_size < 1:
        ap.error("--users, --time, --spawn-rate and --ws-message-size must be positive")
    if importlib.util.find_spec("locust") is None:
        log(f"locust is not installed for {sys.executable}; "
            "install it with: pip install -r requirements-dev.txt")
        return 2
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop what we started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    tmp = Path(tempfile.mkdtemp(prefix="cl", dir="/tmp"))
    status = 2
    try:
        status = run(args, tmp)
    except StartError as e:
        log(f"could not start: {e}")
        condure_log = tmp / "condure.log"
        if condure_log.exists():
            log(condure_log.read_text(errors="replace")[-2000:])
    finally:
        if args.keep or status != 0:
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
