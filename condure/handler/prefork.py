"""Worker processes behind one holder of condure's PULL socket: restarts that
lose no request.

Independent handler processes each pull requests from condure, and a
process that stops loses whatever condure had already pushed towards its
socket (libzmq discards what a socket has not read when it disconnects).
Here the PULL socket belongs to a parent that does not restart: it reads a
request only when a worker has asked for one, and hands it to that worker.

* a worker asks with `R<n>` (n more requests: its concurrency at start,
  one more as each request ends);
* the parent sends `[worker, payload]` only against those credits;
* a worker that stops sends `S`, and reads on (serving what comes) until
  the parent's `A`: the parent sends nothing to it after the `A`, and a
  socket delivers in order, so nothing sent to it is left unread;
* each worker has its own `from` and its own ROUTER and PUB towards
  condure, as any handler (condure.handler.Handler with take_requests=False).

`Dispatcher` is the parent (plain pyzmq, no gevent: it only moves bytes);
`feed` runs in a worker's hub. SIGHUP to the parent restarts the workers one
generation at a time (new ones first); SIGTERM stops everything gracefully.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import time
from typing import Any, Callable

import zmq

log = logging.getLogger("condure.handler")

POLL_MS = 100
STOP_TIMEOUT = 35.0  # seconds the workers get to finish on SIGTERM
PULL_HWM = 16


class Dispatcher:
    """The parent: condure's PULL, a ROUTER for the workers, the workers."""

    def __init__(self, pull_endpoints: list[str], dispatch: str, bind: bool,
                 spawn: Callable[[], subprocess.Popen], workers: int) -> None:
        self.pull_endpoints = pull_endpoints
        self.dispatch = dispatch
        self.bind = bind
        self.spawn = spawn
        self.n = workers
        self.credits: dict[bytes, int] = {}  # worker identity -> requests it asked for
        self.order: list[bytes] = []  # round robin among the workers with credit
        self.procs: list[subprocess.Popen] = []
        self.dispatched = 0
        self._hup = False
        self._term = False

    def run(self) -> int:
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, PULL_HWM)
        pull.setsockopt(zmq.LINGER, 0)
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 1000)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a worker gone: an error, not a silent drop
        router.bind(self.dispatch)
        for ep in self.pull_endpoints:
            (pull.bind if self.bind else pull.connect)(ep)
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "_hup", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_term", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "_term", True))
        self.procs = [self.spawn() for _ in range(self.n)]
        log.info("dispatcher: %d workers, %s", self.n, " ".join(self.pull_endpoints))
        stopping_since: float | None = None
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        pulling = False
        while True:
            # condure's requests are read only while some worker waits for one
            want_pull = stopping_since is None and any(self.credits.values())
            if want_pull and not pulling:
                poller.register(pull, zmq.POLLIN)
            elif pulling and not want_pull:
                poller.unregister(pull)
            pulling = want_pull
            ready = dict(poller.poll(POLL_MS))
            if router in ready:
                self._from_worker(router)
            if pulling and pull in ready:
                for _ in range(64):
                    if not any(self.credits.values()):
                        break
                    try:
                        payload = pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._dispatch(router, payload)
            if self._hup:
                self._hup = False
                old, self.procs = self.procs, [self.spawn() for _ in range(self.n)]
                log.info("dispatcher: restarting workers %s", [p.pid for p in old])
                for p in old:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                self.procs += old  # reaped below once they exit
            if self._term and stopping_since is None:
                stopping_since = time.monotonic()
                log.info("dispatcher: stopping")
                for p in self.procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
            self._reap(stopping_since is None)
            if stopping_since is not None:
                if all(p.poll() is not None for p in self.procs):
                    break
                if time.monotonic() - stopping_since > STOP_TIMEOUT:
                    for p in self.procs:
                        if p.poll() is None:
                            p.kill()
        pull.close()
        router.close()
        ctx.term()
        return 0

    def _from_worker(self, router: Any) -> None:
        for _ in range(256):
            try:
                wid, msg = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"R":
                if wid not in self.credits:
                    self.order.append(wid)
                    self.credits[wid] = 0
                self.credits[wid] += int(msg[1:])
            elif msg == b"S":  # the worker stops: nothing more to it, then the ack
                self._forget(wid)
                try:
                    router.send_multipart([wid, b"A"], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass  # it has gone meanwhile

    def _dispatch(self, router: Any, payload: bytes) -> None:
        """Send a request to the next worker with credit; a worker that has
        gone (crashed) loses its credits and the next one gets it."""
        while (wid := self._next_worker()) is not None:
            try:
                router.send_multipart([wid, payload], zmq.NOBLOCK)
            except zmq.ZMQError as e:
                log.warning("dispatcher: worker %r unreachable (%s)", wid, e)
                self._forget(wid)
                continue
            self.credits[wid] -= 1
            self.dispatched += 1
            return
        log.error("dispatcher: no worker for a request; dropped")

    def _forget(self, wid: bytes) -> None:
        self.credits.pop(wid, None)
        if wid in self.order:
            self.order.remove(wid)

    def _next_worker(self) -> bytes | None:
        order = self.order
        for _ in range(len(order)):
            wid = order.pop(0)
            order.append(wid)
            if self.credits.get(wid, 0) > 0:
                return wid
        return None

    def _reap(self, respawn: bool) -> None:
        alive = []
        for p in self.procs:
            if p.poll() is None:
                alive.append(p)
            else:
                log.info("dispatcher: worker %d exited with %s", p.pid, p.returncode)
                # one that died without its S takes its credits along (the
                # requests it had are lost with it)
                self._forget(worker_identity(p.pid))
        self.procs = alive
        if respawn:
            while len(self.procs) < self.n:
                self.procs.append(self.spawn())


def worker_identity(pid: int) -> bytes:
    """A worker's identity on the dispatch socket: its pid, so that the parent
    can forget the credits of a worker that died."""
    return b"w%d" % pid


def feed(handler: Any, endpoint: str, stop: Any) -> None:
    """A worker's side (in its gevent hub): take requests from the parent at
    `endpoint` into `handler` (started with take_requests=False) until `stop`
    (a gevent Event) is set; then give the credits back (S) and serve what
    was already sent until the parent's ack (A)."""
    import gevent
    import zmq.green as gzmq

    import os
    sock = handler.ctx.socket(gzmq.DEALER)
    sock.setsockopt(gzmq.LINGER, 1000)
    sock.setsockopt(gzmq.IDENTITY, worker_identity(os.getpid()))
    sock.connect(endpoint)
    sock.send(b"R%d" % handler.concurrency)

    def ask_one() -> None:
        if not stop.is_set():
            sock.send(b"R1")

    def take(payload: bytes) -> None:
        req = handler._take_request(payload)
        if req is None:
            ask_one()
            return
        g = gevent.Greenlet(handler._run, req)
        handler.pool.add(g)  # never full: the parent sends only what we asked for
        g.link(lambda _: ask_one())  # after the pool's own link: the slot is free by then
        g.start()

    def reader() -> None:
        while True:
            msg = sock.recv()
            if msg == b"A":
                return
            take(msg)

    g = gevent.spawn(reader)
    stop.wait()
    sock.send(b"S")
    g.join(STOP_TIMEOUT)
    sock.close()
