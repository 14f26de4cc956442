"""ZeroMQ transport for the client side (condure -> handlers).

A zmq.green socket allows one waiting greenlet per direction, so each socket
has exactly one reader and/or one writer greenlet. Waiting is the only thing
that needs zmq.green, though, and its wrappers cost 10x a plain call: a
message that can go out at once is sent by the calling greenlet with the
non-blocking Cython call, and the writer greenlet only takes over (through a
queue, keeping order) when the socket would block. Readers drain with
non-blocking calls and wait through zmq.green only when nothing is left.

The queues are unbounded on purpose: a session's sequence number is taken
when its packet is handed over, so handing over must never block (another
packet of the same session could overtake it). What bounds them is credits:
a connection sends at most a few packets before it waits for its handler.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, cast

import gevent
import zmq.green as zmq
from gevent.hub import Waiter
from gevent.queue import Queue
from zmq import Socket as _PlainSocket

from ..config import SpecError, stream_endpoints
from ..private import fd_waiter, zmq_get, zmq_recv, zmq_send
from ..log import TRACE, watch_level
from .trace import packet_text

log = logging.getLogger("condure.zhttpsocket")

# whether packets are traced: a module flag (one global read per packet),
# refreshed when the level changes (a debug-socket client lowers it while
# it is connected)
_trace = False


def _refresh_trace() -> None:
    global _trace
    _trace = log.isEnabledFor(TRACE)


watch_level(_refresh_trace)

READ_BATCH = 64  # messages handled before other greenlets get a turn
TERM_TIMEOUT = 1.0  # seconds ctx.term() may take once every socket is closed (linger 0)

# pyzmq's Cython methods, called unbound on zmq.green and plain sockets (or,
# if condure.private found pyzmq changed, the sockets' public methods)
_send = zmq_send
_recv = zmq_recv
_get = zmq_get
NOBLOCK = int(zmq.NOBLOCK)
RCVMORE = int(zmq.RCVMORE)
FD = int(zmq.FD)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)
SNDMORE_NOBLOCK = zmq.SNDMORE | zmq.NOBLOCK


class AttachError(Exception):
    """A bind or connect that failed, in condure's words: `bind SPEC: reason`."""


@contextmanager
def setting_specs(what: str) -> Iterator[None]:
    """Names the set of specs that failed as condure does, e.g. `failed to set
    zhttp client stream specs: bind ipc://x-out: No such file or directory`."""
    try:
        yield
    except AttachError as e:
        raise SpecError(f"failed to set {what} specs: {e}") from None


def attach(sock: zmq.Socket, endpoint: str, connect: bool, ipc_mode: int) -> None:
    """Bind (default) or connect; apply --ipc-file-mode to bound ipc files."""
    verb = "connect" if connect else "bind"
    try:
        if connect:
            sock.connect(endpoint)
            return
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        # zmq.strerror: plain text (pyzmq's own message adds the address again)
        raise AttachError(f"{verb} {endpoint}: {zmq.strerror(cast(int, e.errno))}") from None
    if ipc_mode and endpoint.startswith("ipc://"):
        try:
            os.chmod(endpoint[len("ipc://"):], ipc_mode)
        except OSError as e:
            raise AttachError(f"{verb} {endpoint}: {e.strerror}") from None


@contextmanager
def closed_on_error(*socks: zmq.Socket) -> Iterator[None]:
    """If setting up fails, close the sockets made so far, at once (linger 0):
    one left open makes ctx.term() wait for it forever, and the process that
    failed to start would hang instead of exiting 1."""
    try:
        yield
    except BaseException:
        for s in socks:
            s.close(0)
        raise


