#!/usr/bin/env python3
"""A bounded WebSocket (and idle HTTP) load client: plain sockets + selectors.

Usage::

    # N connections, each sends a small text message and waits for its echo,
    # over and over for D seconds; prints messages/s
    python loadtest/wsload.py echo --url ws://127.0.0.1:8000/ --conns 50 --duration 5

    # open N connections (WebSocket handshake, or one HTTP keep-alive request
    # each, or with --proto h2 the h2c preface and the SETTINGS exchange) and
    # hold them idle: prints "ready <ok> <failed>" once all are open, then
    # holds until SIGTERM/SIGINT, a line (or EOF) on stdin with --stdin, or
    # --hold seconds; then closes everything with RST
    python loadtest/wsload.py idle --proto ws --url ws://127.0.0.1:8000/ --conns 10000

Everything is bounded: connection setup by --connect-timeout, the echo
run by --duration (and --stall: no progress at all for that long aborts),
the idle hold by --hold. No third-party modules; frames are built and
parsed here (client frames masked with a fixed key, which servers accept).
Use ``--json`` for one machine-readable result line.
"""
from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
from urllib.parse import urlsplit

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_KEY = base64.b64encode(b"bench-ws-key-16b")  # 16 bytes, as the RFC wants
WS_ACCEPT = base64.b64encode(hashlib.sha1(WS_KEY + WS_GUID).digest())
MASK = b"\x12\x34\x56\x78"
MAX_HEAD = 16384
# HTTP/2 (idle h2c with prior knowledge): the preface plus an empty SETTINGS frame,
# and the ACK of the server's SETTINGS once seen
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked, final client frame."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ MASK[i & 3] for i, b in enumerate(payload))
    return head + MASK + masked


def parse_frames(buf: bytearray) -> list[tuple[int, bool, int]]:
    """Pop complete frames off `buf`: (opcode, fin, payload length) each.

    Payloads are not needed by the load test, only counted."""
    out = []
    pos = 0
    n = len(buf)
    while n - pos >= 2:
        b0 = buf[pos]
        b1 = buf[pos + 1]
        ln = b1 & 0x7F
        hl = 2
        if ln == 126:
            if n - pos < 4:
                break
            ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
            hl = 4
        elif ln == 127:
            if n - pos < 10:
                break
            ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
            hl = 10
        if b1 & 0x80:
            hl += 4
        if n - pos < hl + ln:
            break
        out.append((b0 & 0x0F, bool(b0 & 0x80), ln))
        pos += hl + ln
    if pos:
        del buf[:pos]
    return out


class Conn:
    __slots__ = ("sock", "state", "buf", "sent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "connecting"
        self.buf = bytearray()
        self.sent = 0.0


def request_bytes(proto: str, host: str, port: int, path: str) -> bytes:
    if proto == "h2":
        return H2_PREFACE
    if proto == "ws":
        return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY.decode()}\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def head_complete(proto: str, buf: bytearray) -> tuple[bool, bool]:
    """(finished, ok) for the response read so far; leaves leftover bytes in buf."""
    if proto == "h2":
        return h2_settings_seen(buf)
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return (len(buf) > MAX_HEAD, False)
    head = bytes(buf[:end]).decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if proto == "ws":
        del buf[:end + 4]
        return (True, status == 101 and headers.get("sec-websocket-accept") == WS_ACCEPT.decode())
    length = int(headers.get("content-length", "0") or 0)
    if len(buf) < end + 4 + length:
        return (False, False)
    del buf[:end + 4 + length]
    return (True, 200 <= status < 300 and "close" not in headers.get("connection", "").lower())


def h2_settings_seen(buf: bytearray) -> tuple[bool, bool]:
    """(finished, ok): the server's first frames, up to its SETTINGS (not an ACK)."""
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + length:
            return (False, False)
        ftype, flags = buf[3], buf[4]
        del buf[:9 + length]
        if ftype == 0x7:  # GOAWAY
            return (True, False)
        if ftype == 0x4 and not flags & 0x1:
            return (True, True)
    return (len(buf) > MAX_HEAD, False)


