"""Client-mode HTTP/1.1 to origins with h11, and a pool of idle connections.

h11 speaks the client side: it frames what we send and parses responses
with the HTTP rules (HEAD, 1xx, close-delimited bodies read to EOF, which
condure would deliver as empty: we follow h11, as zurl does).
shared/zhttp/client.md section 10.1: only plain exchanges that finished
cleanly on a persistent connection go back to the pool; a pooled connection
is checked with a non-blocking read before reuse and dropped after 55 s idle.
"""
from __future__ import annotations

import socket
import ssl
import time
from collections import deque
from typing import Any, Callable

import h11
from gevent import select
from gevent.ssl import SSLSocket

from ..blocks import BlockBudget
from ..errors import ClientError
from .connect import Target, connect
from .request import ClientRequest, head_headers

POOL_IDLE_TTL = 55.0
READ_SIZE = 65536


class Origin:
    """One connection to an origin, driven through h11's client role.

    The response head is limited by `capacity`: --buffer-size, and for a
    stream session one spare block more each time the head outgrows it while
    `blocks` has one (connmgr.md 3.3); the blocks go back when the head is
    parsed or the connection closes. h11's own limit is only the largest any
    head may reach (`head_max`), so it never decides first."""

    # set by open_origin for each exchange (a pooled connection serves both interfaces)
    blocks: BlockBudget
    capacity: int
    head_fed = 0  # bytes h11 was given since the response head began

    def __init__(self, sock: Any, key: tuple, head_max: int) -> None:
        self.sock = sock
        self.key = key
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=head_max)

    def send_head(self, req: ClientRequest, framing: str, length: int = 0) -> None:
        try:
            data = self.h11.send(h11.Request(method=req.method, target=req.target,
                                             headers=head_headers(req, framing, length)))
        except h11.LocalProtocolError as e:
            raise ClientError("bad-request", str(e)) from None
        self.write(data)

    def send_body(self, data: bytes) -> None:
        if data:
            self.write(self.h11.send(h11.Data(data=data)))

    def end(self) -> None:
        self.write(self.h11.send(h11.EndOfMessage()))

    def write(self, data: bytes | None) -> None:
        if not data:
            return
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise ClientError("connection-timeout", "write timed out") from None
        except ssl.SSLError as e:
            raise ClientError("tls-error", f"write: {e}") from None
        except OSError as e:
            raise ClientError("undefined-condition", f"write: {e}") from None

    def next_event(self, wait: Callable[[], None] | None = None) -> Any:
        """The next response event; reads the socket as needed (`wait` first, if given)."""
        while True:
            try:
                ev = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                raise ClientError("undefined-condition", f"bad response: {e}") from None
            if ev is not h11.NEED_DATA:
                if type(ev) is h11.ConnectionClosed:
                    raise ClientError("undefined-condition", "origin closed the connection")
                if type(ev) is h11.Response or type(ev) is h11.InformationalResponse:
                    self._head_done()
                return ev
            head = self.h11.their_state is h11.SEND_RESPONSE
            if head:
                self._fit_head(self.head_fed)  # all of it is head: h11 needs more
            if wait is not None:
                wait()
            data = self._recv()
            if head:
                self.head_fed += len(data)
            self.h11.receive_data(data)

    def _head_done(self) -> None:
        """A response head was parsed: it must have fit (a head that came in
        one read was not checked before), then its blocks go back."""
        rest = len(self.h11.trailing_data[0])
        size, self.head_fed = self.head_fed - rest, rest  # `rest` begins the next head, if any
        self._fit_head(size)
        if self.capacity != self.blocks.block_size:
            self.capacity = self.blocks.release(self.capacity)

    def _fit_head(self, size: int) -> None:
        """A head of `size` bytes must fit `capacity`, grown a block at a time
        while the pool has one; else the session fails as pushpin-connmgr's
        does (undefined-condition)."""
        while size > self.capacity:
            grown = self.blocks.grow(self.capacity)
            if grown == self.capacity:
                raise ClientError("undefined-condition",
                                  f"response head larger than {self.capacity} bytes")
            self.capacity = grown

    def take_buffered(self, data: bytes) -> tuple[bytes, bool]:
        """`data` plus the body bytes h11 already holds, and whether the body
        ended there: a body of known length ends with its last bytes, with no
        extra empty packet, as with condure."""
        while True:
            try:
                ev = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                raise ClientError("undefined-condition", f"bad response: {e}") from None
            if ev is h11.NEED_DATA:
                return data, False
            if type(ev) is h11.EndOfMessage:
                return data, True
            if type(ev) is h11.Data:
                data += bytes(ev.data)
            else:
                raise ClientError("undefined-condition", "origin closed the connection")

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(READ_SIZE)
        except socket.timeout:
            raise ClientError("connection-timeout", "read timed out") from None
        except ssl.SSLError as e:  # with TLS 1.3 an origin refuses a client certificate here
            raise ClientError("tls-error", f"read: {e}") from None
        except OSError as e:
            raise ClientError("undefined-condition", f"read: {e}") from None

    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def close(self, notify: bool = False) -> None:
        """`notify`: the exchange ended normally; a TLS connection then says
        so with close_notify first (connmgr.md 2.3), without waiting for the
        origin's. Error exits just close."""
        self.capacity = self.blocks.release(self.capacity)  # a head cut short
        sock = self.sock
        if notify and isinstance(sock, SSLSocket):
            try:
                sock.settimeout(0.0)
                sock.unwrap()  # sends close_notify; would then wait for the origin's
            except (ssl.SSLError, OSError, ValueError):
                pass
        try:
            sock.close()
        except OSError:
            pass


