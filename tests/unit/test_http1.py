"""HTTP/1.x <-> ZHTTP mapping (condure/server/http1.py), pure and in memory.

Rules: shared/zhttp/server.md 3.3 (uri), 5.2 (Expect), 5.4-5.7 (response
head, framing, persistence), 8.1 (upgrade detection) and the deviations
D4-D10 of docs/deviations.md. Expected bytes follow condure's
Protocol::send_response (src/http1.rs): handler headers in order, then
Connection, then Content-Length / Transfer-Encoding.
"""
from __future__ import annotations

import pytest

from condure.errors import BadHandlerResponse, BadRequest
from condure.server import http1
from condure.server.http1 import (
    CHUNKED, LENGTH, NO_BODY, UNTIL_CLOSE, ResponseBody, error_response, is_persistent,
    is_websocket, request_uri, response_head, wants_continue,
)
from condure.server.request import RequestHead, check_head


def req(*headers: tuple[bytes, bytes], target: bytes = b"/", version: bytes = b"1.1",
        method: bytes = b"GET") -> RequestHead:
    """A checked head with exactly `headers` (the Host rule is the parser's
    business, tested in test_parser.py; these tests are about the mapping)."""
    others = [(n, v) for n, v in headers if n.lower() != b"host"]
    head = check_head(method, target, version, others + [(b"Host", b"x")])
    head.headers = list(headers)
    head.host = next((v for n, v in headers if n.lower() == b"host"), None)
    return head


# --- request_uri ------------------------------------------------------------


def test_uri_from_host_and_target() -> None:
    head = req((b"Host", b"example.com:8080"), target=b"/path?x=1")
    assert request_uri(head, b"http") == b"http://example.com:8080/path?x=1"


@pytest.mark.parametrize("scheme", [b"http", b"https", b"ws", b"wss"])
def test_uri_scheme_is_given(scheme: bytes) -> None:
    assert request_uri(req((b"Host", b"h")), scheme) == scheme + b"://h/"


def test_uri_host_header_name_any_case() -> None:
    assert request_uri(req((b"hOST", b"h")), b"http") == b"http://h/"


def test_uri_uses_first_host_header() -> None:
    head = req((b"Host", b"first"), (b"Host", b"second"))
    assert request_uri(head, b"http") == b"http://first/"


def test_uri_missing_host_is_localhost() -> None:
    assert request_uri(req(version=b"1.0", target=b"/x"), b"http") == b"http://localhost/x"


def test_uri_empty_host_is_localhost() -> None:
    # RFC 9112 3.2 lets a client send an empty Host (no authority); condure
    # would write http:///x (D16). A Host that is not a valid authority never
    # gets here: check_head refuses it (test_parser.py, the host_* cases).
    head = req((b"Host", b""), target=b"/x")
    assert request_uri(head, b"https") == b"https://localhost/x"


@pytest.mark.parametrize("host, uri", [(b"h:8080", b"http://h:8080"), (b"", b"http://localhost")])
def test_uri_of_options_asterisk_has_no_path(host: bytes, uri: bytes) -> None:
    # D16: the target URI of RFC 9112 3.3, the same as for the absolute form
    # `OPTIONS http://h:8080 HTTP/1.1` (D4); condure writes http://h:8080*
    head = req((b"Host", host), target=b"*", method=b"OPTIONS")
    assert request_uri(head, b"http") == uri
    absolute = req((b"Host", b"other"), target=uri, method=b"OPTIONS")
    assert request_uri(absolute, b"http") == uri


@pytest.mark.parametrize("target", [
    b"http://other.example/abs?q",
    b"https://other.example:8443/",
    b"HTTP://Other.Example/x",
])
def test_uri_absolute_form_used_as_given(target: bytes) -> None:
    # D4: condure pastes it after the Host (http://ahttp://...); we use it as given
    head = req((b"Host", b"a"), target=target)
    assert request_uri(head, b"http") == target


