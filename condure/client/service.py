"""Client mode's shared state: the zserver sockets, live sessions, the pool.

Dispatch (shared/zhttp/client.md 1.5): a first stream message starts a
session keyed by (from, id) unless one is live (then it is dropped); later
messages reach every live session named in their id (list); anything else
is dropped silently. REQ requests each get a greenlet, at most --req-maxconn
at once (the socket is not read while all are busy).
"""
from __future__ import annotations

import logging
from typing import Any

import gevent
from gevent.pool import Pool as GreenletPool

from ..blocks import BlockBudget
from ..config import Config
from ..errors import ClientError, DropRequest
from ..log import RateLimitedWarning
from ..zhttp import packet as zp
from ..zhttp.session import HANDLER_TIMEOUT, KEEPALIVE_INTERVAL
from ..zhttp.sockets import ServerReqSockets, ServerStreamSockets, setting_specs
from .http1 import Pool
from .session import StreamSession, req_exchange, req_reply

log = logging.getLogger("condure.client")

MAX_KEY = 64


class ClientService:
    def __init__(self, config: Config, ctx: Any) -> None:
        self.config = config
        self.instance_id = config.id.encode()
        self.sockets: ServerStreamSockets | None = None
        self.req_sockets: ServerReqSockets | None = None
        try:
            self._make_sockets(ctx)
        except BaseException:
            self.close()  # the sockets made so far (ctx.term() would wait for them)
            raise
        # spare blocks for the stream sessions' response heads: a pool of its
        # own, the size of the server side's (connmgr.md 3.2); REQ exchanges
        # have none, their heads stay --buffer-size (as pushpin-connmgr's)
        self.blocks = BlockBudget.for_config(config.buffer_size, config.stream_maxconn,
                                             config.blocks_max, config.connection_blocks_max)
        self.req_blocks = BlockBudget(config.buffer_size, 0, 0)
        self.pool = Pool(max((config.req_maxconn + config.stream_maxconn) // 10, 1),
                         self.blocks.max_capacity)
        self.sessions: dict[tuple[bytes, bytes], StreamSession] = {}
        self.stream_slots = GreenletPool(config.stream_maxconn)
        self.req_slots = GreenletPool(config.req_maxconn)
        self.handler_timeout = HANDLER_TIMEOUT
        self.keepalive_interval = KEEPALIVE_INTERVAL
        self.stream_timeout = float(config.stream_timeout)
        self._parse_warning = RateLimitedWarning(log)

    def _make_sockets(self, ctx: Any) -> None:
        config = self.config
        hwm = max((config.req_maxconn + config.stream_maxconn) // 20, 1)
        if config.zserver_stream:
            with setting_specs("zhttp server stream"):
                self.sockets = ServerStreamSockets(ctx, list(config.zserver_stream),
                                                   self.instance_id, config.zserver_connect,
                                                   config.ipc_file_mode, hwm)
        if config.zserver_req:
            with setting_specs("zhttp server req"):
                self.req_sockets = ServerReqSockets(ctx, list(config.zserver_req),
                                                    config.zserver_connect,
                                                    config.ipc_file_mode, hwm)

    def describe(self) -> list[str]:
        mode = "connect" if self.config.zserver_connect else "bind"
        out = []
        if self.sockets is not None:
            out.append(f"zhttp server {mode} {self.sockets.describe()}")
        if self.req_sockets is not None:
            out.append(f"zhttp server {mode} req {self.req_sockets.describe()}")
        return out

    def start(self) -> None:
        if self.sockets is not None:
            self.sockets.start(self.on_first, self.on_later)
        if self.req_sockets is not None:
            self.req_sockets.start(self.on_request)

    def cancel_all(self) -> None:
        """Shutdown: one batched `cancel` per handler address and path (PUB, or
        ROUTER for router-resp sessions) for the live sessions."""
        if self.sockets is None:
            return
        by_addr: dict[tuple[bytes, bool], list[tuple[bytes, int]]] = {}
        for session in self.sessions.values():
            zs = session.zs
            if zs.addr and not zs.paused:  # a handed-off session gets nothing until resumed
                by_addr.setdefault((zs.addr, session.router), []).append((zs.id, zs.next_seq()))
        for (addr, router), ids in by_addr.items():
            for group in zp.batches(ids):
                self.sockets.send(addr, zp.multi_packet(self.instance_id, group, b"cancel"),
                                  router)

    def close(self) -> None:
        for s in (self.sockets, self.req_sockets):
            if s is not None:
                s.close()

    # --- stream interface ---------------------------------------------------

    def on_first(self, payload: bytes) -> None:
        pkt = self._parse(payload)
        if pkt is None or len(pkt.ids) != 1 or pkt.type or len(pkt.from_) > MAX_KEY:
            return
        rid, seq = pkt.ids[0]
        if seq != 0 or len(rid) > MAX_KEY or (pkt.from_, rid) in self.sessions:
            return  # condure drops these silently
        if self.stream_slots.full():
            log.warning("client stream sessions full; request dropped")
            return
        session = StreamSession(self, pkt, rid)
        self.sessions[session.key] = session
        session.greenlet = self.stream_slots.spawn(session.run)

    def on_later(self, payload: bytes) -> None:
        pkt = self._parse(payload)
        if pkt is None:
            return
        for rid, seq in pkt.ids:
            session = self.sessions.get((pkt.from_, rid))
            if session is not None:
                session.deliver(pkt, seq)

    def end_session(self, key: tuple[bytes, bytes]) -> None:
        self.sessions.pop(key, None)

    # --- REQ interface ------------------------------------------------------

    def on_request(self, envelope: list[bytes], payload: bytes) -> None:
        pkt = self._parse(payload, require_id=False)
        if pkt is None:
            return
        if len(pkt.ids) != 1 or len(pkt.ids[0][0]) > MAX_KEY or len(pkt.from_) > MAX_KEY:
            return  # no reply, as condure
        self.req_slots.wait_available()
        self.req_slots.spawn(self._req, envelope, pkt)

    def _req(self, envelope: list[bytes], pkt: zp.Packet) -> None:
        rid = pkt.ids[0][0]
        rid_out = None if rid == zp.NO_ID else rid
        try:
            with gevent.Timeout(self.config.req_timeout, ClientError("connection-timeout")):
                fields = req_exchange(self, pkt)
        except DropRequest as e:
            log.debug("client req dropped: %s", e)
            return
        except ClientError as e:
            log.debug("client req failed: %s (%s)", e.condition, e)
            fields = {b"type": b"error", b"condition": e.condition.encode()}
        except Exception:
            log.exception("client req failed")
            fields = {b"type": b"error", b"condition": b"undefined-condition"}
        assert self.req_sockets is not None
        self.req_sockets.reply(envelope, req_reply(rid_out, fields))

    def _parse(self, payload: bytes, require_id: bool = True) -> zp.Packet | None:
        """The packet, or None after a (rate-limited) warning, as server mode does."""
        try:
            return zp.parse(payload, require_id)
        except zp.ParseError as e:
            self._parse_warning.warning("zhttp parse error: %s", e)
            return None
