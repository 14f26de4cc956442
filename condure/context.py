"""The state one worker shares between its connections: a leaf module.

`Server` holds the ZeroMQ sockets, the session registry, the timer wheel,
the metrics and the protocol constants, and routes handler packets to the
connections that own their sessions. It imports nothing from server/ or
client/: connections get it passed in (typed by server.ports.Worker where
an exchange only reads it), so no module below app.py imports app.py.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from .config import Config
from .log import RateLimitedWarning
from .metrics import Metrics
from .timer import TimerWheel
from .zhttp import packet as zp
from .zhttp.session import HANDLER_TIMEOUT, KEEPALIVE_INTERVAL, SessionRegistry
from .zhttp.sockets import ReqSockets, StreamSockets

log_app = logging.getLogger("condure.app")
log_handler_timeout = logging.getLogger("condure.connection")


class Server:
    """Shared state of one worker: what every connection greenlet needs."""

    def __init__(self, config: Config, zsockets: StreamSockets | None,
                 zreq: ReqSockets | None = None, worker: int = 0,
                 instance_id: bytes | None = None, router_resp: bool = True) -> None:
        self.config = config
        self.instance_id = instance_id or config.id.encode()
        # requests say handlers may answer over our ROUTER (pushpin-connmgr's
        # router-resp) only where such answers reach this worker: a handler
        # addresses them to the request's `from`, which must be the ROUTER's
        # own name; behind the parent of --workers N it is not (D27)
        self.router_resp = router_resp
        self.registry = SessionRegistry(worker)
        self.zsockets = zsockets
        self.zreq = zreq
        self.wheel = TimerWheel()
        self.connections: set[Any] = set()  # live client connections, for shutdown
        self.metrics = Metrics()
        # protocol constants, attributes so in-process tests can shorten them
        self.handler_timeout = HANDLER_TIMEOUT
        self.keepalive_interval = KEEPALIVE_INTERVAL
        self._parse_warning = RateLimitedWarning(log_app)
        self.access_log = config.access_log  # D21: the one check on the request path
        # sessions whose handler went silent (60 s; req mode: --req-timeout) are
        # an operator's problem, but a dead handler must not cost a line a request
        self._handler_timeout_warning = RateLimitedWarning(log_handler_timeout)

    def on_message(self, frame: bytes) -> None:
        """A message from the SUB socket (`<id> T<map>`): hand it to its sessions."""
        self._deliver(frame, zp.parse_message)

    def on_routed(self, payload: bytes) -> None:
        """A packet a handler sent to the `-out-stream` ROUTER (router-resp): no
        address prefix; routed by id exactly as a SUB message."""
        self._deliver(payload, zp.parse)

    def on_req_message(self, payload: bytes) -> None:
        """A reply from the req DEALER (no address prefix)."""
        self._deliver(payload, zp.parse)

    def _deliver(self, data: bytes, parse: Any) -> None:
        try:
            pkt = parse(data)
        except zp.ParseError as e:
            self._warn_parse_error(e)
            return
        self.metrics.packets_in[zp.metric_name(pkt.type)] += 1
        delivered = False
        for owner, rid, seq in self.registry.route(pkt):
            owner.deliver(rid, pkt, seq)
            delivered = True
        if not delivered:
            self.metrics.packets_dropped += 1

    def _warn_parse_error(self, e: Exception) -> None:
        self.metrics.packets_dropped += 1
        self._parse_warning.warning("zhttp parse error: %s", e)

    def warn_handler_timeout(self, rid: bytes, seconds: float) -> None:
        """A request (or WebSocket) timed out waiting for its handler."""
        self._handler_timeout_warning.warning(
            "handler timeout: session %s got nothing from its handler within %g s",
            rid.decode("ascii", "replace"), seconds)

    def on_expired(self, conns: list[Any]) -> None:
        """Timer sweep: flag timeouts, batch keep-alives per handler address."""
        now = time.monotonic()
        keepalives: dict[bytes, list] = {}
        for conn in conns:
            deadline = conn.on_timer(now, keepalives)
            if deadline is not None:
                self.wheel.add(deadline, conn)
        for addr, ids in keepalives.items():
            log_app.debug("sending keep alives for %d sessions", len(ids))
            for group in zp.batches(ids):
                self.metrics.packets_out["keep-alive"] += 1
                self.zsockets.send_to(  # type: ignore[union-attr]  # stream sessions: stream mode
                    addr, zp.multi_packet(self.instance_id, group, b"keep-alive"))