def test_uri_target_starting_with_http_but_not_absolute() -> None:
    head = req((b"Host", b"a"), target=b"/http://x")
    assert request_uri(head, b"http") == b"http://a/http://x"


def test_uri_of_4096_bytes_fits() -> None:
    prefix = b"http://a"
    target = b"/" + b"x" * (4096 - len(prefix) - 1)
    uri = request_uri(req((b"Host", b"a"), target=target), b"http")
    assert len(uri) == 4096


@pytest.mark.parametrize("host_len, target_len", [(1, 4096 - 8 + 1), (4000, 100), (1, 10000)])
def test_uri_over_4096_is_414(host_len: int, target_len: int) -> None:
    head = req((b"Host", b"h" * host_len), target=b"/" + b"x" * (target_len - 1))
    with pytest.raises(BadRequest) as e:
        request_uri(head, b"http")
    assert e.value.status == 414


def test_absolute_form_over_4096_is_414() -> None:
    head = req((b"Host", b"a"), target=b"http://a/" + b"x" * 4096)
    with pytest.raises(BadRequest) as e:
        request_uri(head, b"http")
    assert e.value.status == 414


# --- is_persistent (5.7, D7) ---------------------------------------------------


@pytest.mark.parametrize("version, connection, expected", [
    (b"1.1", [], True),
    (b"1.1", [b"close"], False),
    (b"1.1", [b"Close"], False),  # D7: condure keeps this open
    (b"1.1", [b"CLOSE"], False),
    (b"1.1", [b"keep-alive, close"], False),
    (b"1.1", [b" close "], False),
    (b"1.1", [b"keep-alive"], True),
    (b"1.1", [b"Upgrade"], True),
    (b"1.1", [b"closed"], True),
    (b"1.1", [b"TE", b"close"], False),
    (b"1.0", [], False),
    (b"1.0", [b"keep-alive"], True),
    (b"1.0", [b"Keep-Alive"], True),
    (b"1.0", [b"foo,keep-alive"], True),
    (b"1.0", [b"keep-alive, close"], False),
    (b"1.0", [b"keep-alive", b"Close"], False),
    (b"1.0", [b"close"], False),
])
def test_is_persistent(version: bytes, connection: list[bytes], expected: bool) -> None:
    head = req(*[(b"Connection", v) for v in connection], version=version)
    assert is_persistent(head) is expected


def test_connection_header_name_any_case() -> None:
    assert is_persistent(req((b"CONNECTION", b"close"))) is False


# --- wants_continue (5.2) --------------------------------------------------------


@pytest.mark.parametrize("headers, version, expected", [
    ([(b"Content-Length", b"5"), (b"Expect", b"100-continue")], b"1.1", True),
    ([(b"Transfer-Encoding", b"chunked"), (b"Expect", b"100-continue")], b"1.1", True),
    ([(b"Content-Length", b"5"), (b"Expect", b"foo, 100-continue")], b"1.1", True),
    ([(b"Content-Length", b"5"), (b"expect", b" 100-continue ")], b"1.1", True),
    ([(b"Content-Length", b"5")], b"1.1", False),
    ([(b"Expect", b"100-continue")], b"1.1", False),  # no body
    ([(b"Content-Length", b"5"), (b"Expect", b"100-continue")], b"1.0", False),
    ([(b"Content-Length", b"5"), (b"Expect", b"200-ok")], b"1.1", False),
    ([(b"Content-Length", b"5"), (b"Expect", b"100-continue-ish")], b"1.1", False),
])
def test_wants_continue(headers: list, version: bytes, expected: bool) -> None:
    assert wants_continue(req(*headers, version=version, method=b"POST")) is expected


def test_wants_continue_token_is_case_sensitive() -> None:
    head = req((b"Content-Length", b"5"), (b"Expect", b"100-Continue"), method=b"POST")
    assert wants_continue(head) is False


def test_wants_continue_with_content_length_zero() -> None:
    head = req((b"Content-Length", b"0"), (b"Expect", b"100-continue"), method=b"POST")
    assert wants_continue(head) is True


# --- is_websocket (8.1, D7) -----------------------------------------------------


