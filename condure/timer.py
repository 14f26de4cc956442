"""Hashed timing wheel for session, stream and keep-alive deadlines.

Every connection has deadlines (the 60 s session timer of the ZHTTP server rules,
the ``--stream-timeout`` inactivity timer, the next keep-alive due) that move with
every request. Connections arm the wheel only when a deadline comes earlier than
the one armed and are put back at their real deadline when swept early, but arming
and cancelling still happen per connection, so they must be O(1): a heap would make
cancellation O(n) or leave tombstones behind, and a ``gevent.Timeout`` or timer
greenlet per connection costs a hub callback and memory for every one of possibly
tens of thousands of idle connections.

A hashed wheel gives O(1) ``add``/``remove``: time is cut into ticks of ``tick``
clock units, tick ``t`` hashes to slot ``t % slots``, and a deadline further away
than one turn of the wheel (``slots * tick``) simply waits in its slot for later
rounds. One sweeper greenlet (:func:`run_sweeper`) wakes every tick and asks the
wheel which keys are due; the cost of a sweep is the slots it visits plus the keys
it pops, never the number of keys armed.

The wheel itself is pure: it never sleeps and reads time only through the injected
``clock`` (or the ``now`` argument), so tests move time by hand. This follows the
shape of condure's ``timer.rs``; unlike it there is one level, because entries for
later rounds are cheap to skip in Python dictionaries.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Hashable

import gevent

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class TimerWheel:
    """Keys with absolute deadlines, popped in deadline order once due.

    One entry per key: adding a key that is already armed moves it. Keys are
    compared by hash/equality, so connection or session objects can be used
    directly.
    """

    def __init__(self, tick: float = 0.1, slots: int = 1024, clock: Clock = time.monotonic) -> None:
        if tick <= 0:
            raise ValueError("tick must be positive")
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.tick = tick
        self.slots = slots
        self._clock = clock
        # slot index -> {key: (deadline, seq)}; dicts give O(1) removal by key.
        self._wheel: list[dict[Hashable, tuple[float, int]]] = [{} for _ in range(slots)]
        # key -> slot index, to find an entry again in O(1).
        self._slot_of: dict[Hashable, int] = {}
        # Insertion counter: keys sharing a deadline come out in the order they were added.
        self._seq = 0
        # First tick not yet known to be fully swept. The tick that contains the last
        # sweep's `now` is only partly swept, so the cursor stays on it.
        self._cursor = self._tick_of(clock())

    def _tick_of(self, t: float) -> int:
        # floor(t / tick) is monotonic in t, so deadline <= now implies
        # tick(deadline) <= tick(now): a due key is never in a slot ahead of the cursor.
        return math.floor(t / self.tick)

    def add(self, deadline: float, key: Hashable) -> None:
        """Arm ``key`` at absolute ``deadline`` (clock units), replacing any earlier entry."""
        self.remove(key)
        # A deadline in a tick already swept would otherwise wait a whole turn of the
        # wheel; putting it in the cursor's slot makes the next sweep see it.
        index = max(self._tick_of(deadline), self._cursor) % self.slots
        self._seq += 1
        self._wheel[index][key] = (deadline, self._seq)
        self._slot_of[key] = index

    def remove(self, key: Hashable) -> None:
        """Disarm ``key``; a key that is not armed is ignored (ends race with expiry)."""
        index = self._slot_of.pop(key, None)
        if index is not None:
            slot = self._wheel[index]
            del slot[key]
            if not slot:
                self._wheel[index] = {}  # a dict never shrinks: let a drained one go

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def __len__(self) -> int:
        return len(self._slot_of)

    def deadline(self, key: Hashable) -> float | None:
        """The deadline ``key`` is armed at, or None."""
        index = self._slot_of.get(key)
        if index is None:
            return None
        return self._wheel[index][key][0]

    def expired(self, now: float | None = None) -> list[Hashable]:
        """Pop and return every key with deadline <= ``now``, earliest deadline first.

        Visits the slots of the ticks from the cursor up to ``now`` (at most every
        slot once, however long the sweeper was late), so the cost is the slots
        visited plus the keys they hold.
        """
        if now is None:
            now = self._clock()
        target = max(self._tick_of(now), self._cursor)
        visits = min(target - self._cursor + 1, self.slots)
        due: list[tuple[float, int, Hashable]] = []
        for t in range(target - visits + 1, target + 1):
            index = t % self.slots
            if self._pop_due(self._wheel[index], now, due):
                self._wheel[index] = {}  # a dict never shrinks: let a drained one go
        self._cursor = target
        due.sort(key=lambda entry: (entry[0], entry[1]))
        return [key for _, _, key in due]

    def _pop_due(self, slot: dict[Hashable, tuple[float, int]], now: float,
                 due: list[tuple[float, int, Hashable]]) -> bool:
        """Move the due entries of `slot` to `due`; True if the slot is left empty."""
        # Entries for later rounds share the slot and stay where they are.
        ready = [(deadline, seq, key) for key, (deadline, seq) in slot.items() if deadline <= now]
        for entry in ready:
            del slot[entry[2]]
            del self._slot_of[entry[2]]
        due.extend(ready)
        return bool(ready) and not slot

    def __repr__(self) -> str:
        return f"<TimerWheel tick={self.tick} slots={self.slots} keys={len(self)} cursor={self._cursor}>"


def run_sweeper(wheel: TimerWheel, on_expired: Callable[[list[Any]], None],
                interval: float | None = None) -> None:
    """Sweep ``wheel`` forever, handing each non-empty batch of due keys to ``on_expired``.

    This is the only greenlet in the timer machinery: one per wheel instead of one
    per connection. A failing callback is logged and the sweeping goes on, because
    one broken connection must not stop every other connection's timeouts. Stop it
    by killing the greenlet.
    """
    pause = interval or wheel.tick
    while True:
        gevent.sleep(pause)
        keys = wheel.expired()
        if keys:
            try:
                on_expired(keys)
            except Exception:
                logger.exception("timer callback failed for %d expired keys", len(keys))
