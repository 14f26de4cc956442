"""The HTTP exchange in stream mode (server/exchange.py) against in-memory
sides: credits, 100-continue, handoff, early responses, endings, keep-alive.

shared/zhttp/server.md sections 4.4-5.7 and docs/deviations.md D1, D9, D10,
D13, D14, D17.
"""
from __future__ import annotations

import pytest

from clientside import only_reply
from condure.server.exchange import CONTINUE, Exchange
from condure.server.request import RequestHead
from doubles import (HANDLER, RID, Check, Client, Core, Eof, Flag, Handler, Stalled, core)

GET = b"GET /path HTTP/1.1\r\nHost: example.com\r\n\r\n"


def post(n: int, *extra: bytes) -> bytes:
    return b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n%s\r\n" % (n, b"".join(extra))


CHUNKED = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
OK = Handler(code=200, reason=b"OK", body=b"done")


def run(c: Core) -> bool:
    return Exchange(*c.ctor).run()


def stalls(c: Core) -> None:
    with pytest.raises(Stalled):
        run(c)


# --- the request packet -----------------------------------------------------------


def test_request_packet() -> None:
    c = core(post(3), OK)
    run(c)
    first = c.link.sent[0]
    assert first.first and first.fields["id"] == RID and first.fields["seq"] == 0
    assert first.fields["uri"] == b"http://h/up" and first.fields["method"] == b"POST"
    assert first.fields["credits"] == c.worker.config.buffer_size
    assert first.fields["more"] is True and first.fields["stream"] is True
    assert "body" not in first.fields  # never body in the request packet


# --- credits ------------------------------------------------------------------------


def test_body_goes_in_pieces_of_credits_and_buffer_size() -> None:
    body = bytes(range(256)) * 80  # 20480 bytes
    c = core(post(len(body)), Handler(type=b"credit", credits=5000), Client(body),
             Handler(type=b"credit", credits=100000), OK)
    assert run(c) is True
    pieces = c.link.bodies()
    assert pieces[0] == (body[:5000], True)
    assert b"".join(p for p, _ in pieces) == body
    assert [more for _, more in pieces] == [True] * (len(pieces) - 1) + [False]
    assert max(len(p) for p, _ in pieces) <= c.worker.config.buffer_size


def test_pieces_never_exceed_the_credits_granted() -> None:
    c = core(post(10), Client(b"0123456789"), Handler(type=b"credit", credits=3),
             Handler(type=b"credit", credits=3), Handler(type=b"credit", credits=4), OK)
    run(c)
    assert c.link.bodies() == [(b"012", True), (b"345", True), (b"6789", False)]


def test_nothing_goes_without_credits() -> None:
    c = core(post(5), Handler(type=b"keep-alive"), Client(b"hello"))
    stalls(c)
    assert c.link.bodies() == []
    assert c.stream.unread == b"hello"  # not even read: TCP back-pressure


def test_credits_in_a_data_packet_count() -> None:
    # body already buffered with the head: the response's own credits let it go first
    c = core(post(5) + b"hello", Handler(code=200, body=b"ok", credits=100))
    assert run(c) is True  # the body was read whole: still persistent
    assert c.link.bodies() == [(b"hello", False)]


def test_late_chunked_end_waits_for_credit() -> None:
    c = core(CHUNKED, Handler(type=b"credit", credits=5), Client(b"5\r\nhello\r\n"),
             Client(b"0\r\n\r\n"),
             Check(lambda: c.link.bodies() == [(b"hello", True)] or pytest.fail("early end")),
             Handler(type=b"credit", credits=1), OK)
    assert run(c) is True
    assert c.link.bodies() == [(b"hello", True), (b"", False)]


def test_chunked_end_read_with_the_data_costs_no_packet() -> None:
    c = core(CHUNKED, Handler(type=b"credit", credits=5), Client(b"5\r\nhello\r\n0\r\n\r\n"))
    stalls(c)  # waits for the response
    assert c.link.bodies() == [(b"hello", False)]


def test_body_credits_go_to_the_latest_from() -> None:
    c = core(post(2), Handler(type=b"credit", credits=2, from_=b"h2"), Client(b"ab"), OK)
    run(c)
    assert [s.addr for s in c.link.after_request()] == [b"h2"]