def hard_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def open_conns(proto: str, host: str, port: int, path: str, n: int, concurrency: int,
               timeout: float, source: str = "") -> tuple[list[Conn], int, str]:
    """Open n connections, at most `concurrency` handshakes in flight.

    `source`: the local address to connect from (e.g. 127.0.0.2). Each source
    address has its own ~28,000 ephemeral ports towards one server port, so
    more connections than that need several clients with different sources.

    Returns (open connections with leftover bytes in .buf, failures, first error)."""
    sel = selectors.DefaultSelector()
    req = request_bytes(proto, host, port, path)
    done: list[Conn] = []
    failed = 0
    first_error = ""
    started = 0
    pending = 0
    deadline = time.monotonic() + timeout
    addr = (host, port)

    def fail(c: Conn, why: str) -> None:
        nonlocal failed, pending, first_error
        failed += 1
        pending -= 1
        if not first_error:
            first_error = why
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        hard_close(c.sock)

    while (started < n or pending) and time.monotonic() < deadline:
        while started < n and pending < concurrency:
            started += 1
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as e:
                failed += 1
                first_error = first_error or f"socket: {e}"
                continue
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if source:
                try:  # the port is chosen at connect (per 4-tuple), not at bind
                    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    s.bind((source, 0))
                except OSError as e:
                    failed += 1
                    first_error = first_error or f"bind {source}: {e}"
                    s.close()
                    continue
            c = Conn(s)
            pending += 1
            rc = s.connect_ex(addr)
            if rc not in (0, errno.EINPROGRESS):
                fail(c, f"connect: {os.strerror(rc)}")
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            s = c.sock
            if c.state == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, f"connect: {os.strerror(err)}")
                    continue
                try:
                    s.send(req)  # small: fits an empty send buffer
                except OSError as e:
                    fail(c, f"send: {e}")
                    continue
                c.state = "head"
                sel.modify(s, selectors.EVENT_READ, c)
            else:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(c, f"recv: {e}")
                    continue
                if not data:
                    fail(c, "closed by server during handshake")
                    continue
                c.buf += data
                finished, ok = head_complete(proto, c.buf)
                if finished:
                    if not ok:
                        fail(c, "bad handshake/response")
                        continue
                    if proto == "h2":
                        try:
                            s.send(H2_SETTINGS_ACK)
                        except OSError as e:
                            fail(c, f"send: {e}")
                            continue
                    sel.unregister(s)
                    c.state = "open"
                    pending -= 1
                    done.append(c)
    # whatever is still in flight at the deadline counts as failed
    for key in list(sel.get_map().values()):
        fail(key.data, "timeout")
    failed += n - started
    sel.close()
    return done, failed, first_error


def run_echo(args: argparse.Namespace, host: str, port: int, path: str) -> dict:
    conns, failed, err = open_conns("ws", host, port, path, args.conns, args.concurrency,
                                    args.connect_timeout)
    frame = client_frame(b"x" * args.size)
    sel = selectors.DefaultSelector()
    messages = 0
    errors = 0
    lat_sum = 0.0
    start = time.monotonic()
    end = start + args.duration
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
        c.sock.send(frame)
        c.sent = start
    live = len(conns)
    last_progress = start
    now = start
    while live and now < end:
        events = sel.select(timeout=min(0.2, max(0.0, end - now)))
        now = time.monotonic()
        if events:
            last_progress = now
        elif now - last_progress > args.stall:
            err = err or "stalled"
            break
        for key, _ in events:
            c = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                data = b""
                err = err or f"recv: {e}"
            if not data:
                errors += 1
                live -= 1
                sel.unregister(c.sock)
                err = err or "connection closed by server"
                continue
            c.buf += data
            for opcode, fin, _ in parse_frames(c.buf):
                if opcode == 0x8:  # close from the server
                    errors += 1
                    live -= 1
                    sel.unregister(c.sock)
                    err = err or "close frame from server"
                    break
                if opcode in (0x0, 0x1, 0x2) and fin:
                    if now < end:
                        messages += 1
                        lat_sum += now - c.sent
                        try:
                            c.sock.send(frame)
                        except OSError as e:
                            errors += 1
                            err = err or f"send: {e}"
                        c.sent = now
    elapsed = min(time.monotonic(), end) - start
    sel.close()
    for c in conns:
        hard_close(c.sock)
    return {"mode": "echo", "conns": args.conns, "connected": len(conns),
            "connect_failed": failed, "messages": messages,
            "seconds": round(elapsed, 3),
            "msgs_per_s": round(messages / elapsed, 1) if elapsed > 0 else 0.0,
            "mean_rtt_ms": round(lat_sum / messages * 1000, 3) if messages else None,
            "errors": errors, "error": err}


