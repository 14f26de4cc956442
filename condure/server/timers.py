"""A connection's deadlines, per listener mode.

The timer sweeper takes a connection off the wheel at the deadline it was
armed for and asks its mode's timers what is due; they flag a timeout (the
connection greenlet wakes and raises it) or send a keep-alive, and return
the next deadline. Deadlines nearly always move later (every request, every
byte, every handler packet), so a connection is put back at its real
deadline only when swept, and the wheel is touched on the request path only
when a deadline comes earlier than the one armed (`Connection.arm`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..context import Server
    from ..zhttp.session import Session

KeepAlives = dict[bytes, list[tuple[bytes, int]]]  # handler address -> (id, seq) due


class Timed(Protocol):
    """What the timers read of a connection (server/connection.py)."""

    server: Server
    session: Session | None
    last_io: float
    stream_timeout: float
    io_timeout: float
    waiting_for_request: bool

    def flag(self, reason: str) -> None: ...


class Armed:
    """The timer-wheel side of what the sweeper sweeps: a connection, or an
    HTTP/2 stream (server/http2.py). The class sets `mode` (its timers) and
    `server` (the wheel)."""

    _armed = float("inf")  # the deadline it is on the wheel for
    mode: Any
    server: Server

    def on_timer(self, now: float, keepalives: KeepAlives) -> float | None:
        """Called by the timer sweeper, which took it off the wheel; returns
        the deadline to put it back at (None: it ends)."""
        d: float | None = self.mode.timers.check(self, now, keepalives)
        self._armed = float("inf") if d is None else d
        return d

    def arm(self) -> None:
        """Make sure the sweeper looks at it by its next deadline (only an
        earlier deadline touches the wheel: see the module docstring)."""
        d = self.mode.timers.deadline(self)
        if d < self._armed:
            self.server.wheel.add(d, self)
            self._armed = d


class StreamTimers:
    """Stream mode: the stream timeout on client I/O, the handler's silence
    (60 s, D13) and keep-alives to the handler every 45 s (server.md 4.2)."""

    @staticmethod
    def deadline(conn: Timed) -> float:
        d = conn.last_io + conn.stream_timeout
        s = conn.session
        if s is not None:  # s.deadline(), inline: this runs for every request
            d = min(d, s.last_handler + conn.server.handler_timeout, s.keepalive_due)
        return d

    @staticmethod
    def check(conn: Timed, now: float, keepalives: KeepAlives) -> float | None:
        server = conn.server
        if now >= conn.last_io + conn.stream_timeout:
            conn.flag("stream timeout")
            return None
        s = conn.session
        if s is not None:
            if s.expired(now, server.handler_timeout):
                server.metrics.handler_timeouts += 1
                if not conn.waiting_for_request:  # an idle keep-alive connection waits for nobody
                    server.warn_handler_timeout(s.id, server.handler_timeout)
                conn.flag("handler timeout")
                return None
            seq = s.keepalive(now, server.keepalive_interval)
            if seq is not None:
                keepalives.setdefault(s.addr, []).append((s.id, seq))  # type: ignore[arg-type]  # keepalive: addr set
        return StreamTimers.deadline(conn)


class ReqTimers:
    """Req mode: --req-timeout bounds each request cycle, from the wait for
    its head to the reply written (D13)."""

    @staticmethod
    def deadline(conn: Timed) -> float:
        s = conn.session  # made when the cycle began; none while the connection closes
        return (conn.last_io if s is None else s.opened) + conn.io_timeout

    @staticmethod
    def check(conn: Timed, now: float, keepalives: KeepAlives) -> float | None:
        if now >= ReqTimers.deadline(conn):
            conn.flag("req timeout")
            return None
        return ReqTimers.deadline(conn)
