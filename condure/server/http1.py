"""HTTP/1.x <-> ZHTTP mapping (pure).

Request side: the uri condure reports, persistence, Expect and upgrade
detection. Response side: the head condure writes for a handler's first
data packet and the framing of the body that follows
(shared/zhttp/server.md sections 5.4-5.7, deviations D5-D10).
"""
from __future__ import annotations

import re
from typing import Iterator

from ..errors import PROCESS_FAILED, BadHandlerResponse, BadRequest
from .parser import TCHAR
from .request import MAX_URI, RequestHead

# handler headers condure drops and regenerates
_DROPPED = frozenset([b"content-length", b"transfer-encoding", b"connection"])
MAX_CHUNK = 0xFFFF
# RFC 9110 5.6.2: token = 1*tchar; header names joined by LF, which no tchar is
_TOKENS = re.compile(TCHAR + rb"+(?:\n" + TCHAR + rb"+)*")

LENGTH, CHUNKED, UNTIL_CLOSE, NO_BODY = "length", "chunked", "until-close", "no-body"


def request_uri(head: RequestHead, scheme: bytes) -> bytes:
    """``scheme://Host<target>`` for a head check_head accepted.

    The Host is a valid authority by then (D16); a missing or empty one gives
    ``localhost``, as condure does for a missing one. An absolute-form target
    is used as given (D4). `OPTIONS *` gives ``scheme://Host`` with no path:
    the target URI RFC 9112 3.3 reconstructs for the asterisk-form, and what
    the same request in absolute-form (`OPTIONS http://host HTTP/1.1`, RFC
    9112 3.2.4) gives by D4, so a handler sees one uri for both.
    """
    target = head.target
    if target[:1] == b"/":
        uri = scheme + b"://" + (head.host or b"localhost") + target
    elif target == b"*":
        uri = scheme + b"://" + (head.host or b"localhost")
    else:
        uri = target
    if len(uri) > MAX_URI:
        # connmgr answers a uri over 4096 bytes with 500 and this text (its
        # case G); our status is 414 (D1)
        raise BadRequest("request target too long", 414, text=PROCESS_FAILED)
    return uri


def is_persistent(head: RequestHead) -> bool:
    """HTTP/1.1 unless `close`; HTTP/1.0 only with `keep-alive` (tokens
    compared case-insensitively, D7)."""
    tokens = head.connection
    if head.version == b"1.1":
        return b"close" not in tokens
    return b"keep-alive" in tokens and b"close" not in tokens


def wants_continue(head: RequestHead) -> bool:
    """HTTP/1.1 (or HTTP/2) with a body (even Content-Length: 0) and the
    token `100-continue`, matched case-sensitively as condure does."""
    if (head.version != b"1.1" and head.version != b"2") or not head.has_body:
        return False
    return any(t.strip() == b"100-continue" for v in head.expect for t in v.split(b","))


def is_websocket(head: RequestHead) -> bool:
    return b"websocket" in head.upgrade


class ResponseBody:
    """Frames response body bytes for the client as the head decided.

    `overflow` becomes True when the handler sends more than its own
    Content-Length: the surplus is dropped and the connection must close
    after the response (D10).
    """

    __slots__ = ("framing", "remaining", "head_only", "overflow", "length", "streamed")

    def __init__(self, framing: str, length: int, head_only: bool) -> None:
        self.framing = framing
        self.remaining = self.length = length
        self.head_only = head_only
        self.overflow = False
        self.streamed = 0  # body bytes framed without a Content-Length

    @property
    def sent(self) -> int:
        """Body bytes framed for the client (the access log's `bytes`). Counted
        only where no Content-Length counts them already: the common framing
        pays nothing per packet for it."""
        if self.framing == NO_BODY or self.head_only:
            return 0
        if self.framing == LENGTH:
            return self.length - self.remaining
        return self.streamed

    def frame(self, data: bytes, last: bool) -> bytes:
        if self.framing == NO_BODY or self.head_only:
            return b""
        if self.framing == LENGTH:
            if len(data) > self.remaining:
                self.overflow = True
                data = data[:self.remaining]
            self.remaining -= len(data)
            return data
        self.streamed += len(data)
        if self.framing == CHUNKED:
            out = b"".join(_chunks(data))
            return out + b"0\r\n\r\n" if last else out
        return data  # until close


def _chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), MAX_CHUNK):
        part = data[i:i + MAX_CHUNK]
        yield b"%x\r\n%s\r\n" % (len(part), part)


