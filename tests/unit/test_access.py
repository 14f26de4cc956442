"""condure/server/access.py: the access log line (D21), pure parts."""
from __future__ import annotations

import pytest

from condure.server.access import format_line, peer_text, value


def test_line_fields_in_order() -> None:
    assert format_line((b"127.0.0.1", 40312), b"GET", b"http://a/x?y=1", 200, 5, 1.25,
                       "handler") == ("peer=127.0.0.1:40312 method=GET uri=http://a/x?y=1"
                                      " status=200 bytes=5 ms=1.2 by=handler")


def test_line_without_response_and_with_error() -> None:
    assert format_line(None, None, None, None, 0, 0.04, "-", "ClientGone") == (
        "peer=- method=- uri=- status=- bytes=0 ms=0.0 by=- err=ClientGone")


def test_http2_request_line_names_the_protocol_and_stream_before_the_error() -> None:
    assert format_line((b"::1", 5), b"GET", b"http://a/", 200, 5, 1.0, "handler",
                       h2_stream=3) == ("peer=[::1]:5 method=GET uri=http://a/ status=200 bytes=5"
                                        " ms=1.0 by=handler proto=HTTP/2 stream=3")
    assert format_line(None, None, None, 431, 9, 0.0, "condure", "BadRequest", 5).endswith(
        " by=condure proto=HTTP/2 stream=5 err=BadRequest")


@pytest.mark.parametrize("peer,text", [
    ((b"127.0.0.1", 1), "127.0.0.1:1"),
    ((b"::1", 8000), "[::1]:8000"),
    (None, "-"),
])
def test_peer(peer: tuple[bytes, int] | None, text: str) -> None:
    assert peer_text(peer) == text


@pytest.mark.parametrize("data,text", [
    (b"http://a/b?c=d&e", "http://a/b?c=d&e"),
    (b"", '""'),
    (b"a b", '"a b"'),
    (b'q"x\\', '"q\\"x\\\\"'),
    (b"\xc3\xa9\x00\n", '"\\xc3\\xa9\\x00\\n"'),
    (None, "-"),
])
def test_values_never_hold_a_bare_space(data: bytes | None, text: str) -> None:
    assert value(data) == text
