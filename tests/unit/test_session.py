"""Session and SessionRegistry (condure/zhttp/session.py), pure and in memory.

Rules: shared/zhttp/server.md sections 2.3 (routing by id), 3.2 (ids),
3.4 (`from`), 4.1 (seq) and 4.5 (handoff pause).
"""
from __future__ import annotations

import pytest

from condure.errors import BadMessage, BadSeq, HandlerEnded
from condure.zhttp.packet import Packet
from condure.zhttp.session import Session, SessionRegistry


def pkt(from_: bytes = b"h1", rid: bytes = b"0-0-0", seq: int | None = None,
        **kw: object) -> Packet:
    return Packet(ids=[(rid, seq)], from_=from_, **kw)


@pytest.fixture
def s() -> Session:
    return Session(b"0-0-0", now=100.0)


def accept(s: Session, seq: int | None, from_: bytes = b"h1", now: float = 100.0) -> None:
    s.accept(pkt(from_, seq=seq), seq, now)


# --- Session: outgoing seq -------------------------------------------------


def test_new_session_state(s: Session) -> None:
    assert s.id == b"0-0-0"
    assert s.out_seq == 0 and s.in_seq == 0
    assert s.addr is None
    assert s.paused is False
    assert s.last_handler == 100.0


def test_out_seq_counts_from_zero(s: Session) -> None:
    # the request packet is seq 0, every later packet +1
    assert [s.next_seq() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert s.out_seq == 5


def test_out_and_in_seq_are_independent(s: Session) -> None:
    s.next_seq()
    s.next_seq()
    accept(s, 0)
    assert s.out_seq == 2 and s.in_seq == 1
    assert s.next_seq() == 2


def test_new_session_restarts_seq() -> None:
    # a persistent connection's next request gets a new session at seq 0
    a = Session(b"0-0-0", 0.0)
    for _ in range(3):
        a.next_seq()
    accept(a, 0)
    b = Session(b"0-0-1", 0.0)
    assert b.next_seq() == 0 and b.in_seq == 0


# --- Session: incoming seq ---------------------------------------------------


def test_in_seq_advances_with_each_seq_packet(s: Session) -> None:
    for i in range(4):
        accept(s, i)
    assert s.in_seq == 4


def test_seqless_packets_accepted_and_do_not_advance(s: Session) -> None:
    # 4.1 observed: a (no seq), b (no seq), c (seq 0), d (no seq) all delivered
    accept(s, None)
    accept(s, None)
    assert s.in_seq == 0
    accept(s, 0)
    assert s.in_seq == 1
    accept(s, None)
    assert s.in_seq == 1
    accept(s, 1)
    assert s.in_seq == 2


@pytest.mark.parametrize("seqs, bad, expected", [
    ([], 1, 0),
    ([0], 0, 1),
    ([0, 1], 5, 2),
    ([0], 2, 1),
])
def test_wrong_seq_raises_bad_seq(s: Session, seqs: list[int], bad: int, expected: int) -> None:
    for q in seqs:
        accept(s, q)
    with pytest.raises(BadSeq) as e:
        accept(s, bad)
    assert f"expected {expected}, got {bad}" in str(e.value)
    assert s.in_seq == expected


def test_bad_seq_is_the_handlers_fault() -> None:
    # 4.4: bad seq closes the connection, no cancel back
    assert issubclass(BadSeq, HandlerEnded)
    assert BadSeq.cancel is False


def test_bad_seq_does_not_update_addr(s: Session) -> None:
    accept(s, 0, from_=b"h1")
    with pytest.raises(BadSeq):
        accept(s, 0, from_=b"h2")
    assert s.addr == b"h1"


def test_seq_continues_across_handoff(s: Session) -> None:
    # 4.5: the new handler must continue the old handler's numbering
    accept(s, 0, b"old")
    accept(s, 1, b"old")  # handoff-start
    s.paused = True
    with pytest.raises(BadSeq):
        accept(s, 0, b"new")
    accept(s, 2, b"new")
    assert s.addr == b"new"


def test_cancel_is_seq_checked_too(s: Session) -> None:
    # 4.1: condure does not exempt cancel from the check when seq is present
    with pytest.raises(BadSeq):
        s.accept(pkt(seq=3, type=b"cancel"), 3, 100.0)


# --- Session: reply address, timer, pause -------------------------------------


def test_addr_updates_with_every_accepted_packet(s: Session) -> None:
    accept(s, None, b"h1")
    assert s.addr == b"h1"
    accept(s, 0, b"h2")
    assert s.addr == b"h2"
    accept(s, None, b"h3")
    assert s.addr == b"h3"
    accept(s, 1, b"h1")
    assert s.addr == b"h1"


def test_from_of_64_bytes_accepted(s: Session) -> None:
    accept(s, None, b"x" * 64)
    assert s.addr == b"x" * 64


def test_from_longer_than_64_is_bad_message(s: Session) -> None:
    accept(s, None, b"h1")
    with pytest.raises(BadMessage):
        accept(s, None, b"x" * 65)
    assert s.addr == b"h1"
    assert BadMessage.cancel is False


def test_empty_from_clears_the_reply_address(s: Session) -> None:
    accept(s, None, b"h1")
    accept(s, None, b"")
    assert not s.addr


def test_empty_from_on_first_packet_leaves_addr_unknown(s: Session) -> None:
    accept(s, None, b"")
    assert not s.addr


def test_every_accepted_packet_resets_the_handler_timer(s: Session) -> None:
    accept(s, None, now=130.0)
    assert s.last_handler == 130.0
    accept(s, 0, now=150.5)
    assert s.last_handler == 150.5


def test_rejected_packet_does_not_reset_the_timer(s: Session) -> None:
    with pytest.raises(BadSeq):
        accept(s, 7, now=150.0)
    assert s.last_handler == 100.0


def test_accepted_packet_clears_pause(s: Session) -> None:
    # 4.5: the next packet from anyone ends the handoff pause
    s.paused = True
    accept(s, None, b"anyone")
    assert s.paused is False


def test_repr_shows_id_and_state(s: Session) -> None:
    accept(s, 0, b"h1")
    r = repr(s)
    assert "0-0-0" in r and "in=1" in r and "h1" in r


# --- SessionRegistry: ids and slots --------------------------------------------


def test_id_format_worker_slot_hexcounter() -> None:
    reg = SessionRegistry(worker=3)
    slot = reg.take_slot()
    assert slot == 0
    assert [reg.new_id(slot) for _ in range(3)] == [b"3-0-0", b"3-0-1", b"3-0-2"]


def test_counter_is_lower_case_hex_and_shared_by_slots() -> None:
    # 3.2: per-worker counter incremented for every id issued (observed 1-0-a, 0-1-e)
    reg = SessionRegistry(worker=1)
    a, b = reg.take_slot(), reg.take_slot()
    ids = [reg.new_id(a if i % 2 else b) for i in range(16)]
    assert ids[10] == b"1-1-a"
    assert ids[15] == b"1-0-f"
    assert all(x == x.lower() for x in ids)


def test_counter_wraps_at_2_32() -> None:
    reg = SessionRegistry()
    reg._counter = 2**32 - 2
    assert reg.new_id(0) == b"0-0-fffffffe"
    assert reg.new_id(0) == b"0-0-ffffffff"
    assert reg.new_id(0) == b"0-0-0"
    assert reg.new_id(0) == b"0-0-1"


def test_longest_id_fits_32_bytes() -> None:
    reg = SessionRegistry(worker=999)
    reg._counter = 2**32 - 1
    assert len(reg.new_id(9_999_999)) <= 32


def test_slots_are_reused_after_release() -> None:
    reg = SessionRegistry()
    s0, s1, s2 = reg.take_slot(), reg.take_slot(), reg.take_slot()
    assert (s0, s1, s2) == (0, 1, 2)
    reg.release_slot(s1)
    assert reg.take_slot() == 1
    assert reg.take_slot() == 3


def test_released_slot_gets_a_fresh_id() -> None:
    reg = SessionRegistry()
    slot = reg.take_slot()
    first = reg.new_id(slot)
    reg.release_slot(slot)
    again = reg.take_slot()
    assert again == slot
    assert reg.new_id(again) != first


def test_take_and_release_count_active() -> None:
    reg = SessionRegistry()
    a = reg.take_slot()
    reg.take_slot()
    assert reg.active == 2
    reg.release_slot(a)
    assert reg.active == 1


# --- SessionRegistry: routing ---------------------------------------------------


def test_register_owner_unregister() -> None:
    reg = SessionRegistry()
    reg.register(b"0-0-0", "conn-a")
    assert reg.route(pkt(rid=b"0-0-0")) == [("conn-a", b"0-0-0", None)]
    assert len(reg) == 1
    reg.unregister(b"0-0-0")
    assert reg.route(pkt(rid=b"0-0-0")) == []
    assert len(reg) == 0
    reg.unregister(b"0-0-0")  # twice is harmless


def test_route_single_id() -> None:
    reg = SessionRegistry()
    reg.register(b"0-0-0", "a")
    assert list(reg.route(pkt(rid=b"0-0-0", seq=3))) == [("a", b"0-0-0", 3)]


def test_route_ignores_unknown_ids() -> None:
    reg = SessionRegistry()
    reg.register(b"0-0-1", "a")
    assert list(reg.route(pkt(rid=b"0-0-0"))) == []
    assert list(reg.route(pkt(rid=b"1-0-1"))) == []


def test_route_ignores_superseded_id_on_same_slot() -> None:
    # 2.3: a response to an earlier request on the same persistent connection
    reg = SessionRegistry()
    slot = reg.take_slot()
    old = reg.new_id(slot)
    reg.register(old, "conn")
    reg.unregister(old)
    new = reg.new_id(slot)
    reg.register(new, "conn")
    assert list(reg.route(pkt(rid=old))) == []
    assert list(reg.route(pkt(rid=new))) == [("conn", new, None)]


def test_route_ids_must_match_byte_exact() -> None:
    reg = SessionRegistry()
    reg.register(b"0-0-a", "a")
    assert list(reg.route(pkt(rid=b"0-0-A"))) == []
    assert list(reg.route(pkt(rid=b"0-0-a "))) == []


def test_route_multi_id_with_per_id_seq() -> None:
    reg = SessionRegistry()
    reg.register(b"0-0-0", "a")
    reg.register(b"0-1-1", "b")
    reg.register(b"0-2-2", "c")
    p = Packet(ids=[(b"0-1-1", 4), (b"9-9-9", 0), (b"0-0-0", None), (b"0-5-5", 1),
                    (b"0-2-2", 0)], type=b"keep-alive")
    assert list(reg.route(p)) == [("b", b"0-1-1", 4), ("a", b"0-0-0", None),
                                  ("c", b"0-2-2", 0)]



def test_keepalive_schedule_and_pause() -> None:
    s = Session(b"1-0-0", 100.0, keepalive_interval=45.0)
    assert s.deadline(60.0) == 145.0
    assert s.keepalive(144.9, 45.0) is None
    assert s.keepalive(145.0, 45.0) is None  # no handler address yet: skipped, rescheduled
    assert s.keepalive_due == 190.0
    s.addr = b"handler"
    s.next_seq()  # the request
    assert s.keepalive(190.0, 45.0) == 1
    s.paused = True  # handoff: nothing goes to the old handler
    assert s.keepalive(235.0, 45.0) is None
    assert s.keepalive_due == 280.0


def test_expiry_follows_the_last_handler_packet() -> None:
    s = Session(b"1-0-0", 0.0)
    assert not s.expired(59.9, 60.0)
    assert s.expired(60.0, 60.0)
    s.last_handler = 30.0
    assert not s.expired(60.0, 60.0)
    assert s.deadline(60.0) == 45.0  # the keep-alive comes first
