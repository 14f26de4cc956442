"""A handler's client-mode request, checked and turned into what goes out (pure).

shared/zhttp/client.md sections 2, 6, 9.2 and 11: which fields are honoured,
the head condure writes (Host first from the URI, handler headers minus
Host/Connection/Content-Length/Transfer-Encoding, framing last) and the
redirect rules.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

from ..errors import BadHandlerResponse, ClientError, DropRequest
from ..server.http1 import header_lines
from ..zhttp.packet import Packet
from .connect import Target

MAX_HEADERS = 64
MAX_REDIRECTS = 8
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_DROPPED = frozenset([b"host", b"connection", b"content-length", b"transfer-encoding"])
_WS_DROPPED = _DROPPED | {b"upgrade", b"sec-websocket-version", b"sec-websocket-key"}
_NO_EMPTY_LENGTH = frozenset([b"GET", b"HEAD", b"OPTIONS"])


@dataclass(frozen=True)
class ClientRequest:
    method: bytes
    scheme: str
    host: str
    port: int
    target: bytes  # path + query (+ fragment, as condure sends it)
    host_header: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""
    more: bool = False
    credits: int = 0
    connect_host: str = ""
    connect_port: int = 0
    ignore_policies: bool = False
    trust_connect_host: bool = False
    ignore_tls_errors: bool = False
    follow_redirects: bool = False
    uri: str = ""
    length: int | None = None  # the handler's Content-Length: a non-chunked upload
    client_cert: str = ""  # PEM text (connmgr's client-cert): shown to https/wss origins
    client_key: str = ""

    @property
    def websocket(self) -> bool:
        return self.scheme in ("ws", "wss")

    def target_for(self, deny: bool) -> Target:
        host, port = self.host, self.port
        if self.connect_host:
            host, port = self.connect_host, self.connect_port  # port 0 if not given: fails
        tls_name = self.connect_host if (self.trust_connect_host and self.connect_host) else self.host
        return Target(host, port, self.scheme in ("https", "wss"), tls_name,
                      verify=not self.ignore_tls_errors, deny=deny and not self.ignore_policies,
                      client_cert=self.client_cert, client_key=self.client_key)


def _field(raw: dict, name: bytes, kind: type, default: Any) -> Any:
    v = raw.get(name)
    if v is None:
        return default
    if type(v) is not kind:
        raise DropRequest(f"{name.decode()} has the wrong type")
    return v


def _text_field(raw: dict, name: bytes) -> str:
    """A string field that must be UTF-8 (PEM text): else the message is
    dropped, as pushpin-connmgr drops a packet with a bad field."""
    try:
        return str(_field(raw, name, bytes, b"").decode("utf-8"))
    except UnicodeDecodeError:
        raise DropRequest(f"{name.decode()} is not valid utf-8") from None


def from_packet(pkt: Packet, schemes: tuple[str, ...]) -> ClientRequest:
    """Check the request fields; ClientError("bad-request") if unusable."""
    raw = pkt.raw
    uri = _field(raw, b"uri", bytes, b"").decode("utf-8", "replace")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in schemes or not parts.hostname:
        raise ClientError("bad-request", f"unsupported uri {uri!r}")
    method = _field(raw, b"method", bytes, b"")
    if not method and scheme in ("http", "https"):
        raise ClientError("bad-request", "missing method")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ClientError("bad-request", "bad port") from None
    host_header = _host_header(parts.hostname, parts.port, scheme)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "") + \
        (f"#{parts.fragment}" if parts.fragment else "")
    dropped = _WS_DROPPED if scheme in ("ws", "wss") else _DROPPED
    headers = tuple((n, v) for n, v in pkt.headers if n.lower() not in dropped)
    if len(headers) + 1 > MAX_HEADERS:
        raise ClientError("bad-request", "too many headers")
    try:  # what server mode refuses to write (D9, D17) is not sent to an origin either
        header_lines(list(headers), frozenset())
    except BadHandlerResponse as e:
        raise ClientError("bad-request", str(e)) from None
    return _build(method, scheme, parts, port, target, host_header, headers, pkt, raw, uri)


def _build(method: bytes, scheme: str, parts: Any, port: int, target: str, host_header: bytes,
           headers: tuple, pkt: Packet, raw: dict, uri: str) -> ClientRequest:
    return ClientRequest(
        method=b"GET" if scheme in ("ws", "wss") else method, scheme=scheme,
        host=parts.hostname, port=port, target=target.encode(), host_header=host_header,
        headers=headers, body=pkt.body, more=pkt.more, credits=pkt.credits,
        connect_host=_field(raw, b"connect-host", bytes, b"").decode("utf-8", "replace"),
        connect_port=_field(raw, b"connect-port", int, 0),
        ignore_policies=_field(raw, b"ignore-policies", bool, False),
        trust_connect_host=_field(raw, b"trust-connect-host", bool, False),
        ignore_tls_errors=_field(raw, b"ignore-tls-errors", bool, False),
        follow_redirects=_field(raw, b"follow-redirects", bool, False),
        uri=uri, length=handler_length(pkt.headers),
        client_cert=_text_field(raw, b"client-cert"), client_key=_text_field(raw, b"client-key"))


def _host_header(host: str, port: int | None, scheme: str) -> bytes:
    """URI host, with :port only when it is not the scheme's default."""
    out = b"[%s]" % host.encode() if ":" in host else host.encode("idna")
    if port and port != DEFAULT_PORTS[scheme]:
        out += b":%d" % port
    return out


def handler_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """A Content-Length the handler gave: it chooses a non-chunked upload."""
    for n, v in headers:
        if n.lower() == b"content-length":
            v = v.strip()
            if not v.isdigit():
                raise ClientError("undefined-condition", "bad Content-Length from handler")
            return int(v)
    return None


def head_headers(req: ClientRequest, framing: str, length: int = 0) -> list[tuple[bytes, bytes]]:
    """Host first, the handler's headers, then the framing headers.

    framing: "length" (Content-Length: length, left out for an empty
    GET/HEAD/OPTIONS) or "chunked" (Connection: Transfer-Encoding, then
    Transfer-Encoding: chunked), as condure writes them.
    """
    out = [(b"Host", req.host_header), *req.headers]
    if framing == "chunked":
        out += [(b"Connection", b"Transfer-Encoding"), (b"Transfer-Encoding", b"chunked")]
    elif length or req.method not in _NO_EMPTY_LENGTH:
        out.append((b"Content-Length", b"%d" % length))
    return out


def redirect(req: ClientRequest, code: int, headers: list[tuple[bytes, bytes]],
             schemes: tuple[str, ...]) -> ClientRequest | None:
    """The next hop for a 3xx we follow, or None to deliver the response."""
    if not 300 <= code <= 399:
        return None
    location = next((v for n, v in headers if n.lower() == b"location"), None)
    if location is None:
        return None
    try:
        url = urljoin(req.uri, location.decode("utf-8"))
    except UnicodeDecodeError:
        return None
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        return None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    host_header = _host_header(parts.hostname, parts.port, parts.scheme)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    nxt = replace(req, scheme=parts.scheme, host=parts.hostname, port=port,
                  target=target.encode(), host_header=host_header, uri=url,
                  connect_host="", connect_port=0)
    if code in (301, 302, 303) and req.method == b"POST":
        nxt = replace(nxt, method=b"GET", body=b"",
                      headers=tuple((n, v) for n, v in req.headers
                                    if n.lower() != b"content-type"))
    return nxt