class Pool:
    """Idle keep-alive connections by (address, port, tls, URI host, client identity).
    `head_max`: the largest response head any exchange may take (see Origin)."""

    def __init__(self, capacity: int, head_max: int) -> None:
        self.capacity = capacity
        self.head_max = head_max
        self._idle: dict[tuple, deque] = {}
        self._count = 0

    def get(self, key: tuple) -> Origin | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            origin, since = idle.pop()
            self._count -= 1
            if now - since < POOL_IDLE_TTL and _alive(origin.sock):
                return origin
            origin.close()
        return None

    def put(self, origin: Origin) -> None:
        """An origin whose exchange ended normally: kept idle, or closed."""
        if not origin.reusable() or self._count >= self.capacity:
            origin.close(notify=True)
            return
        origin.h11.start_next_cycle()
        self._idle.setdefault(origin.key, deque()).append((origin, time.monotonic()))
        self._count += 1


def _alive(sock: Any) -> bool:
    """An idle connection must have nothing to read (no EOF, no stray bytes)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable and not getattr(sock, "pending", lambda: 0)()


def open_origin(req: ClientRequest, pool: Pool, deny: bool, timeout: float | None,
                blocks: BlockBudget) -> Origin:
    """A pooled or new connection for `req`; its response head may borrow from `blocks`."""
    origin = _open(req, pool, deny, timeout)
    origin.blocks = blocks
    origin.capacity = blocks.block_size
    origin.head_fed = 0  # a pooled connection has nothing buffered (Pool.get checks)
    return origin


def _open(req: ClientRequest, pool: Pool, deny: bool, timeout: float | None) -> Origin:
    target: Target = req.target_for(deny)
    # the client identity is part of the key (D25): a connection opened with
    # one certificate (or none) never serves a request that asked for another
    key = (target.host, target.port, target.tls, target.tls_name, target.verify, req.host,
           target.client_cert, target.client_key)
    if not req.websocket:
        origin = pool.get(key)
        if origin is not None:
            origin.sock.settimeout(timeout)
            return origin
    return Origin(connect(target, timeout), key, pool.head_max)
