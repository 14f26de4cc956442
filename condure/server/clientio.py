"""A connection's client socket: reading, writing, waiting, closing.

One greenlet serves both directions of a connection, so all its waiting
goes through `wait`, which parks the greenlet in the hub until a handler
packet arrives, the timer sweeper flags a timeout, or (only when reading is
allowed) the client sent something. Watcher callbacks run in the hub and
switch straight back; other greenlets (the SUB reader, the sweeper) queue
one hub callback. A wake-up that arrives after the greenlet moved on finds
`_waiting` false and does nothing; one that finds a later wait ends it
early, which every caller of `wait` allows.

Plain sockets are read and written with non-blocking calls on the raw
socket; gevent's cooperative socket is made only when a call must wait
(and always for TLS, whose socket may hold decrypted bytes the fd does not
show).
"""
from __future__ import annotations

import select
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import gevent
import gevent.socket as gsocket
from gevent.ssl import SSLSocket

from .. import private
from ..errors import ClientGone, CondureError, Timeout
from ..private import RawSocket
from . import http1
from .outqueue import OutputQueue

if TYPE_CHECKING:
    from ..context import Server

DRAIN_TIME = 1.0  # seconds to drain client input before closing after an early answer
DRAIN_BYTES = 65536
_POLL = select.poll()  # see ClientIO._input_pending


def green(sock: RawSocket, detach: bool = False) -> gsocket.socket:
    """gevent's cooperative socket on a plain one's fd. `detach`: the wrapper
    takes the fd over; otherwise both stay usable and only one may close it."""
    fd = sock.detach() if detach else sock.fileno()
    return gsocket.socket(sock.family, sock.type, 0, fileno=fd)


