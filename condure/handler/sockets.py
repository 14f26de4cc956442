"""A handler process's sockets, readers and timers (server.md sections 2.1, 2.2, 4.2).

Stream mode, per condure (spec base BASE):

* PULL on BASE-out: the first packet of every request; any handler may get
  it. Read only while the concurrency bound has room, so that a busy
  process leaves requests in condure's queue for the others;
* ROUTER on BASE-out-stream, identity = our `from`: every later packet of
  our sessions (both condures send them there, 1.9.1 and ours);
* PUB on BASE-in: everything we send, prefixed with condure's `from` and a
  space. It is an XPUB, so that we know when condure's subscription has
  arrived: a packet published before that is silently lost (PUB/SUB slow
  joiner), so until then packets for that condure wait here, in order.

Connected by default (condure binds); `bind=True` for condure's
`--zclient-connect` topology. Several bases may be given: one socket of
each kind attaches to all of them.

Req mode (`ReqHandler`): a ROUTER on condure's --zclient-req endpoint; one
request packet, one response, no seq, no credits.
"""
from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections import defaultdict
from typing import Any, Callable, Iterable

import gevent
import gevent.pool
import zmq.green as zmq
from gevent.event import Event

from ..config import stream_endpoints
from ..zhttp import packet as zp
from .errors import Cancelled, SessionEnded
from .request import Body, Request

log = logging.getLogger("condure.handler")

App = Callable[[Request], Any]
SWEEP_INTERVAL = 1.0  # seconds between keep-alive / expiry sweeps
READY_TIMEOUT = 5.0  # seconds to wait for condure's ROUTER handshake at start
SUBSCRIBE_TIMEOUT = 5.0  # seconds packets wait for condure's subscription
STOP_TIMEOUT = 30.0  # seconds in-flight requests get on a graceful stop
PULL_HWM = 16  # requests queued for us inside libzmq: a busy process takes few


def default_identity(prefix: str = "condure-handler") -> bytes:
    """A `from` unique to this process (at most 64 bytes, condure's limit)."""
    return f"{prefix}.{os.getpid()}.{uuid.uuid4().hex[:8]}".encode()