def header_lines(headers: list[tuple[bytes, bytes]],
                 dropped: frozenset[bytes]) -> tuple[bytes, bytes | None]:
    """The handler's headers as ``Name: value`` lines, except the names in
    `dropped` (lower case), and the first Content-Length value among them.

    Every header, written or dropped, is refused if it contains CR, LF or NUL
    (D9), and every written name that is not an RFC 9110 token (D17): what
    we would not accept from a client does not go out either. The written
    ones are checked on joined bytes, so the cost per header stays a few
    list operations: each line brings exactly one CR and one LF of its own,
    so any other comes from the handler; the names, joined by LF (not a
    tchar), must match one regex.
    """
    parts: list[bytes] = []  # name, ": ", value, CRLF per written header
    length = None
    for name, value in headers:
        low = name.lower()
        if low in dropped:
            if _splits(name) or _splits(value):
                raise _splitting()
            if length is None and low == b"content-length":
                length = value
        else:
            parts += (name, b": ", value, b"\r\n")
    block = b"".join(parts)
    n = len(parts) >> 2
    if block.count(b"\n") != n or block.count(b"\r") != n or b"\x00" in block:
        raise _splitting()
    if n and _TOKENS.fullmatch(b"\n".join(parts[0::4])) is None:
        raise BadHandlerResponse("handler header name is not a token")
    return block, length


def _splits(text: bytes) -> bool:
    """CR, LF or NUL: handler text that would split the response (D9)."""
    return b"\r" in text or b"\n" in text or b"\x00" in text


def _splitting() -> BadHandlerResponse:
    return BadHandlerResponse("handler header contains CR, LF or NUL")


def status_line(version: bytes, code: int, reason: bytes, interim: bool = False) -> bytes:
    """``HTTP/x.y CODE REASON``; a reason that would split the response is
    refused like such a header (D9), and so is a code that is not a final
    status, 200-599 (D17): a 1xx head is not an answer (the client would
    wait on, or read the next response as this one's), and anything else is
    not HTTP. `interim`: the one 1xx condure writes for a handler, the 101
    that completes a WebSocket handshake.
    """
    if not (200 <= code <= 599 or interim):
        raise BadHandlerResponse(f"handler status code {code} is not a final status (200-599)")
    if _splits(reason):
        raise BadHandlerResponse("handler reason contains CR, LF or NUL")
    return b"HTTP/%s %d %s\r\n" % (version, code, reason)


def _handler_length(value: bytes) -> int:
    v = value.strip()
    if not v.isdigit() or len(v) > 18:
        # condure closes without a response; a refused handler response is a 502 (D9)
        raise BadHandlerResponse("invalid Content-Length in handler response")
    return int(v)


def response_head(version: bytes, code: int, reason: bytes,
                  headers: list[tuple[bytes, bytes]], body: bytes, more: bool,
                  persistent: bool, head_request: bool) -> tuple[bytes, ResponseBody, bool]:
    """Build the response head for the handler's first data packet.

    Returns (head bytes, body framer, persistent) - persistence can only get
    lost here (a close-delimited body, D6).
    """
    line = status_line(version, code, reason)  # first: a bad code is a 502 (D17)
    block, length = header_lines(headers, _DROPPED)
    if code == 204 or code == 304:  # (1xx are refused by status_line)
        framing, size = NO_BODY, 0
    elif length is not None:
        framing, size = LENGTH, _handler_length(length)
    elif not more:
        framing, size = LENGTH, len(body)
    elif version == b"1.1":
        framing, size = CHUNKED, 0
    else:
        framing, size, persistent = UNTIL_CLOSE, 0, False
    head = line + block
    if version == b"1.1" and not persistent:
        head += b"Connection: close\r\n"
    elif version == b"1.0" and persistent:
        head += b"Connection: keep-alive\r\n"
    if framing == LENGTH:
        head += b"Content-Length: %d\r\n\r\n" % size
    elif framing == CHUNKED:
        head += b"Transfer-Encoding: chunked\r\n\r\n"
    else:
        head += b"\r\n"
    return head, ResponseBody(framing, size, head_request), persistent


def error_body(status: int, text: str | None = None) -> bytes:
    """The body of condure's own response with `status`: `text` (errors.py has
    connmgr's wordings), or the status's reason, and a newline."""
    if text is None:
        return _REASONS.get(status, b"Error") + b"\n"
    return text.encode("ascii", "replace") + b"\n"


def error_response(status: int, version: bytes = b"1.1", text: str | None = None) -> bytes:
    """The short response condure writes itself (D1, D9, D13, D29), with
    `Connection: close` (D1 promises it; connmgr's answers may leave it out,
    and it writes HTTP/1.0 before a head is parsed: we write HTTP/1.1)."""
    reason = _REASONS.get(status, b"Error")
    body = error_body(status, text)
    return (b"HTTP/%s %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (version, status, reason, len(body), body))


_REASONS = {
    400: b"Bad Request", 413: b"Payload Too Large", 414: b"URI Too Long",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 501: b"Not Implemented",
    502: b"Bad Gateway", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}