class ClientIO(OutputQueue):
    """The I/O half of `Connection` (which adds the inbox, timers and the
    request loop, and gives `_inbox` and `_timeout` their meaning here)."""

    server: Server
    buffer_size: int
    parser: Any
    last_io: float
    waiting_for_request = False  # reading a head: its bytes do not move the stream deadline
    _inbox: deque[Any]
    _timeout: str | None = None
    _waiting = False  # parked in wait(): a wake-up may switch back to us
    _wake_queued = False
    _readable = _writable = False
    _fresh = True  # nothing read yet: the first request is usually there already
    _io: Any = None  # read/write watchers, made on first use
    _wio: Any = None

    def _open(self, sock: Any, io_timeout: float) -> None:
        """`sock`: a plain non-blocking socket, or gevent's TLS socket."""
        self.last_io = time.monotonic()
        self._greenlet = private.current()
        self._hub = private.hub()
        self._tls = isinstance(sock, SSLSocket)  # (read as `tls` outside)
        # plain I/O that does not block goes to `_raw`; what must block goes
        # through gevent's cooperative socket (`sock`), made on first use
        self._raw: Any = None if self._tls else sock
        self._green: Any = sock if self._tls else None
        self._fd = sock.fileno()
        self.io_timeout = io_timeout  # for the blocking calls
        if self._tls:
            sock.settimeout(io_timeout)

    @property
    def sock(self) -> Any:
        """The cooperative socket, for calls that may have to wait."""
        if self._green is None:
            self._green = green(self._raw)
            self._green.settimeout(self.io_timeout)
        return self._green

    def _close_io(self) -> None:
        if self._io is not None:
            self._io.close()
        if self._wio is not None:
            self._wio.close()
        try:
            if self._green is None:
                self._raw.close()
            else:
                if self._raw is not None:
                    self._raw.detach()  # the fd is closed once, by the wrapper
                self._green.close()
        except OSError:
            pass

    # --- waiting -----------------------------------------------------------

    def _on_readable(self) -> None:
        self._readable = True
        self._resume()

    def _on_writable(self) -> None:
        self._writable = True
        self._resume()

    def _resume(self) -> None:
        self._wake_queued = False
        if self._waiting:
            self._waiting = False
            self._greenlet.switch()

    def _wake_soon(self) -> None:
        if self._waiting and not self._wake_queued:
            self._wake_queued = True
            # the hub's own calls, on the hub from private.hub(): private.py
            # checks they are there (its "hub" group); a helper call per
            # wake-up and per wait would cost more than the rest of it
            self._hub.loop.run_callback(self._resume)

    @property
    def tls(self) -> bool:
        """The connection is TLS (whatever the listener's scheme: a Unix socket's is http)."""
        return self._tls

    def wait(self, read: bool) -> bool:
        """Park until a handler packet, a timeout or (if `read`) client input;
        True when the client socket is readable."""
        if self._inbox or self._timeout:
            return False
        if read and self._tls and self.sock.pending():
            return True
        self._readable = self._writable = False
        if read:
            if self._io is None:
                self._io = private.io_watcher(self._fd, 1)
            self._io.start(self._on_readable)
        if self._out:
            if self._wio is None:
                self._wio = private.io_watcher(self._fd, 2)
            self._wio.start(self._on_writable)
        self._waiting = True
        try:
            self._hub.switch()  # parked until a watcher or _wake_soon switches back
        finally:
            self._waiting = False
            if read:
                self._io.stop()
            if self._wio is not None:
                self._wio.stop()
        if self._writable:
            self.flush()
        return self._readable

    def check_timeout(self) -> None:
        raise NotImplementedError

    # --- reading -------------------------------------------------------------

    def recv(self) -> bytes:
        """Read what the client sent (b"" at EOF), waiting only for the client."""
        if self._fresh:
            self._fresh = False
            data = self._recv_ready()
            if data is not None:
                return data
        while True:
            self.check_timeout()
            if self.wait(read=True):
                return self.recv_now()

    def _recv_ready(self) -> bytes | None:
        """What the client already sent (b"" at EOF), or None if reading would
        wait (or the socket is TLS, which only `sock` reads)."""
        if self._raw is None:
            return None
        try:
            data = self._raw.recv(self.buffer_size)
        except BlockingIOError:
            return None
        except (ConnectionError, OSError) as e:
            raise ClientGone(str(e)) from None
        return self._took(data)

    def recv_now(self) -> bytes:
        """Read after `wait` said the socket is readable."""
        data = self._recv_ready()
        if data is None:  # TLS, or readiness that did not last: the cooperative read
            try:
                data = self._took(self.sock.recv(self.buffer_size))
            except (ConnectionError, OSError) as e:
                raise ClientGone(str(e)) from None
        return data

    def _took(self, data: bytes) -> bytes:
        # Bytes of a request head that is not complete yet do not move the
        # stream deadline (condure refreshes it when the head is received):
        # a head trickled in a byte at a time must still be whole by then.
        if not self.waiting_for_request:
            self.last_io = time.monotonic()
        self.server.metrics.bytes["in"] += len(data)
        return data

    # --- writing ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        try:
            if self._raw is not None:
                try:
                    sent = self._raw.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    self.sock.sendall(data[sent:])
            else:
                self.sock.sendall(data)
            self.server.metrics.bytes["out"] += len(data)
        except socket.timeout:
            raise Timeout("write timeout") from None
        except (ConnectionError, OSError) as e:
            raise ClientGone(str(e)) from None
        self.last_io = time.monotonic()

    def _send_now(self, data: bytearray) -> int:
        try:
            sent: int = self.sock.send(data) if self._raw is None else self._raw.send(data)
        except BlockingIOError:
            return 0
        except (ConnectionError, OSError) as e:
            raise ClientGone(str(e)) from None
        if sent:
            self.last_io = time.monotonic()
            self.server.metrics.bytes["out"] += sent
        return sent

    # --- closing -----------------------------------------------------------------

    def answer_and_close(self, status: int, text: str | None = None) -> None:
        """Write condure's own error response, then close without an RST (D1)."""
        try:
            self.write(http1.error_response(status, text=text))
            self.sock.shutdown(socket.SHUT_WR)
            self._drain()
        except (CondureError, OSError):
            pass

    def _drain(self) -> None:
        # unread input at close() makes the kernel send RST, which can destroy
        # the response before the client reads it
        total = 0
        with gevent.Timeout(DRAIN_TIME, False):
            while total < DRAIN_BYTES:
                data = self.sock.recv(self.buffer_size)
                if not data:
                    break
                total += len(data)

    def close_gracefully(self) -> None:
        """Close after a response. Only unread input makes close() send an RST,
        so the drain (a round trip with the client) is needed only then."""
        if not self.parser.buffered and not self._input_pending():
            return  # run() closes the socket
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self._drain()
        except OSError:
            pass

    def _input_pending(self) -> bool:
        if self._raw is None:
            return True  # TLS: be careful
        # a zero-timeout poll gives the usual answer (nothing) at less than
        # half the cost of the BlockingIOError a non-blocking peek would raise
        # (one poll object for all: nothing switches greenlets in between)
        _POLL.register(self._fd, select.POLLIN)
        ready = _POLL.poll(0)
        _POLL.unregister(self._fd)
        if not ready:
            return False
        try:
            return bool(self._raw.recv(1, socket.MSG_PEEK))  # data, or b"" at EOF
        except OSError:
            return False
