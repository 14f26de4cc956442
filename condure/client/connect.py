"""Outgoing connections for client mode: resolve, apply the deny list, connect, TLS.

shared/zhttp/client.md sections 9 and 10.3: addresses are tried in the
resolver's order, one after the other; the last failure decides the
condition. With --deny-out-internal, resolved addresses in private ranges
are skipped (checked after DNS, so a name resolving to 127.0.0.1 is refused
too); when all were denied the condition is `policy-violation`. TLS verifies
the chain and the host name by default, with SNI.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
from dataclasses import dataclass

import gevent.socket as gsocket
from gevent import ssl as gssl

from ..config import PRIVATE_SUBNETS
from ..errors import ClientError

MAX_ADDRESSES = 16
DENY_NETS = [ipaddress.ip_network(n) for n in PRIVATE_SUBNETS]


@dataclass(frozen=True)
class Target:
    host: str  # connect to this (URI host or connect-host)
    port: int
    tls: bool
    tls_name: str  # SNI and the name verified
    verify: bool = True
    deny: bool = False  # apply the deny list


def denied(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    return any(addr in net for net in DENY_NETS)


def resolve(target: Target) -> list[tuple]:
    try:
        infos = gsocket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ClientError("undefined-condition", f"dns: {e}") from None
    infos = infos[:MAX_ADDRESSES]
    if target.deny:
        allowed = [i for i in infos if not denied(i[4][0])]
        if infos and not allowed:
            raise ClientError("policy-violation", "all addresses denied")
        infos = allowed
    if not infos:
        raise ClientError("undefined-condition", "no addresses")
    return infos


def connect(target: Target, timeout: float | None = None) -> gsocket.socket:
    """A connected (and, for https/wss, TLS-wrapped) socket, or ClientError."""
    last: Exception | None = None
    for family, kind, proto, _name, addr in resolve(target):
        sock = gsocket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except OSError as e:
            sock.close()
            last = e
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _tls(sock, target) if target.tls else sock
    raise _connect_error(last)


def _connect_error(e: Exception | None) -> ClientError:
    if isinstance(e, ConnectionRefusedError):
        return ClientError("remote-connection-failed", str(e))
    if isinstance(e, (socket.timeout, TimeoutError)) or getattr(e, "errno", None) == errno.ETIMEDOUT:
        return ClientError("connection-timeout", str(e))
    return ClientError("undefined-condition", str(e))


def tls_context(verify: bool) -> ssl.SSLContext:
    ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_default_certs()
    else:
        ctx.check_hostname = False  # both off, or Python refuses CERT_NONE
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def _tls(sock: gsocket.socket, target: Target) -> gsocket.socket:
    ctx = _CONTEXTS.get(target.verify)
    if ctx is None:
        ctx = _CONTEXTS[target.verify] = tls_context(target.verify)
    try:
        # Python sends no SNI for an IP literal and checks it against the
        # certificate's IP addresses instead
        tls = ctx.wrap_socket(sock, server_hostname=target.tls_name)
    except (ssl.SSLError, ssl.CertificateError, OSError) as e:
        sock.close()
        raise ClientError("tls-error", str(e)) from None
    return tls
