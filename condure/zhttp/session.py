"""Session bookkeeping: ids, sequence numbers, reply address, routing.

Pure: no sockets, no greenlets, no clock reads (callers pass `now`).
Rules from shared/zhttp/server.md sections 3.2, 3.4, 4.1 and 2.3:

* ids are ``<worker>-<slot>-<counter in lower-case hex>``; a persistent
  connection keeps its slot and gets a fresh id for every request;
* condure numbers the packets it sends per session from 0;
* a handler packet that carries ``seq`` must carry the number of
  seq-carrying packets accepted so far; packets without ``seq`` are
  accepted and do not advance it;
* every accepted packet's ``from`` becomes the reply address (handoff and
  re-routing both rely on this).
"""
from __future__ import annotations

from typing import Any

from ..errors import BadMessage, BadSeq
from .packet import MAX_FROM_LEN, Packet

HANDLER_TIMEOUT = 60.0  # a session without handler packets for this long ends
KEEPALIVE_INTERVAL = 45.0  # condure -> handler keep-alives


class Session:
    """One request/response exchange (or one WebSocket) as ZHTTP sees it."""

    __slots__ = ("id", "out_seq", "in_seq", "addr", "opened", "last_handler", "paused",
                 "keepalive_due")

    def __init__(self, rid: bytes, now: float, keepalive_interval: float = KEEPALIVE_INTERVAL) -> None:
        self.id = rid
        self.out_seq = 0
        self.in_seq = 0
        self.addr: bytes | None = None  # handler address: the latest packet's `from`
        self.opened = now
        self.last_handler = now
        self.paused = False  # between handoff-proceed and the next handler packet
        # keep-alives go out every interval from the start of the session: like
        # condure's sweep, whose first one comes 0-45 s after it (server.md 4.2)
        self.keepalive_due = now + keepalive_interval

    def __repr__(self) -> str:
        return f"<Session {self.id.decode()} out={self.out_seq} in={self.in_seq} addr={self.addr!r}>"

    def next_seq(self) -> int:
        seq = self.out_seq
        self.out_seq += 1
        return seq

    def expired(self, now: float, handler_timeout: float) -> bool:
        """True once the handler has been silent for `handler_timeout` seconds."""
        return now >= self.last_handler + handler_timeout

    def deadline(self, handler_timeout: float) -> float:
        """When `expired` or `keepalive` next has something to say."""
        return min(self.last_handler + handler_timeout, self.keepalive_due)

    def keepalive(self, now: float, interval: float) -> int | None:
        """The seq of a keep-alive due now (the next one is then scheduled), or
        None. None too while nothing can be sent: no handler address yet, or
        paused by a handoff (the new handler's first packet resumes it)."""
        if now < self.keepalive_due:
            return None
        self.keepalive_due = now + interval
        if not self.addr or self.paused:
            return None
        return self.next_seq()

    def accept(self, packet: Packet, seq: int | None, now: float) -> None:
        """Apply the common rules to a handler packet addressed to this session.

        Raises BadSeq or BadMessage (the handler's fault: no cancel back).
        """
        if seq is not None:
            if seq != self.in_seq:
                raise BadSeq(f"bad seq (expected {self.in_seq}, got {seq}), skipping")
            self.in_seq += 1
        if len(packet.from_) > MAX_FROM_LEN:
            raise BadMessage("from address too long")
        # an empty `from` is applied too: later directed packets then have
        # nowhere to go, as with condure
        self.addr = packet.from_
        self.last_handler = now
        self.paused = False


class SessionRegistry:
    """Connection slots, id allocation and id -> owner routing for one worker."""

    def __init__(self, worker: int = 0) -> None:
        self.worker = worker
        self._prefix = f"{worker}-".encode()
        self._free: list[int] = []
        self._next_slot = 0
        self._counter = 0
        self._owners: dict[bytes, Any] = {}
        self.active = 0

    def __len__(self) -> int:
        return len(self._owners)

    def take_slot(self) -> int:
        self.active += 1
        if self._free:
            return self._free.pop()
        slot = self._next_slot
        self._next_slot += 1
        return slot

    def release_slot(self, slot: int) -> None:
        self.active -= 1
        self._free.append(slot)

    def new_id(self, slot: int) -> bytes:
        counter = self._counter
        self._counter = (counter + 1) & 0xFFFFFFFF
        return b"%s%d-%x" % (self._prefix, slot, counter)

    def register(self, rid: bytes, owner: Any) -> None:
        self._owners[rid] = owner

    def unregister(self, rid: bytes) -> None:
        self._owners.pop(rid, None)

    def route(self, packet: Packet) -> list[tuple[Any, bytes, int | None]]:
        """(owner, id, seq) for each id of the packet that is live here.

        Ids of finished or superseded sessions are ignored silently, as
        condure does.
        """
        owners = self._owners
        if len(packet.ids) == 1:  # nearly every packet
            rid, seq = packet.ids[0]
            owner = owners.get(rid)
            return [] if owner is None else [(owner, rid, seq)]
        return [(owner, rid, seq) for rid, seq in packet.ids
                if (owner := owners.get(rid)) is not None]
