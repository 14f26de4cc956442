"""ZHTTP packet codec (condure/zhttp/packet.py), pure and in memory.

Wire rules: shared/zhttp/server.md section 3. Parsing covers what handlers
send (every field, strict types, limits); encoding covers what condure sends,
byte for byte against the captures in section 3.3.
"""
from __future__ import annotations

from typing import Any

import pytest
import tnetstring

from condure.zhttp import packet as P
from condure.zhttp.packet import Packet, ParseError
from zhttp_handler import nested_lists


def wire(m: dict) -> bytes:
    """A handler payload: ``T`` + the tnetstring of `m`."""
    return b"T" + tnetstring.dumps(m)


def parse(m: dict) -> Packet:
    return P.parse(wire(m))


def base(**extra: Any) -> dict:
    m: dict = {b"from": b"handler", b"id": b"0-0-0"}
    for k, v in extra.items():
        m[k.replace("_", "-").encode()] = v
    return m


# --- parsing: every field ----------------------------------------------


def test_minimal_packet_is_data_with_defaults() -> None:
    p = P.parse(wire({b"id": b"0-0-0"}))
    assert p.ids == [(b"0-0-0", None)]
    assert p.from_ == b""
    assert p.type == P.DATA
    assert p.type_name == "data"
    assert p.code is None
    assert p.reason == b""
    assert p.headers == []
    assert p.body == b""
    assert p.more is False
    assert p.credits == 0
    assert p.content_type is None
    assert p.condition == b""


def test_every_data_field_is_parsed() -> None:
    p = parse(base(
        seq=3, type=b"", code=200, reason=b"OK",
        headers=[[b"Content-Type", b"text/plain"], [b"X-Dup", b"a"], [b"X-Dup", b"b"]],
        body=b"hello", more=True, credits=1000, content_type=b"binary",
        condition=b"rejected", ext={b"multi": True},
    ))
    assert p.from_ == b"handler"
    assert p.ids == [(b"0-0-0", 3)]
    assert p.type == b""
    assert p.code == 200
    assert p.reason == b"OK"
    assert p.headers == [(b"Content-Type", b"text/plain"), (b"X-Dup", b"a"), (b"X-Dup", b"b")]
    assert p.body == b"hello"
    assert p.more is True
    assert p.credits == 1000
    assert p.content_type == b"binary"
    assert p.condition == b"rejected"


@pytest.mark.parametrize("ptype", sorted(P.KNOWN_TYPES - {P.DATA}))
def test_known_types(ptype: bytes) -> None:
    p = parse(base(type=ptype))
    assert p.type == ptype
    assert p.type_name == ptype.decode()


def test_unknown_type_parses_and_is_left_to_the_session() -> None:
    # server.md 3.4: an unknown type aborts the session; it is not a parse error
    p = parse(base(type=b"bogus"))
    assert p.type == b"bogus"
    assert p.type not in P.KNOWN_TYPES


def test_code_zero_and_large_code_accepted() -> None:
    # 3.4: code 0 allowed, written verbatim even if 1000
    assert parse(base(code=0)).code == 0
    assert parse(base(code=1000)).code == 1000


def test_empty_reason_allowed() -> None:
    assert parse(base(code=200, reason=b"")).reason == b""


def test_seq_zero_is_not_none() -> None:
    assert parse(base(seq=0)).ids == [(b"0-0-0", 0)]


def test_id_list_form_with_per_id_seq() -> None:
    p = parse({b"from": b"h", b"id": [
        {b"id": b"0-0-0", b"seq": 4},
        {b"id": b"1-3-a"},
        {b"id": b"0-1-2", b"seq": 0},
    ], b"type": b"keep-alive"})
    assert p.ids == [(b"0-0-0", 4), (b"1-3-a", None), (b"0-1-2", 0)]


def test_id_list_items_ignore_unknown_keys() -> None:
    p = parse({b"id": [{b"id": b"0-0-0", b"seq": 1, b"x": b"y"}]})
    assert p.ids == [(b"0-0-0", 1)]


def test_id_list_of_128_accepted() -> None:
    ids = [{b"id": b"0-%d-0" % i, b"seq": i} for i in range(P.MAX_IDS)]
    p = parse({b"id": ids})
    assert len(p.ids) == 128
    assert p.ids[127] == (b"0-127-0", 127)


