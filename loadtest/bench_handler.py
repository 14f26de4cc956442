#!/usr/bin/env python3
"""A fast ZHTTP stream-mode handler for the benchmark suite (plain, blocking pyzmq).

Usage::

    python loadtest/bench_handler.py --base ipc:///tmp/x/c [--id bench] [--window 262144] [--bind]

Sockets (shared/zhttp/server.md section 2.2; bound instead with --bind): PULL connected to BASE-out
(first packets), ROUTER with identity = our id connected to
BASE-out-stream (later packets of our sessions), XPUB connected to
BASE-in. With ``--bind`` the three sockets bind those endpoints instead,
for a condure started with ``--zclient-connect``. The XPUB lets us see
condure's SUB subscription arrive: the line ``ready <topic>`` is printed
(and flushed) on stdout the first time, so the benchmark knows when
publishing stops being lost (PUB/SUB slow joiner); every later new topic
(another worker's, with ``--workers N``) prints ``subscribed <topic>``.

Behaviour:

* HTTP request without a body: answered at once with ``200 OK``,
  ``Content-Type: text/plain``, ``hello world\\n``; nothing is remembered.
* HTTP request with a body (``more``): a ``credit`` is sent, the body is
  discarded, the same response goes out after the last body packet.
* WebSocket request (uri starting with ``ws``): accepted with ``101`` and
  ``credits`` = --window. Every data packet is echoed with the same
  ``content-type`` and ``more`` flag, within the credits condure gives us
  (the request's ``credits``, then ``credit`` packets); what does not fit
  waits in a per-session queue. The bytes condure sent us are granted back
  in batches (once a quarter of the window is used). ``ping`` -> ``pong``,
  ``close`` -> ``close`` (same code), ``cancel`` forgets the session.
  A ``keep-alive`` goes to sessions we have been silent on for 30 s.

Every packet we send carries the session's seq. Replies go to the request's
``from`` (``from + b" T" + tnetstring``), so any number of condure instances
or workers can share this handler. Malformed input is dropped, never fatal.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import deque

import tnetstring
import zmq

WINDOW = 262144
KEEPALIVE_INTERVAL = 30.0
SESSION_EXPIRY = 120.0
BATCH = 2000  # messages drained from one socket per poll round

HELLO_HEADERS = [[b"Content-Type", b"text/plain"]]
HELLO_BODY = b"hello world\n"

loads = tnetstring.loads
dumps = tnetstring.dumps


class Session:
    __slots__ = ("prefix", "rid", "ws", "seq", "out", "queue", "used", "last_sent",
                 "last_recv")

    def __init__(self, prefix: bytes, rid: bytes, ws: bool, out: int, now: float) -> None:
        self.prefix = prefix  # condure's `from` + b" T"
        self.rid = rid
        self.ws = ws
        self.seq = 0
        self.out = out  # bytes condure lets us send
        self.queue: deque | None = None  # packets waiting for credits: (fields, size)
        self.used = 0  # bytes received since the last grant
        self.last_sent = now
        self.last_recv = now


def stream_ends(base: str) -> tuple[str, str, str]:
    """condure's BASE-out, BASE-out-stream, BASE-in (tcp://host:P: ports P, P+1, P+2)."""
    if base.startswith("tcp://"):
        host, port = base[len("tcp://"):].rsplit(":", 1)
        p = int(port)
        return f"tcp://{host}:{p}", f"tcp://{host}:{p + 1}", f"tcp://{host}:{p + 2}"
    return base + "-out", base + "-out-stream", base + "-in"


