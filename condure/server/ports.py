"""The two sides an exchange talks to, as Protocols.

An exchange (an HTTP request, a req-mode request, a WebSocket handshake,
a WebSocket session) never sees a connection object: it reads and writes
the client through a `ClientStream` and talks to its handler through a
`HandlerLink`, and reads the worker's shared state through `Worker`. In
production one `Connection` is both the stream and the link (calls stay
direct method calls: no events are made per request); the core tests use
in-memory implementations (tests/core/doubles.py); an HTTP/2 stream can be
one more `ClientStream`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..zhttp.packet import Packet

if TYPE_CHECKING:  # leaf modules only: neither imports anything from server/
    from ..config import Config
    from ..log import ConnLogger
    from ..metrics import Metrics
    from ..zhttp.session import Session

Inbound = tuple[bytes, Packet, "int | None"]
"""A handler packet for this connection: (session id, packet, its seq)."""


class ClientStream(Protocol):
    """The client side of an exchange: one HTTP/1 connection today."""

    peer: tuple[bytes, int] | None  # the client's address (None: a Unix socket)
    scheme: bytes  # b"http" or b"https"
    buffer_size: int
    last_io: float  # when the client last sent or took bytes
    stopping: bool  # shutting down: no further requests
    debug: bool  # debug logging is on (checked once per connection)
    parser: Any  # the request parser (server/parser.py): body events, leftovers
    session: Session | None

    @property
    def log(self) -> ConnLogger: ...

    def wait(self, read: bool) -> bool:
        """Park until a handler packet, a timeout or (if `read`) client input;
        True when the client is readable."""

    def check_timeout(self) -> None:
        """Raise the timeout (or shutdown) that ended the last wait, if any."""

    def recv(self) -> bytes:
        """Read what the client sent, waiting for it (b"" at EOF)."""

    def recv_now(self) -> bytes:
        """Read after `wait` said the client is readable (b"" at EOF)."""

    def write(self, data: bytes) -> None:
        """Write all of `data`, waiting for the socket if need be."""

    def queue_write(self, data: bytes, on_written: Callable[[], None] | None = None) -> None:
        """Write without waiting; `on_written` runs once `data` is out."""

    @property
    def queued_pieces(self) -> int: ...

    @property
    def queued_bytes_sent(self) -> int: ...

    def flush_all(self) -> None:
        """Wait until the write queue is empty."""

    def close_gracefully(self) -> None:
        """End the connection after a response without losing it to an RST."""

    def answer_and_close(self, status: int, body: bytes | None = None) -> None:
        """Write condure's own error response for `status` (`body`: its text, if
        not the status's reason), then close."""

    def upgraded(self) -> None:
        """The connection is a WebSocket from now on (gauges, shutdown)."""

    def end_session(self) -> None:
        """The session is over: its id no longer routes here."""


class HandlerLink(Protocol):
    """The handler side of an exchange."""

    def send_first(self, rid: bytes, payload: bytes) -> None:
        """The request packet (PUSH, or DEALER in req mode); from now on
        packets for `rid` reach `next_packet`."""

    def send_to(self, addr: bytes, payload: bytes) -> None:
        """A packet to the handler at `addr` (ROUTER)."""

    def next_packet(self) -> Inbound | None:
        """The next handler packet for this connection, if one is there."""


class Worker(Protocol):
    """The worker's shared state an exchange reads (context.Server)."""

    config: Config
    instance_id: bytes
    metrics: Metrics
    access_log: bool

    def warn_handler_timeout(self, rid: bytes, seconds: float) -> None: ...
