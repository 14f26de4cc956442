"""A WebSocket session on top of an accepted `Request` (server.md section 8).

Messages from the client arrive as data packets (`content-type` text or
binary, `more` on all but the last piece of a frame); they are put back
together here, and their bytes granted back to condure as the application
takes them. Messages to the client go through the session's `Outflow`
under condure's credits, like an HTTP body. Pings are answered by
`Request.deliver` as they arrive.
"""
from __future__ import annotations

from typing import Any

from ..zhttp import packet as zp
from .errors import WebSocketClosed

CLOSE_TIMEOUT = 10.0  # seconds to wait for the client's close after ours
NO_STATUS = 1005


class WebSocket:
    """`receive()` a message (str or bytes), `send` one, `ping`, `close`."""

    def __init__(self, req: Any) -> None:
        # req: the accepted request.Request (typed loosely: request.py imports this module)
        self.request = req
        self.closed = False  # our close has gone
        self.close_code: int | None = None  # the client's close, once received

    def receive(self) -> str | bytes:
        """The next whole message: str for text, bytes for binary. Raises
        WebSocketClosed when the client closes (our close answers it unless
        we already sent one), or a SessionEnded when the session is gone."""
        req = self.request
        parts: list[bytes] = []
        text: bool | None = None
        while True:
            pkt = req.take()
            t = pkt.type
            if t == zp.DATA:
                if text is None:
                    text = pkt.content_type != b"binary"
                parts.append(pkt.body)
                req.consumed(len(pkt.body))
                if not pkt.more:
                    data = b"".join(parts)
                    return data.decode("utf-8", "replace") if text else data
            elif t == b"close":
                code = NO_STATUS if pkt.code is None else pkt.code
                reason = pkt.body.decode("utf-8", "replace")
                self.close_code = code
                if not self.closed:
                    self._send_close(code if code != NO_STATUS else 1000, "")
                req._done()
                raise WebSocketClosed(code, reason)
            elif t == b"pong":
                req.consumed(len(pkt.body))

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Messages until the client closes."""
        while True:
            try:
                yield self.receive()
            except WebSocketClosed:
                return

    def _check_closed(self) -> None:
        """A sender that never receives still learns that the client closed:
        a close waiting in the inbox is answered and raised here."""
        req = self.request
        for pkt in req.inbox:
            if pkt.type == b"close":
                code = NO_STATUS if pkt.code is None else pkt.code
                self.close_code = code
                if not self.closed:
                    self._send_close(code if code != NO_STATUS else 1000, "")
                req._done()
                raise WebSocketClosed(code, pkt.body.decode("utf-8", "replace"))

    def send(self, message: str | bytes) -> None:
        """A text (str) or binary (bytes) message; waits for credits. Raises
        WebSocketClosed once the client has closed."""
        self._check_closed()
        if isinstance(message, str):
            self.request.hs.out.message(b"text", message.encode("utf-8"), True)
        else:
            self.request.hs.out.message(b"binary", bytes(message), True)
        self.request.drain()

    def ping(self, payload: bytes = b"") -> None:
        self._check_closed()
        self.request.hs.out.control(b"ping", payload)
        self.request.drain()

    def _send_close(self, code: int, reason: str) -> None:
        self.closed = True
        self.request.hs.out.other(b"close", code, reason.encode("utf-8"))
        self.request.drain()

    def close(self, code: int = 1000, reason: str = "", wait: bool = True) -> None:
        """Close with `code`; with `wait`, until the client's close arrives
        (bounded), messages in between are dropped."""
        req = self.request
        if req.finished:
            return
        self._send_close(code, reason)
        if not wait:
            req._done()
            return
        try:
            while req.failure is None:
                if req.inbox:
                    pkt = req.inbox.popleft()
                    if pkt.type == b"close":
                        self.close_code = NO_STATUS if pkt.code is None else pkt.code
                        break
                    if pkt.type == zp.DATA or pkt.type == b"pong":
                        req.consumed(len(pkt.body))
                    continue
                req._wake.clear()
                if not req._wake.wait(CLOSE_TIMEOUT):
                    break
        finally:
            req._done()
