"""The handler side of one ZHTTP session, sans-IO.

The same rules as condure's side (zhttp/session.py `Session`, zhttp/flow.py
`Outflow`), seen from the other end of the wire (shared/zhttp/server.md
sections 3.3, 4.1, 4.2, 5.3, 5.6, 8.6):

* condure numbers its packets from 0 (the request); a gap means the session
  is broken. `Session.accept` checks exactly that, and records condure's
  `from` as the address to publish to;
* our own packets are numbered from 0 too (`Session.next_seq`);
* response bytes (HTTP body, WebSocket content, ping/pong payloads) go out
  only within the credits condure granted: the request's `credits`, then
  `credit` packets. They wait in an `Outflow`;
* request bytes (HTTP body, client messages) flow only as we grant credits:
  a window granted at the first read, then as much as the application has
  consumed (`consumed`), so a slow application slows its client;
* a keep-alive goes out when we have been quiet for `KEEPALIVE_INTERVAL`
  (condure drops a session after 60 s without a handler packet); condure's
  own keep-alives come about every 45 s once it knows our address, so a
  session it has not mentioned for `EXPIRY` seconds is gone (condure
  restarted, say).

Pure: no sockets, no greenlets, no clock reads (callers pass `now`).
"""
from __future__ import annotations

from ..zhttp import packet as zp
from ..zhttp.flow import Outflow
from ..zhttp.session import Session

KEEPALIVE_INTERVAL = 45.0  # our keep-alives, when quiet: well inside condure's 60 s
EXPIRY = 120.0  # condure silent this long: the session is gone
BODY_WINDOW = 65536  # request bytes condure may send ahead of the application
# credits given back once this share of the window has been consumed (one
# credit packet per quarter window, not one per read)
GRANT_FRACTION = 4
# largest piece of one packet when condure did not say (its --buffer-size default)
DEFAULT_PIECE = 8192


class HandlerSession:
    """Seq both ways, credits both ways and the keep-alive schedule of one session."""

    __slots__ = ("zs", "out", "window", "granted", "unacked", "quiet_since", "ended")

    def __init__(self, rid: bytes, addr: bytes, credits: int, now: float,
                 window: int = BODY_WINDOW) -> None:
        # condure's side of the bookkeeping, reused: `in_seq` is condure's
        # numbering (its request was seq 0), `out_seq` ours, `addr` condure's
        # `from`, `last_handler` the last time condure spoke
        self.zs = Session(rid, now, KEEPALIVE_INTERVAL)
        self.zs.in_seq = 1
        self.zs.addr = addr
        # response bytes under condure's credits; the largest piece is what
        # condure said it can buffer (its first grant), at least one byte
        self.out = Outflow(max(credits, 1) if credits else DEFAULT_PIECE, credits)
        self.window = window
        self.granted = False  # the first window has been granted
        self.unacked = 0  # bytes consumed since the last grant
        self.quiet_since = now
        self.ended = False  # our last packet went (or the session failed)

    def __repr__(self) -> str:
        return f"<HandlerSession {self.zs!r} {self.out!r}>"

    @property
    def id(self) -> bytes:
        return self.zs.id

    @property
    def addr(self) -> bytes:
        return self.zs.addr or b""

    # --- condure's packets ----------------------------------------------------

    def accept(self, pkt: zp.Packet, seq: int | None, now: float) -> None:
        """The common checks for a packet of condure's; raises BadSeq on a gap
        (or BadMessage). A `credit` adds to what we may send."""
        self.zs.accept(pkt, seq, now)
        if pkt.type == b"credit":
            self.out.grant(pkt.credits)

    def expired(self, now: float) -> bool:
        return self.zs.expired(now, EXPIRY)

    # --- our packets ------------------------------------------------------------

    def next_seq(self, now: float) -> int:
        """The seq of a packet we are about to send (it resets the quiet time)."""
        self.quiet_since = now
        self.zs.keepalive_due = now + KEEPALIVE_INTERVAL
        return self.zs.next_seq()

    def keepalive(self, now: float) -> int | None:
        """The seq of a keep-alive due now, or None (and none while handed off)."""
        if self.ended:
            return None
        seq = self.zs.keepalive(now, KEEPALIVE_INTERVAL)
        if seq is not None:
            self.quiet_since = now
        return seq

    def first_grant(self) -> int:
        """Credits to grant before the first read (0 once granted)."""
        if self.granted:
            return 0
        self.granted = True
        return self.window

    def consumed(self, n: int) -> int:
        """The application took `n` bytes: the credits to grant back now (0:
        wait until a quarter of the window has been taken)."""
        self.unacked += n
        if self.unacked * GRANT_FRACTION < self.window:
            return 0
        grant, self.unacked = self.unacked, 0
        return grant
