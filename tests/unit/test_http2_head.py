"""server/http2.py's pure parts: the request head a stream's HEADERS make
(the one the same HTTP/1.1 request would have), the response fields; for an
extended CONNECT (RFC 8441), the head of the HTTP/1.1 upgrade and the accept."""
from __future__ import annotations

import pytest

from condure.errors import BadHandlerResponse, BadRequest
from condure.server import http1
from condure.server.http2 import accept_headers, request_head, response_headers
from condure.server.wshead import valid_upgrade


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


# --- extended CONNECT (RFC 8441) -------------------------------------------------------


def ws(*fields: tuple[bytes, bytes], protocol: bytes = b"websocket") -> list[tuple[bytes, bytes]]:
    return hs((b":protocol", protocol), (b"sec-websocket-version", b"13"), *fields,
              method=b"CONNECT", path=b"/chat")


def test_extended_connect_is_the_http1_upgrade() -> None:
    head = request_head(ws((b"origin", b"http://o.example")), False)
    assert (head.method, head.target, head.version) == (b"GET", b"/chat", b"2")
    names = [n for n, _ in head.headers]
    assert names == [b"host", b"upgrade", b"connection", b"sec-websocket-key",
                     b"sec-websocket-version", b"origin"]
    assert head.headers[1:3] == [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
    assert http1.is_websocket(head) and valid_upgrade(head)
    assert not head.has_body  # the DATA are frames, not a body
    other = request_head(ws(), False)
    assert other.header(b"sec-websocket-key") != head.header(b"sec-websocket-key")


def test_extended_connect_keeps_a_key_of_the_client() -> None:
    head = request_head(ws((b"sec-websocket-key", b"k")), False)
    assert [v for n, v in head.headers if n == b"sec-websocket-key"] == [b"k"]


@pytest.mark.parametrize("fields, ended, status", [
    (ws(protocol=b"connect-udp"), False, 501),
    (ws(), True, 400),  # no stream left to carry the session
])
def test_extended_connect_refusals(fields: list, ended: bool, status: int) -> None:
    with pytest.raises(BadRequest) as e:
        request_head(fields, ended)
    assert e.value.status == status


def test_plain_connect_stays_501() -> None:
    with pytest.raises(BadRequest) as e:
        request_head([(b":method", b"CONNECT"), (b":authority", b"example.com:443")], True)
    assert e.value.status == 501


def test_extended_connect_with_another_version_is_not_a_valid_upgrade() -> None:
    fields = [(n, b"8" if n == b"sec-websocket-version" else v) for n, v in ws()]
    assert not valid_upgrade(request_head(fields, False))


def test_accept_headers() -> None:
    out = accept_headers(b"Switching Protocols",
                         [(b"Sec-WebSocket-Protocol", b"chat"), (b"Upgrade", b"x"),
                          (b"Connection", b"x"), (b"Sec-WebSocket-Accept", b"x"),
                          (b"Sec-WebSocket-Extensions", b"x"), (b"Content-Length", b"0"),
                          (b"Keep-Alive", b"x"), (b"X-A", b"1")],
                         b"permessage-deflate")
    assert out == [(b":status", b"200"), (b"sec-websocket-protocol", b"chat"), (b"x-a", b"1"),
                   (b"sec-websocket-extensions", b"permessage-deflate")]


@pytest.mark.parametrize("reason, fields", [
    (b"OK\r\nX: 1", []),
    (b"OK", [(b"X-A", b"a\nb")]),
    (b"OK", [(b"Bad Name", b"1")]),
    (b"OK", [(b"Sec-WebSocket-Accept", b"a\rb")]),  # dropped, but checked as over HTTP/1.1
])
def test_accept_refusals(reason: bytes, fields: list) -> None:
    with pytest.raises(BadHandlerResponse):
        accept_headers(reason, fields, None)
