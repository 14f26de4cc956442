"""`--debug-socket PATH[,mode=OCTAL][,user=U][,group=G]` (pushpin-connmgr's).

A Unix socket that streams every log record, TRACE included, to each of up
to CLIENTS_MAX connected clients, whatever `--log-level` says: the lines are
stdout's, one per record. The protocol is one-way: what a client sends is
read only to notice that it has left.

Cost. With no client connected nothing is attached to the logger, whose
level is stdout's (log.py): a record below it is refused by the same cached
check as without the option. The first client attaches a feed handler and
lowers the logger's level (log.add_feed); the last one to leave removes it.

Blocking. The handler only formats the record and appends the line to each
client's bounded queue (log.LineQueue): a client that reads slowly or not at
all loses lines (`** dropped N logs`), never holds up the process. Sockets
are written by one thread per client, plain blocking sockets: the same code
serves a single process (its gevent hub never waits on a debug client; the
threads take the GIL only to move bytes) and the parent of `--workers N`,
which has no hub.

`--workers N`. The parent owns the socket and its clients. Each worker
connects to the parent over a Unix socket in the parent's private directory
(`WorkerFeeds`, `forward_to_parent`); the parent sends it one byte each time
the first client arrives (`1`) or the last one leaves (`0`), and the worker
attaches or removes a feed that sends its lines up that connection, through
a bounded queue of its own. The parent passes each worker line to its
clients as it passes its own.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from . import log as clog
from .config import UnixSocketSpec
from .server.listener import ListenError, bind_unix

log = logging.getLogger("condure.debug")

CLIENTS_MAX = 10
QUEUE_LINES = 1000  # per process: a client's queue holds QUEUE_LINES * (workers + 1) lines
LINE_MAX = 1 << 20  # a worker's line longer than this is cut (it would be a bug)
ON, OFF = b"1", b"0"  # parent -> worker: whether any client is connected


class DebugSocketError(Exception):
    """The debug socket could not be set up (str: the reason, for `debug socket: ...`)."""


class _Feed(logging.Handler):
    """Formats each record once and hands the line to `publish`."""

    def __init__(self, publish: Callable[[bytes], None]) -> None:
        super().__init__()
        self.setFormatter(clog.CondureFormatter())
        self._publish = publish

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = clog.line_bytes(self.formatter or clog.CondureFormatter(), record)
        except Exception:
            self.handleError(record)
            return
        self._publish(line)


class _Reader:
    """One connected reader of lines: a bounded queue and a writer thread.

    `on_input` gets what the peer sends (by default it is read and dropped:
    reading is how a peer that leaves is noticed). `on_gone` runs once, when
    the connection ends, from whichever thread ends it.
    """

    def __init__(self, sock: socket.socket, limit: int, on_gone: Callable[[_Reader], None],
                 on_input: Callable[[bytes], None] | None = None) -> None:
        self.sock = sock
        self.queue = clog.LineQueue(limit)
        self.cond = threading.Condition()
        self.open = True
        self._on_gone = on_gone
        self._on_input = on_input
        self._gone = False

    def start(self, name: str) -> None:
        threading.Thread(target=self._write, name=f"{name}-w", daemon=True).start()
        threading.Thread(target=self._read, name=f"{name}-r", daemon=True).start()

    def put(self, line: bytes) -> None:
        with self.cond:
            self.queue.put(line)
            self.cond.notify()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while self.open and not len(self.queue):
                        self.cond.wait()
                    if not self.open:
                        return
                    data = self.queue.take()
                self.sock.sendall(data)  # blocks this thread only
        except OSError:
            pass
        finally:
            self.close()

    def _read(self) -> None:
        try:
            while data := self.sock.recv(4096):
                if self._on_input is not None:
                    self._on_input(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        with self.cond:
            if self._gone:
                return
            self._gone = True
            self.open = False
            self.cond.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the other thread
        except OSError:
            pass
        self.sock.close()
        self._on_gone(self)


class DebugSocket:
    """The socket clients connect to, and the lines they are sent.

    `on_state(connected)` is called (outside the lock) when the first client
    arrives and when the last one leaves: the parent of --workers N tells its
    workers. `publish` passes a line from elsewhere (a worker) to the clients.
    """

    def __init__(self, spec: UnixSocketSpec, limit: int,
                 on_state: Callable[[bool], None] | None = None) -> None:
        self.spec = spec
        self.limit = limit
        self.on_state = on_state
        self.lock = threading.Lock()  # the list of clients
        self.clients: list[_Reader] = []
        self.feed = _Feed(self.publish)
        self.feed_lock = threading.Lock()  # the feed follows the list, one change at a time
        self.feeding = False
        self.sock: socket.socket | None = None

    def start(self) -> None:
        s = self.spec
        try:
            self.sock = bind_unix(s.path, s.mode, s.user, s.group, 64, socket.socket)
        except OSError as e:
            raise DebugSocketError(f"failed to bind {s.path}: {e.strerror or e}") from None
        except ListenError as e:
            raise DebugSocketError(str(e)) from None
        threading.Thread(target=self._accept, args=(self.sock,), name="debug-accept",
                         daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                full = len(self.clients) >= CLIENTS_MAX
                if not full:
                    client = _Reader(sock, self.limit, self._gone)
                    self.clients.append(client)
            if full:
                log.warning("too many debug log connections, rejecting")
                sock.close()
                continue
            client.start("debug-client")
            self._sync_feed()
            # the client's first line, once this process streams every level
            log.debug("debug log client connected")

    def _gone(self, client: _Reader) -> None:
        with self.lock:
            if client not in self.clients:
                return
            self.clients.remove(client)
        self._sync_feed()

    def _sync_feed(self) -> None:
        """Attach the feed while there are clients, remove it when there are
        none. Called after every change of the list, by whichever thread made
        it: the last call sees the last state, however the calls interleave
        (a client that leaves at once must not leave the feed attached)."""
        with self.feed_lock:
            with self.lock:
                want = bool(self.clients)
            if want == self.feeding:
                return
            self.feeding = want
            if want:
                clog.add_feed(self.feed)
            else:
                clog.remove_feed(self.feed)
            if self.on_state is not None:
                self.on_state(want)

    def publish(self, line: bytes) -> None:
        with self.lock:
            clients = list(self.clients)
        for client in clients:
            client.put(line)

    def close(self) -> None:
        """Stop accepting, disconnect every client, remove the socket file."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None
            try:
                os.unlink(self.spec.path)
            except OSError:
                pass
        with self.lock:
            clients = list(self.clients)
        for client in clients:
            client.close()
        # a client's own thread may be closing it at the same time (its close
        # then returns at once, before its _gone): the feed is detached here,
        # so that it is gone when close returns
        with self.lock:
            self.clients.clear()
        self._sync_feed()


