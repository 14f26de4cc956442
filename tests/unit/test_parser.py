"""Request parsing (condure/server/parser.py) against a wire corpus.

Every stream in tests/data/requests/*.http is replayed through H11Parser
whole, byte by byte, line by line and in seeded random chunkings, driving
the parser the way the connection does: NEED_DATA -> feed the next piece,
End -> next_request(). Valid streams must give the same requests whatever
the chunking; invalid ones must raise BadRequest with the D1 status
(docs/deviations.md) whatever the chunking.
Accepted syntax: shared/zhttp/server.md section 6.1.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from condure.errors import BadRequest, ClientGone
from condure.server.parser import (
    END, NEED_DATA, Body, H11Parser, HttptoolsParser, RequestHead, check_head, make_parser,
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "requests"
BUFFER_SIZE = 8192  # condure's default --buffer-size, the head limit


def load(name: str) -> bytes:
    """Decode the gunicorn-style escapes (see tests/data/requests/README.md)."""
    data = (CORPUS / f"{name}.http").read_bytes()
    data = data.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n").replace(b"\\r", b"\r")
    return data.replace(b"\\n", b"\n").replace(b"\\t", b"\t").replace(b"\\0", b"\0")


# --- expectations ------------------------------------------------------------


@dataclass
class Req:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunked: bool = False
    content_length: int | None = None
    events: list[str] = field(default_factory=list, compare=False)


def get(target: bytes, *headers: tuple[bytes, bytes], version: bytes = b"1.1") -> Req:
    return Req(b"GET", target, version, list(headers))


H = (b"Host", b"a")
MANY = [(b"X-H%d" % i, b"%d" % i) for i in range(63)]

VALID: dict[str, list[Req]] = {
    "get_simple": [get(b"/path?x=1", (b"Host", b"example.com:8080"),
                       (b"User-Agent", b"probe"), (b"Accept", b"*/*"))],
    "get_http10": [get(b"/old", (b"User-Agent", b"probe"), version=b"1.0")],
    "post_content_length": [Req(b"POST", b"/submit", b"1.1",
                                [H, (b"Content-Type", b"text/plain"), (b"Content-Length", b"11")],
                                b"hello world", content_length=11)],
    "post_content_length_zero": [Req(b"POST", b"/empty", b"1.1",
                                     [H, (b"Content-Length", b"0")], content_length=0)],
    "post_chunked_ext_trailers": [Req(b"POST", b"/chunked", b"1.1",
                                      [H, (b"Transfer-Encoding", b"chunked")],
                                      b"hello world0123456789", chunked=True)],
    "post_chunked_upper_hex": [Req(b"PUT", b"/up", b"1.1",
                                   [H, (b"Transfer-Encoding", b"chunked")],
                                   b"x" * 26 + b"y" * 26, chunked=True)],
    "lf_only": [Req(b"POST", b"/lf", b"1.1", [H, (b"Content-Length", b"3")], b"abc",
                    content_length=3)],
    "leading_empty_lines": [get(b"/lead", H)],
    "pipelined": [get(b"/one", H),
                  Req(b"POST", b"/two", b"1.1", [H, (b"Content-Length", b"4")], b"body",
                      content_length=4)],
    "pipelined_three": [get(b"/1", H),
                        Req(b"POST", b"/2", b"1.1", [H, (b"Transfer-Encoding", b"chunked")],
                            b"abc", chunked=True),
                        get(b"/3", version=b"1.0")],
    "header_case": [get(b"/", (b"hOsT", b"a"), (b"X-MiXeD-CaSe", b"VaLuE"),
                        (b"content-TYPE", b"Text/Plain"))],
    "duplicate_headers": [get(b"/", H, (b"X-Dup", b"a"), (b"Cookie", b"c=1"),
                              (b"X-Dup", b"b"), (b"Cookie", b"d=2"))],
    "headers_64": [get(b"/many", H, *MANY)],
    "head_8100": [get(b"/big", H, (b"X-Big", b"b" * (8100 - 39)))],
    "upgrade_websocket": [get(b"/ws", H, (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                              (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                              (b"Sec-WebSocket-Version", b"13"))],
}

# D1: status answered for each malformed request
INVALID: dict[str, int] = {
    "bad_request_line": 400,
    "bad_request_line_lowercase_version": 400,
    "bad_request_line_http09": 400,
    "header_without_colon": 400,
    "header_space_before_colon": 400,
    "obs_fold": 400,
    "bad_content_length": 400,
    "negative_content_length": 400,
    "conflicting_content_length": 400,
    # condure lets the last of several win; we refuse duplicates outright so no
    # parser downstream can frame the body differently (request smuggling)
    "duplicate_identical_content_length": 400,
    "content_length_and_chunked": 400,
    "te_gzip": 501,
    "te_gzip_chunked": 501,
    "bad_chunk_size": 400,
    "headers_65": 431,
    "head_8300": 431,
    "http_2_0": 505,
    "http_1_1_no_host": 400,
}



def test_corpus_and_tables_agree() -> None:
    files = {p.stem for p in CORPUS.glob("*.http")}
    assert files == set(VALID) | set(INVALID)
    assert not set(VALID) & set(INVALID)


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


PARSERS = [H11Parser, HttptoolsParser]


@pytest.fixture(params=PARSERS, ids=["h11", "httptools"])
def parser_cls(request: pytest.FixtureRequest) -> type:
    """Every parser must behave the same (limits and D1 statuses included)."""
    return request.param


def replay(chunks: list[bytes], max_head: int = BUFFER_SIZE, cls: type = H11Parser) -> list[Req]:
    """Drive the parser as the connection does; return the complete requests."""
    parser = cls(max_head)
    pieces = iter(chunks)
    done: list[Req] = []
    cur: Req | None = None
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
            cur.body += ev.data
            cur.events.append("body")
        elif ev is END:
            assert cur is not None, "end before head"
            done.append(cur)
            cur = None
            parser.next_request()
        else:
            pytest.fail(f"unexpected event {ev!r}")
    assert cur is None, "stream ended inside a request"
    assert parser.buffered == 0
    return done


def params(table: dict) -> list:
    out = []
    for name in table:
        for cname in CHUNKINGS:
            out.append(pytest.param(name, cname, id=f"{name}-{cname}"))
    return out


@pytest.mark.parametrize("name, chunking", params(VALID))
def test_valid_request(parser_cls: type, name: str, chunking: str) -> None:
    got = replay(CHUNKINGS[chunking](load(name)), cls=parser_cls)
    assert got == VALID[name]
    for r in got:
        assert r.events[0] == "head" and "head" not in r.events[1:]
        if not r.body:
            assert r.events == ["head"]


@pytest.mark.parametrize("name, chunking", params(INVALID))
def test_invalid_request(parser_cls: type, name: str, chunking: str) -> None:
    with pytest.raises(BadRequest) as e:
        replay(CHUNKINGS[chunking](load(name)), cls=parser_cls)
    assert e.value.status == INVALID[name]
    assert e.value.condition == "bad-request"


# --- the parser API around the corpus ------------------------------------------


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


def test_eof_while_idle_is_client_gone(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(b"")
    with pytest.raises(ClientGone):
        parser.next_event()


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
    if status is None:
        assert len(replay(CHUNKINGS[chunking](data), max_head, cls=parser_cls)) == 1
    else:
        with pytest.raises(BadRequest) as e:
            replay(CHUNKINGS[chunking](data), max_head, cls=parser_cls)
        assert e.value.status == status


def test_body_does_not_count_towards_the_head_limit(parser_cls: type) -> None:
    body = b"x" * 5000
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + body
    for chunking in CHUNKINGS.values():
        (r,) = replay(chunking(data), max_head=128, cls=parser_cls)
        assert r.body == body


def test_head_limit_applies_per_pipelined_request(parser_cls: type) -> None:
    one = b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n"
    data = b"".join(one % (b"x" * 60) for _ in range(10))
    assert len(data) > 256
    for chunking in CHUNKINGS.values():
        assert len(replay(chunking(data), max_head=128, cls=parser_cls)) == 10


def test_make_parser_gives_h11() -> None:
    assert isinstance(make_parser("h11", 1000), H11Parser)


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


def test_header_whitespace_is_trimmed_on_both_sides(parser_cls: type) -> None:
    parser = parser_cls(BUFFER_SIZE)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Spaces:   padded value   \r\nX-Empty:\r\n\r\n")
    head = parser.next_event()
    assert head.headers == [(b"Host", b"a"), (b"X-Spaces", b"padded value"), (b"X-Empty", b"")]
