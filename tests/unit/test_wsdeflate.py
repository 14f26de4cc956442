"""BoundedDeflate (condure/wsdeflate.py, D18), in memory with wsproto on both ends.

A client-side wsproto Connection compresses; a server-side one with
BoundedDeflate inflates. Fed in DEFLATE_FEED pieces, as condure feeds it.
"""
from __future__ import annotations

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from condure.wsdeflate import DEFLATE_FEED, BoundedDeflate

LIMIT = 10_000


def pair(limit: int, compress: bool = True) -> tuple[Connection, Connection]:
    """(sender with deflate, receiver with BoundedDeflate(limit)), both negotiated."""
    sender_ext = PerMessageDeflate()
    sender_ext.finalize("permessage-deflate")
    receiver_ext = BoundedDeflate(limit)
    receiver_ext.finalize("permessage-deflate")
    sender = Connection(ConnectionType.CLIENT, [sender_ext] if compress else [])
    return sender, Connection(ConnectionType.SERVER, [receiver_ext])


def deliver(sender: Connection, receiver: Connection, *events: object) -> list:
    wire = b"".join(sender.send(ev) for ev in events)
    out = []
    for i in range(0, len(wire), DEFLATE_FEED):
        receiver.receive_data(wire[i:i + DEFLATE_FEED])
        out += receiver.events()
    return out


def content(events: list) -> bytes:
    return b"".join(ev.data.encode() if isinstance(ev, TextMessage) else bytes(ev.data)
                    for ev in events if isinstance(ev, Message))


def closes(events: list) -> list[int]:
    return [int(ev.code) for ev in events if isinstance(ev, CloseConnection)]


def test_message_of_exactly_the_limit_passes() -> None:
    sender, receiver = pair(LIMIT)
    events = deliver(sender, receiver, BytesMessage(data=b"\0" * LIMIT))
    assert content(events) == b"\0" * LIMIT and closes(events) == []
    assert events[-1].message_finished


def test_one_byte_over_the_limit_closes_with_1009() -> None:
    sender, receiver = pair(LIMIT)
    events = deliver(sender, receiver, BytesMessage(data=b"\0" * (LIMIT + 1)))
    assert closes(events) == [1009]
    assert len(content(events)) <= LIMIT


def test_the_count_is_per_message() -> None:
    sender, receiver = pair(LIMIT)
    events = deliver(sender, receiver, *[TextMessage(data="a" * LIMIT) for _ in range(5)])
    assert content(events) == b"a" * LIMIT * 5 and closes(events) == []


def test_fragments_of_one_message_add_up() -> None:
    sender, receiver = pair(LIMIT)
    half = LIMIT // 2 + 1
    events = deliver(sender, receiver, BytesMessage(data=b"\0" * half, message_finished=False),
                     Ping(payload=b"p"), BytesMessage(data=b"\0" * half))
    assert closes(events) == [1009]


def test_control_frames_inside_a_message_do_not_reset_the_count() -> None:
    sender, receiver = pair(LIMIT)
    parts = [BytesMessage(data=b"\0" * 4000, message_finished=False), Ping(payload=b"p")] * 3
    events = deliver(sender, receiver, *parts, BytesMessage(data=b""))
    assert closes(events) == [1009]


def test_ping_between_fragments_of_a_compressed_message() -> None:
    # wsproto's own PerMessageDeflate ends the message at the ping: the second
    # fragment came out still compressed
    sender, receiver = pair(LIMIT)
    events = deliver(sender, receiver, BytesMessage(data=b"hello " * 10, message_finished=False),
                     Ping(payload=b"p"), BytesMessage(data=b"world " * 10))
    assert content(events) == b"hello " * 10 + b"world " * 10
    assert [bytes(ev.payload) for ev in events if isinstance(ev, Ping)] == [b"p"]


def test_compressed_control_frame_is_a_protocol_error() -> None:
    sender, receiver = pair(LIMIT)
    receiver.receive_data(bytes([0x89 | 0x40, 0x80 | 1, 0, 0, 0, 0]) + b"p")  # ping, RSV1, masked
    assert closes(list(receiver.events())) == [1002]


def test_uncompressed_messages_are_not_limited() -> None:
    # RSV1 clear: nothing is inflated, as on a connection without deflate
    sender, receiver = pair(LIMIT, compress=False)
    events = deliver(sender, receiver, BytesMessage(data=b"x" * (LIMIT * 3)))
    assert content(events) == b"x" * (LIMIT * 3) and closes(events) == []


@pytest.mark.parametrize("size", [LIMIT * 10, 5 * 1024 * 1024])
def test_zero_is_no_limit(size: int) -> None:
    sender, receiver = pair(0)
    events = deliver(sender, receiver, BytesMessage(data=b"\0" * size))
    assert len(content(events)) == size and closes(events) == []