def worker_feed_path(d: str) -> str:
    """The parent's socket its workers connect to (in its private directory)."""
    return f"{d}/debug"


class WorkerFeeds:
    """--workers N, parent side: the workers' connections. Each is told the
    state (`1`: a client is connected, `0`: none) when it connects and when
    it changes; what it sends is lines for the clients."""

    def __init__(self, path: str, debug: DebugSocket) -> None:
        self.path = path
        self.debug = debug
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.on = False
        self.sock: socket.socket | None = None

    def start(self) -> None:
        try:
            self.sock = bind_unix(self.path, backlog=64, factory=socket.socket)
        except (OSError, ListenError) as e:
            raise DebugSocketError(f"worker feed {self.path}: {e}") from None
        threading.Thread(target=self._accept, args=(self.sock,), name="debug-workers",
                         daemon=True).start()

    def set_state(self, on: bool) -> None:
        with self.lock:
            self.on = on
            for conn in self.conns:
                self._send_state(conn)

    def _send_state(self, conn: socket.socket) -> None:
        try:
            conn.sendall(ON if self.on else OFF)  # a byte: the buffer always takes it
        except OSError:
            pass  # that worker is gone; its reader ends

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
                self._send_state(conn)
            threading.Thread(target=self._read, args=(conn,), name="debug-worker",
                             daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            with conn.makefile("rb") as lines:
                while line := lines.readline(LINE_MAX):
                    if not line.endswith(b"\n"):
                        line += b"\n"
                    self.debug.publish(line)
        except OSError:
            pass
        finally:
            with self.lock:
                if conn in self.conns:
                    self.conns.remove(conn)
            conn.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        with self.lock:
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class ParentLink:
    """--workers N, worker side: this worker's lines to the parent, while the
    parent says a client is connected."""

    def __init__(self, path: str, limit: int, index: int) -> None:
        self.path = path
        self.limit = limit
        self.index = index
        self.reader: _Reader | None = None
        self.feed = _Feed(self._put)

    def start(self) -> None:
        """Connect; a failure is logged, never fatal (the worker serves on)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            log.warning("debug socket: cannot reach the parent at %s: %s", self.path,
                        e.strerror or e)
            return
        self.reader = _Reader(sock, self.limit, self._gone, self._on_input)
        self.reader.start("debug-parent")

    def _put(self, line: bytes) -> None:
        reader = self.reader
        if reader is not None:
            reader.put(line)

    def _on_input(self, data: bytes) -> None:
        if data[-1:] == ON:  # only the latest state counts
            clog.add_feed(self.feed)
            log.debug("debug log client connected: worker %d lines follow", self.index)
        elif data[-1:] == OFF:
            clog.remove_feed(self.feed)

    def _gone(self, _reader: _Reader) -> None:
        clog.remove_feed(self.feed)
        self.reader = None

    def close(self) -> None:
        reader = self.reader
        if reader is not None:
            reader.close()


def queue_limit(workers: int) -> int:
    """A client's queue, in lines: connmgr's 1000 x (workers + 1)."""
    return QUEUE_LINES * (workers + 1)