def test_user_data_is_ignored() -> None:
    # 3.4: user-data is ignored, neither stored nor echoed
    p = parse(base(user_data={b"anything": [1, 2, b"x"]}, body=b"b"))
    assert p.body == b"b"
    assert not hasattr(p, "user_data")


def test_unknown_keys_are_ignored() -> None:
    p = parse(base(**{"x-custom": 5, "max-size": 10, "timeout": b"x", "stream": True}))
    assert p.ids == [(b"0-0-0", None)]


def test_key_order_does_not_matter() -> None:
    # tnetstring3 writes dict items last-to-first; try both orders
    items = [(b"id", b"0-0-0"), (b"from", b"h"), (b"code", 200), (b"body", b"x")]
    a = P.parse(wire(dict(items)))
    b = P.parse(wire(dict(reversed(items))))
    assert a == b
    assert a.code == 200 and a.from_ == b"h"


def test_body_with_binary_bytes() -> None:
    body = bytes(range(256))
    assert parse(base(body=body)).body == body


def test_header_value_may_be_any_bytes() -> None:
    # only names must be utf-8 (3.1); D9 checks happen at response time
    p = parse(base(headers=[[b"X", b"\xff\r\n\x00"]]))
    assert p.headers == [(b"X", b"\xff\r\n\x00")]


def test_64_headers_accepted() -> None:
    hs = [[b"X-%d" % i, b"v"] for i in range(64)]
    assert len(parse(base(headers=hs)).headers) == 64


def test_empty_headers_list() -> None:
    assert parse(base(headers=[])).headers == []


# --- parsing: strict types and limits ---------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"code": b"200"}, "code must be of type int"),
    ({"code": True}, "code must be of type int"),
    ({"more": 1}, "more must be of type bool"),
    ({"more": b"true"}, "more must be of type bool"),
    ({"seq": b"0"}, "seq must be of type int"),
    ({"credits": b"10"}, "credits must be of type int"),
    ({"credits": False}, "credits must be of type int"),
    ({"body": 5}, "body must be of type string"),
    ({"body": [b"x"]}, "body must be of type string"),
    ({"reason": 1}, "reason must be of type string"),
    ({"type": 1}, "type must be of type string"),
    ({"from": 1}, "from must be of type string"),
    ({"content_type": True}, "content-type must be of type string"),
    ({"condition": 1}, "condition must be of type string"),
    ({"headers": b"X: y"}, "headers must be of type array"),
    ({"headers": {b"X": b"y"}}, "headers must be of type array"),
    ({"ext": b"multi"}, "ext must be of type object"),
])
def test_wrong_type_is_a_parse_error(fields: dict, message: str) -> None:
    with pytest.raises(ParseError) as e:
        parse(base(**fields))
    assert str(e.value) == message


@pytest.mark.parametrize("fields, name", [
    ({"seq": -1}, "seq"),
    ({"credits": -5}, "credits"),
    ({"code": -200}, "code"),
])
def test_negative_ints_rejected(fields: dict, name: str) -> None:
    with pytest.raises(ParseError, match=f"{name} must not be negative"):
        parse(base(**fields))


def test_negative_seq_in_id_list_rejected() -> None:
    with pytest.raises(ParseError, match="seq must not be negative"):
        parse({b"id": [{b"id": b"0-0-0", b"seq": -1}]})


def test_wrong_seq_type_in_id_list_rejected() -> None:
    with pytest.raises(ParseError, match="seq must be of type int"):
        parse({b"id": [{b"id": b"0-0-0", b"seq": b"1"}]})


@pytest.mark.parametrize("headers", [
    [[b"X"]],
    [[]],
    [b"X: y"],
    [[b"X", 5]],
    [[5, b"y"]],
    [{b"X": b"y"}],
], ids=["one-element", "empty", "string", "int-value", "int-name", "map"])
def test_headers_not_pairs_of_strings(headers: list) -> None:
    with pytest.raises(ParseError):
        parse(base(headers=headers))


def test_65_headers_too_many() -> None:
    hs = [[b"X-%d" % i, b"v"] for i in range(65)]
    with pytest.raises(ParseError) as e:
        parse(base(headers=hs))
    assert str(e.value) == "too many headers"


