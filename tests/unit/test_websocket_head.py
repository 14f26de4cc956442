"""The heads condure writes for a WebSocket handshake answer (pure)."""
from __future__ import annotations

import pytest

from condure.errors import BadHandlerResponse
from condure.server.wshead import accept_key, handshake_head, rejection

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
