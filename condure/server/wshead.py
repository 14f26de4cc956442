"""The WebSocket handshake's HTTP side, pure (shared/zhttp/server.md 8.1-8.3).

Which upgrades condure takes, the permessage-deflate offer it accepts, and
the bytes of the 101 and of a handler's rejection.
"""
from __future__ import annotations

import base64
import hashlib

from ..wsdeflate import BoundedDeflate
from . import http1
from .request import RequestHead

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# handler headers condure replaces with its own on the handshake response
_WS_HEADERS = frozenset([b"upgrade", b"connection", b"sec-websocket-accept",
                         b"sec-websocket-extensions", b"content-length", b"transfer-encoding"])


_DEFLATE_FLAGS = ("client_no_context_takeover", "server_no_context_takeover")


def negotiate_deflate(head: RequestHead, limit: int) -> tuple[bytes, BoundedDeflate] | None:
    """condure's rules: the first valid permessage-deflate offer wins.

    Accepted parameters: the two no_context_takeover flags (echoed),
    client_max_window_bits[=8..15] and server_max_window_bits only if 15
    (never echoed: the server always uses 15). Anything else spoils the offer.
    `limit`: --compression-message-max (D18).
    """
    for n, v in head.headers:
        if n.lower() != b"sec-websocket-extensions":
            continue
        for offer in v.decode("latin-1").split(","):
            flags = _deflate_offer(offer)
            if flags is not None:
                value = "; ".join(["permessage-deflate"] + [f for f in _DEFLATE_FLAGS if flags.get(f)])
                ext = BoundedDeflate(limit, **flags)
                ext.finalize(value)
                return value.encode(), ext
    return None


def _deflate_offer(offer: str) -> dict[str, bool] | None:
    parts = [p.strip() for p in offer.split(";")]
    if parts[0] != "permessage-deflate":
        return None
    flags: dict[str, bool] = {}
    seen = set()
    for p in parts[1:]:
        name, _, value = (x.strip() for x in p.partition("="))
        if name in seen:
            return None
        seen.add(name)
        if name in _DEFLATE_FLAGS and not value:
            flags[name] = True
        elif name == "client_max_window_bits":
            if value and not (value.isdigit() and 8 <= int(value) <= 15):
                return None
        elif name == "server_max_window_bits":
            if value != "15":
                return None
        else:
            return None
    return flags


# condure hashes the key and the GUID in a buffer of 256 bytes: a longer key
# makes the request invalid (so does pushpin-connmgr)
MAX_KEY = 256 - len(GUID)


def valid_upgrade(head: RequestHead) -> bool:
    """condure's checks (and connmgr's): GET, no body (`Content-Length: 0` is
    fine), version 13, a key of at most 220 bytes, and every
    Sec-WebSocket-Extensions value well-formed. An invalid upgrade gets a 400
    with connmgr's text (D1); condure 1.9.1 closes without a response."""
    if head.method != b"GET" or head.chunked or head.content_length:
        return False
    key = head.header(b"sec-websocket-key")
    if head.header(b"sec-websocket-version") != b"13" or key is None or not 0 < len(key) <= MAX_KEY:
        return False
    return extensions_ok(head)


def extensions_ok(head: RequestHead) -> bool:
    """Every Sec-WebSocket-Extensions value of `head` is well-formed. condure
    (and connmgr) check this on every stream-mode request, upgrade or not."""
    return all(extensions_well_formed(v) for v in head.ws_extensions)


_BLANKS = " \t\n\x0c\r"


def _find(s: str, chars: str) -> int:
    """Index of the first of `chars` in `s`, -1 if none."""
    return next((i for i, c in enumerate(s) if c in chars), -1)


def extensions_well_formed(value: bytes) -> bool:
    """The syntax condure (and connmgr) require of a Sec-WebSocket-Extensions
    value, or the upgrade is invalid: UTF-8; comma-separated elements, each a
    non-empty name and `;`-separated parameters; a parameter a non-empty name
    with an optional `=value`, where a value in double quotes must be closed
    and followed only by blanks before the next `;` or `,`. An empty value, an
    empty element (`a,,b`, a trailing comma) or an empty parameter (`a;`) is
    malformed. Unknown extensions and unusable deflate offers are not: they
    are ignored (negotiate_deflate)."""
    try:
        s = value.decode("utf-8")
    except UnicodeDecodeError:
        return False  # condure reads such a value as empty: malformed
    while True:  # one element per turn: `s` starts at its name
        i = _find(s, ";,")
        name, s = (s, "") if i < 0 else (s[:i], s[i:])
        if not name.strip():
            return False
        if not s:
            return True
        sep, s = s[0], s[1:]
        while sep == ";":  # its parameters
            i = _find(s, "=;,")
            param, s = (s, "") if i < 0 else (s[:i], s[i:])
            if not param.strip():
                return False
            if not s:
                return True
            sep, s = s[0], s[1:]
            if sep != "=":
                continue
            s = s.lstrip(_BLANKS)
            if s[:1] == '"':
                end = s.find('"', 1)
                if end < 0:
                    return False
                s = s[end + 1:].lstrip(_BLANKS)
            else:
                i = _find(s, ";,")
                s = "" if i < 0 else s[i:]
            if not s:
                return True
            if s[0] not in ";,":
                return False
            sep, s = s[0], s[1:]


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


def handshake_head(reason: bytes, headers: list[tuple[bytes, bytes]], key: bytes,
                   extension: bytes | None = None) -> bytes:
    block, _ = http1.header_lines(headers, _WS_HEADERS)
    lines = [http1.status_line(b"1.1", 101, reason, interim=True), block]
    lines += [b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
              b"Sec-WebSocket-Accept: %s\r\n" % accept_key(key)]
    if extension:
        lines.append(b"Sec-WebSocket-Extensions: %s\r\n" % extension)
    lines.append(b"\r\n")
    return b"".join(lines)


def rejection(code: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The handler's `rejected` answer, as condure writes it (no Connection header);
    its code must be a final status like any response's (D17)."""
    line = http1.status_line(b"1.1", code, reason)
    block, _ = http1.header_lines(headers, _WS_HEADERS)
    lines = [line, block]
    lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
    return b"".join(lines) + body