def test_129_ids_too_many() -> None:
    ids = [{b"id": b"0-%d-0" % i} for i in range(P.MAX_IDS + 1)]
    with pytest.raises(ParseError, match="too many ids"):
        parse({b"id": ids})


def test_non_utf8_header_name_rejected() -> None:
    with pytest.raises(ParseError, match="utf-8"):
        parse(base(headers=[[b"X-\xff", b"v"]]))


@pytest.mark.parametrize("payload", [
    b"",
    b"J{}",
    b"4:from,7:condure,",
    b" T0:}",
    b"t0:}",
])
def test_payload_not_starting_with_T(payload: bytes) -> None:
    with pytest.raises(ParseError):
        P.parse(payload)


@pytest.mark.parametrize("payload", [
    b"T",
    b"Tgarbage",
    b"T99:2:id,",
    b"T5:abc",
    b"T9:3:abc,1:1#}",
], ids=["empty", "garbage", "short", "truncated", "bad-int"])
def test_bad_tnetstring(payload: bytes) -> None:
    with pytest.raises(ParseError, match="bad tnetstring"):
        P.parse(payload)


@pytest.mark.parametrize("payload", [
    b"T" + nested_lists(900),
    b"T" + nested_lists(20000),
    b"T6:0:]0:~}",
    b"T6:0:}0:~}",
], ids=["depth-900", "depth-20000", "list-key", "map-key"])
def test_any_decoder_failure_is_a_parse_error(payload: bytes) -> None:
    # tnetstring raises RecursionError (deep nesting) or TypeError (unhashable
    # key), not only ValueError: all of it is the handler's garbage, a warning
    with pytest.raises(ParseError, match="bad tnetstring"):
        P.parse(payload)


@pytest.mark.parametrize("value", [b"abc", 5, True, [b"id", b"0-0-0"]],
                         ids=["string", "int", "bool", "list"])
def test_root_not_a_map(value: Any) -> None:
    with pytest.raises(ParseError, match="not a map"):
        P.parse(b"T" + tnetstring.dumps(value))


def test_missing_id() -> None:
    with pytest.raises(ParseError, match="missing id"):
        parse({b"from": b"h", b"type": b"keep-alive"})


@pytest.mark.parametrize("rid", [5, True, {b"id": b"0-0-0"}], ids=["int", "bool", "map"])
def test_id_of_wrong_type(rid: Any) -> None:
    with pytest.raises(ParseError):
        parse({b"id": rid})


def test_id_list_item_not_a_map() -> None:
    with pytest.raises(ParseError):
        parse({b"id": [b"0-0-0"]})


def test_parse_error_is_a_value_error() -> None:
    # callers may catch ValueError around any decoding step
    assert issubclass(ParseError, ValueError)


# --- parse_message: the SUB frame with the instance prefix -----------------


def test_parse_message_strips_instance_prefix() -> None:
    p = P.parse_message(b"condure " + wire(base(code=200, body=b"hi")))
    assert p.code == 200 and p.body == b"hi"


def test_parse_message_prefix_with_dashes() -> None:
    p = P.parse_message(b"my-condure-1 " + wire(base(type=b"keep-alive")))
    assert p.type == b"keep-alive"


def test_parse_message_without_space_is_an_error() -> None:
    with pytest.raises(ParseError):
        P.parse_message(wire(base()))


def test_parse_message_checks_the_payload() -> None:
    with pytest.raises(ParseError):
        P.parse_message(b"condure X0:}")
    with pytest.raises(ParseError, match="code must be of type int"):
        P.parse_message(b"condure " + wire(base(code=b"200")))


# --- encoding: exact bytes ---------------------------------------------

# server.md 3.3, the observed request packet (line breaks removed)
REQUEST_WIRE = (
    b"T306:4:from,7:condure,2:id,5:0-0-0,3:seq,1:0#3:ext,15:5:multi,4:true!}6:method,3:GET,"
    b"3:uri,32:http://example.com:8080/path?x=1,7:headers,89:27:4:Host,16:example.com:8080,]"
    b"22:10:User-Agent,5:probe,]12:5:X-Dup,1:a,]12:5:X-Dup,1:b,]]7:credits,4:8192#"
    b"6:stream,4:true!12:peer-address,9:127.0.0.1,9:peer-port,5:50604#}"
)
REQUEST_HEADERS = [
    (b"Host", b"example.com:8080"), (b"User-Agent", b"probe"),
    (b"X-Dup", b"a"), (b"X-Dup", b"b"),
]


