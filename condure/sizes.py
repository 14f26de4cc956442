"""--sizes: what a connection costs, measured in this process with the options given.

condure prints the sizes of its task structs. A Python object's
`__basicsize__` says little about what a connection costs (its dict, the
parser, the greenlet and its saved stack, gevent's watchers all count), so
this measures instead: an App is started with the command line's options
(but on a loopback port and a private ipc directory, so it cannot disturb a
running condure), a child process opens N connections to it, and the growth
of the Python heap (tracemalloc) and of the resident set is divided by N.
Two states: idle (accepted, no byte received) and holding an unfinished
request head. Kernel socket buffers are not included (they are not this
process's memory).
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import os
import shutil
import sys
import tempfile
import tracemalloc
from dataclasses import dataclass
from typing import cast

import gevent
from gevent import subprocess

from . import VERSION
from .app import App, Server
from .blocks import BlockBudget
from .config import Config, ListenSpec

CONNECTIONS = 200  # per measurement: enough to average out allocator noise
PARTIAL_HEAD = 1000  # bytes of an unfinished request head
_PAGE = os.sysconf("SC_PAGE_SIZE")

# the child: open N connections, send each the bytes given, report, hold them until stdin closes
_CLIENT = """\
import socket, sys
port, n, data = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
held = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    if data:
        c.sendall(data)
    held.append(c)
print("ok", flush=True)
sys.stdin.read()
"""


@dataclass
class Measure:
    heap: float  # bytes of Python heap per connection
    rss: float  # bytes of resident memory per connection


def sizes_config(cfg: Config, zdir: str) -> Config:
    """The operator's options, on a loopback port and private ipc endpoints."""
    return dataclasses.replace(
        cfg, listen=(ListenSpec(addr="127.0.0.1", port=0),), zclient_stream=(f"ipc://{zdir}/s",),
        zclient_req=(), zserver_stream=(), zserver_req=(), zclient_connect=False,
        prometheus=None, debug_socket=None, workers=1)


def measure(app: App, data: bytes, n: int) -> Measure:
    """Memory per connection for n connections that received `data` (none: idle)."""
    server, port = cast(Server, app.server), app.listeners[0].port  # started: it is set
    gauge = ("stream", "http")
    gc.collect()
    heap0, rss0 = tracemalloc.get_traced_memory()[0], _rss()
    child = subprocess.Popen([sys.executable, "-c", _CLIENT, str(port), str(n), data.hex()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if child.stdout.readline() != b"ok\n":
            raise RuntimeError("the client process failed")
        try:
            with gevent.Timeout(10):
                while server.metrics.connections[gauge] < n or server.metrics.bytes["in"] < \
                        len(data) * n:
                    gevent.sleep(0.01)
        except gevent.Timeout:
            raise RuntimeError(f"{n} loopback connections were not all served within 10 s") \
                from None
        gevent.sleep(0.1)  # let every connection reach its wait
        gc.collect()
        heap, rss = tracemalloc.get_traced_memory()[0], _rss()
    finally:
        child.stdin.close()
        child.wait()
    with gevent.Timeout(10, False):
        while server.metrics.connections[gauge]:
            gevent.sleep(0.01)
    return Measure((heap - heap0) / n, (rss - rss0) / n)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def report(cfg: Config) -> str:
    zdir = tempfile.mkdtemp(prefix="condure-sizes")
    app = App(sizes_config(cfg, zdir))
    logging.disable(logging.INFO)  # the measuring App's start-up lines are not the report
    try:
        app.start()
        start_rss = _rss()
        tracemalloc.start()
        try:
            # the first round also pays one-time growth (free lists, the registry's and
            # sets' tables, allocator arenas): its resident growth is reported as an
            # upper bound, the heap figures come from the rounds after it
            n = min(CONNECTIONS, cfg.stream_maxconn)
            cold = measure(app, b"", n)
            idle = measure(app, b"", n)
            head = (b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * PARTIAL_HEAD)[:PARTIAL_HEAD]
            partial = measure(app, head, n)
        finally:
            tracemalloc.stop()
    finally:
        app.stop()
        shutil.rmtree(zdir, ignore_errors=True)
        logging.disable(logging.NOTSET)
    kib = 1024
    blocks = BlockBudget.for_config(cfg.buffer_size, cfg.stream_maxconn, cfg.blocks_max,
                                    cfg.connection_blocks_max)
    lines = [
        f"{VERSION}: sizes measured in this process with the options given",
        f"process after start: {start_rss / kib / kib:.1f} MiB resident",
        f"idle stream connection (accepted, nothing received): {idle.heap:.0f} bytes of Python "
        f"heap (tracemalloc, mean over {n} loopback connections; kernel socket "
        f"buffers not included)",
        f"stream connection holding a {PARTIAL_HEAD}-byte unfinished request head: "
        f"{partial.heap:.0f} bytes of Python heap",
        f"resident memory growth per connection, first {n} idle connections: "
        f"{cold.rss / kib:.1f} KiB (with the process's one-time growth: an upper bound)",
        "a read asks for --buffer-size bytes but keeps only what arrived, so the figures above "
        "do not grow with --buffer-size; these do:",
        f"bounds per connection: request head at most {blocks.max_capacity} bytes "
        f"(--buffer-size, and spare blocks while the pool has one: --connection-blocks-max), "
        f"response head not limited, request body buffered at most "
        f"{cfg.buffer_size} bytes (--buffer-size), req-mode body at most "
        f"{cfg.body_buffer_size} bytes (--body-buffer-size), WebSocket messages queued at most "
        f"{cfg.messages_max} (--messages-max)",
        f"connections at most: {cfg.stream_maxconn} stream (--stream-maxconn), "
        f"{cfg.req_maxconn} req (--req-maxconn)",
        f"spare buffer blocks for growing heads: {blocks.spare} of {cfg.buffer_size} bytes "
        f"shared by all stream connections (--blocks-max - 2 x --stream-maxconn), "
        f"as many again for client mode",
    ]
    return "\n".join(lines) + "\n"
