#!/usr/bin/env python3
"""A standalone ZHTTP stream-mode WebSocket echo handler (plain pyzmq).

Usage::

    python loadtest/ws_echo_handler.py [--base ipc://client] [--id echo.<pid>]
                                       [--window 200000] [--verbose]

Socket layout (shared/zhttp/server.md sections 2.2 and 11): PULL connected
to BASE-out (first packets), ROUTER with identity = our id connected to
BASE-out-stream (later packets of our sessions), XPUB connected to BASE-in
(everything we send, prefixed with the condure instance id taken from the
`from` of the request packet). The PUB side is an XPUB so we know when a
condure's SUB subscription has arrived: packets for an instance that has
not subscribed yet are held (a few, bounded) instead of being lost to the
PUB/SUB slow-joiner effect. The line ``subscribed <instance>`` is printed
(and flushed) on stdout when the first subscription of an instance
arrives, so a parent process can wait for it.

Behaviour per session:

* WebSocket request (uri starting with ``ws``): accepted with ``code 101``
  and ``credits`` = the window. Every client data piece is echoed with the
  same ``content-type`` and ``more`` flag, never exceeding the credits
  condure grants us (the request's ``credits``, then ``credit`` packets and
  ``credits`` fields); a piece larger than the available credits is split
  (the extra split points only add ``more`` pieces, the message content is
  unchanged). The credits we granted are given back (``credit`` packets,
  coalesced per poll round) only once the bytes have been echoed, so at
  most ``window`` bytes are ever queued per session.
* ``ping`` -> ``pong`` with the same body (queued behind earlier data, it
  uses credits too); ``pong`` is consumed; both bodies are granted back.
* ``close`` -> ``close`` with the same code (after what is queued); the
  session is then forgotten. ``cancel`` forgets the session at once.
* a ``keep-alive`` is sent on every session we have not sent anything on
  for 30 s (--keepalive); sessions condure has not spoken on for 150 s are
  forgotten.
* plain HTTP: the body (if any) is read under credits and discarded, then
  ``200 OK`` with ``echo handler\\n``.

Every packet we send on a session carries our seq (0, 1, 2, ...). Packets
from condure may address several sessions (``id`` = list of {id, seq}).
Nothing condure sends can make this program crash: a packet that cannot be
parsed or makes no sense is logged (with --verbose) and dropped.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import deque
from typing import Any

import tnetstring
import zmq

WINDOW = 200000
KEEPALIVE_INTERVAL = 30.0
SESSION_EXPIRY = 150.0
HELD_MAX = 10000  # packets held for instances that have not subscribed yet
HELD_TIMEOUT = 10.0
MAX_PIECE = 1 << 20  # never send more than this in one data packet
HTTP_BODY = b"echo handler\n"


def log(verbose: bool, *parts: object) -> None:
    if verbose:
        print("echo:", *parts, file=sys.stderr, flush=True)


class Session:
    __slots__ = ("instance", "rid", "ws", "seq", "out_credits", "queue", "queued",
                 "grant", "last_sent", "last_recv", "closing", "http_done")

    def __init__(self, instance: bytes, rid: bytes, ws: bool, credits: int, now: float) -> None:
        self.instance = instance  # condure's `from`: the prefix we publish with
        self.rid = rid
        self.ws = ws
        self.seq = 0  # seq of our next packet
        self.out_credits = credits  # bytes condure lets us send
        # items: ("data", ctype, body, more) | ("pong", body) | ("close", code)
        self.queue: deque = deque()
        self.queued = 0  # bytes in queue
        self.grant = 0  # bytes consumed, to grant back at the end of the round
        self.last_sent = now
        self.last_recv = now
        self.closing = False  # a close is queued: stop accepting new data
        self.http_done = False


class EchoHandler:
    def __init__(self, base: str, ident: bytes, window: int = WINDOW,
                 verbose: bool = False, keepalive: float = KEEPALIVE_INTERVAL) -> None:
        self.base = base
        self.ident = ident
        self.window = window
        self.verbose = verbose
        self.keepalive = keepalive
        self.sessions: dict[tuple[bytes, bytes], Session] = {}
        self.subscribed: set[bytes] = set()
        self.announced: set[bytes] = set()
        self.held: deque = deque()  # (deadline, instance, payload)
        self.dirty: set[tuple[bytes, bytes]] = set()  # sessions to flush this round
        self.ctx = zmq.Context()
        self.pull = self._socket(zmq.PULL)
        self.router = self._socket(zmq.ROUTER)
        self.router.setsockopt(zmq.IDENTITY, ident)
        self.pub = self._socket(zmq.XPUB)
        self.pull.connect(base + "-out")
        self.router.connect(base + "-out-stream")
        self.pub.connect(base + "-in")
        self.running = True

    def _socket(self, kind: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if kind in (zmq.PULL, zmq.ROUTER):
            s.setsockopt(zmq.RCVHWM, 10000)
        else:
            s.setsockopt(zmq.SNDHWM, 10000)
        return s

    def close(self) -> None:
        self.ctx.destroy(linger=0)

    # --- main loop ------------------------------------------------------

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        tick = min(1.0, self.keepalive / 2)
        next_tick = time.monotonic() + tick
        while self.running:
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                ready = dict(poller.poll(timeout * 1000))
            except zmq.ZMQError as e:
                if e.errno == zmq.EINTR:
                    continue
                raise
            if self.pub in ready:
                self._read_subscriptions()
            # bounded batches, so one busy socket cannot starve the other
            for sock in (self.pull, self.router):
                if sock in ready:
                    for _ in range(1000):
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_frames(frames)
            self._flush_dirty()
            now = time.monotonic()
            if now >= next_tick:
                self._tick(now)
                next_tick = now + tick

    def _read_subscriptions(self) -> None:
        for _ in range(1000):
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg:
                continue
            topic = msg[1:]
            instance = topic[:-1] if topic.endswith(b" ") else topic
            if msg[0] == 1:
                self.subscribed.add(instance)
                if instance not in self.announced:
                    self.announced.add(instance)
                    print("subscribed", instance.decode("latin-1"), flush=True)
                self._release_held()
            elif msg[0] == 0:
                self.subscribed.discard(instance)

    def _release_held(self) -> None:
        keep: deque = deque()
        while self.held:
            deadline, instance, payload = self.held.popleft()
            if instance in self.subscribed:
                self.pub.send(payload)
            else:
                keep.append((deadline, instance, payload))
        self.held = keep

    # --- receiving --------------------------------------------------------

    def _on_frames(self, frames: list[bytes]) -> None:
        payload = frames[-1] if frames else b""
        if payload[:1] != b"T":
            log(self.verbose, "dropping non-T payload", payload[:60])
            return
        try:
            pkt = tnetstring.loads(payload[1:])
        except Exception as e:  # malformed input must never stop the handler
            log(self.verbose, "dropping unparsable packet:", e)
            return
        if not isinstance(pkt, dict):
            log(self.verbose, "dropping non-map packet")
            return
        try:
            self._on_packet(pkt)
        except Exception as e:
            log(self.verbose, "dropping packet that failed:", repr(e), pkt)

    def _on_packet(self, pkt: dict) -> None:
        instance = pkt.get(b"from")
        if not isinstance(instance, bytes) or not instance:
            log(self.verbose, "packet without from", pkt)
            return
        ids = pkt.get(b"id")
        if isinstance(ids, bytes):
            rids = [ids]
        elif isinstance(ids, list):
            rids = [e.get(b"id") for e in ids if isinstance(e, dict)]
            rids = [r for r in rids if isinstance(r, bytes)]
        else:
            log(self.verbose, "packet without id", pkt)
            return
        ptype = pkt.get(b"type")
        for rid in rids:
            key = (instance, rid)
            s = self.sessions.get(key)
            if s is None:
                if ptype is None and isinstance(ids, bytes) and b"method" in pkt:
                    self._on_request(instance, rid, pkt)
                else:
                    log(self.verbose, "packet for unknown session", rid, ptype)
                continue
            s.last_recv = time.monotonic()
            self._on_session_packet(s, ptype, pkt)

    def _on_request(self, instance: bytes, rid: bytes, pkt: dict) -> None:
        uri = pkt.get(b"uri", b"")
        credits = _int(pkt.get(b"credits"))
        now = time.monotonic()
        ws = isinstance(uri, bytes) and uri[:2].lower() == b"ws"
        s = Session(instance, rid, ws, credits, now)
        self.sessions[(instance, rid)] = s
        log(self.verbose, "request", rid, uri)
        if ws:
            self._send(s, {b"code": 101, b"reason": b"Switching Protocols",
                           b"credits": self.window})
        elif pkt.get(b"more"):
            self._send(s, {b"type": b"credit", b"credits": self.window})
        else:
            self._http_respond(s)

    def _http_respond(self, s: Session) -> None:
        self._send(s, {b"code": 200, b"reason": b"OK",
                       b"headers": [[b"Content-Type", b"text/plain"]], b"body": HTTP_BODY})
        self._forget(s)

    def _on_session_packet(self, s: Session, ptype: Any, pkt: dict) -> None:
        credits = _int(pkt.get(b"credits"))
        if ptype == b"cancel":
            self._forget(s)
            return
        if ptype == b"credit":
            s.out_credits += credits
            self.dirty.add((s.instance, s.rid))
            return
        if ptype in (b"keep-alive", b"handoff-proceed"):
            return
        if not s.ws:
            if ptype is None:  # request body: discard, respond after the last piece
                if not pkt.get(b"more") and not s.http_done:
                    s.http_done = True
                    self._http_respond(s)
            else:
                log(self.verbose, "unexpected packet on http session", ptype)
            return
        s.out_credits += credits  # ping/pong/data may carry credits too
        body = pkt.get(b"body", b"")
        if not isinstance(body, bytes):
            body = b""
        if ptype is None:
            if s.closing:
                s.grant += len(body)
            else:
                ctype = pkt.get(b"content-type")
                self._enqueue(s, ("data", ctype if isinstance(ctype, bytes) else None,
                                  body, bool(pkt.get(b"more"))), len(body))
        elif ptype == b"ping":
            if s.closing:
                s.grant += len(body)
            else:
                self._enqueue(s, ("pong", body), len(body))
        elif ptype == b"pong":
            s.grant += len(body)
        elif ptype == b"close":
            if not s.closing:
                s.closing = True
                code = pkt.get(b"code")
                self._enqueue(s, ("close", code if isinstance(code, int) else None), 0)
        else:
            log(self.verbose, "ignoring packet type", ptype)
        self.dirty.add((s.instance, s.rid))

    def _enqueue(self, s: Session, item: tuple, size: int) -> None:
        if s.queued + size > self.window + 65536:
            # condure sent more than we granted: refuse rather than grow
            log(self.verbose, "session over its window, cancelling", s.rid)
            self._send(s, {b"type": b"cancel"})
            self._forget(s)
            return
        s.queue.append(item)
        s.queued += size

    # --- sending ----------------------------------------------------------

    def _flush_dirty(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for key in dirty:
            s = self.sessions.get(key)
            if s is not None:
                self._flush(s)

    def _flush(self, s: Session) -> None:
        """Send queued items while credits allow, then grant back what was consumed."""
        q = s.queue
        while q:
            item = q[0]
            kind = item[0]
            if kind == "data":
                _, ctype, body, more = item
                if body and s.out_credits <= 0:
                    break
                n = min(len(body), s.out_credits, MAX_PIECE)
                piece, rest = body[:n], body[n:]
                msg: dict[bytes, Any] = {}
                if ctype is not None:
                    msg[b"content-type"] = ctype
                if piece:
                    msg[b"body"] = piece
                if more or rest:
                    msg[b"more"] = True
                self._send(s, msg)
                s.out_credits -= n
                s.queued -= n
                s.grant += n
                if rest:
                    q[0] = ("data", ctype, rest, more)
                    continue
            elif kind == "pong":
                body = item[1]
                if len(body) > s.out_credits:
                    break
                msg = {b"type": b"pong"}
                if body:
                    msg[b"body"] = body
                self._send(s, msg)
                s.out_credits -= len(body)
                s.queued -= len(body)
                s.grant += len(body)
            else:  # close
                msg = {b"type": b"close"}
                if item[1] is not None:
                    msg[b"code"] = item[1]
                self._send(s, msg)
                self._forget(s)
                return
            q.popleft()
        if s.grant:
            self._send(s, {b"type": b"credit", b"credits": s.grant})
            s.grant = 0

    def _send(self, s: Session, fields: dict) -> None:
        msg = {b"from": self.ident, b"id": s.rid, b"seq": s.seq}
        msg.update(fields)
        s.seq += 1
        s.last_sent = time.monotonic()
        payload = s.instance + b" T" + tnetstring.dumps(msg)
        if s.instance in self.subscribed:
            self.pub.send(payload)
        elif len(self.held) < HELD_MAX:
            self.held.append((time.monotonic() + HELD_TIMEOUT, s.instance, payload))
        else:
            log(self.verbose, "dropping packet: instance not subscribed", s.instance)

    def _forget(self, s: Session) -> None:
        self.sessions.pop((s.instance, s.rid), None)

    # --- timers -------------------------------------------------------------

    def _tick(self, now: float) -> None:
        while self.held and self.held[0][0] <= now:
            self.held.popleft()
        for s in list(self.sessions.values()):
            if now - s.last_recv > SESSION_EXPIRY:
                log(self.verbose, "session expired", s.rid)
                self._forget(s)
            elif now - s.last_sent >= self.keepalive:
                self._send(s, {b"type": b"keep-alive"})


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ZHTTP WebSocket echo handler")
    ap.add_argument("--base", default="ipc://client",
                    help="condure's --zclient-stream spec base (default ipc://client)")
    ap.add_argument("--id", default=f"echo.{os.getpid()}",
                    help="our `from` address and ROUTER identity (default echo.<pid>)")
    ap.add_argument("--window", type=int, default=WINDOW,
                    help=f"credits granted to condure per session (default {WINDOW})")
    ap.add_argument("--keepalive", type=float, default=KEEPALIVE_INTERVAL,
                    help=f"seconds of silence on a session before a keep-alive "
                         f"(default {KEEPALIVE_INTERVAL:g})")
    ap.add_argument("--verbose", action="store_true", help="log dropped packets to stderr")
    args = ap.parse_args(argv)
    if not args.id or " " in args.id:
        ap.error("--id must be non-empty and contain no space")
    if args.keepalive <= 0 or args.window <= 0:
        ap.error("--keepalive and --window must be positive")
    handler = EchoHandler(args.base, args.id.encode(), args.window, args.verbose,
                          args.keepalive)

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