@pytest.mark.parametrize("headers, expected", [
    ([(b"Upgrade", b"websocket")], True),
    ([(b"Upgrade", b"WebSocket")], True),  # D7
    ([(b"upgrade", b"WEBSOCKET")], True),
    ([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")], True),
    ([], False),
    ([(b"Upgrade", b"h2c")], False),
    ([(b"Upgrade", b"websocket2")], False),
    ([(b"Upgrade", b"")], False),
    ([(b"X-Upgrade", b"websocket")], False),
    ([(b"Connection", b"websocket")], False),
])
def test_is_websocket(headers: list, expected: bool) -> None:
    assert is_websocket(req((b"Host", b"a"), *headers)) is expected


# --- response_head: framing rows of 5.5 -----------------------------------------


def head_of(code: int = 200, reason: bytes = b"OK", headers: list | None = None,
            body: bytes = b"", more: bool = False, version: bytes = b"1.1",
            persistent: bool = True, head_request: bool = False
            ) -> tuple[bytes, ResponseBody, bool]:
    return response_head(version, code, reason, headers or [], body, more, persistent,
                         head_request)


def test_length_from_body_when_no_more() -> None:
    # 5.3 observed: HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone
    raw, body, persistent = head_of(body=b"done")
    assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    assert persistent is True
    assert body.framing == LENGTH and body.remaining == 4
    assert body.frame(b"done", True) == b"done"


def test_empty_body_gets_content_length_zero() -> None:
    raw, body, _ = head_of(code=404, reason=b"Not Found")
    assert raw == b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert body.frame(b"", True) == b""


def test_handler_headers_in_order_then_length() -> None:
    hs = [(b"Content-Type", b"text/plain"), (b"X-B", b"2"), (b"x-a", b"1"), (b"X-B", b"3")]
    raw, _, _ = head_of(headers=hs, body=b"hello\n")
    assert raw == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-B: 2\r\nx-a: 1\r\n"
                   b"X-B: 3\r\nContent-Length: 6\r\n\r\n")


def test_handler_content_length_honoured() -> None:
    raw, body, persistent = head_of(headers=[(b"Content-Length", b"10"), (b"X", b"y")],
                                    body=b"abc", more=True)
    assert raw == b"HTTP/1.1 200 OK\r\nX: y\r\nContent-Length: 10\r\n\r\n"
    assert body.framing == LENGTH and body.remaining == 10
    assert persistent is True


def test_handler_content_length_any_case_and_spaces() -> None:
    raw, body, _ = head_of(headers=[(b"content-LENGTH", b" 7 ")], body=b"1234567")
    assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
    assert body.remaining == 7


def test_chunked_on_1_1_without_connection_transfer_encoding() -> None:
    # D5: condure adds `Connection: Transfer-Encoding`; we do not
    raw, body, persistent = head_of(headers=[(b"Content-Type", b"text/plain")],
                                    body=b"part1\n", more=True)
    assert raw == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
    assert b"Connection" not in raw
    assert body.framing == CHUNKED
    assert persistent is True


def test_close_delimited_on_1_0() -> None:
    raw, body, persistent = head_of(version=b"1.0", more=True, persistent=False, body=b"x")
    assert raw == b"HTTP/1.0 200 OK\r\n\r\n"
    assert body.framing == UNTIL_CLOSE
    assert persistent is False


def test_close_delimited_on_1_0_keep_alive_loses_persistence() -> None:
    # D6: condure writes `Connection: keep-alive` and hangs; we close after the body
    raw, body, persistent = head_of(version=b"1.0", more=True, persistent=True)
    assert raw == b"HTTP/1.0 200 OK\r\n\r\n"
    assert body.framing == UNTIL_CLOSE
    assert persistent is False


@pytest.mark.parametrize("code", [204, 304])
@pytest.mark.parametrize("more", [False, True])
def test_no_body_codes(code: int, more: bool) -> None:
    raw, body, _ = head_of(code=code, reason=b"R", headers=[(b"Content-Length", b"5")],
                           body=b"hello", more=more)
    assert raw == b"HTTP/1.1 %d R\r\n\r\n" % code
    assert body.framing == NO_BODY
    assert body.frame(b"hello", False) == b""
    assert body.frame(b"", True) == b""


@pytest.mark.parametrize("code", [200, 205, 299, 303, 305, 404, 500])
def test_other_codes_have_a_length(code: int) -> None:
    raw, _, _ = head_of(code=code, reason=b"R", body=b"ab")
    assert raw.endswith(b"Content-Length: 2\r\n\r\n")


def test_1_0_status_line_and_keep_alive() -> None:
    raw, _, persistent = head_of(version=b"1.0", body=b"hi", persistent=True)
    assert raw == b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"
    assert persistent is True


def test_1_0_non_persistent_has_no_connection_header() -> None:
    raw, _, _ = head_of(version=b"1.0", body=b"hi", persistent=False)
    assert raw == b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"


def test_1_1_non_persistent_gets_connection_close() -> None:
    raw, _, persistent = head_of(body=b"hi", persistent=False)
    assert raw == b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"
    assert persistent is False


def test_connection_header_after_handler_headers_before_length() -> None:
    raw, _, _ = head_of(headers=[(b"A", b"1"), (b"Connection", b"keep-alive"), (b"B", b"2")],
                        body=b"x", persistent=False)
    assert raw == (b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nConnection: close\r\n"
                   b"Content-Length: 1\r\n\r\n")


def test_connection_close_before_transfer_encoding() -> None:
    raw, _, _ = head_of(headers=[(b"A", b"1")], more=True, persistent=False)
    assert raw == (b"HTTP/1.1 200 OK\r\nA: 1\r\nConnection: close\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")


def test_keep_alive_before_content_length_on_1_0() -> None:
    raw, _, _ = head_of(version=b"1.0", headers=[(b"A", b"1")], body=b"x")
    assert raw == (b"HTTP/1.0 200 OK\r\nA: 1\r\nConnection: keep-alive\r\n"
                   b"Content-Length: 1\r\n\r\n")


@pytest.mark.parametrize("name", [
    b"Content-Length", b"content-length", b"Transfer-Encoding", b"TRANSFER-ENCODING",
    b"Connection", b"connection",
])
def test_dropped_handler_headers(name: bytes) -> None:
    value = b"1" if b"length" in name.lower() else b"chunked"
    raw, _, _ = head_of(headers=[(b"X-Before", b"b"), (name, value), (b"X-After", b"a")],
                        body=b"x")
    assert raw.count(b"\r\n") == 5  # status, 2 handler headers, Content-Length, blank
    assert raw.startswith(b"HTTP/1.1 200 OK\r\nX-Before: b\r\nX-After: a\r\n")
    assert name + b":" not in raw or name == b"Content-Length"


def test_hop_by_hop_others_kept_no_date_no_server() -> None:
    hs = [(b"Keep-Alive", b"timeout=5"), (b"Upgrade", b"h2c"), (b"TE", b"trailers")]
    raw, _, _ = head_of(headers=hs, body=b"")
    assert raw == (b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n"
                   b"TE: trailers\r\nContent-Length: 0\r\n\r\n")
    assert b"Date:" not in raw and b"Server:" not in raw


def test_empty_reason_and_any_final_code_verbatim() -> None:
    assert head_of(reason=b"")[0].startswith(b"HTTP/1.1 200 \r\n")
    assert head_of(code=599, reason=b"X")[0].startswith(b"HTTP/1.1 599 X\r\n")
    assert head_of(code=299, reason=b"Odd")[0].startswith(b"HTTP/1.1 299 Odd\r\n")


def test_header_value_bytes_verbatim() -> None:
    raw, _, _ = head_of(headers=[(b"X-Bin", b"\xff\xfe caf\xc3\xa9"), (b"X-Empty", b"")])
    assert b"X-Bin: \xff\xfe caf\xc3\xa9\r\nX-Empty: \r\n" in raw


# --- HEAD (D8) ---------------------------------------------------------------------


def test_head_request_keeps_length_header_writes_no_body() -> None:
    raw, body, persistent = head_of(body=b"abcdef", head_request=True)
    assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
    assert body.frame(b"abcdef", True) == b""
    assert persistent is True
    assert body.overflow is False


def test_head_request_with_handler_length() -> None:
    raw, body, _ = head_of(headers=[(b"Content-Length", b"1000")], head_request=True)
    assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    assert body.frame(b"", True) == b""


def test_head_request_streamed_writes_no_chunks_at_all() -> None:
    raw, body, _ = head_of(more=True, head_request=True)
    assert raw.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert body.frame(b"abc", False) == b""
    assert body.frame(b"def", True) == b""  # not even the final 0-chunk


@pytest.mark.parametrize("framing", [LENGTH, CHUNKED, UNTIL_CLOSE, NO_BODY])
def test_head_only_frames_nothing(framing: str) -> None:
    body = ResponseBody(framing, 3, head_only=True)
    assert body.frame(b"abc", False) == b""
    assert body.frame(b"abcdef", True) == b""
    assert body.overflow is False


# --- D9 and invalid handler Content-Length -------------------------------------------


@pytest.mark.parametrize("header", [
    (b"X-Evil", b"a\r\nSet-Cookie: x=1"),
    (b"X-Evil", b"a\nb"),
    (b"X-Evil", b"a\rb"),
    (b"X-Evil", b"a\x00b"),
    (b"X-Ev\r\nil", b"a"),
    (b"X-Ev\nil", b"a"),
    (b"X-Ev\x00il", b"a"),
    (b"Content-Length", b"5\r\nX: y"),
    (b"Connection", b"close\r\n"),
], ids=["crlf-value", "lf-value", "cr-value", "nul-value", "crlf-name", "lf-name",
        "nul-name", "dropped-name-too", "connection-too"])
def test_cr_lf_nul_in_handler_headers_is_502(header: tuple[bytes, bytes]) -> None:
    with pytest.raises(BadHandlerResponse) as e:
        head_of(headers=[(b"X-Ok", b"1"), header], body=b"x")
    assert e.value.status == 502
    assert e.value.cancel is True  # D9: the handler gets cancel


@pytest.mark.parametrize("reason", [b"OK\r\nSet-Cookie: x=1", b"O\nK", b"O\rK", b"O\x00K"])
def test_cr_lf_nul_in_handler_reason_is_502(reason: bytes) -> None:
    # the reason ends up in the status line: the same splitting as a header (D9)
    with pytest.raises(BadHandlerResponse) as e:
        head_of(reason=reason, body=b"x")
    assert e.value.status == 502 and e.value.cancel is True


# --- D17: what a handler sends is checked like what a client sends -----------------


@pytest.mark.parametrize("code", [0, 1, 99, 600, 999, 1000, 65536, 1099511627776])
def test_code_outside_100_599_is_502(code: int) -> None:
    # condure 1.9.1 writes it (2**40 truncated to 16 bits: `HTTP/1.1 0 OK`)
    with pytest.raises(BadHandlerResponse) as e:
        head_of(code=code, body=b"x")
    assert e.value.status == 502 and e.value.cancel is True


@pytest.mark.parametrize("code", [100, 101, 102, 103, 199])
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_1xx_is_not_an_answer_502(code: int, version: bytes) -> None:
    # the handler's first data packet is the final response: condure 1.9.1
    # writes `HTTP/1.1 100 R` with no body and keeps the connection, and the
    # client waits for an answer that never comes (or takes the next one's)
    with pytest.raises(BadHandlerResponse) as e:
        head_of(code=code, reason=b"R", body=b"x", version=version)
    assert e.value.status == 502 and e.value.cancel is True


def test_bad_code_wins_over_a_bad_content_length() -> None:
    # the status line is checked first: the client still gets its 502
    with pytest.raises(BadHandlerResponse) as e:
        head_of(code=0, headers=[(b"Content-Length", b"abc")], body=b"x")
    assert e.value.status == 502


@pytest.mark.parametrize("name", [
    b"X Bad", b"", b"X:Y", b"X: Y", b" X", b"X\t", b"X\x01", b"X\x7f", b"X(", b"X)", b"X@",
    b"X,Y", b"X;", b"X/Y", b"X[", b"X{", b"X=", b"X?", b'X"', b"X\\", b"caf\xc3\xa9",
], ids=["space", "empty", "colon", "colon-space", "leading-space", "tab", "ctl", "del", "paren",
        "close-paren", "at", "comma", "semicolon", "slash", "bracket", "brace", "equals",
        "question", "quote", "backslash", "utf8"])
def test_header_name_that_is_not_a_token_is_502(name: bytes) -> None:
    with pytest.raises(BadHandlerResponse) as e:
        head_of(headers=[(b"X-Ok", b"1"), (name, b"v"), (b"X-Ok2", b"2")], body=b"x")
    assert e.value.status == 502 and e.value.cancel is True


def test_every_tchar_is_a_valid_name() -> None:
    name = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    raw, _, _ = head_of(headers=[(name, b"v"), (b"X", b"")], body=b"")
    assert raw == b"HTTP/1.1 200 OK\r\n" + name + b": v\r\nX: \r\nContent-Length: 0\r\n\r\n"


def test_single_bad_name_among_many_is_found() -> None:
    headers = [(b"X-H%d" % i, b"v") for i in range(63)]
    head_of(headers=headers)  # fine
    with pytest.raises(BadHandlerResponse):
        head_of(headers=headers[:40] + [(b"X H", b"v")] + headers[40:])


@pytest.mark.parametrize("value", [b"abc", b"-1", b"", b"1 2", b"0x10", b"1.5", b"9" * 19])
def test_invalid_handler_content_length(value: bytes) -> None:
    with pytest.raises(BadHandlerResponse) as e:
        head_of(headers=[(b"Content-Length", value)], body=b"x")
    # condure closes without a response, connmgr answers 500 (its case H): a
    # response we refuse to write is a 502, as D9
    assert e.value.status == 502
    assert e.value.cancel is True  # 4.4: ... closed, cancel


# --- ResponseBody.frame ------------------------------------------------------------


def test_chunk_sizes_in_lower_case_hex() -> None:
    body = ResponseBody(CHUNKED, 0, head_only=False)
    assert body.frame(b"x" * 5000, False) == b"1388\r\n" + b"x" * 5000 + b"\r\n"
    assert body.frame(b"y" * 0xAB, False) == b"ab\r\n" + b"y" * 0xAB + b"\r\n"


def test_chunked_final_packet() -> None:
    body = ResponseBody(CHUNKED, 0, head_only=False)
    assert body.frame(b"part1\n", False) == b"6\r\npart1\n\r\n"
    assert body.frame(b"end", True) == b"3\r\nend\r\n0\r\n\r\n"


def test_chunked_empty_packets() -> None:
    body = ResponseBody(CHUNKED, 0, head_only=False)
    # an empty non-final packet must not end the body
    assert body.frame(b"", False) == b""
    assert body.frame(b"", True) == b"0\r\n\r\n"


def test_chunks_split_at_0xffff() -> None:
    body = ResponseBody(CHUNKED, 0, head_only=False)
    data = bytes(range(256)) * 512 + b"tail"  # 0x20004 bytes
    out = body.frame(data, True)
    assert out == (b"ffff\r\n" + data[:0xFFFF] + b"\r\n"
                   + b"ffff\r\n" + data[0xFFFF:0x1FFFE] + b"\r\n"
                   + b"6\r\n" + data[0x1FFFE:] + b"\r\n"
                   + b"0\r\n\r\n")


def test_chunk_of_exactly_0xffff_is_one_chunk() -> None:
    body = ResponseBody(CHUNKED, 0, head_only=False)
    out = body.frame(b"z" * 0xFFFF, False)
    assert out == b"ffff\r\n" + b"z" * 0xFFFF + b"\r\n"
    assert http1.MAX_CHUNK == 0xFFFF


def test_length_passes_bytes_and_counts_down() -> None:
    body = ResponseBody(LENGTH, 10, head_only=False)
    assert body.frame(b"abc", False) == b"abc"
    assert body.remaining == 7
    assert body.frame(b"defghij", True) == b"defghij"
    assert body.remaining == 0
    assert body.overflow is False


def test_length_overflow_drops_surplus() -> None:
    # D10: condure writes `Content-Length: 2` + `abcdef`; we drop the surplus and close
    body = ResponseBody(LENGTH, 2, head_only=False)
    assert body.frame(b"abcdef", True) == b"ab"
    assert body.overflow is True
    assert body.remaining == 0


def test_length_overflow_across_packets() -> None:
    body = ResponseBody(LENGTH, 5, head_only=False)
    assert body.frame(b"abc", False) == b"abc"
    assert body.overflow is False
    assert body.frame(b"defg", False) == b"de"
    assert body.overflow is True
    assert body.frame(b"more", True) == b""
    assert body.overflow is True


def test_length_short_body_is_not_overflow() -> None:
    body = ResponseBody(LENGTH, 10, head_only=False)
    assert body.frame(b"abc", True) == b"abc"
    assert body.overflow is False and body.remaining == 7


def test_handler_length_overflow_via_response_head() -> None:
    raw, body, _ = head_of(headers=[(b"Content-Length", b"2")], body=b"abcdef")
    assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    assert body.frame(b"abcdef", True) == b"ab"
    assert body.overflow is True


def test_until_close_passes_bytes() -> None:
    body = ResponseBody(UNTIL_CLOSE, 0, head_only=False)
    assert body.frame(b"abc", False) == b"abc"
    assert body.frame(b"", True) == b""
    assert body.overflow is False


# --- error_response (D1, D9, D13) ------------------------------------------------------


@pytest.mark.parametrize("status, reason", [
    (400, b"Bad Request"),
    (413, b"Payload Too Large"),
    (414, b"URI Too Long"),
    (431, b"Request Header Fields Too Large"),
    (501, b"Not Implemented"),
    (502, b"Bad Gateway"),
    (504, b"Gateway Timeout"),
    (505, b"HTTP Version Not Supported"),
])
def test_error_response_bytes(status: int, reason: bytes) -> None:
    body = reason + b"\n"
    assert error_response(status) == (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status, reason, len(body), body))