# --- 100-continue ------------------------------------------------------------------


def continue_head(n: int = 5, version: bytes = b"1.1", expect: bytes = b"100-continue") -> bytes:
    return (b"POST / HTTP/%s\r\nHost: h\r\nContent-Length: %d\r\nExpect: %s\r\n\r\n"
            % (version, n, expect))


def test_continue_after_the_first_handler_packet_before_the_body() -> None:
    c = core(continue_head(),
             Check(lambda: c.stream.written == b"" or pytest.fail("100 before the handler")),
             Handler(type=b"credit", credits=10),
             Check(lambda: (c.stream.written == CONTINUE and c.link.bodies() == [])
                   or pytest.fail("no 100 after the credit")),
             Client(b"hello"), OK)
    assert run(c) is True
    assert c.link.bodies() == [(b"hello", False)]
    reply = only_reply(c.stream.written, b"POST")
    assert reply.interim == [100] and reply.status == 200


def test_continue_even_when_the_first_packet_is_the_response() -> None:
    # condure writes 100 Continue first, then the final response, and closes
    c = core(continue_head(), OK)
    assert run(c) is False
    reply = only_reply(c.stream.written, b"POST")
    assert reply.interim == [100] and reply.header(b"connection") == b"close"


@pytest.mark.parametrize("head", [
    continue_head(version=b"1.0"),  # HTTP/1.1 only
    continue_head(expect=b"100-Continue"),  # the token is case-sensitive
], ids=["http/1.0", "token-case"])
def test_no_continue(head: bytes) -> None:
    c = core(head, Handler(type=b"credit", credits=10), Client(b"hello"), OK)
    run(c)
    assert not c.stream.written.startswith(b"HTTP/1.1 100")


# --- handoff -----------------------------------------------------------------------------


def test_handoff_proceeds_pauses_and_follows_the_new_from() -> None:
    c = core(post(5) + b"hello", Handler(type=b"handoff-start"),
             Check(lambda: c.session.paused or pytest.fail("not paused")),
             Handler(type=b"keep-alive", from_=b"h2"),
             Handler(type=b"credit", credits=10),
             Handler(code=200, body=b"abc", more=True), Handler(body=b"", more=False))
    assert run(c) is True
    sent = [(s.type, s.addr) for s in c.link.after_request()]
    assert sent == [("handoff-proceed", HANDLER), ("data", b"h2"), ("credit", b"h2")]


def test_nothing_read_while_paused() -> None:
    c = core(post(5), Handler(type=b"credit", credits=10), Handler(type=b"handoff-start"),
             Client(b"hello"))
    stalls(c)
    assert c.link.types() == ["request", "handoff-proceed"]
    assert c.stream.unread == b"hello"


@pytest.mark.parametrize("flag", ["stream timeout", "handler timeout", "stopped"])
def test_no_cancel_while_handed_off(flag: str) -> None:
    """server.md 4.5 and connmgr.md 6: after handoff-proceed nothing goes to the old
    handler until a handler packet resumes the session, a cancel neither."""
    c = core(post(5), Handler(type=b"credit", credits=10), Handler(type=b"handoff-start"),
             Flag(flag))
    assert run(c) is False
    assert c.link.types() == ["request", "handoff-proceed"]


# --- early responses ------------------------------------------------------------------------


def test_response_before_the_body_is_not_persistent() -> None:
    c = core(post(5), OK, Client(b"hello"))
    assert run(c) is False
    reply = only_reply(c.stream.written)
    assert reply.header(b"connection") == b"close" and reply.body == b"done"
    assert c.stream.closed == "graceful"


def test_post_with_empty_body_answered_without_credits_closes() -> None:
    c = core(post(0), OK)
    assert run(c) is False  # the empty body was never "read" (server.md 5.7)


# --- endings ------------------------------------------------------------------------------


