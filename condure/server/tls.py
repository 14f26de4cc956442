"""TLS for `--listen ...,tls`: identities from --tls-identities-dir chosen by SNI.

condure's lookup (shared/zhttp/server.md 1.2): the SNI host lower-cased names
the files `HOST.crt` + `HOST.key`; if they are missing, the one-level
wildcard file `_.rest.of.domain.crt`; else the listener's `default-cert`;
else the handshake fails. Files are reloaded when their mtime changes.

ALPN (issue 16): a listener that serves HTTP/2 offers `h2` and `http/1.1`,
in that order of preference, on its base context and on every identity's (the
SNI callback swaps the context before ALPN is decided); one that does not
offers nothing, as before.
"""
from __future__ import annotations

import logging
import os
import re
import ssl
from typing import Any

from gevent import ssl as gssl

from ..log import RateLimitedWarning
from ..zhttp.trace import quote

# a server name becomes part of a file name: only host names are looked up, so
# a client cannot reach files outside the directory (`../x`) or below it (D24)
_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")

log = logging.getLogger("condure.tls")


class Identities:
    """SSL contexts per identity name, cached and reloaded on mtime change."""

    def __init__(self, directory: str, alpn: list[str] | None = None) -> None:
        self.directory = directory
        self.alpn = alpn  # the ALPN protocols offered (None: no ALPN)
        self._cache: dict[str, tuple[float, ssl.SSLContext]] = {}
        # what clients ask for decides these lines: one a second at most
        self.warning = RateLimitedWarning(log)

    def paths(self, name: str) -> tuple[str, str]:
        base = os.path.join(self.directory, name)
        return base + ".crt", base + ".key"

    def context(self, name: str) -> ssl.SSLContext | None:
        """The context for identity `name`, or None if its files are missing/bad."""
        crt, key = self.paths(name)
        try:
            mtime = max(os.stat(crt).st_mtime, os.stat(key).st_mtime)
        except OSError:
            return None
        cached = self._cache.get(name)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        ctx = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.alpn:
            ctx.set_alpn_protocols(self.alpn)
        try:
            ctx.load_cert_chain(crt, key)
        except (OSError, ssl.SSLError) as e:
            self.warning.warning("failed to load tls identity %s: %s", name, e)
            return None
        self._cache[name] = (mtime, ctx)
        return ctx

    def candidates(self, server_name: str | None) -> list[str]:
        """The identity names a server name may use, in the order they are tried
        (the listener's default-cert comes after them)."""
        if not server_name:
            return []
        host = server_name.lower()
        if len(host) > 253 or not _HOST_NAME.fullmatch(host):
            return []
        names = [host]
        if "." in host:
            names.append("_." + host.split(".", 1)[1])
        return names

    def lookup(self, server_name: str | None, default: str | None) -> ssl.SSLContext | None:
        for name in self.candidates(server_name):
            ctx = self.context(name)
            if ctx is not None:
                return ctx
        return self.context(default) if default else None

    def not_found(self, server_name: str | None, default: str | None) -> str:
        """Why a handshake has no certificate, naming the files looked for."""
        files = [self.paths(name)[0] for name in self.candidates(server_name)]
        if default:
            files.append(f"default-cert {self.paths(default)[0]}")
        who = (f"server name {quote(server_name.encode('utf-8', 'replace'))}" if server_name
               else "a client without server name (SNI)")
        where = ", ".join(files) + " (each with its .key)" if files else "nothing"
        tail = "" if default else "; the listener has no default-cert"
        return f"no tls certificate for {who}: looked for {where}{tail}"


def server_context(identities: Identities, default: str | None) -> ssl.SSLContext:
    """The listener's context: its SNI callback swaps in the identity's context.

    Without SNI (or with no match) the default identity is used; if there is
    none the handshake fails with an alert.
    """
    base = gssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if identities.alpn:
        base.set_alpn_protocols(identities.alpn)

    def on_sni(sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        # called for every handshake, with None when the client sends no SNI
        ctx = identities.lookup(server_name, default)
        if ctx is None:  # the handshake fails (`callback failed`): say what was missing
            identities.warning.warning("%s", identities.not_found(server_name, default))
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = ctx
        return None

    base.sni_callback = on_sni
    # the base context serves when the callback keeps it: give it the default cert
    default_ctx = identities.lookup(None, default)
    if default_ctx is not None:
        crt, key = identities.paths(default)  # type: ignore[arg-type]
        base.load_cert_chain(crt, key)
    return base
