"""The heads condure writes for a WebSocket handshake answer, and which
upgrade requests are valid (pure)."""
from __future__ import annotations

import pytest

from condure.errors import BadHandlerResponse
from condure.server.request import RequestHead, check_head
from condure.server.wshead import (accept_key, extensions_well_formed, handshake_head, rejection,
                                   valid_upgrade)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def test_handshake_head_keeps_handler_headers_and_adds_the_upgrade() -> None:
    head = handshake_head(b"Switching Protocols",
                          [(b"X-A", b"1"), (b"Upgrade", b"nope"), (b"Content-Length", b"3")], KEY)
    assert head == (b"HTTP/1.1 101 Switching Protocols\r\nX-A: 1\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept_key(KEY) + b"\r\n\r\n")
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3


def test_rejection_has_a_length_and_no_connection_header() -> None:
    out = rejection(403, b"Forbidden", [(b"X-A", b"1"), (b"Connection", b"close")], b"no")
    assert out == b"HTTP/1.1 403 Forbidden\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nno"


@pytest.mark.parametrize("header", [(b"X-Evil", b"a\r\nSet-Cookie: x=1"), (b"X\nY", b"1"),
                                    (b"X-Evil", b"\x00"), (b"Upgrade", b"x\r\n")])
def test_cr_lf_nul_in_handshake_headers_is_refused(header: tuple[bytes, bytes]) -> None:
    with pytest.raises(BadHandlerResponse):
        handshake_head(b"Switching Protocols", [header], KEY)
    with pytest.raises(BadHandlerResponse):
        rejection(403, b"Forbidden", [header], b"")


@pytest.mark.parametrize("reason", [b"Switching\r\nX: 1", b"A\nB", b"A\x00B"])
def test_cr_lf_nul_in_the_reason_is_refused(reason: bytes) -> None:
    with pytest.raises(BadHandlerResponse):
        handshake_head(reason, [], KEY)
    with pytest.raises(BadHandlerResponse):
        rejection(403, reason, [], b"")


# --- D17 ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [b"X Bad", b"", b"X:Y", b"X\x01"])
def test_non_token_header_name_is_refused(name: bytes) -> None:
    with pytest.raises(BadHandlerResponse) as e:
        handshake_head(b"Switching Protocols", [(name, b"v")], KEY)
    assert e.value.status == 502
    with pytest.raises(BadHandlerResponse) as e:
        rejection(403, b"Forbidden", [(name, b"v")], b"")
    assert e.value.status == 502


@pytest.mark.parametrize("code", [0, 100, 101, 199, 600, 1099511627776])
def test_rejection_code_must_be_final(code: int) -> None:
    # a rejection with 101 would tell the client its handshake succeeded
    with pytest.raises(BadHandlerResponse) as e:
        rejection(code, b"No", [], b"")
    assert e.value.status == 502


@pytest.mark.parametrize("code", [200, 403, 599])
def test_rejection_with_a_final_code(code: int) -> None:
    assert rejection(code, b"No", [], b"").startswith(b"HTTP/1.1 %d No\r\n" % code)


# --- which upgrades are valid (server.md 8.1; connmgr.md 4.3 F) ---------------------


def upgrade_head(*extra: tuple[bytes, bytes], method: bytes = b"GET", key: bytes = KEY,
                 version: bytes = b"13") -> RequestHead:
    headers = [(b"Host", b"a"), (b"Upgrade", b"websocket"), (b"Sec-WebSocket-Version", version),
               (b"Sec-WebSocket-Key", key), *extra]
    return check_head(method, b"/ws", b"1.1", headers)


def test_a_plain_upgrade_is_valid() -> None:
    assert valid_upgrade(upgrade_head())
    assert valid_upgrade(upgrade_head((b"Content-Length", b"0")))


@pytest.mark.parametrize("head", [
    lambda: upgrade_head(method=b"POST"),
    lambda: upgrade_head((b"Content-Length", b"1")),
    lambda: upgrade_head((b"Transfer-Encoding", b"chunked")),
    lambda: upgrade_head(version=b"8"),
    lambda: upgrade_head(key=b""),
    lambda: upgrade_head(key=b"k" * 221),
    lambda: upgrade_head((b"Sec-WebSocket-Extensions", b"permessage-deflate,")),
], ids=["post", "body", "chunked", "version-8", "empty-key", "key-221", "extensions"])
def test_invalid_upgrades(head) -> None:
    assert not valid_upgrade(head())


def test_key_limit_is_condures_hash_buffer() -> None:
    """condure hashes key + GUID in 256 bytes: a 220-byte key is the longest."""
    assert valid_upgrade(upgrade_head(key=b"k" * 220))


@pytest.mark.parametrize("value", [
    b"permessage-deflate",
    b"permessage-deflate; client_max_window_bits",
    b"permessage-deflate; client_max_window_bits=15; server_no_context_takeover",
    b"permessage-deflate;client_max_window_bits=\"10\" , x-other",
    b"x-unknown; a=1, permessage-deflate; b",
    b"a;b=",  # an empty value is a value
    b"a; b = \"q;,\" ; c",  # separators inside quotes
])
def test_well_formed_extensions(value: bytes) -> None:
    assert extensions_well_formed(value)


@pytest.mark.parametrize("value", [
    b"", b"  ", b",", b"a,", b",a", b"a,,b", b"a;", b"a;;b", b"a; =1", b";a",
    b"a; b=\"open", b"a; b=\"q\" junk", b"a; b=\"q\"x, c", b"\xff\xfe",
])
def test_malformed_extensions(value: bytes) -> None:
    assert not extensions_well_formed(value)