def run_idle(args: argparse.Namespace, host: str, port: int, path: str) -> dict:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t0 = time.monotonic()
    conns, failed, err = open_conns(args.proto, host, port, path, args.conns,
                                    args.concurrency, args.connect_timeout, args.source)
    setup = time.monotonic() - t0
    print(f"ready {len(conns)} {failed} {setup:.2f}", flush=True)
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    if args.stdin:
        sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
    closed = 0
    end = time.monotonic() + args.hold
    while not stop and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            if c is None:  # stdin: a line or EOF means stop
                stop = True
                break
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed += 1
                sel.unregister(c.sock)
    sel.close()
    for c in conns:
        hard_close(c.sock)
    return {"mode": "idle", "proto": args.proto, "conns": args.conns, "opened": len(conns),
            "connect_failed": failed, "setup_s": round(setup, 3),
            "closed_by_server": closed, "error": err}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="bounded WebSocket / idle HTTP load client")
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("echo", "idle"):
        p = sub.add_parser(name)
        p.add_argument("--url", default="ws://127.0.0.1:8000/",
                       help="ws://host:port/path (http:// also accepted for idle HTTP)")
        p.add_argument("--conns", type=int, default=50 if name == "echo" else 10000)
        p.add_argument("--concurrency", type=int, default=200,
                       help="handshakes in flight at once (default 200)")
        p.add_argument("--connect-timeout", type=float, default=60.0,
                       help="bound on opening all connections (s)")
        p.add_argument("--json", action="store_true", help="print one JSON result line")
        if name == "echo":
            p.add_argument("--duration", type=float, default=5.0)
            p.add_argument("--size", type=int, default=16, help="message size (bytes)")
            p.add_argument("--stall", type=float, default=5.0,
                           help="abort when nothing arrives for this long (s)")
        else:
            p.add_argument("--proto", choices=("ws", "http", "h2"), default="ws",
                           help="ws: WebSocket handshake; http: one HTTP/1.1 keep-alive "
                                "request; h2: the h2c preface and SETTINGS exchange")
            p.add_argument("--hold", type=float, default=120.0,
                           help="longest time to hold the connections (s)")
            p.add_argument("--stdin", action="store_true",
                           help="also stop on a line or EOF on stdin")
            p.add_argument("--source", default="",
                           help="local address to connect from (e.g. 127.0.0.2; loopback "
                                "answers on all of 127/8)")
    args = ap.parse_args(argv)
    if not 1 <= args.conns <= 60000:
        ap.error("--conns must be 1..60000")
    if args.mode == "echo" and not 0 < args.duration <= 3600:
        ap.error("--duration must be in (0, 3600]")
    if args.mode == "idle" and not 0 < args.hold <= 3600:
        ap.error("--hold must be in (0, 3600]")
    u = urlsplit(args.url)
    if u.scheme not in ("ws", "http") or not u.hostname:
        ap.error("--url must be ws://host:port/path (or http:// for idle HTTP)")
    host = u.hostname
    port = u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    nofile = raise_nofile()
    if args.conns + 64 > nofile:
        ap.error(f"--conns {args.conns} needs more file descriptors than the limit {nofile}")
    if args.mode == "echo":
        res = run_echo(args, host, port, path)
        text = (f"{res['msgs_per_s']} msgs/s ({res['messages']} echoes in {res['seconds']} s "
                f"over {res['connected']}/{args.conns} connections, "
                f"mean rtt {res['mean_rtt_ms']} ms, errors {res['errors']})")
    else:
        res = run_idle(args, host, port, path)
        text = (f"done: {res['opened']}/{args.conns} opened in {res['setup_s']} s, "
                f"{res['closed_by_server']} closed by the server")
    if res.get("error"):
        text += f"; first error: {res['error']}"
    print(json.dumps(res) if args.json else text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
