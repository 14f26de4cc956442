"""WebSocket <-> ZHTTP mapping (zhttp/wsmap.py), through real wsproto state machines."""
from __future__ import annotations

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from condure.errors import HandlerError
from condure.zhttp import wsmap
from condure.zhttp.flow import Outflow
from condure.zhttp.packet import Packet


def frames(*events: object) -> bytes:
    """What a client would send (masked), made by a client-side wsproto."""
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(ev) for ev in events)  # type: ignore[arg-type]


def server_reader(feed: int = 0, credits: int = 1000) -> wsmap.Reader:
    return wsmap.Reader(Connection(ConnectionType.SERVER), Outflow(100, credits), feed)


def drain(flow: Outflow) -> list[tuple]:
    out = []
    while (piece := flow.next()) is not None:
        out.append(piece)
    return out


def pkt(**fields: object) -> Packet:
    return Packet([(b"1", None)], **fields)


def test_messages_control_and_close_in_order() -> None:
    r = server_reader()
    assert r.receive(frames(TextMessage("hé"), Ping(b"p"), BytesMessage(b"\x00"),
                            CloseConnection(1001, "bye"))) == []
    assert drain(r.flow) == [(b"", b"text", "hé".encode(), False), (b"ping", None, b"p", False),
                             (b"", b"binary", b"\x00", False), (b"close", 1001, b"bye", False)]


def test_fragments_are_forwarded_as_they_came() -> None:
    r = server_reader()
    r.receive(frames(TextMessage("ab", message_finished=False), TextMessage("c")))
    assert drain(r.flow) == [(b"", b"text", b"ab", True), (b"", b"text", b"c", False)]


def test_protocol_violation_is_a_made_up_close() -> None:
    r = server_reader()
    r.receive(b"\x81\x01a")  # unmasked frame from a client
    (piece,) = drain(r.flow)
    assert piece[0] == b"close" and piece[1] == 1002


def test_bounded_feeding_stops_while_something_waits() -> None:
    r = server_reader(feed=3, credits=0)
    wire = frames(BytesMessage(b"x" * 10), BytesMessage(b"y"))
    r.receive(wire)
    assert r.flow and len(r.wire) == len(wire) - 9  # 3 bytes at a time until data came
    r.flow.grant(100)
    got = []
    while r.flow or r.behind:
        got += drain(r.flow)
        r.pump()
    assert b"".join(p[2] for p in got[:-1]) == b"x" * 10
    assert [p[3] for p in got[:-1]] == [True] * (len(got) - 2) + [False]
    assert got[-1] == (b"", b"binary", b"y", False)


@pytest.mark.parametrize("code,reason,fields", [
    (1000, b"", {"code": 1000}),
    (4000, b"why", {"code": 4000, "body": b"why"}),
    (1005, b"", {}),
    (1006, b"", {}),
])
def test_close_fields(code: int, reason: bytes, fields: dict) -> None:
    assert wsmap.close_fields(code, reason) == fields


def test_close_event_from_handler() -> None:
    assert wsmap.close_event(pkt(type=b"close", body=b"")) == CloseConnection(1000, "")
    ev = wsmap.close_event(pkt(type=b"close", code=4001, body="ça".encode()))
    assert (ev.code, ev.reason) == (4001, "ça")
    with pytest.raises(HandlerError):
        wsmap.close_event(pkt(type=b"close", code=1000, body=b"\xff"))


def test_writer_decodes_text_across_pieces_and_first_piece_decides() -> None:
    w = wsmap.Writer()
    e = "é".encode()
    first = w.event(pkt(content_type=b"text", body=e[:1], more=True))
    second = w.event(pkt(content_type=b"binary", body=e[1:], more=False))  # type ignored
    assert isinstance(first, TextMessage) and isinstance(second, TextMessage)
    assert first.data + second.data == "é"
    third = w.event(pkt(content_type=b"binary", body=b"\xff", more=False))
    assert isinstance(third, BytesMessage) and third.data == b"\xff"