@pytest.mark.parametrize("packet", [
    Handler(type=b"cancel"),
    Handler(type=b"error", condition=b"bad-request"),
    Handler(type=b"keep-alive", seq=7),  # bad seq
    Handler(type=b"no-such-type"),
    Handler(type=b"keep-alive", from_=b"x" * 65),  # from too long
], ids=["cancel", "error", "bad-seq", "unknown-type", "long-from"])
def test_handler_ends_it_no_cancel_back(packet: Handler) -> None:
    """D14: the handler ended the session itself; before the response head the
    client gets connmgr's 500 (D29)."""
    c = core(post(5), Handler(type=b"credit", credits=10), packet)
    assert run(c) is False
    assert c.link.types() == ["request"]
    assert c.stream.answers == [500]
    reply = only_reply(c.stream.written)
    assert (reply.status, reply.body) == (500, b"Failed to process request.\n")
    assert c.stream.sessions_ended >= 1


def test_handler_ending_it_after_the_head_writes_nothing_more() -> None:
    c = core(GET, Handler(code=200, body=b"part", more=True), Handler(type=b"cancel"))
    assert run(c) is False
    assert c.stream.answers == [] and c.link.types() == ["request", "credit"]


def test_client_gone_cancels() -> None:
    c = core(post(5), Handler(type=b"credit", credits=10), Client(b"he"), Eof())
    assert run(c) is False
    assert c.link.types() == ["request", "data", "cancel"]
    assert c.stream.written == b"" and c.stream.answers == []


def test_client_gone_is_noticed_only_after_the_first_packet() -> None:
    c = core(GET, Eof(), Check(lambda: c.link.types() == ["request"] or pytest.fail()),
             Handler(type=b"keep-alive"))
    assert run(c) is False
    assert c.link.types() == ["request", "cancel"]


def test_client_gone_during_the_response_cancels() -> None:
    c = core(GET, Handler(code=200, body=b"a", more=True), Eof())
    assert run(c) is False
    assert c.link.types() == ["request", "credit", "cancel"]


def test_timeout_before_any_packet_is_504_without_cancel() -> None:
    """D13; no `from` seen, so nowhere to send a cancel."""
    c = core(GET, Flag("handler timeout"))
    assert run(c) is False
    assert c.stream.answers == [504] and c.link.types() == ["request"]


def test_timeout_after_a_packet_is_504_and_cancel() -> None:
    c = core(post(5), Handler(type=b"credit", credits=1), Flag("stream timeout"))
    assert run(c) is False
    assert c.stream.answers == [504] and c.link.types()[-1] == "cancel"


def test_timeout_after_the_response_started_writes_nothing_more() -> None:
    c = core(GET, Handler(code=200, body=b"part", more=True), Flag("stream timeout"))
    assert run(c) is False
    assert c.stream.answers == []
    assert c.stream.written.endswith(b"4\r\npart\r\n")  # the chunk, never finished
    assert c.link.types() == ["request", "credit", "cancel"]


def test_shutdown_stops_without_an_answer() -> None:
    c = core(GET, Handler(type=b"keep-alive"), Flag("stopped"))
    assert run(c) is False
    assert c.stream.answers == [] and c.link.types() == ["request", "cancel"]


def test_inbox_overflow_is_a_buffer_error() -> None:
    c = core(GET, Handler(type=b"keep-alive"), Flag("inbox overflow"))
    assert run(c) is False
    assert c.stream.answers == [502] and c.link.types() == ["request", "cancel"]


def test_stopping_closes_after_the_response() -> None:
    c = core(GET, OK)
    c.stream.stopping = True
    assert run(c) is False and c.stream.closed == "graceful"


# --- bad handler responses (D9, D17) -------------------------------------------------------


@pytest.mark.parametrize("fields", [
    dict(code=100),
    dict(code=103),
    dict(code=600),
    dict(),  # no code: condure writes 0
    dict(code=200, reason=b"OK\r\nX-Injected: 1"),
    dict(code=200, headers=[(b"X-A", b"v\r\nX-Injected: 1")]),
    dict(code=200, headers=[(b"Bad Name", b"v")]),
    dict(code=200, headers=[(b"", b"v")]),
    dict(code=200, headers=[(b"Connection", b"a\x00b")]),  # dropped, but still checked
], ids=["100", "103", "600", "missing", "reason-crlf", "value-crlf", "name-space",
        "name-empty", "dropped-nul"])
