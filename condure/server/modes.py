"""What each kind of listener does with a request head.

A `Mode` is handed to a listener, which hands it to each connection: the
connection reads heads and calls `mode.exchange`, so it imports no exchange
and the exchanges import no connection. Stream mode picks the HTTP exchange
or, for an upgrade, the WebSocket handshake; req mode has one exchange.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..blocks import BlockBudget
from ..errors import INVALID_WEBSOCKET
from . import access, http1, http2
from .connection import Connection, Mode, Slots
from .exchange import Exchange
from .request import RequestHead
from .req import ReqExchange
from .timers import ReqTimers, StreamTimers
from .wshandshake import WsHandshake
from .wshead import extensions_ok, valid_upgrade

if TYPE_CHECKING:
    from ..config import Config


def stream_exchange(conn: Connection, head: RequestHead) -> bool:
    session = conn.session
    assert session is not None
    if (head.upgrade and conn.mode.http2 is not None and not conn.tls
            and http2.wants_upgrade(head)):  # h2c: cleartext only (RFC 7540 3.2); TLS has ALPN
        return http2.upgrade(conn, head)  # Upgrade: h2c
    if not http1.is_websocket(head):
        # a malformed Sec-WebSocket-Extensions spoils even a plain request, in
        # condure and connmgr alike (they look at it before the upgrade)
        if not head.ws_extensions or extensions_ok(head):
            return Exchange(conn, conn, conn.server, head, session).run()
        return _invalid_websocket(conn, head)
    if not valid_upgrade(head):
        return _invalid_websocket(conn, head)
    return WsHandshake(conn, conn, conn.server, head, session).run()


def _invalid_websocket(conn: Connection, head: RequestHead) -> bool:
    """condure 1.9.1 closes silently; connmgr answers 400 with its text (D1)."""
    conn.log.debug("process error: InvalidWebSocketRequest")
    if conn.server.access_log:
        scheme = conn.scheme
        if http1.is_websocket(head):
            scheme = b"wss" if scheme == b"https" else b"ws"
        access.write(conn.peer, head, access.request_uri(head, scheme), 400,
                     len(http1.error_body(400, INVALID_WEBSOCKET)), conn.last_io, access.CONDURE,
                     "InvalidWebSocketRequest")
    conn.answer_and_close(400, INVALID_WEBSOCKET)
    return False


def req_exchange(conn: Connection, head: RequestHead) -> bool:
    session = conn.session
    assert session is not None
    return ReqExchange(conn, conn, conn.server, head, session).run()


def stream_mode(config: Config, limit: Slots | None = None) -> Mode:
    """One per worker: its stream listeners share the spare blocks (req mode
    has none) and `limit`, their --stream-maxconn count (HTTP/2 streams take
    slots of it)."""
    blocks = BlockBudget.for_config(config.buffer_size, config.stream_maxconn,
                                    config.blocks_max, config.connection_blocks_max)
    return Mode("stream", stream_exchange, StreamTimers, float(config.stream_timeout), blocks,
                http2.serve, limit)


def req_mode(config: Config) -> Mode:
    return Mode("req", req_exchange, ReqTimers, float(config.req_timeout))