def test_request_packet_matches_capture() -> None:
    out = P.request(b"condure", b"0-0-0", b"GET", b"http://example.com:8080/path?x=1",
                    REQUEST_HEADERS, credits=8192, more=False, stream=True,
                    peer=(b"127.0.0.1", 50604))
    assert out == REQUEST_WIRE


def test_request_packet_with_more_puts_more_after_credits() -> None:
    out = P.request(b"condure", b"0-0-1", b"POST", b"http://a/", [(b"Host", b"a")],
                    credits=8192, more=True, stream=True, peer=(b"::1", 1))
    assert b"7:credits,4:8192#4:more,4:true!6:stream,4:true!" in out
    assert b"12:peer-address,3:::1,9:peer-port,1:1#}" in out


def test_request_packet_without_peer_for_unix_listeners() -> None:
    out = P.request(b"condure", b"0-0-0", b"GET", b"http://a/", [], credits=8192,
                    more=False, stream=True, peer=None)
    assert b"peer-" not in out
    m = tnetstring.loads(out[1:])
    assert m[b"headers"] == []


def test_websocket_request_packet_has_no_stream_and_no_more() -> None:
    out = P.request(b"condure", b"0-0-0", b"GET", b"ws://a/", [(b"Host", b"a")],
                    credits=8192, more=False, stream=False, peer=(b"127.0.0.1", 5))
    m = tnetstring.loads(out[1:])
    assert b"stream" not in m and b"more" not in m and b"body" not in m


def test_req_mode_packet_has_no_from_seq_credits_stream_more() -> None:
    # server.md 3.5
    out = P.request(b"", b"0-0-0", b"POST", b"http://a/", [(b"Host", b"a")], credits=0,
                    more=False, stream=False, peer=(b"127.0.0.1", 5), body=b"abc",
                    seq=False)
    assert out.startswith(b"T")
    m = tnetstring.loads(out[1:])
    assert set(m) == {b"id", b"ext", b"method", b"uri", b"headers", b"body",
                      b"peer-address", b"peer-port"}
    assert m[b"body"] == b"abc"
    assert out.index(b"2:id,") < out.index(b"3:ext,") < out.index(b"6:method,") \
        < out.index(b"4:body,") < out.index(b"12:peer-address,")


def test_req_mode_packet_omits_empty_body() -> None:
    out = P.request(b"", b"0-0-0", b"GET", b"http://a/", [], credits=0, more=False,
                    stream=False, peer=None, body=b"", seq=False)
    assert b"body" not in out


def test_credit_packet_matches_capture() -> None:
    out = P.session_packet(b"condure", b"0-0-0", 1, b"credit", credits=6)
    assert out == (b"T95:4:from,7:condure,2:id,5:0-0-0,3:seq,1:1#3:ext,15:5:multi,4:true!}"
                   b"4:type,6:credit,7:credits,1:6#}")


def test_body_chunk_packet() -> None:
    out = P.session_packet(b"condure", b"0-0-0", 2, body=b"hello", more=True)
    assert out == (b"T94:4:from,7:condure,2:id,5:0-0-0,3:seq,1:2#3:ext,15:5:multi,4:true!}"
                   b"4:body,5:hello,4:more,4:true!}")


def test_last_empty_body_chunk_has_neither_body_nor_more() -> None:
    # 3.1: absent/empty/false/zero fields are omitted entirely
    out = P.session_packet(b"condure", b"0-0-0", 4)
    m = tnetstring.loads(out[1:])
    assert set(m) == {b"from", b"id", b"seq", b"ext"}


@pytest.mark.parametrize("ptype", [b"keep-alive", b"cancel", b"handoff-proceed"])
def test_bare_typed_packets(ptype: bytes) -> None:
    out = P.session_packet(b"condure", b"0-0-7", 5, ptype)
    assert out.endswith(b"4:type,%d:%s,}" % (len(ptype), ptype))
    assert tnetstring.loads(out[1:]) == {
        b"from": b"condure", b"id": b"0-0-7", b"seq": 5,
        b"ext": {b"multi": True}, b"type": ptype,
    }