def test_error_response_400_exact() -> None:
    assert error_response(400) == (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                                   b"Connection: close\r\nContent-Length: 12\r\n\r\n"
                                   b"Bad Request\n")


def test_error_response_http_1_0() -> None:
    assert error_response(504, b"1.0") == (
        b"HTTP/1.0 504 Gateway Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"Content-Length: 16\r\n\r\nGateway Timeout\n")


def test_error_response_unknown_status() -> None:
    assert error_response(599) == (b"HTTP/1.1 599 Error\r\nContent-Type: text/plain\r\n"
                                   b"Connection: close\r\nContent-Length: 6\r\n\r\nError\n")


@pytest.mark.parametrize("framing,length,head_only,pieces,sent", [
    (http1.LENGTH, 3, False, [b"ab", b"cde"], 3),  # the surplus is dropped (D10)
    (http1.LENGTH, 3, True, [b"abc"], 0),  # HEAD: nothing written (D8)
    (http1.CHUNKED, 0, False, [b"ab", b"cde"], 5),
    (http1.UNTIL_CLOSE, 0, False, [b"abcd"], 4),
    (http1.NO_BODY, 0, False, [b"ab"], 0),
])
def test_response_body_counts_body_bytes_sent(framing: str, length: int, head_only: bool,
                                              pieces: list[bytes], sent: int) -> None:
    body = http1.ResponseBody(framing, length, head_only)
    for i, piece in enumerate(pieces):
        body.frame(piece, i == len(pieces) - 1)
    assert body.sent == sent
