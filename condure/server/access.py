"""The access log (`--access-log`, deviation D21): one line per request.

condure has none; with the flag, every request a client sent (stream or req
mode, plain HTTP or WebSocket) gets one line at info level, target
`condure::access`, when its exchange ends:

    peer=127.0.0.1:40312 method=GET uri=http://example.com/x status=200 bytes=5 ms=1.3 by=handler

Fields, always in this order, separated by one space (logfmt):

* `peer`: the client's address and port (`[v6]:port`), `-` on a Unix socket;
* `method`, `uri`: as sent to the handler (`-` when the request head could
  not be parsed);
* `status`: what the client got, `-` if no response was written (the client
  left first, or the connection was closed without one); a WebSocket that
  was accepted logs `101` when its session ends;
* `bytes`: response body bytes written (for a WebSocket, the frame bytes
  written after the handshake);
* `ms`: milliseconds from the complete request head (for a request refused
  before that, from when condure began waiting for it) to the end of the
  exchange, or to condure's own answer (logged before the answer is written:
  its drain of the client's input may take another second);
* `by`: who answered: `handler`, `condure` (our own 400, 413, 502, 504, ...)
  or `-` (nobody);
* `proto`, `stream`, only for a request that came over HTTP/2: `proto=HTTP/2`
  and the HTTP/2 stream id (a line without `proto` is an HTTP/1.x request);
* `err`, only when the exchange ended by an error: its name, as in the
  `process error:` debug lines (`Timeout`, `ClientGone`, `HandlerCancel`,
  `BadHandlerResponse`, ...).

A value that is not plain visible ASCII (or holds `"` or `\\`) is written in
double quotes with the escapes of the packet traces, so a line always splits
on spaces. Nothing here runs without the flag: callers check one bool.
"""
from __future__ import annotations

import logging
import time

from ..errors import BadRequest, CondureError
from ..zhttp.trace import quote
from . import http1
from .request import RequestHead

log = logging.getLogger("condure.access")

HANDLER = "handler"
CONDURE = "condure"
NOBODY = "-"

_PLAIN = frozenset(range(0x21, 0x7F)) - {ord('"'), ord("\\")}


def value(data: bytes | None) -> str:
    """One field's value: as is if plain visible ASCII, else quoted; `-` for None."""
    if data is None:
        return "-"
    if data and all(b in _PLAIN for b in data):
        return data.decode("ascii")
    return quote(data)


def peer_text(peer: tuple[bytes, int] | None) -> str:
    if peer is None:
        return "-"
    addr = peer[0].decode("ascii", "replace")
    return f"[{addr}]:{peer[1]}" if ":" in addr else f"{addr}:{peer[1]}"


def format_line(peer: tuple[bytes, int] | None, method: bytes | None, uri: bytes | None,
                status: int | None, body_bytes: int, ms: float, by: str,
                error: str | None = None, h2_stream: int | None = None) -> str:
    """The access log line (pure; see the module docstring for the fields).
    `h2_stream`: the stream id of a request that came over HTTP/2."""
    line = (f"peer={peer_text(peer)} method={value(method)} uri={value(uri)}"
            f" status={'-' if status is None else status} bytes={body_bytes}"
            f" ms={ms:.1f} by={by}")
    if h2_stream is not None:
        line = f"{line} proto=HTTP/2 stream={h2_stream}"
    return f"{line} err={error}" if error else line


def request_uri(head: RequestHead, scheme: bytes) -> bytes:
    """The uri a request is (or would be) forwarded with; the raw target if
    it cannot be made (a target too long)."""
    try:
        return http1.request_uri(head, scheme)
    except BadRequest:
        return head.target


def write(peer: tuple[bytes, int] | None, head: RequestHead | None, uri: bytes | None,
          status: int | None, body_bytes: int, started: float, by: str,
          error: BaseException | str | None = None, h2_stream: int | None = None) -> None:
    """Log one request's line; `started` is a time.monotonic() value."""
    ms = (time.monotonic() - started) * 1000.0
    if isinstance(error, BaseException):
        error = type(error).__name__
    method = None if head is None else head.method
    log.info("%s", format_line(peer, method, uri, status, body_bytes, ms, by, error, h2_stream))


def own_answer(peer: tuple[bytes, int] | None, head: RequestHead | None, uri: bytes | None,
               status: int, started: float, error: BaseException | str | None,
               h2_stream: int | None = None) -> None:
    """The line of a request condure answered itself (http1.error_response)."""
    text = error.text if isinstance(error, CondureError) else None
    write(peer, head, uri, status, len(http1.error_body(status, text)), started, CONDURE, error,
          h2_stream)
