"""A connection's write queue (WebSocket frames): write without waiting.

What the socket does not take at once waits here and goes out as it becomes
writable (the connection's `wait` watches for that), so client input and
handler packets are handled meanwhile. Callbacks run once the bytes queued
before them are out: a WebSocket's credits go back to its handler only for
frames the client's socket has taken.

The queue is unbounded on purpose: what bounds it is the handler's credits
(a handler sends no more than it was granted, and grants come back only as
bytes leave) and --messages-max pieces.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


class OutputQueue:
    """The write queue of a connection; a mixin of `Connection`, which gives it
    `_send_now(data) -> int` (what the socket took, never waiting) and
    `write(data)` (waiting, under the stream timeout)."""

    # both are made by the first queue_write, until which the shared class
    # defaults (empty bytes, an empty tuple) stand in: most connections never
    # queue anything
    _out: bytearray = b""  # type: ignore[assignment]
    _out_done: deque[tuple[int, Any]] = ()  # type: ignore[assignment]  # (queued total at the end of a piece, callback)
    _out_total = _out_sent = 0

    def _send_now(self, data: bytearray) -> int:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def queue_write(self, data: bytes, on_written: Callable[[], None] | None = None) -> None:
        """Write without waiting; `on_written` runs once `data` is out."""
        if type(self._out) is bytes:  # type: ignore[comparison-overlap]  # the class default: first use
            self._out = bytearray()
            self._out_done = deque()
        self._out += data
        self._out_total += len(data)
        if on_written is not None:
            self._out_done.append((self._out_total, on_written))
        self.flush()

    @property
    def queued_pieces(self) -> int:
        return len(self._out_done)

    @property
    def queued_bytes_sent(self) -> int:
        """Bytes of the write queue (WebSocket frames) written so far."""
        return self._out_sent

    def flush(self) -> None:
        """Send what the socket takes now; run the callbacks of what got out."""
        if self._out:
            sent = self._send_now(self._out)
            if sent:
                del self._out[:sent]
                self._out_sent += sent
        done = self._out_done
        while done and done[0][0] <= self._out_sent:
            done.popleft()[1]()

    def flush_all(self) -> None:
        """Wait until the queue is written (at the end of a session)."""
        while self._out:
            self.write(bytes(self._out))  # waiting, under the stream timeout
            self._out_sent += len(self._out)
            self._out.clear()
        self.flush()
