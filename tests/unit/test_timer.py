"""TimerWheel with a hand-moved clock; run_sweeper in a short-lived greenlet."""

from __future__ import annotations

import logging
import random

import gevent
import gevent.event
import pytest

from condure.timer import TimerWheel, run_sweeper


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wheel(clock: FakeClock) -> TimerWheel:
    return TimerWheel(tick=0.1, slots=16, clock=clock)


def test_empty_wheel_expires_nothing(wheel: TimerWheel, clock: FakeClock) -> None:
    clock.now += 100
    assert wheel.expired() == []
    assert len(wheel) == 0


def test_keys_come_out_in_deadline_order(wheel: TimerWheel, clock: FakeClock) -> None:
    wheel.add(clock.now + 0.5, "c")
    wheel.add(clock.now + 0.15, "a")
    wheel.add(clock.now + 0.3, "b")
    clock.now += 1.0
    assert wheel.expired() == ["a", "b", "c"]
    assert len(wheel) == 0


def test_nothing_before_deadline_and_exactly_at_it(wheel: TimerWheel, clock: FakeClock) -> None:
    deadline = clock.now + 0.25
    wheel.add(deadline, "k")
    assert wheel.expired(deadline - 0.01) == []
    assert "k" in wheel
    assert wheel.expired(deadline) == ["k"]
    assert "k" not in wheel


def test_partial_tick_is_revisited(clock: FakeClock) -> None:
    # Two deadlines in the same tick, a sweep in between them.
    base = 2000.0
    clock.now = base
    w = TimerWheel(tick=1.0, slots=8, clock=clock)
    w.add(base + 0.2, "early")
    w.add(base + 0.8, "late")
    assert w.expired(base + 0.5) == ["early"]
    assert w.expired(base + 0.9) == ["late"]


def test_now_defaults_to_clock(wheel: TimerWheel, clock: FakeClock) -> None:
    wheel.add(clock.now + 1, "k")
    assert wheel.expired() == []
    clock.now += 1
    assert wheel.expired() == ["k"]


def test_reschedule_keeps_one_entry(wheel: TimerWheel, clock: FakeClock) -> None:
    wheel.add(clock.now + 0.2, "k")
    wheel.add(clock.now + 5.0, "k")
    assert len(wheel) == 1
    assert wheel.deadline("k") == clock.now + 5.0
    assert wheel.expired(clock.now + 1.0) == []
    assert wheel.expired(clock.now + 5.0) == ["k"]
    assert wheel.expired(clock.now + 100.0) == []


def test_reschedule_earlier(wheel: TimerWheel, clock: FakeClock) -> None:
    wheel.add(clock.now + 5.0, "k")
    wheel.add(clock.now + 0.2, "k")
    assert wheel.expired(clock.now + 0.2) == ["k"]
    assert len(wheel) == 0


def test_remove(wheel: TimerWheel, clock: FakeClock) -> None:
    wheel.add(clock.now + 0.2, "a")
    wheel.add(clock.now + 0.2, "b")
    wheel.remove("a")
    wheel.remove("a")            # second removal is a no-op
    wheel.remove("never-added")  # so is removing an unknown key
    assert "a" not in wheel
    assert wheel.deadline("a") is None
    assert len(wheel) == 1
    assert wheel.expired(clock.now + 1) == ["b"]


def test_deadline_lookup(wheel: TimerWheel, clock: FakeClock) -> None:
    assert wheel.deadline("x") is None
    wheel.add(clock.now + 3.5, "x")
    assert wheel.deadline("x") == clock.now + 3.5


def test_rounds_beyond_wheel_span(wheel: TimerWheel, clock: FakeClock) -> None:
    # Span is 16 * 0.1 = 1.6 s: the later keys share the slot of "near" and must
    # sit out the turns of the wheel before their own.
    start = clock.now
    deadlines = {
        "near": start + 0.3,
        "one-round": start + 0.3 + 1.6,
        "three-rounds": start + 0.3 + 3 * 1.6,
        "far": start + 60.0,
    }
    for key, deadline in deadlines.items():
        wheel.add(deadline, key)
    seen: list[tuple[float, object]] = []
    for step in range(1, 700):   # a sweeper waking every tick
        clock.now = start + step * 0.1
        seen.extend((clock.now, key) for key in wheel.expired())
    assert [key for _, key in seen] == list(deadlines)
    for now, key in seen:        # each popped on the first sweep at or after its deadline
        assert now - 0.1 - 1e-9 <= deadlines[key] <= now