def test_bad_response_is_502_and_cancel(fields: dict[str, object]) -> None:
    c = core(GET, Handler(**fields))
    assert run(c) is False
    assert c.stream.answers == [502]
    assert only_reply(c.stream.written).status == 502
    assert c.link.types() == ["request", "cancel"]


def test_bad_content_length_is_502_and_cancel() -> None:
    """condure closes silently, connmgr answers 500: a response we refuse (D9)."""
    c = core(GET, Handler(code=200, headers=[(b"Content-Length", b"x1")], body=b"a"))
    assert run(c) is False
    assert only_reply(c.stream.written).status == 502
    assert c.link.types() == ["request", "cancel"]


# --- over the buffer --------------------------------------------------------------------------


def test_first_body_over_the_buffer_is_refused_with_502() -> None:
    c = core(GET, Handler(code=200, body=b"x" * 101), buffer_size=100)
    assert run(c) is False
    assert c.stream.answers == [502] and b"xx" not in c.stream.written
    assert c.link.types() == ["request", "cancel"]


def test_head_over_the_buffer_is_written() -> None:
    """A response head of any size goes out (pushpin-connmgr, connmgr.md 3.4);
    condure refused one over --buffer-size."""
    c = core(GET, Handler(code=200, headers=[(b"X-Big", b"v" * 200)]), buffer_size=100)
    assert run(c) is True
    assert b"X-Big: " + b"v" * 200 + b"\r\n" in c.stream.written
    assert c.link.types() == ["request"]


def test_later_body_over_the_credits_closes() -> None:
    c = core(GET, Handler(code=200, body=b"a", more=True), Handler(body=b"x" * 101, more=True),
             buffer_size=100)
    assert run(c) is False
    assert c.stream.answers == []  # the response had started
    assert b"x" not in c.stream.written
    assert c.link.types() == ["request", "credit", "cancel"]


# --- the response and keep-alive -------------------------------------------------------------


def test_keep_alive_leaves_the_parser_at_the_next_request() -> None:
    c = core(GET + b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n", OK)
    assert run(c) is True
    assert c.stream.closed is None and c.stream.sessions_ended == 1
    reply = only_reply(c.stream.written)
    assert (reply.status, reply.body, reply.header(b"content-length")) == (200, b"done", b"4")
    nxt = c.stream.parser.next_event()
    assert isinstance(nxt, RequestHead) and nxt.target == b"/two"


def test_http10_without_keep_alive_closes() -> None:
    c = core(b"GET / HTTP/1.0\r\n\r\n", OK)
    assert run(c) is False and c.stream.closed == "graceful"


def test_http10_keep_alive_with_a_streamed_response_closes() -> None:
    """D6: the body is delimited by the close, so there must be one."""
    c = core(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
             Handler(code=200, body=b"ab", more=True), Handler(body=b"c"))
    assert run(c) is False and c.stream.closed == "graceful"
    reply = only_reply(c.stream.written)
    assert reply.body == b"abc" and reply.header(b"connection") is None


def test_streamed_response_is_chunked_and_credits_come_back() -> None:
    c = core(GET, Handler(code=200, body=b"part1\n", more=True), Handler(body=b"x" * 50, more=True),
             Handler(body=b"", more=False))
    assert run(c) is True
    reply = only_reply(c.stream.written)
    assert reply.header(b"transfer-encoding") == b"chunked" and reply.complete
    assert reply.body == b"part1\n" + b"x" * 50
    assert c.link.credits() == [6, 50]  # none after the last packet


def test_more_body_than_content_length_is_dropped_and_closes() -> None:
    """D10."""
    c = core(GET + GET, Handler(code=200, headers=[(b"Content-Length", b"2")], body=b"abcdef"))
    assert run(c) is False
    assert c.stream.written.endswith(b"\r\n\r\nab")


def test_head_request_gets_no_body() -> None:
    """D8."""
    c = core(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", Handler(code=200, body=b"abcdef"))
    assert run(c) is True
    assert c.stream.written.endswith(b"Content-Length: 6\r\n\r\n")


def test_access_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="condure")
    c = core(GET, OK, access_log=True)
    run(c)
    assert any("status=200" in r.getMessage() for r in caplog.records)