def terminate(ctx: zmq.Context, timeout: float = TERM_TIMEOUT) -> None:
    """ctx.term(), bounded: it waits for every socket of the context to be
    closed, and one left open by mistake would keep a process that has
    stopped serving alive forever. A thread, as term() blocks the whole hub."""
    t = threading.Thread(target=ctx.term, name="zmq-term", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        log.warning("zmq context not terminated within %g s (a socket left open)", timeout)


class SharedWait:
    """The waits of a socket that a `read_loop` reads and an Outbox writes
    (the ROUTERs handlers may answer on, D27).

    libzmq signals its fd once for a batch of pending commands, and any call
    on the socket processes them: a send can take the signal that would have
    woken the reader for a message that arrived meanwhile, and a read, or a
    ZMQ_EVENTS check, the one a writer blocked by the high-water mark waits
    for. So whoever asks ZMQ_EVENTS wakes every waiting side that may go on,
    and a side about to wait asks it last.

    The reader's check after sends (a syscall, about 1 us: 5% of a WebSocket
    message's path) is batched per hub iteration and paid only once the
    socket has brought a message at all: most handlers never answer over the
    ROUTER. Until then the reader also looks every LOOK_INTERVAL seconds, so
    even a first message whose signal a send took is read within that time."""

    LOOK_INTERVAL = 1.0

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.used = False  # a message has come: sends check for the reader
        self._hub = gevent.get_hub()
        self._watcher = self._hub.loop.io(_get(sock, FD), 1)
        self._waiters: list[Waiter | None] = [None, None]  # the reader's, the writer's
        self._check_pending = False

    def wait_readable(self) -> None:
        """The reader found nothing: wait for input, unless the check shows some."""
        if not self._ready_now() & POLLIN:
            self._wait(0)

    def wait_writable(self) -> None:
        """A send would block: wait until it may not, unless it may already."""
        if not self._ready_now() & POLLOUT:
            self._wait(1)

    def after_send(self) -> None:
        """Once a batch of sends is over (a hub callback: many connections send
        in one loop iteration), whether the reader must be woken."""
        if self.used and not self._check_pending and self._waiters[0] is not None:
            self._check_pending = True
            self._hub.loop.run_callback(self._on_fd)

    def after_reads(self) -> None:
        """A batch of reads is over and the reader goes on: a blocked writer
        may have been freed by them."""
        if self._waiters[1] is not None:
            self._ready_now()

    def _ready_now(self) -> int:
        """ZMQ_EVENTS, from a greenlet: the other side is woken if it may go on."""
        events = int(_get(self.sock, EVENTS))
        for waiter, event in zip(self._waiters, (POLLIN, POLLOUT)):
            if waiter is not None and events & event:
                # from the hub, as a Waiter wants; a late second switch is ignored
                self._hub.loop.run_callback(waiter.switch, None)
        return events

    def _on_fd(self) -> None:
        """In the hub: the fd was signalled (or a send may have taken the signal)."""
        self._check_pending = False
        reader, writer = self._waiters
        if reader is None and writer is None:
            return
        events = _get(self.sock, EVENTS)
        if reader is not None and events & POLLIN:
            reader.switch(None)
        if writer is not None and events & POLLOUT:
            writer.switch(None)

    def _wait(self, side: int) -> None:
        waiter = self._waiters[side] = Waiter()
        if not self._watcher.active:
            self._watcher.start(self._on_fd)
        # a fresh timer each time: a libev timer restarted after it fired
        # counts from its old expiry and fires at once, for ever
        timer = self._hub.loop.timer(self.LOOK_INTERVAL) if side == 0 and not self.used else None
        if timer is not None:
            timer.start(waiter.switch, None)
        try:
            waiter.get()
        finally:
            self._waiters[side] = None
            if self._waiters[1 - side] is None:
                self._watcher.stop()
            if timer is not None:
                timer.close()


class Outbox:
    """Sends on one zmq.green socket in order, waiting only in its own greenlet.

    `wake`: the socket is also read (see SharedWait)."""

    def __init__(self, sock: zmq.Socket, name: str, direct: bool = True,
                 wake: SharedWait | None = None) -> None:
        self.sock = sock
        self.name = name
        self.direct = direct
        self._wake = wake
        self._after_send = wake.after_send if wake is not None else None
        self._q: Queue = Queue()
        self._busy = False  # the writer holds a message it could not send yet

    def send(self, frames: tuple[bytes, ...]) -> None:
        if _trace:  # the payload is the last frame (the others: envelope, address)
            log.log(TRACE, "OUT %s %s", self.name, packet_text(frames[-1]))
        if self.direct and not self._busy and self._q.empty():  # (a gevent Queue is always true)
            try:
                self._send_now(frames)
            except zmq.Again:
                pass
            except zmq.ZMQError as e:
                self._failed(frames, e)
                return
            else:
                if self._after_send is not None:
                    self._after_send()
                return
        self._q.put_nowait(frames)

    def _send_now(self, frames: tuple[bytes, ...]) -> None:
        sock = self.sock
        for f in frames[:-1]:
            _send(sock, f, SNDMORE_NOBLOCK, True, False)
        _send(sock, frames[-1], NOBLOCK, True, False)

    def _failed(self, frames: tuple[bytes, ...], e: zmq.ZMQError) -> None:
        # a ROUTER send to a handler that is gone: condure logs and drops it
        log.debug("%s zmq send to %r: %s", self.name, frames[0], e.strerror)

    def run(self) -> None:
        """The writer greenlet: the blocking sends, in order."""
        q, sock = self._q, self.sock
        while True:
            frames = q.get()
            self._busy = True
            try:
                if self._wake is None:
                    sock.send_multipart(frames)
                else:
                    self._send_shared(frames, self._wake)
            except zmq.ZMQError as e:
                self._failed(frames, e)
            finally:
                self._busy = False

    def _send_shared(self, frames: tuple[bytes, ...], wake: SharedWait) -> None:
        while True:
            try:
                self._send_now(frames)
            except zmq.Again:
                wake.wait_writable()
            else:
                wake.after_send()
                return


def read_loop(sock: zmq.Socket, name: str, pick: Callable[[list[bytes]], bytes | None],
              on_message: Callable[[bytes], None], shared: bool = False,
              wake: SharedWait | None = None) -> None:
    """The reader greenlet: drain without waiting, wait only when nothing is left.

    A socket only this greenlet uses waits on its ZMQ_FD with a plain hub
    watcher (no zmq.green bookkeeping: this loop is on every response's
    path), and so does one whose Outbox wakes it (`wake`). A `shared`
    socket, also written by an Outbox, waits through zmq.green, whose sends
    wake its readers."""
    wait = wake.wait_readable if wake is not None else None if shared else _fd_waiter(sock)
    first = True  # the first message since the last wait
    while True:
        for _ in range(READ_BATCH):
            try:
                frames = [_recv(sock, NOBLOCK, True, False)]
            except zmq.Again:
                if wait is None:
                    frames = sock.recv_multipart()
                else:
                    wait()
                    first = True
                    continue
            else:
                while _get(sock, RCVMORE):
                    frames.append(_recv(sock, NOBLOCK, True, False))
            if wake is not None and not wake.used:
                wake.used = True
            payload = pick(frames)
            if payload is not None:
                if _trace:
                    log.log(TRACE, "IN %s %s", name, packet_text(payload))
                try:
                    on_message(payload)
                except Exception:
                    log.exception("error handling handler packet")
            if first and wait is not None:
                # most wake-ups bring one message: ask ZMQ_EVENTS (a third of
                # the cost of the EAGAIN exception) whether more are queued;
                # a longer batch is drained until the recv says EAGAIN
                first = False
                if not _get(sock, EVENTS) & POLLIN:
                    wait()
                    first = True
        if wake is not None:
            wake.after_reads()
        gevent.sleep(0)  # let the connections run before the next batch


def _fd_waiter(sock: zmq.Socket) -> Callable[[], None]:
    """Wait for `sock`'s ZMQ_FD, after ZMQ_EVENTS or a recv said there is no
    input. Either has processed libzmq's pending commands, so the next
    message to arrive signals the fd."""
    return fd_waiter(_get(sock, FD))


def reader_socket(ctx: zmq.Context, kind: int) -> zmq.Socket:
    """A plain (not zmq.green) socket for a `read_loop` of its own: zmq.green
    would watch its fd too and run its bookkeeping on every wake-up."""
    return _PlainSocket(ctx, kind)


def _first_frame(frames: list[bytes]) -> bytes:
    return frames[0]


def _routed_payload(frames: list[bytes]) -> bytes | None:
    """What a handler sent to a ROUTER: `[identity..., b"", payload, ...]`,
    at most 8 routing frames, frames after the payload ignored (as connmgr).
    A ZMQ_PROBE_ROUTER probe (`[identity, b""]`) is dropped without a word."""
    try:
        split = frames.index(b"")
    except ValueError:
        log.debug("routed message without an envelope delimiter dropped")
        return None
    if split > 8 or split + 1 >= len(frames):
        if split + 1 < len(frames):
            log.debug("routed message with too many routing frames dropped")
        return None
    return frames[split + 1]


def _after_delimiter(frames: list[bytes]) -> bytes | None:
    """The first frame after the envelope's empty delimiter (DEALER replies)."""
    try:
        return frames[frames.index(b"") + 1]
    except (ValueError, IndexError):
        log.warning("req: message without an envelope delimiter dropped")
        return None


class StreamSockets:
    """PUSH (first packets), ROUTER (directed packets; handler packets too, from
    handlers that answer over it: pushpin-connmgr's router-resp) and SUB
    (handler packets)."""

    def __init__(self, ctx: zmq.Context, bases: list[str], instance_id: bytes,
                 connect: bool, ipc_mode: int, hwm: int,
                 endpoints: list[tuple[str, str, str]] | None = None) -> None:
        """`endpoints` instead of `bases`: a worker process behind the parent's
        proxies (D15), whose directed packets go out on a PUSH with the
        handler's identity as first frame for the parent's ROUTER."""
        worker = endpoints is not None
        endpoints = endpoints or [stream_endpoints(b) for b in bases]
        self.push = ctx.socket(zmq.PUSH)
        # read and written by greenlets of ours that wait through SharedWait: a
        # plain socket (zmq.green's would watch its fd too, for nothing)
        self.router = ctx.socket(zmq.PUSH) if worker else reader_socket(ctx, zmq.ROUTER)
        self.sub = reader_socket(ctx, zmq.SUB)
        with closed_on_error(self.push, self.router, self.sub):
            for s in (self.push, self.router, self.sub):
                s.setsockopt(zmq.LINGER, 0)
            self.push.setsockopt(zmq.SNDHWM, hwm)
            self.router.setsockopt(zmq.SNDHWM, hwm)
            if not worker:
                self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
                # handlers answer over ROUTER to the request's `from`: the same name
                self.router.setsockopt(zmq.IDENTITY, instance_id)
                self.router.setsockopt(zmq.RCVHWM, hwm)
            self.sub.setsockopt(zmq.RCVHWM, hwm)
            self.sub.setsockopt(zmq.SUBSCRIBE, instance_id + b" ")
            for out, out_stream, in_ in endpoints:
                attach(self.push, out, connect or worker, ipc_mode)
                attach(self.router, out_stream, connect or worker, ipc_mode)
                attach(self.sub, in_, connect or worker, ipc_mode)
        self.endpoints = endpoints
        # a worker's directed packets go to the parent on a PUSH, which is not read
        self._wake = None if worker else SharedWait(self.router)
        self._push = Outbox(self.push, "stream")
        self._router = Outbox(self.router, "stream to", wake=self._wake)
        self._greenlets: list[gevent.Greenlet] = []

    def describe(self) -> str:
        return " ".join(" ".join(e) for e in self.endpoints)

    def start(self, on_message: Callable[[bytes], None],
              on_routed: Callable[[bytes], None] | None = None) -> None:
        """`on_message`: a SUB message (`<id> T...`); `on_routed`: a packet a
        handler sent to the ROUTER (no address prefix)."""
        self._greenlets = [
            gevent.spawn(read_loop, self.sub, "stream", _first_frame, on_message),
            gevent.spawn(self._push.run),
            gevent.spawn(self._router.run),
        ]
        if self._wake is not None and on_routed is not None:
            self._greenlets.append(gevent.spawn(read_loop, self.router, "stream routed",
                                                _routed_payload, on_routed, wake=self._wake))

    def send_first(self, payload: bytes) -> None:
        self._push.send((payload,))

    def send_to(self, addr: bytes, payload: bytes) -> None:
        self._router.send((addr, b"", payload))

    def close(self) -> None:
        gevent.killall(self._greenlets, block=False)
        for s in (self.push, self.router, self.sub):
            s.close(0)


class ReqSockets:
    """The DEALER of req-mode listeners: one request message, one reply message."""

    def __init__(self, ctx: zmq.Context, specs: list[str], connect: bool, ipc_mode: int,
                 hwm: int, identity: bytes | None = None) -> None:
        self.dealer = ctx.socket(zmq.DEALER)
        with closed_on_error(self.dealer):
            if identity is not None:  # a worker: the parent routes replies by it
                self.dealer.setsockopt(zmq.IDENTITY, identity)
            self.dealer.setsockopt(zmq.LINGER, 0)
            self.dealer.setsockopt(zmq.SNDHWM, hwm)
            self.dealer.setsockopt(zmq.RCVHWM, hwm)
            for spec in specs:
                if not spec.startswith(("ipc://", "tcp://")):
                    raise SpecError(f"invalid req spec: {spec}")
                attach(self.dealer, spec, connect, ipc_mode)
        self.specs = specs
        self._out = Outbox(self.dealer, "req", direct=False)
        self._greenlets: list[gevent.Greenlet] = []

    def describe(self) -> str:
        return " ".join(self.specs)

    def start(self, on_message: Callable[[bytes], None]) -> None:
        self._greenlets = [gevent.spawn(read_loop, self.dealer, "req", _after_delimiter, on_message, True),
                           gevent.spawn(self._out.run)]

    def send(self, payload: bytes) -> None:
        self._out.send((b"", payload))

    def close(self) -> None:
        gevent.killall(self._greenlets, block=False)
        self.dealer.close(0)


def server_endpoints(base: str) -> tuple[str, str, str]:
    """Client mode (--zserver-stream): (PULL -in, ROUTER -in-stream, PUB -out)."""
    if base.startswith("ipc://"):
        return base + "-in", base + "-in-stream", base + "-out"
    return stream_endpoints(base)  # tcp: P, P+1, P+2 in the same order


class ServerStreamSockets:
    """Client mode: PULL (first messages), ROUTER with identity --id (later
    messages; and everything condure sends in a session whose requester set
    router-resp, to its address), PUB (everything else condure sends,
    prefixed with the handler's address)."""

    def __init__(self, ctx: zmq.Context, bases: list[str], instance_id: bytes,
                 connect: bool, ipc_mode: int, hwm: int) -> None:
        endpoints = [server_endpoints(b) for b in bases]
        self.pull = reader_socket(ctx, zmq.PULL)
        self.router = reader_socket(ctx, zmq.ROUTER)  # read and written: see SharedWait
        self.router.setsockopt(zmq.IDENTITY, instance_id)  # before bind/connect
        self.pub = ctx.socket(zmq.PUB)
        with closed_on_error(self.pull, self.router, self.pub):
            for s in (self.pull, self.router, self.pub):
                s.setsockopt(zmq.LINGER, 0)
            self.pull.setsockopt(zmq.RCVHWM, 128)
            self.router.setsockopt(zmq.RCVHWM, hwm)
            self.router.setsockopt(zmq.SNDHWM, hwm)
            # a send to a requester that is gone fails (logged at debug) rather
            # than vanishing without a trace, as connmgr
            self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.pub.setsockopt(zmq.SNDHWM, hwm)
            for in_, in_stream, out in endpoints:
                attach(self.pull, in_, connect, ipc_mode)
                attach(self.router, in_stream, connect, ipc_mode)
                attach(self.pub, out, connect, ipc_mode)
        self.endpoints = endpoints
        self._pub = Outbox(self.pub, "server stream")
        self._wake = SharedWait(self.router)
        self._router = Outbox(self.router, "server stream to", wake=self._wake)
        self._greenlets: list[gevent.Greenlet] = []

    def describe(self) -> str:
        return " ".join(" ".join(e) for e in self.endpoints)

    def start(self, on_first: Callable[[bytes], None], on_later: Callable[[bytes], None]) -> None:
        self._greenlets = [
            gevent.spawn(read_loop, self.pull, "server stream", _first_frame, on_first),
            gevent.spawn(read_loop, self.router, "server stream next", _routed_payload, on_later,
                         wake=self._wake),
            gevent.spawn(self._pub.run),
            gevent.spawn(self._router.run),
        ]

    def send(self, addr: bytes, payload: bytes, router: bool = False) -> None:
        """To the handler at `addr`: on the PUB, or with `router` (the session's
        requester set router-resp) on the ROUTER, without the address prefix."""
        if router:
            self._router.send((addr, b"", payload))
        else:
            self._pub.send((addr + b" " + payload,))

    def close(self) -> None:
        gevent.killall(self._greenlets, block=False)
        for s in (self.pull, self.router, self.pub):
            s.close(0)


class ServerReqSockets:
    """Client mode REQ interface: a ROUTER; replies keep the request's envelope."""

    def __init__(self, ctx: zmq.Context, specs: list[str], connect: bool, ipc_mode: int,
                 hwm: int) -> None:
        self.router = ctx.socket(zmq.ROUTER)
        with closed_on_error(self.router):
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.setsockopt(zmq.SNDHWM, 128)
            self.router.setsockopt(zmq.RCVHWM, hwm)
            for spec in specs:
                if not spec.startswith(("ipc://", "tcp://")):
                    raise SpecError(f"invalid req spec: {spec}")
                attach(self.router, spec, connect, ipc_mode)
        self.specs = specs
        self._out = Outbox(self.router, "server req", direct=False)
        self._greenlets: list[gevent.Greenlet] = []

    def describe(self) -> str:
        return " ".join(self.specs)

    def start(self, on_request: Callable[[list[bytes], bytes], None]) -> None:
        self._greenlets = [gevent.spawn(self._read_loop, on_request), gevent.spawn(self._out.run)]

    def _read_loop(self, on_request: Callable[[list[bytes], bytes], None]) -> None:
        router = self.router
        while True:
            frames = router.recv_multipart()
            try:
                split = frames.index(b"")
            except ValueError:
                continue  # no envelope delimiter: not a request we can answer
            if split > 8 or split + 1 >= len(frames):
                continue
            if _trace:
                log.log(TRACE, "IN server req %s", packet_text(frames[split + 1]))
            try:
                on_request(frames[:split], frames[split + 1])
            except Exception:
                log.exception("error handling a client-mode request")

    def reply(self, envelope: list[bytes], payload: bytes) -> None:
        self._out.send((*envelope, b"", payload))

    def close(self) -> None:
        gevent.killall(self._greenlets, block=False)
        self.router.close(0)
