"""condure.handler.session: the handler side's rules as a plain object (issue 18),
and the codec pieces the library adds (zhttp/packet.py, Outflow.idle)."""
from __future__ import annotations

import pytest
import tnetstring

from condure.errors import BadSeq
from condure.handler.session import (BODY_WINDOW, EXPIRY, KEEPALIVE_INTERVAL,
                                     HandlerSession)
from condure.zhttp import packet as zp
from condure.zhttp.flow import Outflow


def condure_packet(seq: int | None, type_: bytes = b"", **fields: object) -> zp.Packet:
    m: dict = {b"from": b"condure", b"id": b"0-0-1"}
    if seq is not None:
        m[b"seq"] = seq
    if type_:
        m[b"type"] = type_
    m.update({k.replace("_", "-").encode(): v for k, v in fields.items()})
    return zp.parse(b"T" + tnetstring.dumps(m))


def new(credits: int = 8192) -> HandlerSession:
    return HandlerSession(b"0-0-1", b"condure", credits, now=100.0)


def test_our_seq_counts_from_zero_and_condures_from_one() -> None:
    s = new()
    assert [s.next_seq(100.0) for _ in range(3)] == [0, 1, 2]
    s.accept(condure_packet(1, b"keep-alive"), 1, 101.0)  # its request was 0
    s.accept(condure_packet(2, b"credit", credits=5), 2, 101.0)
    assert s.out.credits == 8192 + 5


def test_a_gap_in_condures_seq_breaks_the_session() -> None:
    s = new()
    s.accept(condure_packet(1), 1, 100.0)
    with pytest.raises(BadSeq):
        s.accept(condure_packet(3), 3, 100.0)


def test_keepalive_when_quiet_and_not_after_a_send() -> None:
    s = new()
    assert s.keepalive(100.0 + KEEPALIVE_INTERVAL - 1) is None
    s.next_seq(130.0)  # we sent something: quiet again from here
    assert s.keepalive(100.0 + KEEPALIVE_INTERVAL + 1) is None
    assert s.keepalive(130.0 + KEEPALIVE_INTERVAL) == 1
    assert s.keepalive(130.0 + KEEPALIVE_INTERVAL + 1) is None  # the next one is scheduled
    s.ended = True
    assert s.keepalive(1000.0) is None


def test_expiry_when_condure_is_silent() -> None:
    s = new()
    assert not s.expired(100.0 + EXPIRY - 1)
    s.accept(condure_packet(1, b"keep-alive"), 1, 150.0)
    assert not s.expired(100.0 + EXPIRY + 1)
    assert s.expired(150.0 + EXPIRY)


def test_credits_granted_as_the_application_reads() -> None:
    s = new()
    assert s.first_grant() == BODY_WINDOW
    assert s.first_grant() == 0
    assert s.consumed(BODY_WINDOW // 4 - 1) == 0  # not yet: a quarter of the window at a time
    assert s.consumed(1) == BODY_WINDOW // 4
    assert s.consumed(10) == 0


def test_response_bytes_wait_for_condures_credits() -> None:
    s = new(credits=10)
    s.out.body(b"x" * 25)
    assert s.out.next() == (zp.DATA, None, b"x" * 10, True)
    assert s.out.next() is None and not s.out.idle
    s.accept(condure_packet(1, b"credit", credits=10), 1, 100.0)
    assert s.out.next() == (zp.DATA, None, b"x" * 10, True)
    s.accept(condure_packet(2, b"credit", credits=100), 2, 100.0)
    assert s.out.next() == (zp.DATA, None, b"x" * 5, True)
    assert s.out.idle  # an open body with nothing in it


def test_outflow_idle() -> None:
    f = Outflow(100, 0)
    assert f.idle
    f.body(b"")
    assert f.idle
    f.end()
    assert not f.idle  # the end must still go
    g = Outflow(100, 0)
    g.message(b"text", b"hi", True)
    assert not g.idle


def test_handler_packet_and_request_info() -> None:
    raw = zp.handler_packet(b"h1", b"0-0-1", 3, b"credit", [(b"credits", 10)])
    assert tnetstring.loads(raw[1:]) == {b"from": b"h1", b"id": b"0-0-1", b"seq": 3,
                                         b"type": b"credit", b"credits": 10}
    assert raw.index(b"from") < raw.index(b"seq") < raw.index(b"credits")  # our order
    assert b"seq" not in zp.handler_packet(b"h1", b"x", None)  # req mode
    req = zp.parse(zp.request(b"condure", b"0-0-1", b"GET", b"http://a/b", [(b"Host", b"a")],
                              8192, False, True, (b"127.0.0.1", 5000)))
    assert zp.request_info(req) == (b"GET", b"http://a/b", (b"127.0.0.1", 5000))
    bad = zp.parse(b"T" + tnetstring.dumps({b"id": b"1", b"method": 5}))
    with pytest.raises(zp.ParseError):
        zp.request_info(bad)
