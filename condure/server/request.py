"""A parsed request, as every parser hands it on, and the rules above the syntax.

The events the connection code sees (`RequestHead`, `Body`, `END`,
`NEED_DATA`; server/parser.py makes them) and `check_head`: version (505),
CONNECT (501), target form and Host (400, D16), at most 64 fields (431),
framing headers (400/501). Pure.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import h11

from ..errors import BadRequest

MAX_HEADERS = 64
MAX_URI = 4096


def _bad(message: str, status: int = 400, parse_error: str | None = None) -> BadRequest:
    return BadRequest(message, status, parse_error)


class Http2Preface(BadRequest):
    """The head was `PRI * HTTP/2.0` with no fields: the start of the HTTP/2
    connection preface (RFC 9113 3.4). Where HTTP/2 is off it is the 505 any
    other unknown version gets; a connection whose mode serves HTTP/2 hands
    itself to server/http2.py instead (the parser's leftover starts with the
    preface's `SM\\r\\n\\r\\n`)."""


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes  # b"1.0" or b"1.1"
    headers: list[tuple[bytes, bytes]]
    chunked: bool = False
    content_length: int | None = None
    # gathered by check_head's one pass over the headers, for the per-request
    # decisions (http1.py): the first Host value, Connection and Upgrade tokens
    # (lower case), Expect and Sec-WebSocket-Extensions values as sent
    host: bytes | None = None
    connection: tuple[bytes, ...] = ()
    upgrade: tuple[bytes, ...] = ()
    expect: tuple[bytes, ...] = ()
    ws_extensions: tuple[bytes, ...] = ()

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length is not None

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (name compared case-insensitively)."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


def _tokens(value: bytes) -> tuple[bytes, ...]:
    """Comma-separated tokens of a header value, lower-cased (RFC 9110)."""
    if b"," not in value:  # the usual single token, without building a list
        token = value.strip().lower()
        return (token,) if token else ()
    return tuple([t.strip().lower() for t in value.split(b",") if t.strip()])


@dataclass(slots=True)
class Body:
    data: bytes


class End:
    __slots__ = ()


END = End()
NEED_DATA = h11.NEED_DATA


# --- the rules above the syntax ----------------------------------------------------

# the headers check_head looks at; the others pass through untouched
_NOTED_HEADERS = frozenset([b"host", b"connection", b"content-length", b"transfer-encoding",
                              b"upgrade", b"expect", b"sec-websocket-extensions"])

# RFC 3986 3.2.2 host (reg-name, IPv4address, IP-literal) and port: what
# `Host` (RFC 9110 7.2) and the authority of an absolute-form target may be.
# No userinfo (RFC 9110 4.2.4), no path or query, nothing outside ASCII.
_REG_CHAR = rb"[-A-Za-z0-9._~!$&'()*+,;=]"  # unreserved and sub-delims
_PCT = rb"%[0-9A-Fa-f]{2}"
_PORT = rb"(?::[0-9]*)?"
# reg-name (IPv4 addresses are reg-names too), not empty; written as runs of
# characters between escapes, which matches in one pass
_HOST_PORT = re.compile(rb"(?:" + _REG_CHAR + rb"|" + _PCT + rb")" + _REG_CHAR + rb"*(?:"
                        + _PCT + _REG_CHAR + rb"*)*" + _PORT)
# IP-literal: an IPv6 address (checked by ipaddress) or an IPvFuture
_IP_LITERAL_PORT = re.compile(rb"\[(?:([0-9A-Fa-f:.]+)|[vV][0-9A-Fa-f]+\.(?:" + _REG_CHAR
                              + rb"|:)+)\]" + _PORT)
# absolute-form: only http and https URIs make sense as a ZHTTP uri (D4)
_ABSOLUTE = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)(?:[/?#].*)?", re.S)


def valid_authority(value: bytes) -> bool:
    """Is `value` a host with an optional port (RFC 3986 3.2.2-3.2.3)?"""
    if value[:1] != b"[":
        return _HOST_PORT.fullmatch(value) is not None
    m = _IP_LITERAL_PORT.fullmatch(value)
    if m is None:
        return False
    literal = m.group(1)  # an IPv6 address; None for an IPvFuture
    if literal is None:
        return True
    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except ValueError:
        return False
    return True


def _check_target(method: bytes, target: bytes) -> None:
    """The request-target forms of RFC 9112 3.2 that we serve (origin-form is
    checked by the caller): asterisk-form for OPTIONS, absolute-form with an
    http(s) scheme and a valid authority. Authority-form belongs to CONNECT,
    which is refused before this."""
    if target == b"*":
        if method != b"OPTIONS":
            raise _bad("asterisk-form target outside OPTIONS")
        return
    m = _ABSOLUTE.fullmatch(target)
    if m is None:
        raise _bad("request target is not origin-form, absolute-form or asterisk-form")
    if not valid_authority(m.group(1)):
        raise _bad("invalid authority in absolute-form target")


def check_head(method: bytes, target: bytes, version: bytes,
               headers: list[tuple[bytes, bytes]]) -> RequestHead:
    """Apply the limits and rules every parser shares (D1, D16)."""
    if version not in (b"1.0", b"1.1"):
        if version == b"2.0" and method == b"PRI" and target == b"*" and not headers:
            raise Http2Preface("HTTP/2 connection preface", 505, "invalid HTTP version")
        raise _bad(f"unsupported HTTP version {version.decode('latin-1')}", 505,
                   "invalid HTTP version")
    if method == b"CONNECT":
        # a tunnel has no ZHTTP mapping; 501 (not 405: no resource is involved
        # and 405 would have to list the methods the handler allows)
        raise _bad("CONNECT is not supported", 501)
    if target[:1] != b"/":
        _check_target(method, target)
    if len(headers) > MAX_HEADERS:
        raise _bad("too many headers", 431, "too many headers")
    head = RequestHead(method, target, version, headers)
    lengths = []
    te: list[bytes] = []
    hosts = 0
    for n, v in headers:
        ln = n.lower()
        if ln not in _NOTED_HEADERS:
            continue
        if ln == b"host":
            hosts += 1
            if head.host is None:
                head.host = v
        elif ln == b"connection":
            head.connection += _tokens(v)
        elif ln == b"content-length":
            lengths.append(v)
        elif ln == b"transfer-encoding":
            te += [t.strip().lower() for t in v.split(b",")]
        elif ln == b"upgrade":
            head.upgrade += _tokens(v)
        elif ln == b"expect":
            head.expect += (v,)
        else:
            head.ws_extensions += (v,)
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        raise _bad("HTTP/1.1 request needs exactly one Host header")
    host = head.host
    # an empty Host is allowed (RFC 9112 3.2: no authority); the uri then uses
    # localhost, as for a missing one (http1.request_uri). The usual reg-name
    # is matched here, without the call.
    if host and _HOST_PORT.fullmatch(host) is None and not valid_authority(host):
        raise _bad("invalid Host header")
    if te:
        if lengths:
            raise _bad("both Content-Length and Transfer-Encoding")
        if te != [b"chunked"]:
            raise _bad("unsupported transfer coding", 501, "unsupported transfer encoding")
        head.chunked = True
    elif lengths:
        head.content_length = _content_length(lengths)
    return head


def _content_length(values: list[bytes]) -> int:
    # one plain decimal only: duplicates, even identical ones, are refused so
    # that nothing downstream can read the length differently (smuggling)
    if len(values) != 1:
        raise _bad("more than one Content-Length")  # connmgr takes the last: our own refusal
    v = values[0].strip()
    if not v.isdigit() or len(v) > 18:
        raise _bad("invalid Content-Length", parse_error="invalid content length")
    return int(v)
