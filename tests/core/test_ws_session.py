"""The WebSocket handshake (server/wshandshake.py) and session
(server/websocket.py) against in-memory sides.

shared/zhttp/server.md section 8 and docs/deviations.md D2, D3, D12, D18.
Client frames are made by a client-side wsproto and what condure writes is
read back by the same one.
"""
from __future__ import annotations


import random

import pytest
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from clientside import ACCEPT, KEY, WsClient, frames_from_server, only_reply, oversized_ping
from condure.server.wshandshake import WsHandshake
from condure.wsdeflate import DEFLATE_FEED
from doubles import HANDLER, Check, Core, Drain, Eof, Flag, Handler, Slow, Stalled, Step, core

ACCEPT_101 = Handler(code=101, reason=b"Switching Protocols", credits=1000)


def upgrade(extensions: bytes = b"") -> bytes:
    ext = b"Sec-WebSocket-Extensions: %s\r\n" % extensions if extensions else b""
    return (b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n%s\r\n" % (KEY, ext))


def ws(*steps: Step, leftover: bytes = b"", extensions: bytes = b"", **config: object) -> Core:
    return core(upgrade(extensions) + leftover, *steps, **config)


def run(c: Core) -> bool:
    return WsHandshake(*c.ctor).run()


def stalls(c: Core) -> None:
    with pytest.raises(Stalled):
        run(c)


def handler_got(c: Core) -> list[tuple[str, bytes]]:
    """(type, body) of what the handler got after the request, credits left out."""
    return [(s.type, s.fields.get("body", b"")) for s in c.link.after_request()
            if s.type != "credit"]


# --- the handshake ------------------------------------------------------------------


def test_101_head_and_upgrade() -> None:
    c = ws(Handler(code=101, reason=b"Switching Protocols",
                   headers=[(b"Sec-WebSocket-Protocol", b"chat"), (b"Upgrade", b"x")]))
    stalls(c)
    head = bytes(c.stream.written)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Protocol: chat\r\n")
    assert head.endswith(b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: %s\r\n\r\n" % ACCEPT)
    assert c.stream.upgrades == 1
    first = c.link.sent[0].fields
    assert first["uri"] == b"ws://h/ws" and "stream" not in first and "more" not in first


def test_bytes_after_the_head_are_frames() -> None:
    client = WsClient()
    c = ws(ACCEPT_101, leftover=client.send(TextMessage("early")).data)
    stalls(c)
    assert handler_got(c) == [("data", b"early")]
    assert c.link.after_request()[0].fields["content-type"] == b"text"


def test_rejected_error_is_the_rejection_response() -> None:
    c = ws(Handler(type=b"error", condition=b"rejected", code=403, reason=b"Forbidden",
                   headers=[(b"X-Why", b"no"), (b"Upgrade", b"websocket")], body=b"nope"))
    assert run(c) is False
    reply = only_reply(c.stream.written)
    assert (reply.status, reply.body, reply.header(b"x-why")) == (403, b"nope", b"no")
    assert reply.header(b"upgrade") is None and c.stream.upgrades == 0
    assert c.link.types() == ["request"] and c.stream.closed == "graceful"


def test_other_error_is_500_without_cancel_d29() -> None:
    """connmgr's case H (condure 1.9.1 closes without a response)."""
    c = ws(Handler(type=b"error", condition=b"bad"))
    assert run(c) is False
    reply = only_reply(c.stream.written)
    assert (reply.status, reply.body) == (500, b"Failed to process request.\n")
    assert c.link.types() == ["request"] and c.stream.upgrades == 0


@pytest.mark.parametrize("size, status", [(300, 403), (301, 500)])
def test_rejection_over_the_buffer_is_500_d30(size: int, status: int) -> None:
    """connmgr's case I: a rejection body over --buffer-size is not written;
    the handler gets `cancel` (connmgr and condure 1.9.1 both send it)."""
    c = ws(Handler(type=b"error", condition=b"rejected", code=403, reason=b"Forbidden",
                   body=b"x" * size), buffer_size=300)
    assert run(c) is False
    reply = only_reply(c.stream.written)
    assert reply.status == status
    if status == 500:
        assert reply.body == b"Non-101 response body size exceeded limit of 300 bytes.\n"
        assert c.link.types() == ["request", "cancel"]
    else:
        assert c.link.types() == ["request"]


def test_non_101_answer_is_a_plain_response_then_close() -> None:
    """D3."""
    c = ws(Handler(code=200, body=b"plain",
                   headers=[(b"Upgrade", b"websocket"), (b"Sec-WebSocket-Accept", b"x")]))
    assert run(c) is False
    reply = only_reply(c.stream.written)
    assert (reply.status, reply.body) == (200, b"plain")
    assert reply.header(b"connection") == b"close" and reply.header(b"upgrade") is None
    assert reply.header(b"sec-websocket-accept") is None
    assert c.stream.closed == "graceful" and c.stream.upgrades == 0


@pytest.mark.parametrize("answer", [
    Handler(code=101, headers=[(b"X-Bad", b"a\r\nb")]),
    Handler(code=101, headers=[(b"Bad Name", b"v")]),
    Handler(type=b"error", condition=b"rejected", code=101),  # not a final status
    Handler(type=b"error", condition=b"rejected"),  # no code
], ids=["101-value-crlf", "101-name", "rejected-101", "rejected-no-code"])
def test_bad_answer_to_an_upgrade_is_502(answer: Handler) -> None:
    """D9, D17: an accept or a rejection condure refuses to write."""
    c = ws(answer)
    assert run(c) is False
    assert c.stream.answers == [502] and c.stream.upgrades == 0
    assert c.link.types() == ["request", "cancel"]


def test_timeout_before_the_101_is_504() -> None:
    """D13."""
    c = ws(Flag("handler timeout"))
    assert run(c) is False and c.stream.answers == [504]


def test_body_of_a_101_is_not_written() -> None:
    client = WsClient()
    c = ws(Handler(code=101, body=b"oops"))
    stalls(c)
    assert client.receive(c.stream.written) == []


def test_no_credits_with_the_101_means_a_buffers_worth() -> None:
    client = WsClient()
    c = ws(Handler(code=101), client.send(BytesMessage(b"x" * 300)), buffer_size=256)
    stalls(c)
    # as condure's 8184 + 8 of a 9000-byte message (server.md 8.3): the frame
    # header took 8 bytes of the first read; then it waits for credits
    assert [len(b) for _, b in handler_got(c)] == [248, 8]


# --- client messages -------------------------------------------------------------------


def test_client_message_goes_in_pieces_under_credits() -> None:
    client = WsClient()
    c = ws(Handler(code=101, credits=1000), client.send(TextMessage("a" * 3000)),
           Check(lambda: [len(b) for _, b in handler_got(c)] == [1000] or pytest.fail()),
           Handler(type=b"credit", credits=5000))
    stalls(c)
    sent = [(len(s.fields["body"]), bool(s.fields.get("more"))) for s in c.link.after_request()]
    assert sent == [(1000, True), (2000, False)]


def test_client_ping_and_pong_go_to_the_handler_and_cost_credits() -> None:
    client = WsClient()
    c = ws(Handler(code=101, credits=3), client.send(Ping(b"p"), Pong(b"po"), Ping(b"q")))
    stalls(c)
    assert handler_got(c) == [("ping", b"p"), ("pong", b"po")]  # the second ping waits
    assert c.stream.written.count(b"\x8a") == 0  # condure answers no ping itself


def test_client_control_frame_over_125_bytes_is_a_protocol_error() -> None:
    client = WsClient()
    c = ws(ACCEPT_101, oversized_ping(client))
    assert run(c) is False
    assert [(s.type, s.fields.get("code")) for s in c.link.after_request()] == [("close", 1002)]
    (event,) = client.receive(c.stream.written)
    assert isinstance(event, CloseConnection) and event.code == 1002


def test_protocol_violation_closes_1002_both_ways() -> None:
    """D2: an unmasked frame from the client."""
    client = WsClient()
    c = ws(ACCEPT_101, leftover=frames_from_server(TextMessage("unmasked")))
    assert run(c) is False
    assert [(s.type, s.fields.get("code")) for s in c.link.after_request()] == [("close", 1002)]
    (event,) = client.receive(c.stream.written)
    assert isinstance(event, CloseConnection) and event.code == 1002


def test_client_gone_without_close_cancels() -> None:
    c = ws(ACCEPT_101, Eof())
    assert run(c) is False
    assert c.link.types() == ["request", "cancel"]


# --- handler messages ----------------------------------------------------------------------


def test_handler_messages_are_framed_and_credited_back() -> None:
    client = WsClient()
    c = ws(ACCEPT_101, Handler(body=b"hi"), Handler(content_type=b"binary", body=b"\x00\x01"),
           Handler(body=b"ab", more=True), Handler(body=b"c"))
    stalls(c)
    events = client.receive(c.stream.written)
    assert events[0] == TextMessage("hi")
    assert events[1] == BytesMessage(b"\x00\x01")
    assert events[2:] == [TextMessage("ab", message_finished=False), TextMessage("c")]
    assert c.link.credits() == [2, 2, 2, 1]


def test_credits_come_back_only_once_written() -> None:
    client = WsClient()
    c = ws(ACCEPT_101, Slow(), Handler(body=b"hello"),
           Check(lambda: (c.link.credits() == [] and c.stream.queued_pieces == 1)
                 or pytest.fail("credit before the client took the frame")),
           Drain())
    stalls(c)
    assert c.link.credits() == [5]
    assert client.receive(c.stream.written) == [TextMessage("hello")]


def test_too_many_messages_waiting_for_a_slow_client() -> None:
    c = ws(ACCEPT_101, Slow(), Handler(body=b"1"), Handler(body=b"2"), Handler(body=b"3"),
           messages_max=2)
    assert run(c) is False
    assert c.link.types()[-1] == "cancel"


def test_handler_message_over_the_buffer_is_refused() -> None:
    c = ws(ACCEPT_101, Handler(body=b"x" * 257), buffer_size=256)
    assert run(c) is False
    assert c.link.types() == ["request", "cancel"]


def test_handler_ping_and_pong() -> None:
    client = WsClient()
    c = ws(ACCEPT_101, Handler(type=b"ping", body=b"sp"), Handler(type=b"pong", body=b"spong"))
    stalls(c)
    assert client.receive(c.stream.written) == [Ping(b"sp"), Pong(b"spong")]
    assert c.link.credits() == [2, 5]


def test_handler_control_payload_over_125_bytes_is_refused() -> None:
    c = ws(ACCEPT_101, Handler(type=b"ping", body=b"x" * 126))
    assert run(c) is False
    assert c.link.types() == ["request", "cancel"]
    assert b"x" * 126 not in c.stream.written


# --- closing ---------------------------------------------------------------------------------


def test_client_closes_first() -> None:
    client = WsClient()
    c = ws(ACCEPT_101, client.send(CloseConnection(1000, "bye")),
           Handler(body=b"still relayed"), Handler(type=b"close", code=1000))
    assert run(c) is False
    assert [(s.type, s.fields.get("code"), s.fields.get("body")) for s in c.link.after_request()
            if s.type != "credit"] == [("close", 1000, b"bye")]
    events = client.receive(c.stream.written)
    assert events[0] == TextMessage("still relayed") and isinstance(events[1], CloseConnection)
    assert "cancel" not in c.link.types()


def test_handler_closes_first() -> None:
    client = WsClient()
    c = ws(ACCEPT_101, Handler(type=b"close", code=1001, body=b"later"),
           Check(lambda: client.receive(c.stream.written) == [CloseConnection(1001, "later")]
                 or pytest.fail("no close frame")),
           client.send(CloseConnection(1001)))
    assert run(c) is False
    assert [(s.type, s.fields.get("code")) for s in c.link.after_request()] == [("close", 1001)]
    assert "cancel" not in c.link.types()


def test_shutdown_closes_1001() -> None:
    """D12."""
    client = WsClient()
    c = ws(ACCEPT_101, Flag("stopped"))
    assert run(c) is False
    (event,) = client.receive(c.stream.written)
    assert isinstance(event, CloseConnection) and event.code == 1001
    assert c.link.types() == ["request", "cancel"]


def test_handoff_in_a_session() -> None:
    client = WsClient()
    c = ws(ACCEPT_101, Handler(type=b"handoff-start"), client.send(TextMessage("held")),
           Check(lambda: handler_got(c) == [("handoff-proceed", b"")] or pytest.fail()),
           Handler(type=b"keep-alive", from_=b"h2"))
    stalls(c)
    assert [(s.type, s.addr) for s in c.link.after_request()] == [
        ("handoff-proceed", HANDLER), ("data", b"h2")]


# --- compression (D18) -------------------------------------------------------------------------


@pytest.mark.deadline(2)
def test_compressed_message_over_the_credits_waits_for_credits() -> None:
    """A message that inflates past the credits goes out in pieces as credits
    come, without spinning (once an infinite loop found only end to end).
    The script is bounded: a spin on `wait` ends in Stalled, a spin inside
    the session hits the deadline."""
    text = "z" * 5000
    client = WsClient(deflate=True)
    step = client.send(TextMessage(text))
    assert len(step.data) < 100  # it really is compressed
    c = ws(Handler(code=101, credits=10), step,
           Check(lambda: [len(b) for _, b in handler_got(c)] == [10] or pytest.fail()),
           Handler(type=b"credit", credits=1000), Handler(type=b"credit", credits=10000),
           extensions=b"permessage-deflate", compression=True)
    stalls(c)
    pieces = [s.fields["body"] for s in c.link.after_request()]
    assert b"".join(pieces) == text.encode()
    assert [len(p) for p in pieces][:2] == [10, 1000]  # each credit was waited for


@pytest.mark.deadline(2)
def test_compressed_frame_larger_than_a_feed_waits_for_credits() -> None:
    """Incompressible: the frame is several DEFLATE_FEED steps long, so bytes
    still wait for wsproto (`reader.behind`) while the credits are out."""
    data = random.Random(14).randbytes(3000)
    client = WsClient(deflate=True)
    step = client.send(BytesMessage(data))
    assert len(step.data) > 2 * DEFLATE_FEED
    c = ws(Handler(code=101, credits=10), step,
           Check(lambda: [len(b) for _, b in handler_got(c)] == [10] or pytest.fail()),
           Handler(type=b"credit", credits=100), Handler(type=b"credit", credits=100000),
           extensions=b"permessage-deflate", compression=True)
    stalls(c)
    pieces = [s.fields["body"] for s in c.link.after_request()]
    assert b"".join(pieces) == data
    assert [len(p) for p in pieces][:2] == [10, 100]
    assert all(len(p) <= c.worker.config.buffer_size for p in pieces)


def test_compressed_handler_message() -> None:
    client = WsClient(deflate=True)
    c = ws(ACCEPT_101, Handler(body=b"y" * 1000),
           extensions=b"permessage-deflate", compression=True)
    stalls(c)
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in c.stream.written
    _head, _, frames = bytes(c.stream.written).partition(b"\r\n\r\n")
    assert len(frames) < 100 and frames[0] & 0x40  # RSV1: compressed
    assert client.receive(c.stream.written) == [TextMessage("y" * 1000)]
    assert c.link.credits() == [1000]


def test_compression_bomb_closes_1009() -> None:
    client = WsClient(deflate=True)
    c = ws(Handler(code=101, credits=1 << 20), client.send(BytesMessage(b"\x00" * 300000)),
           extensions=b"permessage-deflate", compression=True, compression_message_max=100000)
    run_or_stall(c)
    codes = [s.fields.get("code") for s in c.link.after_request() if s.type == "close"]
    assert codes == [1009]
    sent = sum(len(s.fields.get("body", b"")) for s in c.link.after_request() if s.type == "data")
    assert sent <= 100000  # nothing past the limit went to the handler


def run_or_stall(c: Core) -> None:
    try:
        run(c)
    except Stalled:
        pass
