"""The running server: ZeroMQ sockets, session registry, timers, listeners.

Everything lives in one gevent hub: a StreamServer per listener spawns one
greenlet per client connection, the ZeroMQ reader/writer greenlets move
packets, and one sweeper greenlet drives every timer through the wheel.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Any

import gevent
import gevent.socket as gsocket
import zmq.green as zmq
from gevent.pool import Pool
from gevent.server import StreamServer

from .config import Config, ListenSpec
from .timer import TimerWheel, run_sweeper
from .zhttp import packet as zp
from .zhttp.session import HANDLER_TIMEOUT, KEEPALIVE_INTERVAL, SessionRegistry
from .zhttp.sockets import SpecError, StreamSockets

log = logging.getLogger("condure")
log_app = logging.getLogger("condure.app")

PARSE_WARN_INTERVAL = 1.0  # at most one parse-error warning per second (plus a count)


class StartupError(Exception):
    """Something the operator must fix; logged as one line, exit status 1."""


class Server:
    """Shared state of one worker: what every connection greenlet needs."""

    def __init__(self, config: Config, zsockets: StreamSockets, worker: int = 0) -> None:
        self.config = config
        self.instance_id = config.id.encode()
        self.registry = SessionRegistry(worker, config.stream_maxconn)
        self.zsockets = zsockets
        self.wheel = TimerWheel()
        self.scheme = b"http"
        # protocol constants, attributes so in-process tests can shorten them
        self.handler_timeout = HANDLER_TIMEOUT
        self.keepalive_interval = KEEPALIVE_INTERVAL
        self._parse_errors = 0
        self._parse_warned_at = 0.0

    def on_message(self, frame: bytes) -> None:
        """A message from the SUB socket: parse it and hand it to its sessions."""
        try:
            pkt = zp.parse_message(frame)
        except zp.ParseError as e:
            self._warn_parse_error(e)
            return
        for owner, rid, seq in self.registry.route(pkt):
            owner.deliver(rid, pkt, seq)

    def _warn_parse_error(self, e: Exception) -> None:
        self._parse_errors += 1
        now = time.monotonic()
        if now - self._parse_warned_at >= PARSE_WARN_INTERVAL:
            extra = f" ({self._parse_errors - 1} more suppressed)" if self._parse_errors > 1 else ""
            log_app.warning("zhttp parse error: %s%s", e, extra)
            self._parse_errors = 0
            self._parse_warned_at = now

    def on_expired(self, conns: list[Any]) -> None:
        """Timer sweep: flag timeouts, batch keep-alives per handler address."""
        now = time.monotonic()
        keepalives: dict[bytes, list] = {}
        for conn in conns:
            deadline = conn.on_timer(now, keepalives)
            if deadline is not None:
                self.wheel.add(deadline, conn)
        for addr, ids in keepalives.items():
            log_app.debug("sending keep alives for %d sessions", len(ids))
            for group in zp.batches(ids):
                self.zsockets.send_to(addr, zp.multi_packet(self.instance_id, group, b"keep-alive"))


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ctx = zmq.Context()
        self.servers: list[StreamServer] = []
        self.greenlets: list[gevent.Greenlet] = []
        self.server: Server | None = None

    def start(self) -> None:
        cfg = self.config
        hwm = max((cfg.req_maxconn + cfg.stream_maxconn) // 20, 1)
        try:
            zs = StreamSockets(self.ctx, list(cfg.zclient_stream), cfg.id.encode(),
                               cfg.zclient_connect, cfg.ipc_file_mode, hwm)
        except SpecError as e:
            raise StartupError(str(e)) from None
        except zmq.ZMQError as e:
            raise StartupError(f"zhttp client setup failed: {e}") from None
        log.info("zhttp client %s %s", "connect" if cfg.zclient_connect else "bind", zs.describe())
        server = Server(cfg, zs)
        self.server = server
        zs.start(server.on_message)
        self.greenlets.append(gevent.spawn(run_sweeper, server.wheel, server.on_expired))
        for spec in cfg.listen:
            self._listen(spec, server)

    def _listen(self, spec: ListenSpec, server: Server) -> None:
        from .server.stream import StreamConnection

        pool = Pool(server.config.stream_maxconn)

        def handle(sock: socket.socket, peer: Any) -> None:
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            slot = server.registry.take_slot()
            try:
                StreamConnection(server, sock, peer, slot).run()
            finally:
                server.registry.release_slot(slot)

        family = socket.AF_INET6 if ":" in spec.addr else socket.AF_INET
        try:
            listener = _bind_tcp(family, spec.addr, spec.port)
        except OSError as e:
            raise StartupError(f"failed to bind {spec.describe()}: {e.strerror}") from None
        srv = StreamServer(listener, handle, spawn=pool)
        srv.start()
        self.servers.append(srv)
        log.info("listening on %s", spec.describe())

    def stop(self) -> None:
        for srv in self.servers:
            srv.close()
        gevent.killall(self.greenlets, block=False)
        if self.server is not None:
            self.server.zsockets.close()
        self.ctx.term()


def _bind_tcp(family: int, addr: str, port: int) -> gsocket.socket:
    sock = gsocket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(1024)
    return sock
