"""ZeroMQ transport for the client side (condure -> handlers).

A zmq.green socket allows one waiting greenlet per direction, so each socket
has exactly one reader and/or one writer greenlet; connections hand their
packets to the writers through queues. The queues are unbounded on purpose:
a session's sequence number is taken when its packet is queued, so a put
must never block (it would let another packet of the same session overtake
it). What bounds them is credits: a connection sends at most a few packets
before it waits for its handler.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import gevent
import zmq.green as zmq
from gevent.queue import Queue

from ..log import TRACE

log = logging.getLogger("condure.zhttpsocket")

READ_BATCH = 64  # messages drained without waiting after a wake-up


class SpecError(ValueError):
    pass


def stream_endpoints(base: str) -> tuple[str, str, str]:
    """Expand a spec base into (PUSH -out, ROUTER -out-stream, SUB -in) endpoints."""
    if base.startswith("ipc://"):
        return base + "-out", base + "-out-stream", base + "-in"
    if base.startswith("tcp://"):
        host, sep, port = base[len("tcp://"):].rpartition(":")
        try:
            p = int(port)
        except ValueError:
            raise SpecError(f"error parsing tcp port in base spec: {base}") from None
        if not sep or not host or not 0 < p < 65534:
            raise SpecError(f"error parsing tcp port in base spec: {base}")
        return tuple(f"tcp://{host}:{p + i}" for i in range(3))  # type: ignore[return-value]
    raise SpecError("base spec must be ipc or tcp")


def attach(sock: zmq.Socket, endpoint: str, connect: bool, ipc_mode: int) -> None:
    """Bind (default) or connect; apply --ipc-file-mode to bound ipc files."""
    if connect:
        sock.connect(endpoint)
        return
    sock.bind(endpoint)
    if ipc_mode and endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://"):], ipc_mode)


class StreamSockets:
    """PUSH (first packets), ROUTER (directed packets) and SUB (handler packets)."""

    def __init__(self, ctx: zmq.Context, bases: list[str], instance_id: bytes,
                 connect: bool, ipc_mode: int, hwm: int) -> None:
        endpoints = [stream_endpoints(b) for b in bases]
        self.push = ctx.socket(zmq.PUSH)
        self.router = ctx.socket(zmq.ROUTER)
        self.sub = ctx.socket(zmq.SUB)
        for s in (self.push, self.router, self.sub):
            s.setsockopt(zmq.LINGER, 0)
        self.push.setsockopt(zmq.SNDHWM, hwm)
        self.router.setsockopt(zmq.SNDHWM, hwm)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sub.setsockopt(zmq.RCVHWM, hwm)
        self.sub.setsockopt(zmq.SUBSCRIBE, instance_id + b" ")
        for out, out_stream, in_ in endpoints:
            attach(self.push, out, connect, ipc_mode)
            attach(self.router, out_stream, connect, ipc_mode)
            attach(self.sub, in_, connect, ipc_mode)
        self.endpoints = endpoints
        self._push_q: Queue = Queue()
        self._router_q: Queue = Queue()
        self._greenlets: list[gevent.Greenlet] = []

    def describe(self) -> str:
        return " ".join(" ".join(e) for e in self.endpoints)

    def start(self, on_message: Callable[[bytes], None]) -> None:
        self._greenlets = [
            gevent.spawn(self._read_loop, on_message),
            gevent.spawn(self._push_loop),
            gevent.spawn(self._router_loop),
        ]

    def send_first(self, payload: bytes) -> None:
        self._push_q.put_nowait(payload)

    def send_to(self, addr: bytes, payload: bytes) -> None:
        self._router_q.put_nowait((addr, payload))

    def _read_loop(self, on_message: Callable[[bytes], None]) -> None:
        sub = self.sub
        while True:
            frames = sub.recv_multipart()
            for _ in range(READ_BATCH):
                if log.isEnabledFor(TRACE):
                    log.log(TRACE, "IN stream %r", frames[0])
                self._dispatch(on_message, frames[0])
                try:
                    frames = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
            gevent.sleep(0)  # let the connections run before the next batch

    @staticmethod
    def _dispatch(on_message: Callable[[bytes], None], frame: bytes) -> None:
        try:
            on_message(frame)
        except Exception:
            log.exception("error handling handler packet")

    def _push_loop(self) -> None:
        q, push = self._push_q, self.push
        while True:
            payload = q.get()
            if log.isEnabledFor(TRACE):
                log.log(TRACE, "OUT stream %r", payload)
            push.send(payload)

    def _router_loop(self) -> None:
        q, router = self._router_q, self.router
        while True:
            addr, payload = q.get()
            if log.isEnabledFor(TRACE):
                log.log(TRACE, "OUT stream to %r %r", addr, payload)
            try:
                router.send_multipart([addr, b"", payload])
            except zmq.ZMQError as e:
                log.debug("stream zmq send to %r: %s", addr, e.strerror)

    def close(self) -> None:
        gevent.killall(self._greenlets, block=False)
        for s in (self.push, self.router, self.sub):
            s.close(0)


class ReqSockets:
    """The DEALER of req-mode listeners: one request message, one reply message."""

    def __init__(self, ctx: zmq.Context, specs: list[str], connect: bool, ipc_mode: int,
                 hwm: int) -> None:
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.SNDHWM, hwm)
        self.dealer.setsockopt(zmq.RCVHWM, hwm)
        for spec in specs:
            if not spec.startswith(("ipc://", "tcp://")):
                raise SpecError(f"invalid req spec: {spec}")
            attach(self.dealer, spec, connect, ipc_mode)
        self.specs = specs
        self._q: Queue = Queue()
        self._greenlets: list[gevent.Greenlet] = []

    def describe(self) -> str:
        return " ".join(self.specs)

    def start(self, on_message: Callable[[bytes], None]) -> None:
        self._greenlets = [gevent.spawn(self._read_loop, on_message),
                           gevent.spawn(self._write_loop)]

    def send(self, payload: bytes) -> None:
        self._q.put_nowait(payload)

    def _read_loop(self, on_message: Callable[[bytes], None]) -> None:
        dealer = self.dealer
        while True:
            frames = dealer.recv_multipart()
            # the envelope ends at the empty delimiter; the first frame after it is the packet
            try:
                payload = frames[frames.index(b"") + 1]
            except (ValueError, IndexError):
                log.warning("req: message without an envelope delimiter dropped")
                continue
            if log.isEnabledFor(TRACE):
                log.log(TRACE, "IN req %r", payload)
            StreamSockets._dispatch(on_message, payload)

    def _write_loop(self) -> None:
        q, dealer = self._q, self.dealer
        while True:
            payload = q.get()
            if log.isEnabledFor(TRACE):
                log.log(TRACE, "OUT req %r", payload)
            dealer.send_multipart([b"", payload])

    def close(self) -> None:
        gevent.killall(self._greenlets, block=False)
        self.dealer.close(0)
