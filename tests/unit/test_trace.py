"""condure/zhttp/trace.py: packets as condure's --log-level 4 traces show them."""
from __future__ import annotations

import random

import pytest

from condure.zhttp import packet as zp
from condure.zhttp.trace import LIMIT, packet_text, quote, trim


def test_request_packet_fields_in_wire_order_without_content() -> None:
    payload = zp.request(b"condure", b"0-0-1", b"GET", b"http://a/x?q=1", [(b"Host", b"a")],
                         8192, False, True, (b"127.0.0.1", 5000))
    assert packet_text(payload) == (
        '{ "from": "condure", "id": "0-0-1", "seq": 0, "ext": { "multi": true },'
        ' "method": "GET", "uri": "http://a/x?q=1", "headers": [ [ "Host", "a" ] ],'
        ' "credits": 8192, "stream": true, "peer-address": "127.0.0.1", "peer-port": 5000 } 0')


def test_data_packet_body_apart_with_its_length_and_escapes() -> None:
    payload = zp.session_packet(b"condure", b"0-0-1", 3, body=b'hi "x"\r\n\t\\\'\x00\xff')
    assert packet_text(payload) == (
        '{ "from": "condure", "id": "0-0-1", "seq": 3, "ext": { "multi": true } }'
        ' 13 "hi \\"x\\"\\r\\n\\t\\\\\\\'\\x00\\xff"')


def test_address_prefixed_message_starts_with_the_address() -> None:
    msg = b"condure " + zp.encode([(b"from", b"h1"), (b"id", b"0-0-1"), (b"seq", 0),
                                   (b"type", b"credit"), (b"credits", 512)])
    assert packet_text(msg) == (
        'condure { "from": "h1", "id": "0-0-1", "seq": 0, "type": "credit", "credits": 512 }')


@pytest.mark.parametrize("fields,shown", [
    ([(b"type", b"close"), (b"code", 1000), (b"body", b"bye")], ' 3 "bye"'),
    ([(b"type", b"error"), (b"condition", b"rejected"), (b"body", b"no")], ' 2 "no"'),
    ([(b"type", b"error"), (b"condition", b"bad-request"), (b"body", b"no")], None),
    ([(b"type", b"ping"), (b"body", b"p")], None),
])
def test_content_only_for_data_close_and_rejected(fields: list, shown: str | None) -> None:
    text = packet_text(zp.encode([(b"id", b"x"), *fields]))
    if shown is None:  # the body stays among the fields
        assert '"body": ' in text and text.endswith(" }")
    else:
        assert '"body"' not in text and text.endswith(shown)


def test_other_value_types() -> None:
    text = packet_text(zp.encode([(b"a", None), (b"b", False), (b"c", -7), (b"d", 1.5),
                                  (b"e", []), (b"f", {})]))
    assert text == '{ "a": null, "b": false, "c": -7, "d": 1.5, "e": [  ], "f": {  } } 0'


def test_long_body_is_cut_in_the_middle_to_the_limit() -> None:
    body = b"a" * 3000 + b"b" * 10 ** 6 + b"z" * 3000
    text = packet_text(zp.session_packet(b"condure", b"0-0-1", 1, body=body))
    length, content = text.rpartition(" } ")[2].split(" ", 1)
    assert length == str(len(body))
    assert len(content) == LIMIT
    assert content.startswith('"aaa') and content.endswith('zzz"') and "..." in content
    assert "b" not in content


def test_long_fields_are_cut_too() -> None:
    text = packet_text(zp.encode([(b"type", b"credit"), (b"x", b"y" * 5000), (b"last", 1)]))
    assert len(text) == LIMIT
    assert text.startswith('{ "type": "credit", "x": "yyy') and text.endswith('"last": 1 }')


def test_trim() -> None:
    assert trim("abc", 7) == "abc"
    assert trim("0123456789", 8) == "0123...9"
    assert len(trim("x" * 2001)) == LIMIT


def m(fields: bytes) -> bytes:
    """A payload whose map holds `fields` (raw tnetstring bytes, maybe broken)."""
    return b"T%d:%s}" % (len(fields), fields)


@pytest.mark.parametrize("message,text", [
    (b"", "<packet is 0 bytes>"),
    (b"T", "<parse failed: invalid length>"),
    (b"T3:abc", "<parse failed: unexpected end>"),
    (b"T3:abc,", "<not a map>"),
    (b"T3:abcX", "<parse failed: invalid type X>"),
    (b"no-space", "<unexpected format>"),
    (b"addr ", "<payload is 0 bytes>"),
    (b"addr X", "<unexpected format>"),
    (b"\xff\xfe T0:}", "<addr parse failed>"),
    (m(b"1:a,1:"), '{ "a": <unexpected end> } 0'),  # a data packet: no body
    (m(b"1:7#1:a,"), "{ <invalid key> } 0"),
    (m(b"1:a,1:x#"), '{ "a": <invalid int> } 0'),
    (m(b"1:a,2:xy!"), '{ "a": <invalid bool> } 0'),
    (m(b"1:a,1:x^"), '{ "a": <invalid float> } 0'),
    (m(b"1:a,4:1:b,]"), '{ "a": [ "b" ] } 0'),
    (m(b"1:a,3:1:b]"), '{ "a": [ <unexpected end> ] } 0'),
    (m(b"4:type,6:credit,1:x,1:y,"), '{ "type": "credit", "x": "y" }'),
])
def test_weird_packets_are_described_not_raised(message: bytes, text: str) -> None:
    assert packet_text(message) == text


def test_deep_nesting_is_bounded() -> None:
    value: object = b"x"
    for _ in range(200):
        value = [value]
    text = packet_text(zp.encode([(b"a", value)]))
    assert "<too deep>" in text and len(text) <= LIMIT


def test_random_bytes_never_raise() -> None:
    rng = random.Random(13)
    good = zp.session_packet(b"condure", b"0-0-1", 1, body=b"hello")
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = bytes(data[:rng.randint(0, len(data))])
        assert isinstance(packet_text(cut), str)
        assert isinstance(packet_text(b"addr " + cut), str)


def test_quote() -> None:
    assert quote(b"\x7f\x1b~ ") == '"\\x7f\\x1b~ "'
