"""Listening sockets: one gevent StreamServer per --listen.

Each mode (stream, req) has one ConnectionLimit sized by its maxconn, shared
by all listeners of that mode; at the limit the servers stop accepting, so
further clients wait in the kernel backlog as with condure.
"""
from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
import stat
from typing import TYPE_CHECKING, Any

import gevent
import gevent.socket as gsocket
from gevent import Greenlet

from .. import private
from ..config import ListenSpec
from ..private import RawSocket
from .clientio import green
from .connection import Connection
from .tls import Identities, server_context

if TYPE_CHECKING:
    from ..context import Server
    from .connection import Mode

log = logging.getLogger("condure.listener")

BACKLOG = 1024
IDLE_GREENLETS = 256  # finished connection greenlets kept to serve the next connections
_NEXT = object()  # marks the switch that hands a waiting greenlet its next connection


class ListenError(Exception):
    pass


def bind(spec: ListenSpec, reuse_port: bool = False, listen: bool = True) -> gsocket.socket:
    """A listening socket for the spec (TCP v4/v6 or a Unix socket path).

    `reuse_port` (TCP, --workers N): each worker gets a socket of its own on
    the same port and the kernel spreads new connections over them; a socket
    bound with `listen=False` only holds the port for the group."""
    try:
        if spec.local:
            return _bind_unix(spec)
        family = socket.AF_INET6 if ":" in spec.addr else socket.AF_INET
        sock = gsocket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((spec.addr, spec.port))
        if listen:
            sock.listen(BACKLOG)
        return sock
    except OSError as e:
        raise ListenError(f"failed to bind {spec.describe()}: {e.strerror or e}") from None


def _bind_unix(spec: ListenSpec) -> gsocket.socket:
    return bind_unix(spec.path or "", spec.mode, spec.user, spec.group)


def bind_unix(path: str, mode: int | None = None, user: str | None = None,
              group: str | None = None, backlog: int = BACKLOG,
              factory: Any = gsocket.socket) -> Any:
    """A listening Unix socket at `path` (whatever file is there goes first,
    as with condure), then `mode` and owner applied. Raises OSError, or
    ListenError for an unknown user or group. `factory`: the socket class
    (gevent's; plain `socket.socket` for a process without a hub)."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = factory(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
        if user is not None or group is not None:
            try:
                uid = pwd.getpwnam(user).pw_uid if user else -1
                gid = grp.getgrnam(group).gr_gid if group else -1
            except KeyError as e:
                os.unlink(path)
                raise ListenError(f"failed to set owner of {path}: {e.args[0]}") from None
            os.chown(path, uid, gid)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class ConnectionLimit:
    """The connections of one mode (--stream-maxconn or --req-maxconn).

    Cheaper than a gevent Pool on the accept path, which runs once per
    connection: a counter, and the servers to resume once one ends."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.active = 0
        self.servers: list[_Server] = []

    def leave(self) -> None:
        self.active -= 1
        if self.active == self.size - 1:  # it was full: accept again
            for server in self.servers:
                server.resume()


class _Server:
    """Accepts the clients of one listener (with gevent's StreamServer, see
    `private.accept_server`), counts them in a shared limit and runs each in
    a connection greenlet, reusing finished ones."""

    def __init__(self, sock: gsocket.socket, handle: Any, limit: ConnectionLimit) -> None:
        self.limit = limit
        self.draining = False  # shutting down: never accept again
        limit.servers.append(self)
        self._handle = handle
        self._hub = private.hub()
        self._idle: list[Any] = []  # connection greenlets waiting for a connection
        # parking needs gevent's hub interface as checked by condure.private
        self._keep = IDLE_GREENLETS if private.HUB_OK else 0
        self.gserver = private.accept_server(sock, self._accepted, self.full)

    def full(self) -> bool:  # asked before every accept, so no call into the limit
        return self.limit.active >= self.limit.size

    def resume(self) -> None:
        """Accept again, as a connection ended under a full limit."""
        if not self.draining and self.gserver.started:
            self.gserver.start_accepting()

    def _accepted(self, sock: RawSocket, address: Any) -> None:
        """In the hub, once per accepted client (a plain non-blocking socket)."""
        self.limit.active += 1  # counted now: the accept loop checks full() before each accept
        if self._idle:
            private.run_callback(self._idle.pop().switch, _NEXT, sock, address)
        else:
            Greenlet.spawn(self._serve, sock, address)

    def _serve(self, sock: RawSocket, address: Any) -> None:
        """A connection greenlet. Once its connection ends it waits for the
        next one (while fewer than IDLE_GREENLETS wait): making and freeing a
        greenlet costs more than the rest of a short connection's setup."""
        me = private.current()
        while True:
            try:
                self._handle(sock, address)  # which closes the socket
            finally:
                self.limit.leave()
            if len(self._idle) >= self._keep or self.draining:
                return
            _, sock, address = self._park(me)

    def _park(self, me: Any) -> tuple:
        self._idle.append(me)
        try:
            while True:
                resumed = private.park(self._hub)
                if type(resumed) is tuple and resumed[0] is _NEXT:
                    return resumed
                # anything else is a stray wake-up: keep waiting
        except BaseException:
            self._idle.remove(me)  # killed while waiting: never hand it a connection
            raise


