"""A handler's client-mode request checked before anything is sent (condure/client/request.py).

Pure: packets in, ClientRequest or ClientError out. The header checks are
server mode's (D9, D17): a name that is not a token, or CR/LF/NUL anywhere,
is a `bad-request` for the handler before condure connects to the origin.
"""
from __future__ import annotations

import pytest
import tnetstring

from condure.client.request import from_packet
from condure.errors import ClientError
from condure.zhttp import packet as zp

SCHEMES = ("http", "https", "ws", "wss")


def request(uri: bytes = b"http://example.com/", headers: list | None = None) -> zp.Packet:
    fields = {b"id": b"1", b"seq": 0, b"method": b"GET", b"uri": uri,
              b"headers": [list(h) for h in headers or []]}
    return zp.parse(b"T" + tnetstring.dumps(fields))


def test_valid_headers_pass_through() -> None:
    req = from_packet(request(headers=[(b"X-A", b"1"), (b"!#$%&'*+-.^_`|~", b"2")]), SCHEMES)
    assert req.headers == ((b"X-A", b"1"), (b"!#$%&'*+-.^_`|~", b"2"))


@pytest.mark.parametrize("uri", [b"http://example.com/", b"ws://example.com/"])
@pytest.mark.parametrize("header", [
    (b"X Bad", b"v"), (b"", b"v"), (b"X:Y", b"v"), (b"X\x01", b"v"), (b"caf\xc3\xa9", b"v"),
    (b"X-A", b"a\r\nEvil: 1"), (b"X-A", b"a\x00"), (b"X\nY", b"v"),
], ids=["space", "empty", "colon", "ctl", "utf8", "crlf-value", "nul-value", "lf-name"])
def test_bad_header_is_bad_request(uri: bytes, header: tuple[bytes, bytes]) -> None:
    with pytest.raises(ClientError) as e:
        from_packet(request(uri, [(b"X-Ok", b"1"), header]), SCHEMES)
    assert e.value.condition == "bad-request"


def test_dropped_headers_are_not_checked_they_are_not_sent() -> None:
    # Host and Connection are replaced by condure's own
    req = from_packet(request(headers=[(b"Connection", b"a\r\nb"), (b"X-A", b"1")]), SCHEMES)
    assert req.headers == ((b"X-A", b"1"),)
