"""server/http2.py's pure parts: the request head a stream's HEADERS make
(the one the same HTTP/1.1 request would have), the response fields."""
from __future__ import annotations

import pytest

from condure.errors import BadHandlerResponse, BadRequest
from condure.server.http2 import request_head, response_headers


def hs(*fields: tuple[bytes, bytes], method: bytes = b"GET", path: bytes = b"/p",
       authority: bytes | None = b"example.com") -> list[tuple[bytes, bytes]]:
    out = [(b":method", method), (b":scheme", b"http"), (b":path", path)]
    if authority is not None:
        out.append((b":authority", authority))
    return out + list(fields)


def test_authority_is_the_first_field_host() -> None:
    head = request_head(hs((b"user-agent", b"x")), True)
    assert head.headers == [(b"host", b"example.com"), (b"user-agent", b"x")]
    assert head.host == b"example.com"
    assert (head.method, head.target, head.version) == (b"GET", b"/p", b"2")
    assert not head.has_body


def test_authority_replaces_a_host_field_that_agrees() -> None:
    head = request_head(hs((b"a", b"1"), (b"host", b"Example.COM")), True)
    assert head.headers == [(b"host", b"example.com"), (b"a", b"1")]


def test_a_host_field_that_disagrees_with_authority_is_400() -> None:
    with pytest.raises(BadRequest) as e:
        request_head(hs((b"host", b"other.example"), (b"a", b"1")), True)
    assert e.value.status == 400


def test_host_field_without_authority() -> None:
    head = request_head(hs((b"host", b"h.example"), authority=None), True)
    assert head.headers == [(b"host", b"h.example")]


def test_no_authority_no_host_is_400() -> None:
    with pytest.raises(BadRequest) as e:
        request_head(hs(authority=None), True)
    assert e.value.status == 400


def test_cookies_are_joined_where_the_first_was() -> None:
    head = request_head(hs((b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2"),
                           (b"cookie", b"c=3")), True)
    assert head.headers == [(b"host", b"example.com"), (b"cookie", b"a=1; b=2; c=3"),
                            (b"x", b"y")]


def test_body_without_content_length_has_unknown_length() -> None:
    head = request_head(hs(method=b"POST"), False)
    assert head.chunked and head.content_length is None and head.has_body


def test_body_with_content_length() -> None:
    head = request_head(hs((b"content-length", b"5"), method=b"POST"), False)
    assert head.content_length == 5 and not head.chunked


def test_content_length_without_a_body_is_refused() -> None:
    with pytest.raises(BadRequest):
        request_head(hs((b"content-length", b"5"), method=b"POST"), True)


def test_the_http1_rules_apply() -> None:
    with pytest.raises(BadRequest) as e:
        request_head(hs(method=b"CONNECT"), True)
    assert e.value.status == 501
    with pytest.raises(BadRequest) as e:
        request_head(hs(*[(b"x-%d" % i, b"v") for i in range(64)]), True)
    assert e.value.status == 431


def test_response_fields_lower_case_without_connection_specific_ones() -> None:
    out, length = response_headers(200, b"OK", [
        (b"Content-Type", b"text/plain"), (b"Connection", b"close"), (b"Keep-Alive", b"x"),
        (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"x"), (b"Content-Length", b"3")])
    assert out == [(b":status", b"200"), (b"content-type", b"text/plain"),
                   (b"content-length", b"3")]
    assert length == b"3"


@pytest.mark.parametrize("code,fields", [
    (101, []), (99, []), (600, []),
    (200, [(b"X-A", b"a\r\nb")]), (200, [(b"Bad Name", b"v")]),
])
def test_response_refusals(code: int, fields: list) -> None:
    with pytest.raises(BadHandlerResponse):
        response_headers(code, b"OK", fields)