class Listener:
    """Accepts clients of one --listen and runs a connection greenlet for each."""

    def __init__(self, spec: ListenSpec, server: Server, limit: ConnectionLimit,
                 mode: Mode, sock: gsocket.socket | None = None) -> None:
        """`mode`: what connections do with requests (server/modes.py); `sock`:
        an already listening socket (a worker's, made by its parent)."""
        self.spec = spec
        self.server = server
        self.mode = mode
        self.scheme = b"https" if spec.tls and not spec.local else b"http"
        self.ssl_context = None
        if self.scheme == b"https":
            # HTTP/2 offered by ALPN where the mode serves it (the client then
            # sends the preface, which the connection recognises as for h2c)
            alpn = None if mode.http2 is None else ["h2", "http/1.1"]
            identities = Identities(server.config.tls_identities_dir, alpn)
            self.ssl_context = server_context(identities, spec.default_cert)
        self.owner = sock is None  # only the process that bound a Unix path removes it
        self.sock = bind(spec) if sock is None else sock
        self.stream_server = _Server(self.sock, self._handle, limit)
        self._gauge_http = (mode.name, "http")
        self._gauge_ws = (mode.name, "websocket")

    @property
    def port(self) -> int:
        return self.stream_server.gserver.server_port if not self.spec.local else 0

    def start(self) -> None:
        self.stream_server.gserver.start()
        where = self.spec.describe()
        log.info("listening on %s", f'"{where}" (pathname)' if self.spec.local else where)

    def stop_accepting(self) -> None:
        """For shutdown (D12): no new clients, even as connections end under
        maxconn. The listening socket is closed, not just no longer read:
        the kernel would go on completing connections into its backlog that
        nobody serves, to reset them at exit; closed, they are refused at
        once, as by condure. (A Unix socket shared by --workers stays open
        in the parent, which shuts it down for all of them.)"""
        server = self.stream_server
        server.draining = True
        server.gserver.stop_accepting()
        server.gserver.socket.close()

    def close(self) -> None:
        self.stream_server.gserver.close()
        if self.owner and self.spec.local and self.spec.path:
            try:
                os.unlink(self.spec.path)
            except OSError:
                pass

    def _handle(self, sock: Any, peer: Any) -> None:
        if not self.spec.local:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.ssl_context is not None:
            sock = self._handshake(green(sock, detach=True))
            if sock is None:
                return
        registry, metrics = self.server.registry, self.server.metrics
        metrics.accepted += 1
        metrics.connections[self._gauge_http] += 1
        slot = registry.take_slot()
        conn = None
        try:
            conn = Connection(self.server, self.mode, sock, peer, slot, self.scheme)
            conn.run()  # closes the socket at the end
        finally:
            if conn is None:
                sock.close()
            registry.release_slot(slot)
            websocket = conn is not None and conn.protocol == "websocket"
            metrics.connections[self._gauge_ws if websocket else self._gauge_http] -= 1

    def _handshake(self, sock: gsocket.socket) -> Any:
        """TLS handshake under the stream timeout; failures are logged at debug."""
        try:
            tls = self.ssl_context.wrap_socket(  # type: ignore[union-attr]  # TLS listeners only
                sock, server_side=True, do_handshake_on_connect=False)
            with gevent.Timeout(self.server.config.stream_timeout):
                tls.do_handshake()
            return tls
        except (OSError, gevent.Timeout) as e:
            self.server.metrics.rejected += 1
            log.debug("tls accept: %s", e)
            sock.close()
            return None