def test_ws_message_packet_field_order() -> None:
    out = P.session_packet(b"condure", b"0-0-0", 1, content_type=b"text", body=b"hi",
                           more=True)
    assert out.index(b"3:ext,") < out.index(b"12:content-type,4:text,") \
        < out.index(b"4:body,2:hi,") < out.index(b"4:more,4:true!")


def test_close_packet_code_before_body() -> None:
    out = P.session_packet(b"condure", b"0-0-0", 3, b"close", code=1000, body=b"bye")
    assert out.endswith(b"4:type,5:close,4:code,4:1000#4:body,3:bye,}")


def test_close_packet_without_code_or_reason() -> None:
    out = P.session_packet(b"condure", b"0-0-0", 3, b"close")
    m = tnetstring.loads(out[1:])
    assert b"code" not in m and b"body" not in m


def test_field_order_from_id_seq_ext_type() -> None:
    out = P.session_packet(b"c", b"0-0-0", 9, b"credit", credits=100)
    keys = [b"4:from,", b"2:id,", b"3:seq,", b"3:ext,", b"4:type,", b"7:credits,"]
    positions = [out.index(k) for k in keys]
    assert positions == sorted(positions)


def test_encode_keeps_given_order() -> None:
    out = P.encode([(b"b", b"1"), (b"a", 2), (b"c", True)])
    assert out == b"T27:1:b,1:1,1:a,1:2#1:c,4:true!}"


# --- multi-id packets ----------------------------------------------------


def test_multi_packet_single_id_is_the_plain_form() -> None:
    out = P.multi_packet(b"condure", [(b"0-1-2", 2)], b"keep-alive")
    assert out == P.session_packet(b"condure", b"0-1-2", 2, b"keep-alive")
    assert tnetstring.loads(out[1:])[b"id"] == b"0-1-2"


def test_multi_packet_list_form_matches_capture() -> None:
    # 3.6: {"from":"condure","id":[{"id":"0-1-2","seq":2},{"id":"0-2-3","seq":2}],
    #       "ext":{"multi":true},"type":"keep-alive"}
    out = P.multi_packet(b"condure", [(b"0-1-2", 2), (b"0-2-3", 2)], b"keep-alive")
    assert out == (b"T126:4:from,7:condure,2:id,54:23:2:id,5:0-1-2,3:seq,1:2#}"
                   b"23:2:id,5:0-2-3,3:seq,1:2#}]3:ext,15:5:multi,4:true!}"
                   b"4:type,10:keep-alive,}")


def test_multi_packet_has_no_top_level_seq_and_parses_back() -> None:
    ids = [(b"0-%d-%x" % (i, i * 7), i) for i in range(5)]
    out = P.multi_packet(b"condure", ids, b"cancel")
    assert b"seq" not in tnetstring.loads(out[1:])
    p = P.parse(out)
    assert p.ids == ids
    assert p.type == b"cancel" and p.from_ == b"condure"


def test_batches_split_at_128_ids() -> None:
    ids = [(b"0-%d-%x" % (i, i), i) for i in range(300)]
    groups = list(P.batches(ids))
    assert [len(g) for g in groups] == [128, 128, 44]
    assert [x for g in groups for x in g] == ids


def test_batches_exactly_128_is_one_group() -> None:
    ids = [(b"0-%d-0" % i, 0) for i in range(128)]
    assert [len(g) for g in P.batches(ids)] == [128]


def test_batches_empty() -> None:
    assert list(P.batches([])) == []


def test_batches_custom_limit() -> None:
    ids = [(b"x%d" % i, 0) for i in range(7)]
    assert [len(g) for g in P.batches(ids, limit=3)] == [3, 3, 1]


def test_batches_byte_cap() -> None:
    # each id costs len(id) + 32; with 1000-byte ids at most 62 fit in 65000
    ids = [(b"%01000d" % i, i) for i in range(200)]
    groups = list(P.batches(ids))
    assert all(sum(len(r) + 32 for r, _ in g) <= 65000 for g in groups)
    assert [len(g) for g in groups] == [62, 62, 62, 14]
    assert [x for g in groups for x in g] == ids


def test_batches_small_byte_cap_and_oversized_id() -> None:
    ids = [(b"a" * 10, 0), (b"b" * 100, 1), (b"c" * 10, 2), (b"d" * 10, 3)]
    groups = list(P.batches(ids, max_bytes=90))
    # an id larger than the cap still goes out, alone
    assert groups == [[ids[0]], [ids[1]], [ids[2], ids[3]]]


