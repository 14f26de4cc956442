"""Req mode (server/req.py) against in-memory sides: shared/zhttp/server.md
section 7, D1 (413), D13 (504), D17 (502)."""
from __future__ import annotations

import pytest

from clientside import only_reply
from condure.server.request import RequestHead
from condure.server.req import WS_REFUSAL, ReqExchange
from doubles import RID, Client, Core, Eof, Flag, Handler, Stalled, core

GET = b"GET /r HTTP/1.1\r\nHost: h\r\n\r\n"
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: a2V5\r\n\r\n")


def post(n: int) -> bytes:
    return b"POST /r HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % n


def reply(**fields: object) -> Handler:
    """A req-mode reply: no from, no seq."""
    return Handler(from_=b"", seq=None, **fields)


def run(c: Core) -> bool:
    return ReqExchange(*c.ctor).run()


def test_body_is_read_whole_before_the_request() -> None:
    c = core(post(10) + b"01234", Client(b"56"), Client(b"789"), reply(code=200, body=b"ok"))
    assert run(c) is True
    (req,) = c.link.sent
    assert req.first and req.fields["body"] == b"0123456789" and req.fields["id"] == RID
    for absent in ("from", "seq", "credits", "stream", "more"):
        assert absent not in req.fields


def test_first_data_reply_is_written_with_content_length() -> None:
    c = core(GET + GET, reply(type=b"keep-alive"), reply(code=200, body=b"other", id=b"x"),
             reply(code=200, body=b"streamed?", more=True), reply(code=500))
    assert run(c) is True
    r = only_reply(c.stream.written)
    assert (r.status, r.body, r.header(b"content-length")) == (200, b"streamed?", b"9")
    assert r.header(b"transfer-encoding") is None
    assert isinstance(c.stream.parser.next_event(), RequestHead)  # the pipelined one


def test_handler_content_length_is_replaced() -> None:
    c = core(GET, reply(code=200, headers=[(b"Content-Length", b"99")], body=b"ab"))
    run(c)
    assert only_reply(c.stream.written).header(b"content-length") == b"2"


def test_http10_closes_after_the_reply() -> None:
    c = core(b"GET / HTTP/1.0\r\n\r\n", reply(code=200, body=b"ok"))
    assert run(c) is False and c.stream.closed == "graceful"
    assert c.stream.written.startswith(b"HTTP/1.0 200 ")


def test_websocket_is_refused_with_400() -> None:
    c = core(UPGRADE)
    assert run(c) is False
    assert c.stream.written == WS_REFUSAL and c.stream.closed == "graceful"
    assert c.link.sent == []


def test_reply_body_over_the_body_buffer_is_502() -> None:
    """condure 1.10 closes with nothing written: a reply we refuse (D9)."""
    c = core(GET, reply(code=200, body=b"x" * 11), body_buffer_size=10)
    assert run(c) is False
    assert c.stream.answers == [502] and b"xx" not in c.stream.written


def test_request_body_over_the_body_buffer_is_413() -> None:
    """D1 (condure hangs until --req-timeout)."""
    c = core(post(11) + b"0123456789a", body_buffer_size=10)
    assert run(c) is False
    assert c.stream.answers == [413] and c.link.sent == []
    assert only_reply(c.stream.written).body == b"Failed to process request.\n"  # connmgr's K


def test_timeout_is_504_and_warned() -> None:
    """D13."""
    c = core(GET, Flag("handler timeout"), req_timeout=7)
    assert run(c) is False
    assert c.stream.answers == [504]
    assert c.worker.handler_timeouts == [(RID, 7.0)]


def test_bad_code_is_502() -> None:
    """D17."""
    c = core(GET, reply(code=101))
    assert run(c) is False
    assert c.stream.answers == [502]


def test_client_gone_while_reading_the_body() -> None:
    c = core(post(10) + b"01", Eof())
    assert run(c) is False
    assert c.stream.written == b"" and c.link.sent == []


def test_waits_for_the_reply_without_reading() -> None:
    c = core(GET, Client(b"GET /next HTTP/1.1\r\n"))
    with pytest.raises(Stalled):
        run(c)
    assert c.stream.unread == b"GET /next HTTP/1.1\r\n"
