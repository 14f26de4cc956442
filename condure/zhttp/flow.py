"""Credit-limited forwarding to a handler: one rule for every side.

Whatever condure forwards to a handler (a request body in server mode, a
response body in client mode, WebSocket messages and control frames both
ways) waits here until the handler's credits let it go:

* a body or message goes in pieces of at most ``min(credits, limit)``
  bytes, ``more`` on all but its last piece; a WebSocket message is never
  reassembled, each frame is forwarded as it came, and pieces never cross
  from one message into the next;
* ping and pong payloads need credits too, and go whole or not at all;
* an empty final WebSocket frame makes an empty packet whatever the
  credits (it carries the end of the message); an empty non-final one
  makes none;
* the end of a body that arrives after its last bytes went makes an empty
  packet, but only once the handler has credit again (as condure);
* anything else (a close) keeps its place in the order and costs nothing.

Pure: no sockets, no packets built here. The caller turns each piece into
a packet; `next()` is cheap enough to call per message on the hot path.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from .packet import DATA

# the kinds of queued item; a piece's first element is the packet type
_BODY = 0  # an HTTP body: one stream of bytes, merged as it arrives
_MESSAGE = 1  # one WebSocket frame's content (a message or a fragment of one)
_CONTROL = 2  # ping/pong: whole, within credits
_OTHER = 3  # passes through (close)

Piece = tuple[bytes, Any, Any, bool]
"""(packet type, content type or extra, body, more) of one packet to send."""


class Outflow:
    """Items bound for one handler, let out within its credits."""

    __slots__ = ("credits", "limit", "queue")

    def __init__(self, limit: int, credits: int = 0) -> None:
        self.limit = limit  # the largest piece: the buffer size (or the client window)
        self.credits = credits
        # items: [kind, packet type, content type/extra, data, finished]; truthy
        # while anything waits (hot paths test it directly: `bool(flow)` is a call)
        self.queue: deque[list[Any]] = deque()

    def __bool__(self) -> bool:
        """True while anything waits (a body not yet ended counts)."""
        return bool(self.queue)

    def __repr__(self) -> str:
        return f"<Outflow credits={self.credits} queued={len(self.queue)}>"

    def grant(self, n: int) -> None:
        self.credits += n

    # --- what comes in --------------------------------------------------------

    def body(self, data: bytes, ended: bool = False) -> None:
        """More of the body (`ended`: and that was the end of it)."""
        q = self.queue
        if q and q[-1][0] == _BODY and not q[-1][4]:
            item = q[-1]
            item[3] += data
            item[4] = ended
        else:
            q.append([_BODY, DATA, None, bytearray(data), ended])

    def end(self) -> None:
        """The body ended (after the bytes already given)."""
        self.body(b"", True)

    def message(self, content_type: bytes, data: Any, finished: bool) -> None:
        """One frame's content of a text or binary message (bytes or a memoryview)."""
        if data or finished:  # an empty non-final frame makes no packet
            self.queue.append([_MESSAGE, DATA, content_type, data, finished])

    def control(self, kind: bytes, payload: bytes) -> None:
        """A ping or pong."""
        self.queue.append([_CONTROL, kind, None, payload, True])

    def other(self, kind: bytes, extra: Any = None, data: Any = b"") -> None:
        """An item that only keeps its place in the order (a close)."""
        self.queue.append([_OTHER, kind, extra, data, True])

    # --- what goes out --------------------------------------------------------

    def next(self) -> Piece | None:
        """The next piece the credits allow, taken off the queue, or None."""
        q = self.queue
        if not q:
            return None
        item = q[0]
        kind, data = item[0], item[3]
        if kind <= _MESSAGE:
            size = len(data)
            n = min(self.credits, self.limit, size)
            if n <= 0:
                if size or not item[4]:
                    return None  # out of credits, or a body waiting for more
                if kind == _BODY and self.credits <= 0:
                    return None  # the end of a body needs credit too
                q.popleft()
                return (DATA, item[2], b"", False)
            self.credits -= n
            if n == size:
                q.popleft()
                return (DATA, item[2], bytes(data), not item[4])
            piece = bytes(data[:n])
            if kind == _BODY:
                del data[:n]
            else:
                item[3] = data[n:]
            return (DATA, item[2], piece, True)
        if kind == _CONTROL:
            if len(data) > self.credits:
                return None
            self.credits -= len(data)
        q.popleft()
        return (item[1], item[2], data, False)

    @property
    def body_waiting(self) -> int:
        """Bytes of a body not yet let out (for read-ahead limits)."""
        q = self.queue
        return len(q[0][3]) if q and q[0][0] == _BODY else 0

    @property
    def idle(self) -> bool:
        """Nothing waits that could go out: the queue is empty, or holds only a
        body still open with no bytes in it (the handler library waits on this)."""
        q = self.queue
        return not q or (len(q) == 1 and q[0][0] == _BODY and not q[0][3] and not q[0][4])
