"""server/http2.py's FrameGuard (the frame headers read before h2 parses
them: header block bytes, control frames) and the head size bound of
`request_head`."""
from __future__ import annotations

import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame,
                              SettingsFrame, WindowUpdateFrame)

from condure.errors import HeadTooLarge
from condure.server import http2
from condure.server.http2 import CONTROL_MAX, PREFACE_SIZE, FrameGuard, head_size, request_head

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_preface_size() -> None:
    assert len(PREFACE) == PREFACE_SIZE


def _feed_bytewise(guard: FrameGuard, data: bytes) -> str | None:
    for i in range(len(data)):
        fault = guard.feed(data[i:i + 1])
        if fault is not None:
            return fault
    return None


def test_a_header_block_over_the_bound_is_refused_however_the_reads_cut_it() -> None:
    frames = (PREFACE + HeadersFrame(1, b"h" * 100).serialize()
              + ContinuationFrame(1, b"c" * 400).serialize() * 2)
    assert FrameGuard(1000).feed(frames) is None  # 900 bytes so far
    more = frames + ContinuationFrame(1, b"c" * 200).serialize()
    assert "CONTINUATION" in (FrameGuard(1000).feed(more) or "")
    assert "CONTINUATION" in (_feed_bytewise(FrameGuard(1000), more) or "")


def test_end_headers_ends_the_block() -> None:
    done = ContinuationFrame(1, b"c" * 600, flags=["END_HEADERS"]).serialize()
    one = HeadersFrame(1, b"h" * 300).serialize() + done
    guard = FrameGuard(1000)
    assert guard.feed(PREFACE + one) is None
    assert guard.feed(HeadersFrame(3, b"h" * 300).serialize() + done) is None
    # a whole HEADERS frame is no block (the frame size bounds it)
    assert guard.feed(HeadersFrame(5, b"h" * 5000, flags=["END_HEADERS"]).serialize()) is None


def test_control_frames_are_counted_acks_and_data_are_not() -> None:
    guard = FrameGuard(1000)
    ping = PingFrame(0, b"12345678").serialize()
    ack = PingFrame(0, b"12345678", flags=["ACK"]).serialize()
    assert guard.feed(PREFACE + ack * 2000) is None
    assert guard.feed(SettingsFrame(0, flags=["ACK"]).serialize() * 2000) is None
    assert guard.feed(DataFrame(1, b"x").serialize() * 2000) is None
    assert guard.feed(DataFrame(1, b"", flags=["END_STREAM"]).serialize() * 2000) is None
    assert guard.feed(WindowUpdateFrame(0, window_increment=1).serialize() * 2000) is None
    assert guard.feed(ping * CONTROL_MAX) is None
    assert "control frames" in (_feed_bytewise(guard, ping) or "")


@pytest.mark.parametrize("frame", [
    SettingsFrame(0), DataFrame(1, b""), ContinuationFrame(1, b""), b"\x00\x00\x00\x0b\x00"
    b"\x00\x00\x00\x00",  # an unknown type
])
def test_each_kind_counts(frame) -> None:
    raw = frame if isinstance(frame, bytes) else frame.serialize()
    assert "control frames" in (FrameGuard(10**9).feed(PREFACE + raw * (CONTROL_MAX + 1)) or "")


def test_the_count_starts_over_each_period(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(http2.time, "monotonic", lambda: now[0])
    guard = FrameGuard(1000, skip=0)
    ping = PingFrame(0, b"12345678").serialize()
    for _ in range(5):
        assert guard.feed(ping * CONTROL_MAX) is None
        now[0] += 1.5


def test_head_size_is_the_http1_head() -> None:
    fields = [(b"host", b"example.com"), (b"a", b"1")]
    assert head_size(b"GET", b"/p", fields) == len(
        b"GET /p HTTP/1.1\r\nhost: example.com\r\na: 1\r\n\r\n")


def test_request_head_over_its_capacity_is_431() -> None:
    fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/p"),
              (b":authority", b"example.com"), (b"x", b"y" * 100)]
    size = head_size(b"GET", b"/p", [(b"host", b"example.com"), (b"x", b"y" * 100)])
    assert request_head(fields, True, lambda n: size).target == b"/p"
    with pytest.raises(HeadTooLarge) as e:
        request_head(fields, True, lambda n: size - 1)
    assert e.value.status == 431 and e.value.capacity == size - 1
