"""The credit rule every forwarding side shares (zhttp/flow.py)."""
from __future__ import annotations

import pytest

from condure.zhttp.flow import Outflow


def drain(flow: Outflow) -> list[tuple]:
    out = []
    while (piece := flow.next()) is not None:
        out.append(piece)
    return out


def test_nothing_goes_without_credits() -> None:
    flow = Outflow(limit=100)
    flow.body(b"abc")
    assert drain(flow) == []
    assert flow.body_waiting == 3


@pytest.mark.parametrize("credits,limit,expect", [
    (10, 100, [b"abcdefghij"]),  # credits cut
    (100, 4, [b"abcd", b"efgh", b"ij"]),  # the limit cuts
    (5, 3, [b"abc", b"de"]),  # both, credits last
])
def test_body_pieces_are_min_of_credits_limit_and_length(credits: int, limit: int,
                                                         expect: list[bytes]) -> None:
    flow = Outflow(limit=limit, credits=credits)
    flow.body(b"abcdefghij", ended=True)
    pieces = drain(flow)
    assert [p[2] for p in pieces] == expect
    last_is_final = sum(len(x) for x in expect) == 10
    assert [p[3] for p in pieces] == [True] * (len(expect) - 1) + [not last_is_final]


def test_body_arriving_in_chunks_is_merged() -> None:
    flow = Outflow(limit=100)
    flow.body(b"ab")
    flow.body(b"cd")
    flow.grant(10)
    assert drain(flow) == [(b"", None, b"abcd", True)]
    assert flow.credits == 6


def test_late_end_of_body_needs_credit() -> None:
    flow = Outflow(limit=100, credits=2)
    flow.body(b"ab")
    assert drain(flow) == [(b"", None, b"ab", True)]
    flow.end()
    assert drain(flow) == []  # no credits: the end waits
    assert flow  # still something to send
    flow.grant(1)
    assert drain(flow) == [(b"", None, b"", False)]
    assert not flow
    assert flow.credits == 1  # an empty packet costs nothing


def test_end_with_the_last_bytes_rides_on_them() -> None:
    flow = Outflow(limit=100, credits=2)
    flow.body(b"ab", ended=True)
    assert drain(flow) == [(b"", None, b"ab", False)]


def test_messages_are_not_merged_and_pieces_do_not_cross() -> None:
    flow = Outflow(limit=100, credits=5)
    flow.message(b"text", b"abc", False)
    flow.message(b"text", b"def", True)
    flow.message(b"binary", b"gh", True)
    assert drain(flow) == [(b"", b"text", b"abc", True), (b"", b"text", b"de", True)]
    flow.grant(10)
    assert drain(flow) == [(b"", b"text", b"f", False), (b"", b"binary", b"gh", False)]


def test_empty_websocket_frames() -> None:
    flow = Outflow(limit=100)  # no credits at all
    flow.message(b"text", b"", False)  # no packet
    flow.message(b"binary", b"", True)  # an empty packet, free
    assert drain(flow) == [(b"", b"binary", b"", False)]


def test_control_goes_whole_or_waits() -> None:
    flow = Outflow(limit=2, credits=3)
    flow.control(b"ping", b"1234")
    assert drain(flow) == []
    flow.grant(1)
    assert drain(flow) == [(b"ping", None, b"1234", False)]  # the limit does not cut it
    assert flow.credits == 0


def test_close_keeps_its_place_and_costs_nothing() -> None:
    flow = Outflow(limit=100, credits=1)
    flow.message(b"text", b"ab", True)
    flow.other(b"close", 1000, b"bye")
    assert drain(flow) == [(b"", b"text", b"a", True)]
    flow.grant(1)
    assert drain(flow) == [(b"", b"text", b"b", False), (b"close", 1000, b"bye", False)]


def test_memoryview_rest_stays_bytes() -> None:
    text = "é".encode()  # two bytes: a piece may end inside the character
    flow = Outflow(limit=100, credits=1)
    flow.message(b"text", memoryview(text), True)
    first = flow.next()
    flow.grant(1)
    second = flow.next()
    assert first is not None and second is not None
    assert first[2] + second[2] == text
    assert type(first[2]) is bytes and type(second[2]) is bytes
