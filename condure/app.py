"""The running server: ZeroMQ sockets, session registry, timers, listeners.

Everything lives in one gevent hub: a StreamServer per listener spawns one
greenlet per client connection, the ZeroMQ reader/writer greenlets move
packets, and one sweeper greenlet drives every timer through the wheel.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, replace
import time
from typing import Any

import gevent
import gevent.socket as gsocket
import zmq.green as zmq
from gevent.server import StreamServer

from .config import Config, ListenSpec, PrometheusSpec, SpecError, parse_debug_socket, \
    parse_prometheus
from .debuglog import (QUEUE_LINES, DebugSocket, DebugSocketError, ParentLink, queue_limit,
                       worker_feed_path)
from .metrics import (Metrics, exposition, process_families, process_start_time, render,
                      snapshot)
from .timer import run_sweeper
from .context import Server
from .server.listener import ConnectionLimit, ListenError, Listener, bind_unix
from .server.modes import req_mode, stream_mode
from .zhttp.sockets import ReqSockets, StreamSockets, setting_specs, terminate

log = logging.getLogger("condure")


SCRAPES_MAX = 10  # concurrent scrapes (as pushpin-connmgr); more are closed at once, WARN


class StartupError(Exception):
    """Something the operator must fix; logged as one line, exit status 1."""


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker process of `--workers N` gets from its parent (D15)."""
    index: int
    count: int
    dir: str  # the parent's internal ipc endpoints live here
    fds: tuple[int, ...]  # listening sockets, one per --listen
    instance_id: bytes  # this worker's own `from`: handlers' replies reach it by subscription
    ready_fd: int = -1  # a pipe to the parent: one byte once started (EOF first: it failed)

    def encode(self) -> str:
        # JSON: --id and the directory may hold any character, ':' included
        return json.dumps({"index": self.index, "count": self.count, "dir": self.dir,
                           "fds": list(self.fds), "id": self.instance_id.decode(),
                           "ready": self.ready_fd})

    @classmethod
    def decode(cls, text: str) -> WorkerInfo:
        d = json.loads(text)
        return cls(d["index"], d["count"], d["dir"], tuple(d["fds"]), d["id"].encode(),
                   d["ready"])


