"""The WebSocket handshake in stream mode (shared/zhttp/server.md section 8).

The handshake is an HTTP exchange whose request carries a ``ws://`` uri and
no body: the handler's first data packet decides. A 101 completes it
(condure adds Upgrade, Connection, Sec-WebSocket-Accept) and a
`WebSocketSession` takes the connection over; anything else is written as a
plain HTTP response and the connection closes (D3); an ``error`` with
condition ``rejected`` becomes the rejection response.
"""
from __future__ import annotations

from typing import Any

from ..errors import CondureError, RejectionTooLarge, Stopped
from ..wsdeflate import BoundedDeflate
from ..zhttp import packet as zp
from ..zhttp.session import Session
from . import http1
from .exchange import Exchange, on_error
from .request import RequestHead
from .ports import ClientStream, HandlerLink, Worker
from .websocket import WebSocketSession
from .wshead import handshake_head, negotiate_deflate, rejection

# handler headers a non-101 answer loses: it is a plain response (D3)
_UPGRADE_HEADERS = (b"upgrade", b"sec-websocket-accept", b"sec-websocket-extensions")


class WsHandshake(Exchange):
    """The HTTP exchange of a WebSocket upgrade, then the session it starts."""

    HANDLERS: dict[bytes, Any]

    credits = 0  # granted by the handler before or with its 101
    ws: WebSocketSession | None = None
    _rejection_bytes: int | None = None  # body of a `rejected` answer written

    def __init__(self, stream: ClientStream, link: HandlerLink, server: Worker,
                 head: RequestHead, session: Session) -> None:
        super().__init__(stream, link, server, head, session)
        self.persistent = False
        cfg = server.config
        self.deflate: tuple[bytes, BoundedDeflate] | None = None
        if cfg.compression:
            self.deflate = negotiate_deflate(head, cfg.compression_message_max)

    def _send_request(self) -> None:
        stream, head = self.stream, self.head
        scheme = b"wss" if stream.scheme == b"https" else b"ws"
        uri = self.uri = http1.request_uri(head, scheme)
        stream.log.debug("request: %s %s", head.method.decode("latin-1"), uri.decode("latin-1"))
        self._send_first(uri, more=False, stream=False)

    def want_read(self) -> bool:
        return False  # an upgrade has no body: nothing to read before the 101

    # --- the handler's answer ------------------------------------------------

    def _on_credit(self, pkt: zp.Packet) -> None:
        self.credits += pkt.credits

    def _on_data(self, pkt: zp.Packet) -> None:
        self.credits += pkt.credits  # the 101 may carry them
        super()._on_data(pkt)

    def _start_response(self, pkt: zp.Packet) -> None:
        if pkt.code != 101:
            self._plain_response(pkt)
            return
        stream = self.stream
        if pkt.body:
            stream.log.warning("ignoring body of a 101 response")
        ext_header, ext = self.deflate if self.deflate is not None else (None, None)
        self._write_accept(pkt, ext_header)  # sets `written`, `code`
        self.response = http1.ResponseBody(http1.NO_BODY, 0, True)
        # Pushpin sends no credits on accept: a buffer's worth then
        credits = self.credits or stream.buffer_size
        self.ws = self.then = WebSocketSession(stream, self.link, self.server, self.session,
                                               credits, ext)
        stream.upgraded()
        self.done = True  # the session goes on as `then`, on this connection

    def _write_accept(self, pkt: zp.Packet, extension: bytes | None) -> None:
        """The 101 (HTTP/1.1); over HTTP/2 a 200 HEADERS (server/http2.py).
        Refused handler fields raise before anything counts as written."""
        key = self.head.header(b"sec-websocket-key") or b""
        # a head of any size is written (connmgr.md 3.4), as for a plain response
        head = handshake_head(pkt.reason, pkt.headers, key, extension)
        self.written = True
        self.code = 101
        self.stream.write(head)

    def _write_rejection(self, code: int, pkt: zp.Packet) -> None:
        """A `rejected` answer: an HTTP/1.1 response (over HTTP/2, HEADERS and
        DATA); sets `written` and `code` as `_write_accept` does."""
        out = rejection(code, pkt.reason, pkt.headers, pkt.body)  # may refuse (D9, D17): 502
        self.written = True
        self.code = code
        self.stream.write(out)

    def _plain_response(self, pkt: zp.Packet) -> None:
        """D3: a non-101 answer is an ordinary HTTP response, then close."""
        pkt.headers = [(n, v) for n, v in pkt.headers if n.lower() not in _UPGRADE_HEADERS]
        self.persistent = False
        super()._start_response(pkt)

    def _on_error(self, pkt: zp.Packet) -> None:
        if pkt.condition != b"rejected":
            on_error(self, pkt)  # raises
            return
        if len(pkt.body) > self.stream.buffer_size:
            # connmgr answers 500 with its text instead (D30), and cancels
            raise RejectionTooLarge(self.stream.buffer_size)
        code = 0 if pkt.code is None else pkt.code  # condure writes a missing code as 0
        self._rejection_bytes = len(pkt.body)
        self._write_rejection(code, pkt)
        self.done = True

    # --- endings ------------------------------------------------------------------

    def _fail(self, e: CondureError) -> None:
        if isinstance(e, Stopped) and self.ws is not None:
            self.ws.going_away()  # D12: 1001
        super()._fail(e)

    def _body_bytes(self) -> int:
        if self.ws is not None:  # the frames written since the handshake
            return self.stream.queued_bytes_sent
        if self._rejection_bytes is not None:
            return self._rejection_bytes
        return super()._body_bytes()


WsHandshake.HANDLERS = {
    **Exchange.HANDLERS,
    zp.DATA: WsHandshake._on_data,
    b"credit": WsHandshake._on_credit,
    b"error": WsHandshake._on_error,
}
