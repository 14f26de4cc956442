"""What a client-mode session needs from around it, typed as Protocols.

A leaf module: it imports no sibling that could import it back, so the
client modules depend one way only (service -> session -> link, websocket
-> context, http1, request, connect). The service satisfies `Service`
structurally and the stream session `Stream`; neither is named here.
"""
from __future__ import annotations

from typing import Any, Protocol

from ..blocks import BlockBudget
from ..config import Config
from ..zhttp.flow import Outflow
from ..zhttp.packet import Packet
from .http1 import Origin, Pool


class Sender(Protocol):
    """The zserver stream sockets, as far as a session writes to them."""

    def send(self, addr: bytes, payload: bytes, router: bool = False) -> None: ...


class Service(Protocol):
    """What a session uses of the client service (read-only: properties
    accept plain attributes, of the same or a narrower type)."""

    @property
    def config(self) -> Config: ...

    @property
    def instance_id(self) -> bytes: ...

    @property
    def pool(self) -> Pool: ...

    @property
    def blocks(self) -> BlockBudget:
        """The spare blocks stream sessions' response heads may borrow."""

    @property
    def req_blocks(self) -> BlockBudget:
        """None to borrow: REQ exchanges' response heads stay --buffer-size."""

    @property
    def sockets(self) -> Sender | None: ...

    @property
    def handler_timeout(self) -> float: ...

    @property
    def keepalive_interval(self) -> float: ...

    @property
    def stream_timeout(self) -> float: ...

    def end_session(self, key: tuple[bytes, bytes]) -> None:
        """The session with this (from, id) key is over: forget it."""


class Stream(Protocol):
    """What the WebSocket client uses of its stream session."""

    origin: Origin | None
    header_sent: bool  # the response head (the 101) reached the handler: failures are `cancel`
    writing: bool  # blocked writing to the origin (the session may be killed there)

    @property
    def service(self) -> Service: ...

    @property
    def flow(self) -> Outflow: ...

    def send(self, type_: bytes = ..., keep_empty: tuple[str, ...] = ..., **fields: Any) -> None:
        """A packet to the handler."""

    def grant(self, n: int, **fields: Any) -> None:
        """Let the handler send `n` more bytes."""

    def take(self) -> Packet | None:
        """The next handler packet after the common checks, or None."""

    def wait(self, sock: Any = None) -> bool:
        """Until a handler packet comes or, with `sock`, the origin has data (True)."""

    def until_readable(self) -> None:
        """Apply handler packets until the origin has data."""