def test_late_sweep_jumping_many_turns(wheel: TimerWheel, clock: FakeClock) -> None:
    start = clock.now
    wheel.add(start + 0.5, "a")
    wheel.add(start + 7.0, "b")
    wheel.add(start + 30.0, "c")
    # One sweep 10 s later (6+ turns of the wheel) finds what is due, no more.
    assert wheel.expired(start + 10.0) == ["a", "b"]
    assert "c" in wheel and len(wheel) == 1
    assert wheel.expired(start + 29.99) == []
    assert wheel.expired(start + 30.0) == ["c"]


def test_past_deadline_expires_at_next_call(wheel: TimerWheel, clock: FakeClock) -> None:
    clock.now += 5.0
    wheel.expired()              # the cursor has moved well past the start
    wheel.add(clock.now - 3.0, "old")
    wheel.add(clock.now - 0.001, "just-gone")
    # Even without time moving on, the next sweep returns them.
    assert wheel.expired() == ["old", "just-gone"]
    assert len(wheel) == 0


def test_past_deadline_before_wheel_creation(clock: FakeClock) -> None:
    w = TimerWheel(tick=0.1, slots=4, clock=clock)
    w.add(clock.now - 1000.0, "ancient")
    assert w.expired() == ["ancient"]


def test_deadline_later_in_current_tick(clock: FakeClock) -> None:
    clock.now = 500.0
    w = TimerWheel(tick=1.0, slots=4, clock=clock)
    w.expired(500.4)
    w.add(500.9, "k")            # same tick as the last sweep, still in the future
    assert w.expired(500.5) == []
    assert w.expired(500.9) == ["k"]


def test_same_deadline_for_many_keys_keeps_insertion_order(wheel: TimerWheel, clock: FakeClock) -> None:
    deadline = clock.now + 0.7
    keys = [f"conn-{i}" for i in range(500)]
    for key in keys:
        wheel.add(deadline, key)
    assert wheel.expired(deadline - 0.05) == []
    assert wheel.expired(deadline) == keys


def test_many_keys_random_deadlines(clock: FakeClock) -> None:
    rng = random.Random(7)
    start = clock.now
    w = TimerWheel(tick=0.1, slots=64, clock=clock)
    deadlines = {i: start + rng.uniform(-1.0, 30.0) for i in range(5000)}
    for key, deadline in deadlines.items():
        w.add(deadline, key)
    removed = set(rng.sample(sorted(deadlines), 500))
    for key in removed:
        w.remove(key)
    assert len(w) == 4500
    out: list[int] = []
    now = start
    while now < start + 31.0:
        now += rng.uniform(0.01, 0.7)
        batch = w.expired(now)
        assert all(deadlines[k] <= now for k in batch)
        assert all(w.deadline(k) > now for k in deadlines if k in w)
        out.extend(batch)
    assert len(w) == 0
    # Each batch is everything due, so the concatenation is in deadline order too.
    assert out == sorted((k for k in deadlines if k not in removed), key=lambda k: deadlines[k])


def test_objects_as_keys(wheel: TimerWheel, clock: FakeClock) -> None:
    class Conn:
        pass

    a, b = Conn(), Conn()
    wheel.add(clock.now + 0.2, a)
    wheel.add(clock.now + 0.1, b)
    assert wheel.expired(clock.now + 0.2) == [b, a]


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        TimerWheel(tick=0)
    with pytest.raises(ValueError):
        TimerWheel(slots=0)


def test_run_sweeper_delivers_batches_and_survives_errors(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    w = TimerWheel(tick=0.1, slots=16, clock=clock)
    got: list[list] = []
    done = gevent.event.Event()

    def on_expired(keys: list) -> None:
        got.append(keys)
        if keys == ["boom"]:
            raise RuntimeError("callback failure")
        if keys == ["after"]:
            done.set()

    w.add(clock.now + 0.5, "boom")
    clock.now += 1.0
    sweeper = gevent.spawn(run_sweeper, w, on_expired, 0.001)
    try:
        with caplog.at_level(logging.ERROR, logger="condure.timer"):
            with gevent.Timeout(2.0):
                while not got:
                    gevent.sleep(0.001)
                w.add(clock.now + 0.2, "after")
                clock.now += 0.3
                done.wait()
    finally:
        sweeper.kill(block=True, timeout=1.0)
    assert sweeper.dead
    assert got == [["boom"], ["after"]]
    assert any("timer callback failed" in r.getMessage() for r in caplog.records)