def test_batched_keepalives_of_real_ids_stay_small() -> None:
    # condure ids are at most 32 bytes; a full batch is far below the byte cap
    ids = [(b"15-%d-%x" % (9999 - i, 0xFFFFFFFF - i), 2**31 + i) for i in range(128)]
    (group,) = list(P.batches(ids))
    out = P.multi_packet(b"condure", group, b"keep-alive")
    assert len(out) <= 65000
    assert P.parse(out).ids == ids


# --- round trip -----------------------------------------------------------


def test_request_round_trip() -> None:
    out = P.request(b"condure", b"3-14-ff", b"PoSt", b"https://h/x?y", REQUEST_HEADERS,
                    credits=4096, more=True, stream=True, peer=(b"::1", 65535))
    assert tnetstring.loads(out[1:]) == {
        b"from": b"condure", b"id": b"3-14-ff", b"seq": 0, b"ext": {b"multi": True},
        b"method": b"PoSt", b"uri": b"https://h/x?y",
        b"headers": [[n, v] for n, v in REQUEST_HEADERS],
        b"credits": 4096, b"more": True, b"stream": True,
        b"peer-address": b"::1", b"peer-port": 65535,
    }


@pytest.mark.parametrize("kwargs", [
    {"type_": b"credit", "credits": 123456},
    {"body": b"\x00\xff" * 100, "more": True},
    {"content_type": b"binary", "body": b"\x01"},
    {"type_": b"close", "code": 1001, "body": b"going"},
    {"type_": b"ping", "body": b"p"},
    {"type_": b"pong"},
])
def test_session_packet_round_trip(kwargs: dict) -> None:
    out = P.session_packet(b"condure", b"0-5-1f", 17, **kwargs)
    m = tnetstring.loads(out[1:])
    assert m[b"from"] == b"condure" and m[b"id"] == b"0-5-1f" and m[b"seq"] == 17
    assert m[b"ext"] == {b"multi": True}
    assert m.get(b"type", b"") == kwargs.get("type_", b"")
    for key in ("credits", "body", "code", "content_type"):
        if key in kwargs:
            assert m[key.replace("_", "-").encode()] == kwargs[key]
    assert (m.get(b"more") is True) == kwargs.get("more", False)


def test_encoded_bools_and_ints_keep_their_types() -> None:
    # 3.1 / 12.16: bools must be `!`, ints `#`
    m = tnetstring.loads(P.session_packet(b"c", b"i", 0, more=True, credits=1)[1:])
    assert type(m[b"more"]) is bool
    assert type(m[b"seq"]) is int and type(m[b"credits"]) is int


# --- router-resp (pushpin-connmgr, D27) ---------------------------------------------


def test_router_resp_is_a_bool_field() -> None:
    assert P.parse(b"T" + tnetstring.dumps({b"id": b"a", b"router-resp": True})).router_resp
    assert not P.parse(b"T" + tnetstring.dumps({b"id": b"a"})).router_resp
    with pytest.raises(ParseError, match="router-resp must be of type bool"):
        P.parse(b"T" + tnetstring.dumps({b"id": b"a", b"router-resp": b"true"}))


@pytest.mark.parametrize("stream", [True, False])
def test_request_writes_router_resp_where_connmgr_does(stream: bool) -> None:
    """After `stream` (or `credits` for a WebSocket), before the peer: connmgr.md 1.2."""
    out = P.request(b"connmgr", b"0-0-0", b"GET", b"http://example.com/",
                    [(b"Host", b"example.com")], 8192, False, stream, (b"127.0.0.1", 50000),
                    router_resp=True)
    flag = b"6:stream,4:true!" if stream else b""
    assert (b"7:credits,4:8192#" + flag + b"11:router-resp,4:true!12:peer-address,") in out
    if stream:
        assert len(out) == 1 + len(b"252:") + 252 + 1  # the doc's T252 packet
    plain = P.request(b"connmgr", b"0-0-0", b"GET", b"http://example.com/",
                      [(b"Host", b"example.com")], 8192, False, stream, (b"127.0.0.1", 50000))
    assert b"router-resp" not in plain