class App:
    """Builds the ZeroMQ sockets, the Server state and the listeners; runs them."""

    def __init__(self, config: Config, worker: WorkerInfo | None = None) -> None:
        self.config = config
        self.worker = worker
        self.ctx = zmq.Context()
        self.listeners: list[Listener] = []
        self.greenlets: list[gevent.Greenlet] = []
        self.server: Server | None = None
        self.metrics_server: StreamServer | None = None
        self.client: Any = None  # client mode (--zserver-*)
        self._zsockets: list[Any] = []
        self.debug: DebugSocket | ParentLink | None = None  # --debug-socket

    def start(self) -> None:
        cfg, w = self.config, self.worker
        self._debug_socket()
        hwm = max((cfg.req_maxconn + cfg.stream_maxconn) // 20, 1)
        stream = any(spec.stream for spec in cfg.listen)
        req = any(not spec.stream for spec in cfg.listen)
        instance_id = cfg.id.encode() if w is None else w.instance_id
        mode = "connect" if cfg.zclient_connect else "bind"
        # straight to the handlers: a single process, or a worker of --workers N
        # with --zclient-connect (each worker connects as a condure of its own,
        # named by its `from`; D15). Else a worker goes through the parent's proxies.
        proxied = w if w is not None and not cfg.zclient_connect else None
        direct = proxied is None
        try:
            zs = zr = None
            if stream:
                internal = None if proxied is None else [internal_stream_endpoints(proxied.dir)]
                with setting_specs("zhttp client stream"):
                    zs = StreamSockets(self.ctx, list(cfg.zclient_stream), instance_id,
                                       cfg.zclient_connect, cfg.ipc_file_mode, hwm, internal)
                self._zsockets.append(zs)
                if w is None:
                    log.info("zhttp client %s %s", mode, zs.describe())
            if req:
                specs = (list(cfg.zclient_req) if proxied is None
                         else [internal_req_endpoint(proxied.dir)])
                with setting_specs("zhttp client req"):
                    zr = ReqSockets(self.ctx, specs, cfg.zclient_connect or w is not None,
                                    cfg.ipc_file_mode, hwm,
                                    None if proxied is None else b"%d" % proxied.index)
                self._zsockets.append(zr)
                if w is None:
                    log.info("zhttp client %s req %s", mode, zr.describe())
        except SpecError as e:
            raise StartupError(str(e)) from None
        except zmq.ZMQError as e:
            raise StartupError(f"zhttp client setup failed: {e}") from None
        if w is None and (cfg.zserver_stream or cfg.zserver_req):
            self.client = self._client_mode()
        # router-resp (D27): a handler answers over its ROUTER to the request's
        # `from`, which must be our ROUTER's name: so only on a ROUTER of our own
        server = Server(cfg, zs, zr, 0 if w is None else w.index, instance_id,
                        router_resp=direct)
        self.server = server
        if zs is not None:
            zs.start(server.on_message, server.on_routed)
        if zr is not None:
            zr.start(server.on_req_message)
        self.greenlets.append(gevent.spawn(run_sweeper, server.wheel, server.on_expired))
        # metrics first: once a client port accepts, the metrics port does too
        # (a probe that waits for the client port may scrape at once)
        if cfg.prometheus:
            self._serve_metrics(server)
        self._listen(server)

    def _debug_socket(self) -> None:
        """--debug-socket: bound here; in a worker of --workers N, the line to
        the parent, which owns the socket (debuglog.py)."""
        cfg, w = self.config, self.worker
        if cfg.debug_socket is None:
            return
        if w is not None:
            link = ParentLink(worker_feed_path(w.dir), QUEUE_LINES, w.index)
            link.start()
            self.debug = link
            return
        spec = parse_debug_socket(cfg.debug_socket)
        debug = DebugSocket(spec, queue_limit(cfg.workers))
        try:
            debug.start()
        except DebugSocketError as e:
            raise StartupError(f"debug socket: {e}") from None
        self.debug = debug
        log.info("debug socket on %s", spec.path)

    def _serve_metrics(self, server: Server) -> None:
        """--prometheus: the metrics over HTTP from this hub. A worker of
        --workers N serves its figures to the parent instead, which sums them
        on the configured port (metrics.py)."""
        spec = parse_prometheus(self.config.prometheus or "")
        if self.worker is not None:
            self._serve_snapshot(server, worker_metrics_path(self.worker.dir, self.worker.index))
            return
        try:
            srv = StreamServer(metrics_listener(spec), _limited(
                lambda s: serve_metrics(s, server.metrics, spec.prefix)))
            srv.start()
        except (OSError, ListenError) as e:
            raise StartupError(metrics_bind_error(spec, e)) from None
        self.metrics_server = srv
        log.info("prometheus metrics on %s", spec.describe())

    def _serve_snapshot(self, server: Server, path: str) -> None:
        """A worker's figures for its parent, on a Unix socket in the parent's
        private directory: one JSON snapshot per connection, nothing to read."""
        try:
            if os.path.exists(path):
                os.unlink(path)  # left by this worker's previous run
            sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            sock.listen(16)
            srv = StreamServer(sock, lambda s, _a: send_snapshot(s, server.metrics))
            srv.start()
        except OSError as e:
            raise StartupError(f"prometheus worker socket {path}: {e.strerror or e}") from None
        self.metrics_server = srv

    def _client_mode(self) -> Any:
        # imported here: h11, the client pool and TLS set-up cost ~60 ms and
        # some memory at start, which a server-mode condure need not pay
        from .client.service import ClientService

        try:
            client = ClientService(self.config, self.ctx)
        except SpecError as e:
            raise StartupError(str(e)) from None
        except zmq.ZMQError as e:
            raise StartupError(f"zhttp server setup failed: {e}") from None
        for line in client.describe():
            log.info("%s", line)
        client.start()
        return client

    def _listen(self, server: Server) -> None:
        cfg, w = self.config, self.worker
        limits = {True: ConnectionLimit(cfg.stream_maxconn), False: ConnectionLimit(cfg.req_maxconn)}
        modes = {True: stream_mode(cfg, limits[True]), False: req_mode(cfg)}
        for i, spec in enumerate(cfg.listen):
            sock = None if w is None else inherited_socket(w.fds[i], spec)
            mode = modes[spec.stream]
            if mode.http2 is not None and (cfg.no_http2 or not spec.http2):
                mode = replace(mode, http2=None)  # the preface gets the 505 of HTTP/1
            try:
                listener = Listener(spec, server, limits[spec.stream], mode, sock)
            except ListenError as e:
                raise StartupError(str(e)) from None
            self.listeners.append(listener)
        for listener in self.listeners:
            listener.start()

    def shutdown(self, grace: float) -> None:
        """D12: stop accepting, end idle connections and WebSockets (1001), let
        requests in flight finish for `grace` seconds, then cancel the rest."""
        for listener in self.listeners:
            listener.stop_accepting()
        server = self.server
        if server is not None:
            for conn in list(server.connections):
                conn.stop(False)
            deadline = time.monotonic() + grace
            while server.connections and time.monotonic() < deadline:
                gevent.sleep(0.05)
            if server.connections:
                log.info("cancelling %d connections", len(server.connections))
                for conn in list(server.connections):
                    conn.stop(True)
                with gevent.Timeout(0.5, False):
                    while server.connections:
                        gevent.sleep(0.02)
        if self.client is not None:
            self.client.cancel_all()
        gevent.sleep(0.1)  # let the writers hand the last cancels to ZeroMQ
        self.stop()

    def stop(self) -> None:
        if self.debug is not None:
            self.debug.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
            spec = parse_prometheus(self.config.prometheus or "")
            if spec.unix is not None and self.worker is None:
                try:
                    os.unlink(spec.unix.path)  # ours: bound by this run
                except OSError:
                    pass
        for listener in self.listeners:
            listener.close()
        gevent.killall(self.greenlets, block=False)
        for zs in self._zsockets:
            zs.close()
        if self.client is not None:
            self.client.close()
        terminate(self.ctx)


def check_identities_dir(cfg: Config) -> None:
    """A tls listener needs --tls-identities-dir to be a directory (D20).

    condure 1.9.1 starts anyway and fails every handshake until the files are
    there; a directory that does not exist at all is a typo far more often
    than a plan, so it is refused at start like a listener that cannot bind.
    """
    if any(spec.tls and not spec.local for spec in cfg.listen) \
            and not os.path.isdir(cfg.tls_identities_dir):
        raise StartupError(f"tls identities dir {cfg.tls_identities_dir} is not a directory")


def metrics_listener(spec: PrometheusSpec, factory: Any = gsocket.socket) -> Any:
    """The --prometheus listening socket: TCP, or a Unix socket given its
    mode and owner. Raises OSError, or ListenError for an unknown owner."""
    if spec.unix is not None:
        u = spec.unix
        return bind_unix(u.path, u.mode, u.user, u.group, factory=factory)
    sock = factory(socket.AF_INET6 if ":" in spec.addr else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.addr, spec.port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _limited(serve: Any) -> Any:
    """A StreamServer handler that serves at most SCRAPES_MAX connections at
    once (all in this hub: a plain counter); another is closed, with a WARN."""
    active = 0

    def handle(sock: gsocket.socket, _address: Any) -> None:
        nonlocal active
        if active >= SCRAPES_MAX:
            log.warning("too many prometheus connections, rejecting")
            sock.close()
            return
        active += 1
        try:
            serve(sock)
        finally:
            active -= 1

    return handle


def metrics_bind_error(spec: PrometheusSpec, e: Exception) -> str:
    """`prometheus listener: REASON` (as connmgr); a Unix socket's path is named."""
    if isinstance(e, ListenError):
        return f"prometheus listener: {e}"
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    where = "" if spec.unix is None else f"failed to bind {spec.unix.path}: "
    return f"prometheus listener: {where}{reason}"


def serve_metrics(sock: gsocket.socket, metrics: Metrics, prefix: str) -> None:
    """Answer one scrape (any path) with the text exposition, then close."""
    answer_scrape(sock, lambda: render(exposition(
        [*metrics.families(), *process_families()], process_start_time()), prefix))


def answer_scrape(sock: Any, body: Any) -> None:
    """Read a request head (any method and path), answer with `body()`, close.
    Plain sockets and gevent's alike: the parent of --workers N has no hub."""
    try:
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 8192:
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk
        text = body().encode()
        sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(text) + text)
    except OSError:
        pass
    finally:
        sock.close()


def send_snapshot(sock: gsocket.socket, metrics: Metrics) -> None:
    try:
        sock.settimeout(5)
        sock.sendall(snapshot(metrics))
    except OSError:
        pass
    finally:
        sock.close()


def worker_metrics_path(d: str, index: int) -> str:
    return f"{d}/metrics-{index}"


def internal_stream_endpoints(d: str) -> tuple[str, str, str]:
    """The parent's side of the worker proxies: first packets, directed packets, replies."""
    return f"ipc://{d}/push", f"ipc://{d}/route", f"ipc://{d}/sub"


def internal_req_endpoint(d: str) -> str:
    return f"ipc://{d}/req"


def inherited_socket(fd: int, spec: ListenSpec) -> gsocket.socket:
    family = socket.AF_UNIX if spec.local else (socket.AF_INET6 if ":" in spec.addr else socket.AF_INET)
    return gsocket.socket(family, socket.SOCK_STREAM, fileno=fd)