class BenchHandler:
    def __init__(self, base: str, ident: bytes, window: int = WINDOW, bind: bool = False) -> None:
        self.ident = ident
        self.window = window
        self.grant_at = max(1, window // 4)
        self.sessions: dict[tuple[bytes, bytes], Session] = {}
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.XPUB)
        for s in (self.pull, self.router, self.pub):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 100000)
            s.setsockopt(zmq.SNDHWM, 100000)
        self.router.setsockopt(zmq.IDENTITY, ident)
        # --bind: the scale-out topology (condure --zclient-connect connects to us)
        ends = stream_ends(base)
        for sock, ep in zip((self.pull, self.router, self.pub), ends):
            if bind:
                sock.bind(ep)
            else:
                sock.connect(ep)
        self.ready = False
        self.topics: set[bytes] = set()
        self.running = True

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    # --- loop ---------------------------------------------------------------

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        pull, router, pub = self.pull, self.router, self.pub
        on_request = self.on_request
        on_stream = self.on_stream
        again = zmq.Again
        nb = zmq.NOBLOCK
        next_tick = time.monotonic() + 5.0
        while self.running:
            try:
                ready = dict(poller.poll(1000))
            except zmq.ZMQError as e:
                if e.errno == zmq.EINTR:
                    continue
                raise
            if pub in ready:
                self.read_subscriptions()
            if pull in ready:
                for _ in range(BATCH):
                    try:
                        frame = pull.recv(nb)
                    except again:
                        break
                    on_request(frame)
            if router in ready:
                for _ in range(BATCH):
                    try:
                        frames = router.recv_multipart(nb)
                    except again:
                        break
                    on_stream(frames[-1])
            if self.sessions:
                now = time.monotonic()
                if now >= next_tick:
                    self.tick(now)
                    next_tick = now + 5.0

    def read_subscriptions(self) -> None:
        for _ in range(1000):
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01" and msg[1:] not in self.topics:
                self.topics.add(msg[1:])
                topic = msg[1:].decode("latin-1").strip()
                if not self.ready:
                    self.ready = True
                    print("ready", topic, flush=True)
                else:
                    print("subscribed", topic, flush=True)

    # --- condure -> us --------------------------------------------------------

    def on_request(self, frame: bytes) -> None:
        """A first packet (PULL): HTTP answered at once, WS accepted."""
        try:
            pkt = loads(frame[1:])
            frm = pkt[b"from"]
            rid = pkt[b"id"]
        except Exception:
            return
        if not isinstance(frm, bytes) or not isinstance(rid, bytes) or pkt.get(b"type"):
            return
        prefix = frm + b" T"
        uri = pkt.get(b"uri")
        if isinstance(uri, bytes) and uri[:2] == b"ws":
            credits = pkt.get(b"credits")
            s = Session(prefix, rid, True, credits if type(credits) is int else 0,
                        time.monotonic())
            self.sessions[(frm, rid)] = s
            self.send(s, {b"code": 101, b"reason": b"Switching Protocols",
                          b"credits": self.window})
        elif pkt.get(b"more"):
            s = Session(prefix, rid, False, 0, time.monotonic())
            self.sessions[(frm, rid)] = s
            self.send(s, {b"type": b"credit", b"credits": self.window})
        else:
            # the common case, kept free of session bookkeeping
            self.pub.send(prefix + dumps({
                b"from": self.ident, b"id": rid, b"seq": 0, b"code": 200, b"reason": b"OK",
                b"headers": HELLO_HEADERS, b"body": HELLO_BODY}))

    def on_stream(self, payload: bytes) -> None:
        """A later packet (ROUTER): may address several sessions."""
        try:
            pkt = loads(payload[1:])
            frm = pkt[b"from"]
            ids = pkt[b"id"]
        except Exception:
            return
        if isinstance(ids, bytes):
            s = self.sessions.get((frm, ids))
            if s is not None:
                self.on_packet(s, pkt)
        elif isinstance(ids, list):
            for e in ids:
                if isinstance(e, dict):
                    s = self.sessions.get((frm, e.get(b"id")))
                    if s is not None:
                        self.on_packet(s, pkt)

    def on_packet(self, s: Session, pkt: dict) -> None:
        ptype = pkt.get(b"type")
        s.last_recv = time.monotonic()
        if ptype is None:
            body = pkt.get(b"body", b"")
            if not isinstance(body, bytes):
                body = b""
            if s.ws:
                fields = {b"body": body} if body else {}
                ctype = pkt.get(b"content-type")
                if isinstance(ctype, bytes):
                    fields[b"content-type"] = ctype
                if pkt.get(b"more"):
                    fields[b"more"] = True
                self.echo(s, fields, len(body))
            elif not pkt.get(b"more"):
                self.send(s, {b"code": 200, b"reason": b"OK", b"headers": HELLO_HEADERS,
                              b"body": HELLO_BODY})
                self.forget(s)
        elif ptype == b"credit":
            c = pkt.get(b"credits")
            if type(c) is int and c > 0:
                s.out += c
                if s.queue:
                    self.flush(s)
        elif ptype == b"cancel":
            self.forget(s)
        elif ptype == b"ping":
            body = pkt.get(b"body", b"")
            if not isinstance(body, bytes):
                body = b""
            self.echo(s, {b"type": b"pong", b"body": body} if body else {b"type": b"pong"},
                      len(body))
        elif ptype == b"pong":
            body = pkt.get(b"body", b"")
            self.consumed(s, len(body) if isinstance(body, bytes) else 0)
        elif ptype == b"close":
            code = pkt.get(b"code")
            fields = {b"type": b"close"}
            if type(code) is int:
                fields[b"code"] = code
            if s.queue:  # after what is still queued
                s.queue.append((fields, 0))
            else:
                self.send(s, fields)
                self.forget(s)
        # keep-alive, handoff-proceed: nothing to do

    # --- us -> condure --------------------------------------------------------

    def echo(self, s: Session, fields: dict, size: int) -> None:
        """Send a data/pong packet now if credits allow, else queue it.

        What condure sent us is granted back only once echoed, so a client
        that does not read its echoes stalls on TCP back-pressure instead
        of growing our queue."""
        if s.queue or size > s.out:
            if s.queue is None:
                s.queue = deque()
            if len(s.queue) >= 10000:  # only empty messages can pile up like this
                self.send(s, {b"type": b"cancel"})
                self.forget(s)
                return
            s.queue.append((fields, size))
            self.flush(s)
        else:
            s.out -= size
            self.send(s, fields)
            self.consumed(s, size)

    def flush(self, s: Session) -> None:
        q = s.queue
        while q:
            fields, size = q[0]
            if size > s.out:
                if s.out > 0 and b"type" not in fields:
                    # a data piece larger than the credits: send what fits now
                    # (more pieces, same message content)
                    n = s.out
                    body = fields[b"body"]
                    first = dict(fields)
                    first[b"body"] = body[:n]
                    first[b"more"] = True
                    rest = dict(fields)
                    rest[b"body"] = body[n:]
                    q[0] = (rest, size - n)
                    s.out = 0
                    self.send(s, first)
                    self.consumed(s, n)
                return
            q.popleft()
            s.out -= size
            self.send(s, fields)
            if fields.get(b"type") == b"close":
                self.forget(s)
                return
            self.consumed(s, size)

    def consumed(self, s: Session, n: int) -> None:
        s.used += n
        if s.used >= self.grant_at:
            self.send(s, {b"type": b"credit", b"credits": s.used})
            s.used = 0

    def send(self, s: Session, fields: dict) -> None:
        fields[b"from"] = self.ident
        fields[b"id"] = s.rid
        fields[b"seq"] = s.seq
        s.seq += 1
        s.last_sent = time.monotonic()
        self.pub.send(s.prefix + dumps(fields))

    def forget(self, s: Session) -> None:
        self.sessions.pop((s.prefix[:-2], s.rid), None)

    def tick(self, now: float) -> None:
        for s in list(self.sessions.values()):
            if now - s.last_recv > SESSION_EXPIRY and now - s.last_sent > SESSION_EXPIRY:
                self.forget(s)
            elif now - s.last_sent >= KEEPALIVE_INTERVAL:
                self.send(s, {b"type": b"keep-alive"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fast ZHTTP hello-world + WebSocket echo handler")
    ap.add_argument("--base", default="ipc://client",
                    help="condure's --zclient-stream spec base (default ipc://client)")
    ap.add_argument("--id", default=f"bench.{os.getpid()}",
                    help="our `from` and ROUTER identity (default bench.<pid>)")
    ap.add_argument("--window", type=int, default=WINDOW,
                    help=f"WebSocket credits granted to condure per session (default {WINDOW})")
    ap.add_argument("--bind", action="store_true",
                    help="bind BASE-out, BASE-out-stream and BASE-in (for condure "
                         "--zclient-connect) instead of connecting to them")
    ap.add_argument("--workers-aware", action="store_true",
                    help="accepted for symmetry; replies always go to each request's `from`")
    args = ap.parse_args(argv)
    if not args.id or " " in args.id:
        ap.error("--id must be non-empty and contain no space")
    if args.window < 1:
        ap.error("--window must be positive")
    handler = BenchHandler(args.base, args.id.encode(), args.window, args.bind)

    def stop(signum: int, frame: object) -> None:
        handler.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        handler.run()
    finally:
        handler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
