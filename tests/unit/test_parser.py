"""Request parsing (condure/server/parser.py): one table of cases, every parser.

`CASES` is the one table of request streams (inline bytes, or the wire corpus
tests/data/requests/*.http for the rows without data). Each stream is
replayed through every parser (`--http-parser h11` and `httptools`) whole,
byte by byte, line by line and in seeded random chunkings, driving the parser
the way the connection does: NEED_DATA -> feed the next piece, End ->
next_request(). Every parser must give exactly the expected requests
(method, target, version, headers as sent, body, framing) and, for a refused
stream, raise BadRequest with the expected D1 status - with no more bytes
than the case has: nothing is refused only after a timeout.
Accepted syntax: shared/zhttp/server.md section 6.1 and docs/deviations.md
(D1, D16).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from condure.errors import BadRequest, ClientGone, HeadTooLarge
from condure.server.parser import H11Parser, HttptoolsParser, make_parser
from condure.server.request import END, NEED_DATA, Body, RequestHead, check_head

CORPUS = Path(__file__).resolve().parent.parent / "data" / "requests"
BUFFER_SIZE = 8192  # condure's default --buffer-size, the head limit


def load(name: str) -> bytes:
    """Decode the gunicorn-style escapes (see tests/data/requests/README.md)."""
    data = (CORPUS / f"{name}.http").read_bytes()
    data = data.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n").replace(b"\\r", b"\r")
    return data.replace(b"\\n", b"\n").replace(b"\\t", b"\t").replace(b"\\0", b"\0")


# --- what a handler would see -----------------------------------------------------


@dataclass
class Req:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunked: bool = False
    content_length: int | None = None
    done: bool = True  # False: the stream stopped (or was refused) inside this request
    events: list[str] = field(default_factory=list, compare=False)


H = (b"Host", b"a")
TE = (b"Transfer-Encoding", b"chunked")
MANY = [(b"X-H%d" % i, b"%d" % i) for i in range(63)]


def get(target: bytes = b"/", *headers: tuple[bytes, bytes], version: bytes = b"1.1",
        method: bytes = b"GET") -> Req:
    return Req(method, target, version, list(headers) if headers else [H])


def posted(body: bytes, *headers: tuple[bytes, bytes], target: bytes = b"/c",
           method: bytes = b"POST", done: bool = True) -> Req:
    """A Content-Length request with `headers` after Host."""
    return Req(method, target, b"1.1", [H, *headers, (b"Content-Length", b"%d" % len(body))],
               body, content_length=len(body), done=done)


def chunked(body: bytes, *, target: bytes = b"/c", done: bool = True) -> Req:
    return Req(b"POST", target, b"1.1", [H, TE], body, chunked=True, done=done)


def head_of(line: bytes, *fields: bytes, eol: bytes = b"\r\n") -> bytes:
    """A request head: the request line, `fields` (Host: a first) and the blank line."""
    return eol.join([line, b"Host: a", *fields, b""]) + eol


def chunked_post(body: bytes, target: bytes = b"/c") -> bytes:
    return head_of(b"POST " + target + b" HTTP/1.1", b"Transfer-Encoding: chunked") + body


def with_field(field_line: bytes) -> bytes:
    return head_of(b"GET / HTTP/1.1", field_line)


# the start of a TLS ClientHello (record type 0x16, version 3.1, handshake
# type 1), as a browser sends to an https:// URL on a plain port; random bytes
# without an LF, so only the first byte can tell that it is not HTTP
CLIENT_HELLO = bytes.fromhex("16030102000100 01fc0303") + bytes(range(0x40, 0x60))


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes | None  # None: tests/data/requests/<name>.http
    requests: tuple[Req, ...] = ()  # what the handler gets, in order
    status: int | None = None  # then the stream is refused with this status (D1)

    def stream(self) -> bytes:
        return load(self.name) if self.data is None else self.data


def ok(name: str, data: bytes | None, *requests: Req) -> Case:
    return Case(name, data, requests)


def bad(name: str, data: bytes | None, status: int, *requests: Req) -> Case:
    """Refused with `status` after the (partial) `requests` before the error."""
    return Case(name, data, requests, status)


CASES: list[Case] = [
    # --- the corpus ---------------------------------------------------------------
    ok("get_simple", None, get(b"/path?x=1", (b"Host", b"example.com:8080"),
                               (b"User-Agent", b"probe"), (b"Accept", b"*/*"))),
    ok("get_http10", None, get(b"/old", (b"User-Agent", b"probe"), version=b"1.0")),
    ok("post_content_length", None, Req(
        b"POST", b"/submit", b"1.1",
        [H, (b"Content-Type", b"text/plain"), (b"Content-Length", b"11")],
        b"hello world", content_length=11)),
    ok("post_content_length_zero", None, posted(b"", target=b"/empty")),
    ok("post_chunked_ext_trailers", None, chunked(b"hello world0123456789", target=b"/chunked")),
    ok("post_chunked_upper_hex", None, Req(b"PUT", b"/up", b"1.1", [H, TE],
                                           b"x" * 26 + b"y" * 26, chunked=True)),
    ok("lf_only", None, Req(b"POST", b"/lf", b"1.1", [H, (b"Content-Length", b"3")], b"abc",
                            content_length=3)),
    ok("leading_empty_lines", None, get(b"/lead")),
    ok("pipelined", None, get(b"/one"), posted(b"body", target=b"/two")),
    ok("pipelined_three", None, get(b"/1"), chunked(b"abc", target=b"/2"),
       Req(b"GET", b"/3", b"1.0", [])),
    ok("header_case", None, get(b"/", (b"hOsT", b"a"), (b"X-MiXeD-CaSe", b"VaLuE"),
                                (b"content-TYPE", b"Text/Plain"))),
    ok("duplicate_headers", None, get(b"/", H, (b"X-Dup", b"a"), (b"Cookie", b"c=1"),
                                      (b"X-Dup", b"b"), (b"Cookie", b"d=2"))),
    ok("headers_64", None, get(b"/many", H, *MANY)),
    ok("head_8100", None, get(b"/big", H, (b"X-Big", b"b" * (8100 - 39)))),
    ok("upgrade_websocket", None, get(b"/ws", H, (b"Upgrade", b"websocket"),
                                      (b"Connection", b"Upgrade"),
                                      (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                                      (b"Sec-WebSocket-Version", b"13"))),
    bad("bad_request_line", None, 400),
    bad("bad_request_line_lowercase_version", None, 400),
    bad("bad_request_line_http09", None, 400),
    bad("header_without_colon", None, 400),
    bad("header_space_before_colon", None, 400),
    bad("obs_fold", None, 400),
    bad("bad_content_length", None, 400),
    bad("negative_content_length", None, 400),
    bad("conflicting_content_length", None, 400),
    # condure lets the last of several win; we refuse duplicates outright so no
    # parser downstream can frame the body differently (request smuggling)
    bad("duplicate_identical_content_length", None, 400),
    bad("content_length_and_chunked", None, 400),
    bad("te_gzip", None, 501),
    bad("te_gzip_chunked", None, 501),
    bad("bad_chunk_size", None, 400, chunked(b"", target=b"/", done=False)),
    bad("headers_65", None, 431),
    bad("head_8300", None, 431),
    bad("http_2_0", None, 505),
    bad("http_1_1_no_host", None, 400),

    # --- methods: any token (RFC 9110 9.1), as condure forwards them ---------------
    ok("method_brew", b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", get(b"/pot", method=b"BREW")),
    ok("method_x_custom", b"X-CUSTOM /x HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"/x", method=b"X-CUSTOM")),
    ok("method_lower_case", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", get(method=b"get")),
    ok("method_every_tchar", b"A!#$%&'*+-.^_`|~9 / HTTP/1.1\r\nHost: a\r\n\r\n",
       get(method=b"A!#$%&'*+-.^_`|~9")),
    ok("method_purge", b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", get(b"/x", method=b"PURGE")),
    ok("method_extension_with_body",
       b"BREW /pot HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
       b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
       posted(b"abc", target=b"/pot", method=b"BREW"), get(b"/next")),
    ok("method_extension_between_gets",
       b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nMKCALENDAR /2 HTTP/1.1\r\nHost: a\r\n\r\n"
       b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"/1"), get(b"/2", method=b"MKCALENDAR"), get(b"/3")),
    bad("method_with_separator", b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("method_with_control", b"GE\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),

    # --- the request line ----------------------------------------------------------------
    bad("two_spaces_after_method", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("two_spaces_before_version", b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("space_after_version", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    bad("tab_as_separator", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("space_before_method", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("request_line_without_target", b"GET HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("version_1_2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    bad("version_3_0", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    bad("version_0_9", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    bad("version_two_digits", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    bad("version_without_minor", b"GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
    bad("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    bad("tls_client_hello", CLIENT_HELLO, 400),
    bad("sslv2_client_hello", b"\x80\x2e\x01\x00\x02\x00\x15", 400),
    bad("binary_garbage", b"\x00\x01\x02\x03", 400),

    # --- request-target forms (RFC 9112 3.2) ------------------------------------
    ok("target_absolute", b"GET http://other.example/abs?q HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"http://other.example/abs?q")),
    ok("target_absolute_upper_case_no_path",
       b"GET HTTPS://Other.Example:8443 HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"HTTPS://Other.Example:8443")),
    ok("target_absolute_ipv6", b"GET http://[::1]:8080/x HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"http://[::1]:8080/x")),
    ok("target_asterisk_options", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"*", method=b"OPTIONS")),
    ok("target_double_slash", b"GET //a//b HTTP/1.1\r\nHost: a\r\n\r\n", get(b"//a//b")),
    ok("target_escapes_and_query",
       b"GET /a/b%20c;p=1?x=1&y=%2F&z HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"/a/b%20c;p=1?x=1&y=%2F&z")),
    # condure's parser takes these although RFC 3986 does not (curl sends | and {} raw)
    ok("target_unusual_ascii", b'GET /a|b{c}^"\\`[]#f HTTP/1.1\r\nHost: a\r\n\r\n',
       get(b'/a|b{c}^"\\`[]#f')),
    bad("target_relative", b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_query_only", b"GET ?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_asterisk_get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_asterisk_suffix", b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_authority_get", b"GET a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_absolute_userinfo", b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_absolute_empty_host", b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_absolute_bad_port", b"GET http://a:8x/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_absolute_other_scheme", b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_absolute_no_slashes", b"GET http:a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_less_than", b"GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_del", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("target_non_ascii", b"GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
    bad("connect_origin_form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 501),

    # --- line endings: bare LF anywhere in the head; never a bare CR -------------------
    ok("lf_in_fields_only", b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\n\n", get(b"/", H, (b"X-A", b"1"))),
    ok("lf_in_request_line_only", b"GET / HTTP/1.1\nHost: a\r\nX-A: 1\r\n\r\n",
       get(b"/", H, (b"X-A", b"1"))),
    ok("lf_blank_line_only", b"GET / HTTP/1.1\r\nHost: a\r\n\n", get()),
    ok("lf_blank_line_after_crlf_fields", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\n\r\n",
       get(b"/", H, (b"X-A", b"1"))),
    ok("lf_request_after_crlf_request",
       b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\nHost: a\n\n",
       get(b"/1"), get(b"/2")),
    ok("lf_chunked_request_head", b"POST /c HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n"
       b"3\r\nabc\r\n0\r\n\r\n", chunked(b"abc")),
    ok("leading_lf_lines", b"\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", get()),
    ok("empty_lines_between_requests",
       b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\n\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"/1"), get(b"/2")),
    bad("bare_cr_line_endings", b"GET / HTTP/1.1\rHost: a\r\r", 400),
    bad("bare_cr_after_request_line", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    bad("bare_cr_in_field_value", with_field(b"X-A: a\rb"), 400),
    bad("bare_cr_before_blank_line", b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", 400),
    bad("bare_cr_before_request_line", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    bad("bare_cr_in_target", b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400),

    # --- field lines -----------------------------------------------------------------
    ok("value_obs_text", with_field(b"X-A: caf\xe9 \xff"), get(b"/", H, (b"X-A", b"caf\xe9 \xff"))),
    ok("value_inner_tab", with_field(b"X-A: a\tb"), get(b"/", H, (b"X-A", b"a\tb"))),
    ok("value_trimmed_tabs", with_field(b"X-A:\t v \t"), get(b"/", H, (b"X-A", b"v"))),
    ok("value_trimmed_spaces", with_field(b"X-Spaces:   padded value   "),
       get(b"/", H, (b"X-Spaces", b"padded value"))),
    ok("value_empty", with_field(b"X-Empty:") + b"", get(b"/", H, (b"X-Empty", b""))),
    ok("value_only_spaces", with_field(b"X-Empty:    "), get(b"/", H, (b"X-Empty", b""))),
    ok("value_with_colons", with_field(b"X-A: b: c:d"), get(b"/", H, (b"X-A", b"b: c:d"))),
    ok("name_every_tchar", with_field(b"!#$%&'*+-.^_`|~09aZ: v"),
       get(b"/", H, (b"!#$%&'*+-.^_`|~09aZ", b"v"))),
    bad("value_del", with_field(b"X-A: a\x7fb"), 400),
    bad("value_control_01", with_field(b"X-A: \x01"), 400),
    bad("value_nul", with_field(b"X-A: a\x00b"), 400),
    bad("value_vertical_tab", with_field(b"X-A: a\x0bb"), 400),
    bad("value_form_feed", with_field(b"X-A: a\x0cb"), 400),
    bad("value_escape", with_field(b"X-A: \x1b[31m"), 400),
    bad("name_control", with_field(b"X\x01A: b"), 400),
    bad("name_empty", with_field(b": b"), 400),
    bad("name_with_space", with_field(b"X A: b"), 400),
    bad("name_non_ascii", with_field(b"X-\xe9: b"), 400),
    bad("whitespace_before_first_field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    bad("obs_fold_tab", with_field(b"X-A: 1\r\n\tfolded"), 400),

    # --- Host (RFC 9110 7.2: uri-host [":" port]; D16) ------------------------------
    ok("host_ipv4_port", b"GET / HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n",
       get(b"/", (b"Host", b"10.0.0.1:8080"))),
    ok("host_ipv6_port", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
       get(b"/", (b"Host", b"[::1]:8080"))),
    ok("host_ipv6_embedded_ipv4", b"GET / HTTP/1.1\r\nHost: [::ffff:1.2.3.4]\r\n\r\n",
       get(b"/", (b"Host", b"[::ffff:1.2.3.4]"))),
    ok("host_ipvfuture", b"GET / HTTP/1.1\r\nHost: [v1.fe:x]\r\n\r\n",
       get(b"/", (b"Host", b"[v1.fe:x]"))),
    ok("host_empty_port", b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n", get(b"/", (b"Host", b"a:"))),
    ok("host_percent_encoded", b"GET / HTTP/1.1\r\nHost: ex%41mple\r\n\r\n",
       get(b"/", (b"Host", b"ex%41mple"))),
    ok("host_sub_delims", b"GET / HTTP/1.1\r\nHost: a_b~c!$&'()*+,;=d\r\n\r\n",
       get(b"/", (b"Host", b"a_b~c!$&'()*+,;=d"))),
    ok("host_empty", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", get(b"/", (b"Host", b""))),
    bad("host_path", b"GET / HTTP/1.1\r\nHost: evil/admin?\r\n\r\n", 400),
    bad("host_userinfo", b"GET / HTTP/1.1\r\nHost: a@evil\r\n\r\n", 400),
    bad("host_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    bad("host_bad_port", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
    bad("host_two_ports", b"GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n", 400),
    bad("host_port_only", b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
    bad("host_ipv6_unclosed", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    bad("host_ipv6_invalid", b"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400),
    bad("host_ipv6_unbracketed", b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", 400),
    bad("host_bad_percent", b"GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", 400),
    bad("host_utf8", b"GET / HTTP/1.1\r\nHost: b\xc3\xbccher.example\r\n\r\n", 400),
    bad("host_not_utf8", b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n", 400),
    bad("host_twice", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    bad("host_invalid_http10", b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n", 400),

    # --- framing: Content-Length and Transfer-Encoding --------------------------------
    ok("content_length_leading_zeros", head_of(b"POST /c HTTP/1.1", b"Content-Length: 003")
       + b"abc", Req(b"POST", b"/c", b"1.1", [H, (b"Content-Length", b"003")], b"abc",
                     content_length=3)),
    ok("content_length_body_looks_like_a_request",
       head_of(b"POST /c HTTP/1.1", b"Content-Length: 28") + b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
       posted(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")),
    ok("te_chunked_any_case", head_of(b"POST /c HTTP/1.1", b"Transfer-Encoding: Chunked")
       + b"0\r\n\r\n", Req(b"POST", b"/c", b"1.1", [H, (b"Transfer-Encoding", b"Chunked")],
                           chunked=True)),
    bad("te_repeated_lines", head_of(b"POST /c HTTP/1.1", b"Transfer-Encoding: chunked",
                                     b"Transfer-Encoding: chunked") + b"0\r\n\r\n", 501),
    bad("te_repeated_in_list", head_of(b"POST /c HTTP/1.1", b"Transfer-Encoding: chunked, chunked")
        + b"0\r\n\r\n", 501),
    bad("te_identity", head_of(b"POST /c HTTP/1.1", b"Transfer-Encoding: identity"), 501),
    bad("te_chunked_not_last", head_of(b"POST /c HTTP/1.1", b"Transfer-Encoding: chunked, gzip")
        + b"0\r\n\r\n", 501),
    bad("te_unknown_with_content_length",
        head_of(b"POST /c HTTP/1.1", b"Content-Length: 3", b"Transfer-Encoding: gzip") + b"abc", 400),
    bad("content_length_list", head_of(b"POST /c HTTP/1.1", b"Content-Length: 3, 3") + b"abc", 400),
    bad("content_length_plus", head_of(b"POST /c HTTP/1.1", b"Content-Length: +3") + b"abc", 400),
    bad("content_length_hex", head_of(b"POST /c HTTP/1.1", b"Content-Length: 0x3") + b"abc", 400),
    bad("content_length_inner_space", head_of(b"POST /c HTTP/1.1", b"Content-Length: 1 2"), 400),
    bad("content_length_19_digits", head_of(b"POST /c HTTP/1.1", b"Content-Length: " + b"1" * 19),
        400),

    # --- chunked bodies (RFC 9112 7.1) ------------------------------------------------
    ok("chunk_whitespace_before_extension", chunked_post(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"),
       chunked(b"hello")),
    ok("chunk_tab_before_extension", chunked_post(b"5\t;a=b\r\nhello\r\n0\r\n\r\n"),
       chunked(b"hello")),
    ok("chunk_whitespace_after_size", chunked_post(b"5 \r\nhello\r\n0\r\n\r\n"), chunked(b"hello")),
    ok("chunk_quoted_extension", chunked_post(b'5;n="quoted; value"\r\nhello\r\n0;x=y\r\n\r\n'),
       chunked(b"hello")),
    ok("chunk_size_leading_zeros", chunked_post(b"0000000000000005\r\nhello\r\n000\r\n\r\n"),
       chunked(b"hello")),
    ok("chunk_trailer_content_length",
       chunked_post(b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"), chunked(b"hello")),
    ok("chunk_trailer_transfer_encoding",
       chunked_post(b"5\r\nhello\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n"), chunked(b"hello")),
    ok("chunk_trailers_any", chunked_post(b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nHost: b\r\n\r\n"),
       chunked(b"hello")),
    ok("chunk_trailer_lf", chunked_post(b"5\r\nhello\r\n0\r\nX-Sum: 1\n\n"), chunked(b"hello")),
    ok("chunk_empty_body", chunked_post(b"0\r\n\r\n"), chunked(b"")),
    ok("chunk_largest_size_waits", chunked_post(b"7fffffffffffffff\r\nhello"),
       chunked(b"hello", done=False)),
    ok("chunked_then_get", chunked_post(b"3\r\nabc\r\n0\r\n\r\n") + b"GET /n HTTP/1.1\r\nHost: a\r\n\r\n",
       chunked(b"abc"), get(b"/n")),
    bad("chunk_size_2_63", chunked_post(b"8000000000000000\r\nhello"), 400,
        chunked(b"", done=False)),
    bad("chunk_size_2_64", chunked_post(b"10000000000000000\r\nhello"), 400,
        chunked(b"", done=False)),
    bad("chunk_size_17_digits", chunked_post(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_size_empty", chunked_post(b"\r\nhello\r\n0\r\n\r\n"), 400, chunked(b"", done=False)),
    bad("chunk_size_negative", chunked_post(b"-5\r\nhello\r\n0\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_size_0x", chunked_post(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, chunked(b"", done=False)),
    bad("chunk_size_inner_space", chunked_post(b"5 5\r\nhello\r\n0\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_size_leading_space", chunked_post(b" 5\r\nhello\r\n0\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_size_bare_lf", chunked_post(b"5\nhello\r\n0\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_size_bare_cr", chunked_post(b"5\rhello\r\n0\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_extension_bare_cr", chunked_post(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_extension_control", chunked_post(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_data_too_long", chunked_post(b"5\r\nhelloX\r\n0\r\n\r\n"), 400,
        chunked(b"hello", done=False)),
    bad("chunk_data_bare_lf", chunked_post(b"5\r\nhello\n0\r\n\r\n"), 400,
        chunked(b"hello", done=False)),
    bad("chunk_last_bare_lf", chunked_post(b"5\r\nhello\r\n0\n\r\n"), 400,
        chunked(b"hello", done=False)),
    bad("chunk_trailer_without_colon", chunked_post(b"0\r\nbad trailer\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_trailer_control", chunked_post(b"0\r\nX-A: \x01\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_trailer_obs_fold", chunked_post(b"0\r\nX-A: 1\r\n 2\r\n\r\n"), 400,
        chunked(b"", done=False)),
    bad("chunk_trailer_bare_cr", chunked_post(b"0\r\nX-A: 1\r\r\n"), 400, chunked(b"", done=False)),

    # --- requests around an upgrade or a close -------------------------------------------
    ok("upgrade_h2c_then_get",
       head_of(b"GET /1 HTTP/1.1", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
               b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA") + b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"/1", H, (b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"),
           (b"HTTP2-Settings", b"AAMAAABkAARAAAAAAAIAAAAA")),
       get(b"/2")),
    ok("upgrade_with_body_then_get",
       head_of(b"POST /u HTTP/1.1", b"Connection: upgrade", b"Upgrade: foo", b"Content-Length: 3")
       + b"abcGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
       posted(b"abc", (b"Connection", b"upgrade"), (b"Upgrade", b"foo"), target=b"/u"),
       get(b"/2")),
    ok("connection_close_then_get",
       head_of(b"GET /1 HTTP/1.1", b"Connection: close") + b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
       get(b"/1", H, (b"Connection", b"close")), get(b"/2")),
    ok("http10_then_http10", b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
       Req(b"GET", b"/1", b"1.0", []), Req(b"GET", b"/2", b"1.0", [])),
    bad("get_then_bad_request_line", b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET  /2 HTTP/1.1\r\n\r\n",
        400, get(b"/1")),
    bad("head_without_end_too_large", b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000, 431),
    bad("request_line_too_large", b"GET /" + b"a" * 9000, 431),
]


def test_case_names_are_unique_and_cover_the_corpus() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    corpus = {p.stem for p in CORPUS.glob("*.http")}
    assert corpus == {c.name for c in CASES if c.data is None}


# --- chunkings ---------------------------------------------------------------


def whole(data: bytes) -> list[bytes]:
    return [data]


def per_byte(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def per_line(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def randomly(seed: int) -> Callable[[bytes], list[bytes]]:
    def split(data: bytes) -> list[bytes]:
        rng = random.Random(seed)
        limit = [3, 17, 64, 512, len(data)][seed % 5]
        out, i = [], 0
        while i < len(data):
            n = rng.randint(1, max(1, limit))
            out.append(data[i:i + n])
            i += n
        return out
    return split


CHUNKINGS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": whole, "bytes": per_byte, "lines": per_line,
    **{f"random{s}": randomly(s) for s in range(5)},
}


PARSERS = {"h11": H11Parser, "httptools": HttptoolsParser}


@pytest.fixture(params=list(PARSERS))
def parser_cls(request: pytest.FixtureRequest) -> type:
    """Every parser must behave the same (limits and D1 statuses included)."""
    return PARSERS[request.param]


def replay(chunks: list[bytes], max_head: int = BUFFER_SIZE,
           cls: type = H11Parser, texts: list[str | None] | None = None
           ) -> tuple[list[Req], int | str | None]:
    """Drive the parser as the connection does, feeding no more than `chunks`.

    Returns the requests seen (the last one with done=False if the stream
    stopped or was refused inside it) and the status of the refusal, if any
    ("waiting" if the parser holds bytes of an unfinished head); the
    refusal's body text goes to `texts`.
    """
    parser = cls(max_head)
    pieces = iter(chunks)
    seen: list[Req] = []
    cur: Req | None = None
    status = None
    try:
        while True:
            ev = parser.next_event()
            if ev is NEED_DATA:
                piece = next(pieces, None)
                if piece is None:
                    break
                parser.feed(piece)
            elif isinstance(ev, RequestHead):
                assert cur is None, "head inside a request"
                cur = Req(ev.method, ev.target, ev.version, list(ev.headers),
                          chunked=ev.chunked, content_length=ev.content_length, events=["head"])
            elif isinstance(ev, Body):
                assert cur is not None, "body before head"
                assert ev.data, "empty body event"
                cur.body += ev.data
                cur.events.append("body")
            elif ev is END:
                assert cur is not None, "end before head"
                seen.append(cur)
                cur = None
                parser.next_request()
            else:
                pytest.fail(f"unexpected event {ev!r}")
    except BadRequest as e:
        assert e.condition == "bad-request"
        status = e.status
        if texts is not None:
            texts.append(e.text)
    if cur is not None:
        cur.done = False
        seen.append(cur)
    elif status is None and parser.buffered:
        status = "waiting"  # for more of a head: no table row ends that way
    return seen, status


def params() -> list:
    return [pytest.param(c, name, id=f"{c.name}-{name}") for c in CASES for name in CHUNKINGS]


@pytest.mark.parametrize("case, chunking", params())
def test_case(parser_cls: type, case: Case, chunking: str) -> None:
    seen, status = replay(CHUNKINGS[chunking](case.stream()), cls=parser_cls)
    assert (seen, status) == (list(case.requests), case.status)
    for r in seen:
        assert r.events[0] == "head" and "head" not in r.events[1:]


# bytes that matter to the syntax, for the mutations below
MUTATIONS = b" \t\r\n:;/*?%@[]\x00\x01\x7f\x80\xffa0F"


def mutants(n: int, seed: int) -> list[bytes]:
    """`n` streams made from the accepted table rows by a few random byte
    insertions, deletions and replacements (seeded: the same every run)."""
    rng = random.Random(seed)
    sources = [c.stream() for c in CASES if c.status is None and len(c.stream()) < 600]
    out = []
    for _ in range(n):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data) + 1)
            op = rng.randrange(3)
            if op == 0 or not data[i:]:
                data[i:i] = bytes([rng.choice(MUTATIONS)])
            elif op == 1:
                del data[i]
            else:
                data[i] = rng.choice(MUTATIONS)
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_mutated_requests_get_one_outcome(seed: int) -> None:
    """Whatever a stream holds, both parsers and every chunking give the same
    requests and the same refusal: the table cannot list everything."""
    for data in mutants(300, seed):
        outcomes = {}
        for name, cls in PARSERS.items():
            for chunking in ("whole", "bytes", "random0"):
                texts: list[str | None] = []
                seen, status = replay(CHUNKINGS[chunking](data), cls=cls, texts=texts)
                outcomes[(name, chunking)] = (seen, status, texts)  # the body text too
        first = next(iter(outcomes.values()))
        assert all(o == first for o in outcomes.values()), (data, outcomes)


# --- the body texts (connmgr.md 4.3 A, A2, B, D) ------------------------------------

# What pushpin-connmgr answers the same refusal with (`Failed to parse request:`
# and httparse's or connmgr's name for the fault), whatever our status (D1).
# A refusal connmgr does not make (a missing Host, D16, ...) keeps our
# reason phrase (None here).
P = "Failed to parse request: "
TEXTS: dict[str, str | None] = {
    "bad_request_line": P + "invalid token",  # `GARBAGE` + CRLF: a method, then no SP
    "bad_request_line_lowercase_version": P + "invalid HTTP version",
    "bad_request_line_http09": P + "invalid token",
    "header_without_colon": P + "invalid header name",
    "header_space_before_colon": P + "invalid header name",
    "obs_fold": P + "invalid header name",
    "bad_content_length": P + "invalid content length",
    "negative_content_length": P + "invalid content length",
    "content_length_19_digits": P + "invalid content length",
    "conflicting_content_length": None,  # connmgr takes the last one
    "content_length_and_chunked": None,  # connmgr lets chunked win
    "te_gzip": P + "unsupported transfer encoding",
    "te_repeated_lines": P + "unsupported transfer encoding",
    "bad_chunk_size": P + "invalid chunk size",
    "headers_65": P + "too many headers",
    "http_2_0": P + "invalid HTTP version",
    "http2_preface": P + "invalid HTTP version",
    "http_1_1_no_host": None,
    "method_with_separator": P + "invalid token",
    "two_spaces_after_method": P + "invalid token",
    "two_spaces_before_version": P + "invalid HTTP version",
    "space_after_version": P + "invalid new line",
    "tab_as_separator": P + "invalid token",
    "space_before_method": P + "invalid token",
    "request_line_without_target": P + "invalid token",
    "version_two_digits": P + "invalid new line",
    "version_without_minor": P + "invalid HTTP version",
    "tls_client_hello": P + "invalid token",
    "binary_garbage": P + "invalid token",
    "target_less_than": P + "invalid token",
    "target_non_ascii": P + "invalid token",
    "target_relative": None,  # D16
    "host_path": None,  # D16
    "connect": None,  # D16
    "bare_cr_line_endings": P + "invalid new line",
    "bare_cr_in_field_value": P + "invalid new line",
    "bare_cr_before_blank_line": P + "invalid new line",
    "bare_cr_in_target": P + "invalid token",
    "value_del": P + "invalid header value",
    "value_nul": P + "invalid header value",
    "name_control": P + "invalid header name",
    "name_empty": P + "invalid header name",
    "name_non_ascii": P + "invalid header name",
    "whitespace_before_first_field": P + "invalid header name",
    "chunk_size_2_63": P + "chunk too large",
    "chunk_size_2_64": P + "invalid chunk size",
    "chunk_size_empty": P + "invalid chunk size",
    "chunk_size_bare_cr": P + "invalid chunk size",
    "chunk_extension_control": P + "invalid chunk size",
    "chunk_data_too_long": P + "invalid chunk suffix",
    "chunk_data_bare_lf": P + "invalid chunk suffix",
    "chunk_last_bare_lf": P + "invalid chunk size",
    "chunk_trailer_without_colon": P + "invalid header name",
    "chunk_trailer_control": P + "invalid header value",
    "chunk_trailer_obs_fold": P + "invalid header name",
    "chunk_trailer_bare_cr": P + "invalid new line",
}


@pytest.mark.parametrize("chunking", ["whole", "bytes", "lines", "random1"])
@pytest.mark.parametrize("name", list(TEXTS))
def test_refusal_text_is_connmgrs(parser_cls: type, name: str, chunking: str) -> None:
    case = next(c for c in CASES if c.name == name)
    texts: list[str | None] = []
    _, status = replay(CHUNKINGS[chunking](case.stream()), cls=parser_cls, texts=texts)
    assert status == case.status and texts == [TEXTS[name]]


# --- the parser API around the table -------------------------------------------


def test_pipelined_requests_need_next_request(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(load("pipelined"))
    head = parser.next_event()
    assert isinstance(head, RequestHead) and head.target == b"/one"
    assert parser.next_event() is END
    assert parser.buffered > 0  # the second request waits in the buffer
    # without next_request the parser stays at the end of the first request
    assert parser.next_event() is END
    parser.next_request()
    head = parser.next_event()
    assert isinstance(head, RequestHead) and head.target == b"/two"
    assert parser.next_event() == Body(b"body")
    assert parser.next_event() is END
    parser.next_request()
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 0


def test_next_request_skips_an_end_nobody_asked_for(parser_cls: type) -> None:
    # the connection does not pull the END of a request without a body
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert parser.next_event().target == b"/1"
    parser.next_request()
    assert parser.next_event().target == b"/2"


def test_body_is_not_reported_before_the_head(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    head = parser.next_event()
    assert isinstance(head, RequestHead) and head.content_length == 5 and head.has_body
    assert parser.next_event() == Body(b"ab")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"cde")
    assert parser.next_event() == Body(b"cde")
    assert parser.next_event() is END


def test_head_needs_more_data_until_blank_line(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"\r\n")
    assert isinstance(parser.next_event(), RequestHead)


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r", b"GET / HTTP/1.1\r\nHost: a\r\n\r",
                                   b"\r", b"POST", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1"])
def test_an_unfinished_line_waits(parser_cls: type, start: bytes) -> None:
    # a CR at the end of the input may still get its LF
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(start)
    assert parser.next_event() is NEED_DATA


@pytest.mark.parametrize("data", [CLIENT_HELLO[:1], b"GET / HTTP/1.1\rH", b"\rG",
                                  b"GET  / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01: 1\r\n"])
def test_a_refusal_needs_no_more_input(parser_cls: type, data: bytes) -> None:
    """What cannot become a valid head is refused as soon as it is seen, not
    after the stream timeout: one byte of a TLS ClientHello, a bare CR as soon
    as the byte after it arrives, a bad line as soon as its LF arrives."""
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(data)
    with pytest.raises(BadRequest) as e:
        parser.next_event()
    assert e.value.status == 400


def test_leftover_is_what_follows_the_head(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(load("upgrade_websocket") + b"\x81\x85frame")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.leftover() == b"\x81\x85frame"


def test_eof_while_idle_is_client_gone(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(b"")
    with pytest.raises(ClientGone):
        parser.next_event()


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\nHost: a\r\n",
                                  b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab"])
def test_eof_inside_a_request_is_client_gone(parser_cls: type, data: bytes) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(data)
    parser.feed(b"")
    with pytest.raises(ClientGone):
        while True:
            assert parser.next_event() is not NEED_DATA


def test_eof_after_a_complete_request_carries_over(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    parser.feed(b"")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() is END
    parser.next_request()
    with pytest.raises(ClientGone):
        parser.next_event()


def test_data_after_eof_is_client_gone(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(b"")
    with pytest.raises(ClientGone):
        parser.feed(b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("extra, status", [(0, None), (1, 431)])
def test_head_limit_is_inclusive(parser_cls: type, chunking: str, extra: int, status: int | None) -> None:
    # the head (request line, headers, blank line) must fit the buffer size
    max_head = 256
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
    data = start + b"p" * (max_head - len(start) - 4 + extra) + b"\r\n\r\n"
    assert len(data) == max_head + extra
    seen, got = replay(CHUNKINGS[chunking](data), max_head, cls=parser_cls)
    assert (len(seen), got) == ((1, None) if status is None else (0, status))


def grow_replay(chunks: list[bytes], cls: type, block: int = 256,
                most: int = 768) -> tuple[RequestHead | None, list[int], BadRequest | None]:
    """Drive the parser as the connection does with spare blocks (blocks.py):
    on HeadTooLarge raise max_head by a block, up to `most`, and go on.
    Returns the head, the capacities refused along the way, the final error."""
    parser = cls(block)
    pieces = iter(chunks)
    grown: list[int] = []
    while True:
        try:
            ev = parser.next_event()
        except HeadTooLarge as e:
            assert e.capacity == parser.max_head
            if parser.max_head >= most:
                return None, grown, e
            grown.append(e.capacity)
            parser.max_head += block
            continue
        except BadRequest as e:
            return None, grown, e
        if ev is NEED_DATA:
            piece = next(pieces, None)
            if piece is None:
                return None, grown, None
            parser.feed(piece)
            continue
        assert isinstance(ev, RequestHead)
        return ev, grown, None


def padded(size: int) -> bytes:
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
    return start + b"p" * (size - len(start) - 4) + b"\r\n\r\n"


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_a_head_too_large_can_grow_and_resume(parser_cls: type, chunking: str) -> None:
    """HeadTooLarge leaves the parser as it was: with a larger max_head the same
    head is taken up where it was, whatever the chunking (the connection's growth)."""
    head, grown, err = grow_replay(CHUNKINGS[chunking](padded(768)), parser_cls)
    assert err is None and head is not None and grown == [256, 512]
    assert head.headers[1] == (b"X-Pad", b"p" * (768 - len(padded(0))))
    head, grown, err = grow_replay(CHUNKINGS[chunking](padded(769)), parser_cls)
    assert head is None and isinstance(err, HeadTooLarge) and err.status == 431
    assert err.capacity == 768 and grown == [256, 512]
    assert err.text == "Request header size exceeded limit of 768 bytes."


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_a_bad_line_past_the_first_block_is_still_refused(parser_cls: type,
                                                        chunking: str) -> None:
    data = padded(400)[:-2] + b"Bad Line\r\n\r\n"
    head, grown, err = grow_replay(CHUNKINGS[chunking](data), parser_cls)
    assert head is None and type(err) is BadRequest and err.status == 400
    assert grown == [256]


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_a_bad_line_inside_the_limit_beats_the_size(parser_cls: type, chunking: str) -> None:
    # the first error in arrival order wins, whatever the chunking
    data = b"GET / HTTP/1.1\r\nBad Line\r\nX-Pad: " + b"p" * 300 + b"\r\n\r\n"
    assert replay(CHUNKINGS[chunking](data), 256, cls=parser_cls) == ([], 400)


def test_body_does_not_count_towards_the_head_limit(parser_cls: type) -> None:
    body = b"x" * 5000
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + body
    for chunking in CHUNKINGS.values():
        (r,), _ = replay(chunking(data), max_head=128, cls=parser_cls)
        assert r.body == body


def test_chunked_trailers_have_the_head_limit(parser_cls: type) -> None:
    trailer = b"X-T: " + b"t" * 200 + b"\r\n"
    data = chunked_post(b"0\r\n" + trailer * 2 + b"\r\n")
    assert replay([data], max_head=256, cls=parser_cls) == ([chunked(b"", done=False)], 431)
    assert replay([data], max_head=1024, cls=parser_cls) == ([chunked(b"")], None)


def test_head_limit_applies_per_pipelined_request(parser_cls: type) -> None:
    one = b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n"
    data = b"".join(one % (b"x" * 60) for _ in range(10))
    assert len(data) > 256
    for chunking in CHUNKINGS.values():
        seen, status = replay(chunking(data), max_head=128, cls=parser_cls)
        assert len(seen) == 10 and status is None


def test_make_parser() -> None:
    assert isinstance(make_parser("h11", 1000), H11Parser)
    assert isinstance(make_parser("httptools", 1000), HttptoolsParser)
    assert isinstance(make_parser("auto", 1000), HttptoolsParser)


# --- check_head: the D1 rules shared by every parser -----------------------------


def head(*headers: tuple[bytes, bytes], version: bytes = b"1.1") -> RequestHead:
    return check_head(b"POST", b"/", version, [(b"Host", b"a"), *headers])


@pytest.mark.parametrize("version, status", [
    (b"1.0", None), (b"1.1", None), (b"2.0", 505), (b"0.9", 505), (b"1.2", 505),
])
def test_check_head_versions(version: bytes, status: int | None) -> None:
    if status is None:
        assert head(version=version).version == version
    else:
        with pytest.raises(BadRequest) as e:
            head(version=version)
        assert e.value.status == status


def test_check_head_header_count() -> None:
    hs = [(b"X-%d" % i, b"v") for i in range(63)]  # plus Host
    assert len(head(*hs).headers) == 64
    with pytest.raises(BadRequest) as e:
        head(*hs, (b"X-65", b"v"))
    assert e.value.status == 431


@pytest.mark.parametrize("headers, chunked, length", [
    ([], False, None),
    ([(b"Content-Length", b"0")], False, 0),
    ([(b"content-length", b"42")], False, 42),
    ([(b"Transfer-Encoding", b"chunked")], True, None),
    ([(b"TRANSFER-ENCODING", b"chunked")], True, None),
])
def test_check_head_framing(headers: list, chunked: bool, length: int | None) -> None:
    h = head(*headers)
    assert h.chunked is chunked
    assert h.content_length == length
    assert h.has_body is (chunked or length is not None)


@pytest.mark.parametrize("headers, status", [
    ([(b"Content-Length", b"abc")], 400),
    ([(b"Content-Length", b"")], 400),
    ([(b"Content-Length", b"-1")], 400),
    ([(b"Content-Length", b"+1")], 400),
    ([(b"Content-Length", b"1" * 19)], 400),
    ([(b"Content-Length", b"3"), (b"Content-Length", b"4")], 400),
    ([(b"Content-Length", b"3, 4")], 400),
    ([(b"Content-Length", b"7"), (b"Content-Length", b"7")], 400),  # duplicates refused (smuggling)
    ([(b"Content-Length", b"7, 7")], 400),
    ([(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")], 400),
    ([(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")], 400),
    ([(b"Transfer-Encoding", b"gzip")], 501),
    ([(b"Transfer-Encoding", b"gzip, chunked")], 501),
    ([(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")], 501),
    ([(b"Transfer-Encoding", b"identity")], 501),
])
def test_check_head_rejects(headers: list, status: int) -> None:
    with pytest.raises(BadRequest) as e:
        head(*headers)
    assert e.value.status == status


@pytest.mark.parametrize("method, target, status", [
    (b"GET", b"/", None),
    (b"OPTIONS", b"*", None),
    (b"GET", b"http://a", None),
    (b"GET", b"HTTP://A:80?q", None),
    (b"GET", b"https://[::1]:8443/x#f", None),
    (b"GET", b"http://[v1.x]/", None),
    (b"GET", b"http://10.0.0.1:/", None),
    (b"POST", b"*", 400),
    (b"GET", b"http://[::1/", 400),
    (b"GET", b"http://[1::2::3]/", 400),
    (b"GET", b"http://a@b/", 400),
    (b"GET", b"http://a:b/", 400),
    (b"GET", b"http://:80/", 400),
    (b"GET", b"mailto:a@b", 400),
    (b"GET", b"//a/b", None),  # origin-form: an empty first segment is a path
    (b"CONNECT", b"a:443", 501),
    (b"CONNECT", b"/", 501),
])
def test_check_head_targets_d16(method: bytes, target: bytes, status: int | None) -> None:
    if status is None:
        assert check_head(method, target, b"1.1", [(b"Host", b"a")]).target == target
    else:
        with pytest.raises(BadRequest) as e:
            check_head(method, target, b"1.1", [(b"Host", b"a")])
        assert e.value.status == status


def test_request_head_helpers() -> None:
    h = head((b"Connection", b"Keep-Alive, Upgrade"), (b"X-A", b"1"),
             (b"connection", b" TE ,, close "), (b"x-a", b"2"), (b"UPGRADE", b"WebSocket, h2c"),
             (b"Expect", b"100-Continue"), (b"expect", b"x"))
    assert h.header(b"x-a") == b"1"
    assert h.header(b"missing") is None
    assert h.host == b"a"
    assert h.connection == (b"keep-alive", b"upgrade", b"te", b"close")
    assert h.upgrade == (b"websocket", b"h2c")
    assert h.expect == (b"100-Continue", b"x")  # as sent: condure matches it case-sensitively
    bare = head()
    assert (bare.connection, bare.upgrade, bare.expect) == ((), (), ())
