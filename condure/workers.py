"""`--workers N` (N > 1): a parent process in front of N worker processes (D15).

The parent binds everything the outside sees: the listening sockets and, in
bind mode, the ZeroMQ endpoints handlers connect to. With --zclient-connect
the parent has no ZeroMQ socket and runs no proxy: each worker connects to
the handlers itself, as a single condure named by its `from` would (app.py),
so the handlers see N condures and router-resp works (D27). On a TCP port
each worker gets a listening socket of its own (SO_REUSEPORT), so the kernel
spreads new connections evenly; with one shared socket the first worker to
wake would take a whole burst of them. A Unix socket is shared by the workers.
In bind mode libzmq's own proxies, in threads, forward stream-mode traffic so
no Python code touches those messages:

* workers' first packets: PULL (internal) -> PUSH (BASE-out);
* workers' directed packets: PULL (internal) -> ROUTER (BASE-out-stream),
  the handler's identity travelling as the first frame;
* handlers' packets: XSUB (BASE-in) -> XPUB (internal); each worker's SUB
  subscribes to its own `from` (`<id>-<index>`), so replies reach the worker
  that sent the request by subscription, filtered at the handlers' PUBs.

With `--debug-socket`, the parent owns the socket and its clients; each
worker sends its lines up to the parent while a client is connected
(debuglog.py).

With `--prometheus`, the parent serves the port: at each scrape it asks every
worker for its figures over a Unix socket in its private directory and adds
them up (`MetricsServer`, metrics.py), so one scrape covers the whole process.

Req mode keeps condure's 3-frame envelope at the handler, so its replies are
routed to the worker named in the id (`<worker>-<slot>-<counter>`) by a small
forwarder thread (bind mode; connected, each worker's DEALER gets its own).
A worker that dies is logged and started again, unless it dies before it has
started (each worker reports through a pipe): then the
others are stopped and the process exits 1, as a single process would. SIGTERM
or SIGINT stop the workers and the parent; a second signal kills them at once.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import tnetstring
import zmq

from . import VERSION
from .app import (SCRAPES_MAX, StartupError, WorkerInfo, answer_scrape, internal_req_endpoint,
                  internal_stream_endpoints, metrics_bind_error, metrics_listener,
                  worker_metrics_path)
from .config import Config, SpecError, parse_debug_socket, parse_prometheus, stream_endpoints
from .debuglog import DebugSocket, DebugSocketError, WorkerFeeds, queue_limit, worker_feed_path
from .metrics import (NAMESPACE, Aggregate, Family, Metrics, SnapshotError, exposition, merge,
                      parse_snapshot, process_families, process_start_time, render)
from .server.listener import ListenError, bind
from .zhttp.sockets import attach, setting_specs, terminate

log = logging.getLogger("condure.workers")

ENV = "CONDURE_WORKER"
RESTART_DELAY = 1.0  # seconds before a dead worker is started again
STOP_GRACE = 10.0  # seconds workers get to stop before they are killed
POLL_INTERVAL = 0.2  # seconds between looks at the workers
SCRAPE_WAIT = 2.0  # seconds a scrape waits for the workers' figures, all together


def die_with_parent() -> None:
    """A worker must not outlive its parent (it would keep the listening sockets)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(1)  # the parent is already gone


def report_ready(fd: int) -> None:
    """Worker side: tell the parent this worker has started. A worker that
    exits before (the pipe's EOF comes first) failed to start."""
    if fd < 0:
        return
    try:
        os.write(fd, b"1")
    except OSError:
        pass  # the parent is gone, and PR_SET_PDEATHSIG ends this worker
    finally:
        os.close(fd)


class WorkerFailed(Exception):
    """A worker exited before it had started: starting it again would fail the same way."""