class Handler:
    """A ZHTTP handler: runs `app(request)` in a greenlet per request, at most
    `concurrency` at a time. `start()` attaches and returns; `serve_forever()`
    also stops gracefully on SIGTERM/SIGINT."""

    def __init__(self, app: App, bases: str | Iterable[str] = "ipc://client", *,
                 bind: bool = False, concurrency: int = 100, identity: bytes | None = None,
                 context: Any = None, take_requests: bool = True) -> None:
        self.app = app
        # False: no PULL socket, only sessions handed over to us (`adopt`)
        self.take_requests = take_requests
        self.bases = [bases] if isinstance(bases, str) else list(bases)
        self.bind = bind
        self.concurrency = concurrency
        self.identity = identity or default_identity()
        self.ctx = context or zmq.Context.instance()
        self.pool = gevent.pool.Pool(concurrency)
        self.sessions: dict[tuple[bytes, bytes], Request] = {}
        self.subscribed: set[bytes] = set()
        self._waiting: dict[bytes, list[bytes]] = defaultdict(list)
        self._sub_event = Event()
        self._greenlets: list[gevent.Greenlet] = []
        self._pull_greenlet: gevent.Greenlet | None = None
        self.stopped = Event()
        self.pull: Any = None

    def __repr__(self) -> str:
        return f"<Handler {self.identity.decode()} {self.bases}>"

    # --- starting and stopping ---------------------------------------------------

    def _attach(self, sock: Any, endpoint: str) -> None:
        if self.bind:
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)

    def start(self) -> None:
        eps = [stream_endpoints(b) for b in self.bases]
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.IDENTITY, self.identity)
        self.router.setsockopt(zmq.LINGER, 0)
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.SNDHWM, 0)  # a PUB drops at its HWM; credits bound it instead
        self.pub.setsockopt(zmq.LINGER, 1000)
        monitor = None
        if not self.bind:
            monitor = self.router.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        for _, out_stream, in_ in eps:
            self._attach(self.router, out_stream)
            self._attach(self.pub, in_)
        if monitor is not None:
            # condure's ROUTER drops packets to an identity it has not met yet
            # (ROUTER_MANDATORY): take requests only once it knows us
            try:
                with gevent.Timeout(READY_TIMEOUT):
                    for _ in eps:
                        monitor.recv_multipart()
            except gevent.Timeout:
                log.warning("no ROUTER handshake with condure yet (%s); starting anyway",
                            ", ".join(self.bases))
            finally:
                self.router.disable_monitor()
                monitor.close(0)
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, PULL_HWM)
        self.pull.setsockopt(zmq.LINGER, 0)
        self._pull_endpoints = [e[0] for e in eps] if self.take_requests else []
        for ep in self._pull_endpoints:
            self._attach(self.pull, ep)
        self._greenlets = [gevent.spawn(self._read_router), gevent.spawn(self._read_subscriptions),
                           gevent.spawn(self._sweep)]
        if self.take_requests:
            self._pull_greenlet = gevent.spawn(self._read_pull)
        log.info("handler %s %s %s", self.identity.decode(),
                 "bound to" if self.bind else "connected to", " ".join(self.bases))

    def serve_forever(self, stop_timeout: float = STOP_TIMEOUT) -> None:
        """Start (unless started), run until SIGTERM or SIGINT, stop gracefully."""
        if self.pull is None:
            self.start()
        stop = Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, stop.set)
        stop.wait()
        log.info("stopping: finishing %d requests", len(self.pool))
        self.stop(stop_timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Take no more requests, let those in flight finish (at most `timeout`
        seconds), cancel the rest, close the sockets."""
        if self.pull is None:
            return
        if self._pull_greenlet is not None:
            self._pull_greenlet.kill()
        # what libzmq has received already is served: a disconnect would drop it
        # (past the concurrency bound: these would be lost otherwise)
        late = []
        for _ in range(PULL_HWM * 4):
            try:
                req = self._take_request(self.pull.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
            if req is not None:
                late.append(gevent.spawn(self._run, req))
        for ep in self._pull_endpoints:
            try:
                (self.pull.unbind if self.bind else self.pull.disconnect)(ep)
            except zmq.ZMQError:
                pass
        self.pull.close()
        self.pull = None
        end = time.monotonic() + timeout
        self.pool.join(timeout)
        gevent.joinall(late, timeout=max(0.0, end - time.monotonic()))
        for req in list(self.sessions.values()):
            req.fail(Cancelled("handler stopping"), cancel=True)
        self.pool.kill(timeout=1)
        for g in self._greenlets:
            g.kill()
        self._flush_waiting(force=True)
        self.router.close()
        self.pub.close()
        self.stopped.set()

    # --- sending ------------------------------------------------------------------

    def publish(self, addr: bytes, payload: bytes) -> None:
        """Send a packet to condure `addr` (never waits: see the module docstring)."""
        if addr in self.subscribed and addr not in self._waiting:
            self.pub.send(addr + b" " + payload, zmq.NOBLOCK)
            return
        queue = self._waiting[addr]  # in order behind what already waits for this condure
        queue.append(payload)
        if len(queue) == 1:
            gevent.spawn(self._wait_subscription, addr)

    def _wait_subscription(self, addr: bytes) -> None:
        end = time.monotonic() + SUBSCRIBE_TIMEOUT
        while addr not in self.subscribed and time.monotonic() < end:
            self._sub_event.clear()
            self._sub_event.wait(end - time.monotonic())
        if addr not in self.subscribed:
            log.warning("no subscription from condure %r: sending anyway", addr)
        self._flush(addr)

    def _flush(self, addr: bytes) -> None:
        for payload in self._waiting.pop(addr, ()):
            self.pub.send(addr + b" " + payload, zmq.NOBLOCK)

    def _flush_waiting(self, force: bool = False) -> None:
        for addr in list(self._waiting):
            if force or addr in self.subscribed:
                self._flush(addr)

    def _read_subscriptions(self) -> None:
        while True:
            msg = self.pub.recv()
            if not msg:
                continue
            topic = msg[1:].rstrip(b" ")
            if msg[0] == 1:
                self.subscribed.add(topic)
                self._flush_waiting()
                self._sub_event.set()
            elif msg[0] == 0:
                self.subscribed.discard(topic)

    # --- receiving ------------------------------------------------------------------

    def _read_pull(self) -> None:
        while True:
            self.pool.wait_available()
            req = self._take_request(self.pull.recv())
            if req is not None:
                self.pool.spawn(self._run, req)

    def _take_request(self, payload: bytes) -> Request | None:
        """The Request of a first packet, registered (None if it is garbage)."""
        try:
            pkt = zp.parse(payload)
            req = Request(self, pkt, pkt.ids[0][0], time.monotonic())
        except zp.ParseError as e:
            log.warning("bad request packet from condure: %s", e)
            return None
        self.sessions[req.key] = req
        return req

    def _read_router(self) -> None:
        while True:
            frames = self.router.recv_multipart()
            try:
                pkt = zp.parse(frames[-1])
            except zp.ParseError as e:
                log.warning("bad packet from condure: %s", e)
                continue
            now = time.monotonic()
            sessions = self.sessions
            for rid, seq in pkt.ids:
                req = sessions.get((pkt.from_, rid))
                if req is not None:
                    req.deliver(pkt, seq, now)

    def unregister(self, req: Request) -> None:
        self.sessions.pop(req.key, None)

    def adopt(self, state: bytes, app: App | None = None) -> Request:
        """Continue a session another process passed on with
        `Request.handoff()`: it becomes ours (our next packet, a keep-alive,
        tells condure so) and `app` (default: this handler's) runs on it. A
        WebSocket session is reopened with `WebSocket(request)`."""
        req = Request.from_handoff(self, state, time.monotonic())
        self.sessions[req.key] = req
        req.send(b"keep-alive")
        g = gevent.Greenlet(self._run, req, app)
        g.start()
        return req

    def _run(self, req: Request, app: App | None = None) -> None:
        try:
            (app or self.app)(req)
        except SessionEnded as e:
            log.debug("%s %s: %s", req.method, req.uri, e)
        except Exception:
            log.exception("%s %s: the application failed", req.method, req.uri)
            if req.failure is None and not req.finished:
                if not req.started:
                    self._error_response(req)
                else:
                    req.cancel()
        else:
            if req.failure is None and not req.finished:
                if not req.started:
                    log.error("%s %s: the application returned without a response",
                              req.method, req.uri)
                    self._error_response(req)
                elif not req.is_websocket:
                    try:
                        req.end()
                    except SessionEnded:
                        pass
                else:  # a WebSocket the application left open: close it normally
                    req.hs.out.other(b"close", 1000, b"")
                    req.pump()
        finally:
            req._done()

    def _error_response(self, req: Request) -> None:
        try:
            if req.is_websocket:
                req.reject(500, body=b"Internal Server Error\n")
            else:
                req.respond(500, headers=[("Content-Type", "text/plain")],
                            body=b"Internal Server Error\n")
        except SessionEnded:
            pass

    # --- timers ------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Keep-alives for quiet sessions (batched per condure, as condure does),
        expiry of sessions condure no longer mentions."""
        while True:
            gevent.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            due: dict[bytes, list[tuple[bytes, int]]] = defaultdict(list)
            for req in list(self.sessions.values()):
                if req.expire(now):
                    continue
                seq = req.hs.keepalive(now)
                if seq is not None:
                    due[req.hs.addr].append((req.rid, seq))
            for addr, ids in due.items():
                for group in zp.batches(ids):
                    self.publish(addr, zp.multi_packet(self.identity, group, b"keep-alive"))


class ReqRequest:
    """A req-mode request (server.md section 7): the whole body has arrived,
    and the response is one packet (condure always sends it with a
    Content-Length). `write` collects, `end`/`respond` send."""

    def __init__(self, handler: "ReqHandler", envelope: list[bytes], pkt: zp.Packet) -> None:
        method, uri, peer = zp.request_info(pkt)
        self.handler = handler
        self.envelope = envelope
        self.rid = pkt.ids[0][0]
        self.method = method.decode("latin-1")
        self.uri = uri.decode("latin-1")
        self.headers: list[tuple[bytes, bytes]] = pkt.headers
        self.peer = None if peer is None else (peer[0].decode("latin-1"), peer[1])
        self.body = Body.whole(pkt.body)
        self.is_websocket = False
        self.started = False
        self.finished = False
        self.failure: SessionEnded | None = None
        self._head: tuple[int, bytes | str | None, list[Any]] = (200, None, [])
        self._parts: list[bytes] = []

    header = Request.header

    def start(self, code: int = 200, reason: str | bytes | None = None,
              headers: Iterable[Any] = (), defer: bool = True) -> None:
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        self._head = (code, reason, list(headers))

    def write(self, data: bytes) -> None:
        if not self.started:
            self.start()
        self._parts.append(data)

    def end(self, data: bytes = b"") -> None:
        from .request import REASONS, header_pairs, to_bytes
        if not self.started:
            self.start()
        if self.finished:
            return
        self.finished = True
        code, reason, headers = self._head
        # condure writes its own Content-Length from the body (server.md 3.5)
        headers = [(n, v) for n, v in headers if to_bytes(n).lower() != b"content-length"]
        fields = [(b"code", code),
                  (b"reason", to_bytes(reason) if reason is not None else REASONS.get(code, b"Unknown")),
                  (b"headers", header_pairs(headers))]
        body = b"".join(self._parts) + data
        if body:
            fields.append((b"body", body))
        payload = zp.handler_packet(self.handler.identity, self.rid, None, zp.DATA, fields)
        self.handler.router.send_multipart(self.envelope + [payload])

    def respond(self, code: int = 200, reason: str | bytes | None = None,
                headers: Iterable[Any] = (), body: bytes | str = b"") -> None:
        from .request import to_bytes
        self.start(code, reason, headers)
        self.end(to_bytes(body))

    def cancel(self) -> None:
        self.finished = True  # req mode has no cancel: condure times the request out

    def _done(self) -> None:
        self.finished = True


class ReqHandler:
    """The req-mode variant: a ROUTER on condure's --zclient-req DEALER
    endpoints (connected, or bound with `bind`), `app(request)` per request
    in a greenlet, at most `concurrency` at a time."""

    def __init__(self, app: Callable[[Any], Any], specs: str | Iterable[str], *,
                 bind: bool = False, concurrency: int = 100,
                 identity: bytes | None = None, context: Any = None) -> None:
        self.app = app
        self.specs = [specs] if isinstance(specs, str) else list(specs)
        self.bind = bind
        self.identity = identity or default_identity("condure-req-handler")
        self.ctx = context or zmq.Context.instance()
        self.pool = gevent.pool.Pool(concurrency)
        self.stopped = Event()
        self._reader: gevent.Greenlet | None = None

    def start(self) -> None:
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 1000)
        self.router.setsockopt(zmq.RCVHWM, PULL_HWM)
        for spec in self.specs:
            (self.router.bind if self.bind else self.router.connect)(spec)
        self._reader = gevent.spawn(self._read)
        log.info("req handler %s %s", "bound to" if self.bind else "connected to",
                 " ".join(self.specs))

    def serve_forever(self, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.start()
        stop = Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, stop.set)
        stop.wait()
        self.stop(stop_timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self._reader is not None:
            self._reader.kill()
        self.pool.join(timeout)
        self.pool.kill(timeout=1)
        self.router.close()
        self.stopped.set()

    def _read(self) -> None:
        while True:
            self.pool.wait_available()
            frames = self.router.recv_multipart()
            try:
                sep = frames.index(b"")
                pkt = zp.parse(frames[sep + 1])
                req = ReqRequest(self, frames[:sep + 1], pkt)
            except (ValueError, IndexError, zp.ParseError) as e:
                log.warning("bad req packet from condure: %s", e)
                continue
            self.pool.spawn(self._run, req)

    def _run(self, req: ReqRequest) -> None:
        try:
            self.app(req)
        except Exception:
            log.exception("%s %s: the application failed", req.method, req.uri)
            if not req.finished:
                req._parts = []
                req.started = False
                req.respond(500, headers=[("Content-Type", "text/plain")],
                            body=b"Internal Server Error\n")
        else:
            if not req.finished:
                req.end()



