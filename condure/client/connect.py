"""Outgoing connections for client mode: resolve, apply the deny list, connect, TLS.

shared/zhttp/client.md sections 9 and 10.3: addresses are tried in the
resolver's order, one after the other; the last failure decides the
condition. With --deny-out-internal, resolved addresses in private ranges
are skipped (checked after DNS, so a name resolving to 127.0.0.1 is refused
too); when all were denied the condition is `policy-violation`. TLS verifies
the chain and the host name by default, with SNI. A request may carry a
client certificate for the origin (pushpin-connmgr's `client-cert` and
`client-key`, PEM text; connmgr.md 2.1): any problem with it, or the
origin refusing it, is a `tls-error`.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
from dataclasses import dataclass

import gevent.socket as gsocket
from gevent import ssl as gssl

from ..config import PRIVATE_SUBNETS
from ..errors import ClientError

MAX_ADDRESSES = 16
CONTEXTS_MAX = 64  # TLS contexts kept, one per (verify, client identity)
DENY_NETS = [ipaddress.ip_network(n) for n in PRIVATE_SUBNETS]


@dataclass(frozen=True)
class Target:
    host: str  # connect to this (URI host or connect-host)
    port: int
    tls: bool
    tls_name: str  # SNI and the name verified
    verify: bool = True
    deny: bool = False  # apply the deny list
    client_cert: str = ""  # PEM: a client certificate (chain) to show the origin, or none
    client_key: str = ""  # PEM: its private key (or in client_cert)


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


_CONTEXTS: dict[tuple[bool, str, str], ssl.SSLContext] = {}


def _context(target: Target) -> ssl.SSLContext:
    """The TLS context for a target: one per verify mode and client identity,
    the oldest dropped past CONTEXTS_MAX (a handler usually has a few)."""
    key = (target.verify, target.client_cert, target.client_key)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = tls_context(target.verify)
        if target.client_cert:  # a key alone is ignored, as by connmgr
            load_identity(ctx, target.client_cert, target.client_key)
        if len(_CONTEXTS) >= CONTEXTS_MAX:
            del _CONTEXTS[next(iter(_CONTEXTS))]
        _CONTEXTS[key] = ctx
    return ctx


def load_identity(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """Give `ctx` a client certificate from PEM text (ClientError tls-error if
    unusable). Python's ssl loads certificates from files only: they are
    written to a private directory and removed at once."""
    d = tempfile.mkdtemp(prefix="condure-id-")  # mode 0700
    try:
        cert_path = _private_file(d, "cert.pem", cert)
        key_path = _private_file(d, "key.pem", key) if key else None
        # an encrypted key gets an empty password rather than a prompt on the tty
        ctx.load_cert_chain(cert_path, key_path, password=lambda: b"")
    except (ssl.SSLError, ValueError, OSError) as e:
        raise ClientError("tls-error", f"client certificate: {e}") from None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _private_file(d: str, name: str, text: str) -> str:
    path = os.path.join(d, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _tls(sock: gsocket.socket, target: Target) -> gsocket.socket:
    try:
        ctx = _context(target)
        # Python sends no SNI for an IP literal and checks it against the
        # certificate's IP addresses instead
        tls = ctx.wrap_socket(sock, server_hostname=target.tls_name)
    except ClientError:
        sock.close()
        raise
    except (ssl.SSLError, ssl.CertificateError, OSError) as e:
        sock.close()
        raise ClientError("tls-error", str(e)) from None
    return tls