def worker_config(cfg: Config, count: int) -> Config:
    """Each worker gets its share of the connection limits, as condure divides them,
    and its share of the spare buffer blocks (blocks.py): a worker is a process
    here, so the pool cannot be one counter for all as in pushpin-connmgr's
    threads. Each worker keeps 2 blocks per connection it may hold and gets
    spare // count, so the workers together never have more than the options
    allow (a remainder is not used)."""
    stream_maxconn = max(cfg.stream_maxconn // count, 1)
    blocks_max = cfg.blocks_max
    if blocks_max is not None:
        blocks_max = 2 * stream_maxconn + (blocks_max - 2 * cfg.stream_maxconn) // count
    return dataclasses.replace(cfg, stream_maxconn=stream_maxconn,
                               req_maxconn=max(cfg.req_maxconn // count, 1),
                               blocks_max=blocks_max)


class Parent:
    def __init__(self, cfg: Config, argv: list[str], module: str = "condure") -> None:
        self.cfg = cfg
        self.argv = argv
        self.module = module  # the workers run `python -m MODULE ARGV`, as the parent was
        self.count = cfg.workers
        self.dir = tempfile.mkdtemp(prefix="condure-w")
        self.ctx = zmq.Context()
        self._loose: list[zmq.Socket] = []  # sockets no proxy thread owns (yet)
        self.listen_socks: list = []
        self.children: dict[int, subprocess.Popen] = {}
        self.starting: dict[int, int] = {}  # worker index -> its ready pipe, until it reports
        self.started = False  # every worker reported once: "started" is logged
        self.stopping = 0
        self.signalled: set[int] = set()  # pids of the workers told to stop
        self.metrics: MetricsServer | None = None
        self.debug: DebugSocket | None = None
        self.feeds: WorkerFeeds | None = None

    # --- set-up -------------------------------------------------------------

    def start(self) -> None:
        # the sockets of our own first: a failure here stops the start before
        # any proxy thread runs
        if self.cfg.prometheus:
            self.metrics = MetricsServer(self.cfg.prometheus, self.dir, self.count)
        if self.cfg.debug_socket is not None:
            self._debug_socket(self.cfg.debug_socket)
        try:
            # a TCP port is only held here (bound, not listening), for the workers' group
            self.listen_socks = [bind(spec, reuse_port=not spec.local, listen=spec.local)
                                 for spec in self.cfg.listen]
        except ListenError as e:
            raise StartupError(str(e)) from None
        try:
            if self.cfg.zclient_connect:
                self._check_connect()
            else:
                if any(spec.stream for spec in self.cfg.listen):
                    with setting_specs("zhttp client stream"):
                        self._stream_proxies()
                if any(not spec.stream for spec in self.cfg.listen):
                    with setting_specs("zhttp client req"):
                        self._req_forwarder()
        except SpecError as e:
            raise StartupError(str(e)) from None
        except zmq.ZMQError as e:
            raise StartupError(f"zhttp client setup failed: {e}") from None
        for spec in self.cfg.listen:
            log.info("listening on %s", spec.describe())
        for i in range(self.count):
            self._spawn(i)

    def _debug_socket(self, text: str) -> None:
        """Before the workers start: each connects to the feed socket at start."""
        spec = parse_debug_socket(text)
        self.debug = DebugSocket(spec, queue_limit(self.count))
        self.feeds = WorkerFeeds(worker_feed_path(self.dir), self.debug)
        self.debug.on_state = self.feeds.set_state
        try:
            self.feeds.start()
            self.debug.start()
        except DebugSocketError as e:
            raise StartupError(f"debug socket: {e}") from None
        log.info("debug socket on %s", spec.path)

    def _external(self, kind: int, endpoints: list[str], hwm: int,
                  identity: bytes | None = None) -> zmq.Socket:
        s = self._socket(kind)
        if identity is not None:
            s.setsockopt(zmq.IDENTITY, identity)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RCVHWM, hwm)
        for ep in endpoints:
            attach(s, ep, self.cfg.zclient_connect, self.cfg.ipc_file_mode)
        return s

    def _socket(self, kind: int) -> zmq.Socket:
        """A socket of the parent's context, closed by `close` until a thread owns it."""
        s = self.ctx.socket(kind)
        self._loose.append(s)
        return s

    def _thread(self, target: Callable[..., None], *socks: zmq.Socket) -> None:
        """Start `target(*socks)` in a thread that owns them from now on: it
        closes them when the context is terminated (closing them here, under
        a thread still in zmq.proxy, could crash the process)."""
        for sock in socks:
            self._loose.remove(sock)
        threading.Thread(target=target, args=socks, daemon=True).start()

    def _internal(self, kind: int, endpoint: str) -> zmq.Socket:
        s = self._socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.bind(endpoint)
        return s

    def _check_connect(self) -> None:
        """--zclient-connect: each worker connects to the handlers itself, as a
        condure of its own (its ROUTER named by its `from`), so the parent runs
        no proxy and keeps no ZeroMQ socket. The specs are tried here first, on
        sockets closed at once, so a bad one fails the start with the same
        message as a single process (not as a worker that failed to start)."""
        cfg = self.cfg
        ctx = zmq.Context()
        socks: list[zmq.Socket] = []
        try:
            if any(spec.stream for spec in cfg.listen):
                ends = [stream_endpoints(b) for b in cfg.zclient_stream]
                with setting_specs("zhttp client stream"):
                    for i, kind in enumerate((zmq.PUSH, zmq.ROUTER, zmq.SUB)):
                        socks.append(ctx.socket(kind))
                        for e in ends:
                            attach(socks[-1], e[i], True, cfg.ipc_file_mode)
                log.info("zhttp client connect %s", " ".join(" ".join(e) for e in ends))
            if any(not spec.stream for spec in cfg.listen):
                with setting_specs("zhttp client req"):
                    socks.append(ctx.socket(zmq.DEALER))
                    for spec in cfg.zclient_req:
                        if not spec.startswith(("ipc://", "tcp://")):
                            raise SpecError(f"invalid req spec: {spec}")
                        attach(socks[-1], spec, True, cfg.ipc_file_mode)
                log.info("zhttp client connect req %s", " ".join(cfg.zclient_req))
        finally:
            for sock in socks:
                sock.close(0)
            ctx.term()

    def _stream_proxies(self) -> None:
        cfg = self.cfg
        hwm = max((cfg.req_maxconn + cfg.stream_maxconn) // 20, 1)
        ends = [stream_endpoints(b) for b in cfg.zclient_stream]
        push = self._external(zmq.PUSH, [e[0] for e in ends], hwm)
        # named --id, as a single process's (handlers see the same peer either way)
        router = self._external(zmq.ROUTER, [e[1] for e in ends], hwm, cfg.id.encode())
        xsub = self._external(zmq.XSUB, [e[2] for e in ends], hwm)
        i_push, i_route, i_sub = internal_stream_endpoints(self.dir)
        pairs = [(self._internal(zmq.PULL, i_push), push),
                 (self._internal(zmq.PULL, i_route), router),
                 (xsub, self._internal(zmq.XPUB, i_sub))]
        mode = "connect" if cfg.zclient_connect else "bind"
        log.info("zhttp client %s %s", mode, " ".join(" ".join(e) for e in ends))
        for front, back in pairs:
            self._thread(_proxy, front, back)

    def _req_forwarder(self) -> None:
        cfg = self.cfg
        hwm = max((cfg.req_maxconn + cfg.stream_maxconn) // 20, 1)
        dealer = self._external(zmq.DEALER, list(cfg.zclient_req), hwm)
        inner = self._internal(zmq.ROUTER, internal_req_endpoint(self.dir))
        mode = "connect" if cfg.zclient_connect else "bind"
        log.info("zhttp client %s req %s", mode, " ".join(cfg.zclient_req))
        self._thread(_req_forward, inner, dealer)

    def _worker_listeners(self) -> list:
        """A worker's listening sockets: its own on each TCP port, the shared Unix ones."""
        socks = []
        for spec, held in zip(self.cfg.listen, self.listen_socks):
            if spec.local:
                socks.append(held)
                continue
            port = held.getsockname()[1]  # the real port when --listen asked for 0
            socks.append(bind(dataclasses.replace(spec, port=port), reuse_port=True))
        return socks

    def _spawn(self, index: int) -> None:
        try:
            socks = self._worker_listeners()
        except ListenError as e:
            raise StartupError(f"worker {index}: {e}") from None
        ready, ready_w = os.pipe()
        info = WorkerInfo(index, self.count, self.dir, tuple(s.fileno() for s in socks),
                          f"{self.cfg.id}-{index}".encode(), ready_w)
        env = dict(os.environ, **{ENV: info.encode()})
        try:
            self.children[index] = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.argv], env=env,
                pass_fds=(*info.fds, ready_w))
        except BaseException:
            os.close(ready)
            raise
        finally:
            os.close(ready_w)  # the worker's copy is the only one: its exit is the EOF
            for s, spec in zip(socks, self.cfg.listen):
                if not spec.local:
                    s.close()  # the worker has it; if the worker dies, so does its queue
        self.starting[index] = ready
        log.info("worker %d started (pid %d)", index, self.children[index].pid)

    # --- running ------------------------------------------------------------

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stopping += 1
        if self.stopping > 1:
            for p in self.children.values():
                p.kill()
            os._exit(1)
        # now, not at the next look at the workers: D12 stops accepting at the signal
        self._refuse_new_clients()
        self._signal_children()

    def _refuse_new_clients(self) -> None:
        """A Unix socket is one listening socket, open in every worker and
        here: a worker closing its descriptor leaves it listening. Shut down,
        it refuses new clients in all of them. (A TCP port is only held here,
        not listened on: the workers' closed sockets refuse by themselves.)"""
        for spec, sock in zip(self.cfg.listen, self.listen_socks):
            if spec.local:
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def _signal_children(self) -> None:
        """SIGTERM to each running worker, once (a worker started since gets it later)."""
        for p in self.children.values():
            if p.pid not in self.signalled:
                self.signalled.add(p.pid)
                p.send_signal(signal.SIGTERM)  # nothing if it has exited

    def handle_signals(self) -> None:
        """Before the first worker starts, so a signal during start-up stops them too."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def supervise(self) -> int:
        """Restart a worker that dies, unless it dies while starting: then stop
        the others and exit 1 (it would fail again, in a loop, and the process
        would look alive while serving nothing)."""
        try:
            while not self.stopping:
                self._watch_starting(POLL_INTERVAL)
                if not self.started and not self.starting and not self.stopping:
                    self.started = True
                    log.info("started")
                self._restart_dead()
        except (WorkerFailed, StartupError) as e:
            log.error("%s", e)
            self._stop_children()
            return 1
        log.info("stopping...")
        self._stop_children()
        log.info("stopped")
        return 0

    def _watch_starting(self, timeout: float) -> None:
        """Wait up to `timeout` for a starting worker's pipe: a byte says it has
        started, EOF without one that it exited first (WorkerFailed)."""
        if not self.starting:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(self.starting.values()), [], [], timeout)
        for index, fd in list(self.starting.items()):
            if fd not in readable:
                continue
            started = os.read(fd, 1)
            os.close(fd)
            del self.starting[index]
            if not started and not self.stopping:  # (stopping: it was told to)
                p = self.children[index]
                try:
                    status: int | str | None = p.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    status = "unknown"
                raise WorkerFailed(f"worker {index} failed to start (exit status {status})")

    def _restart_dead(self) -> None:
        for index, p in list(self.children.items()):
            if p.poll() is not None and index not in self.starting and not self.stopping:
                log.error("worker %d exited with status %s; restarting", index, p.returncode)
                time.sleep(RESTART_DELAY)
                if not self.stopping:
                    self._spawn(index)

    def _stop_children(self) -> None:
        self._signal_children()
        deadline = time.monotonic() + STOP_GRACE
        for p in self.children.values():
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.debug is not None:
            self.debug.close()
        if self.feeds is not None:
            self.feeds.close()
        for fd in self.starting.values():
            os.close(fd)
        self.starting.clear()
        for s in self.listen_socks:
            s.close()
        for spec in self.cfg.listen:
            if spec.local and spec.path:
                try:
                    os.unlink(spec.path)
                except OSError:
                    pass
        for sock in self._loose:
            sock.close(0)
        # the threads' blocking calls end with ETERM and they close their own sockets
        terminate(self.ctx)
        shutil.rmtree(self.dir, ignore_errors=True)


class MetricsServer:
    """--prometheus in the parent: one scrape returns the whole process's figures.

    Each scrape asks every worker for a snapshot (a Unix socket per worker in
    the parent's directory), adds them up with the parent's own process
    figures, and renders the sum. Scrapes are served one at a time (the lock)
    so that the counters' bookkeeping of restarted workers sees them in order.
    A worker that does not answer within SCRAPE_WAIT (starting, restarting,
    stuck) is left out of the gauges and `condure_workers_up`; its counters
    stay at what it last reported.
    """

    def __init__(self, spec: str, dir_: str, count: int) -> None:
        parsed = parse_prometheus(spec)
        self.prefix = parsed.prefix
        self.path = parsed.unix.path if parsed.unix is not None else None
        self.dir = dir_
        self.count = count
        self.aggregate = Aggregate()
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(SCRAPES_MAX)
        try:
            self.sock: socket.socket = metrics_listener(parsed, socket.socket)
        except (OSError, ListenError) as e:
            raise StartupError(metrics_bind_error(parsed, e)) from None
        threading.Thread(target=self._accept, daemon=True).start()
        log.info("prometheus metrics on %s", parsed.describe())

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            if not self.slots.acquire(blocking=False):
                log.warning("too many prometheus connections, rejecting")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            answer_scrape(conn, self.text)
        finally:
            self.slots.release()

    def text(self) -> str:
        with self.lock:
            answers = self._ask_workers()
            summed = self.aggregate.update(answers)
        up = sum(1 for a in answers.values() if a is not None)
        figures = merge(Metrics().families(), summed, process_families(), [Family(
            NAMESPACE + "workers_up", "gauge",
            "Worker processes whose figures this scrape includes (of --workers)", {(): up})])
        return render(exposition(figures, process_start_time()), self.prefix)

    def _ask_workers(self) -> dict[int, tuple[int, list[Family]] | None]:
        deadline = time.monotonic() + SCRAPE_WAIT
        return {i: self._ask(i, deadline) for i in range(self.count)}

    def _ask(self, index: int, deadline: float) -> tuple[int, list[Family]] | None:
        path = worker_metrics_path(self.dir, index)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(max(deadline - time.monotonic(), 0.05))
                s.connect(path)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return parse_snapshot(data)
        except (OSError, SnapshotError) as e:
            log.debug("worker %d figures: %s", index, e)
            return None

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _proxy(front: zmq.Socket, back: zmq.Socket) -> None:
    while True:
        try:
            zmq.proxy(front, back)
        except zmq.ContextTerminated:
            front.close(0)
            back.close(0)
            return
        except zmq.ZMQError as e:
            # e.g. a message that arrived where none is expected: it is dropped
            log.debug("proxy error: %s", e)


def _req_forward(inner: zmq.Socket, dealer: zmq.Socket) -> None:
    """Workers' requests out as [b"", payload]; replies back by the id's worker prefix."""
    poller = zmq.Poller()
    poller.register(inner, zmq.POLLIN)
    poller.register(dealer, zmq.POLLIN)
    try:
        while True:
            for sock, _ in poller.poll():
                frames = sock.recv_multipart()
                if sock is inner:
                    dealer.send_multipart(frames[1:])  # drop the worker's identity
                else:
                    target = _reply_worker(frames)
                    if target is not None:
                        inner.send_multipart([target, *frames])
    except zmq.ContextTerminated:
        inner.close(0)
        dealer.close(0)


def _reply_worker(frames: list[bytes]) -> bytes | None:
    try:
        payload = frames[frames.index(b"") + 1]
        rid = tnetstring.loads(payload[1:])[b"id"]
        return rid.split(b"-", 1)[0]
    except Exception:  # the handler's garbage, e.g. RecursionError for deep nesting: it
        # must not end this thread (every later reply would be lost)
        log.debug("req: reply without a routable id dropped")
        return None


def run(cfg: Config, argv: list[str], module: str = "condure") -> int:
    parent = Parent(cfg, argv, module)
    try:
        log.info("starting... %s", VERSION)
        parent.handle_signals()
        parent.start()
        return parent.supervise()  # logs "started" once every worker has
    except StartupError as e:
        log.error("%s", e)
        parent._stop_children()  # those started before the failure
        return 1
    finally:
        parent.close()
