"""What ends a handler-side session, as the application sees it: raised in
the request's greenlet by the next library call."""
from __future__ import annotations


class SessionEnded(Exception):
    """The session cannot go on (and `Request.ended` is set)."""


class Cancelled(SessionEnded):
    """condure sent `cancel`: the client has gone (or condure is stopping)."""


class SessionLost(SessionEnded):
    """The session broke on our side of the wire: a gap in condure's seq, or
    condure silent past the expiry (restarted, say)."""


class WebSocketClosed(SessionEnded):
    """The client closed the WebSocket (`code`, `reason`)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by the client: {code} {reason}")
        self.code = code
        self.reason = reason
