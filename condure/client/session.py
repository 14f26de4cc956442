"""Client mode: handlers' requests become outgoing HTTP exchanges.

Two interfaces (shared/zhttp/client.md sections 1-7):

* REQ (--zserver-req): one request message, the whole exchange under
  --req-timeout, exactly one reply ({code, reason, headers, body} or
  {type: error, condition}).
* stream (--zserver-stream): a session per (from, id) with seq numbers both
  ways: `keep-alive` ack, the response head as a data packet with `more`,
  the body under the handler's credits, a final packet without `more`;
  uploads with `more` are streamed under condure's credits. Errors before the
  head was delivered are `error` + condition, after it `cancel`; handler
  faults end the session silently.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import h11

from ..errors import BadMessage, ClientError, CondureError
from ..zhttp import packet as zp
from .context import Service
from .http1 import Origin, open_origin
from .link import OVERRUN, SessionLink
from .request import MAX_REDIRECTS, ClientRequest, from_packet, redirect
from .websocket import run_websocket

log = logging.getLogger("condure.client")

HTTP_SCHEMES = ("http", "https")
ALL_SCHEMES = ("http", "https", "ws", "wss")


# --- REQ interface ---------------------------------------------------------


def req_exchange(service: Service, pkt: zp.Packet) -> dict[bytes, Any]:
    """Run one REQ-interface request; the reply's fields (without id)."""
    if pkt.type:
        raise ClientError("bad-request", "request must be a data packet")
    req = from_packet(pkt, HTTP_SCHEMES)
    cfg = service.config
    if len(req.body) > cfg.body_buffer_size:
        raise ClientError("undefined-condition", "request body too large")
    for _hop in range(MAX_REDIRECTS + 1):
        origin = open_origin(req, service.pool, cfg.deny_out_internal, cfg.req_timeout,
                             service.req_blocks)
        try:
            origin.send_head(req, "length", len(req.body))  # REQ: always the body's own length
            origin.send_body(req.body)
            origin.end()
            head, body = _read_whole(origin, req, cfg.body_buffer_size)
        except BaseException:
            origin.close()
            raise
        service.pool.put(origin)
        nxt = redirect(req, head.status_code, list(head.headers.raw_items()), HTTP_SCHEMES) \
            if req.follow_redirects else None
        if nxt is None:
            return _reply_fields(head, body)
        req = nxt
    raise ClientError("too-many-redirects")


def _read_whole(origin: Origin, req: ClientRequest, limit: int) -> tuple[Any, bytes]:
    head = _response_head(origin)
    body = bytearray()
    while True:
        ev = origin.next_event()
        if type(ev) is h11.EndOfMessage:
            return head, bytes(body)
        body += ev.data
        if len(body) > limit:
            raise ClientError("undefined-condition", "response body larger than --body-buffer-size")


def _response_head(origin: Origin, wait: Any = None) -> Any:
    while True:
        ev = origin.next_event(wait)
        if type(ev) is h11.Response:
            return ev
        # 1xx interim responses (h11.InformationalResponse) are skipped


def _reply_fields(head: Any, body: bytes) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {b"code": head.status_code, b"reason": bytes(head.reason)}
    headers = [[n, v] for n, v in head.headers.raw_items()]
    if headers:
        out[b"headers"] = headers
    if body:
        out[b"body"] = body
    return out


def req_reply(rid: bytes | None, fields: dict[bytes, Any]) -> bytes:
    pairs: list[tuple[bytes, Any]] = [] if rid is None else [(b"id", rid)]
    return zp.encode(pairs + list(fields.items()))


# --- stream interface --------------------------------------------------------


class StreamSession(SessionLink):
    """One stream-interface session: an outgoing HTTP exchange for a handler."""

    # --- the exchange ----------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except CondureError as e:
            # ClientError: the exchange failed, the handler is told; the
            # handler's own end (HandlerEnded: cancel, error, bad seq or packet,
            # a dropped request) and its silence (SessionTimeout) send nothing
            if e.cancel:
                log.log(e.level, "client session %r failed: %s (%s)", self.rid, e.condition, e)
                self._fail(e.condition)
            else:
                log.log(e.level, "client session %r ended: %s (%s)", self.rid,
                        type(e).__name__, e)
        except Exception:
            log.exception("client session %r failed", self.rid)
            self._fail("undefined-condition")
        finally:
            if self.origin is not None:
                self.origin.close()
            self.service.end_session(self.key)

    def _fail(self, condition: str) -> None:
        """`error` + condition before the response head reached the handler,
        `cancel` after (client.md 4.2)."""
        if self.header_sent:
            self.send(b"cancel")
        else:
            self.send(b"error", condition=condition.encode())

    def _run(self) -> None:
        try:
            req = from_packet(self.first, ALL_SCHEMES)  # DropRequest: nothing at all is sent
        except ClientError as e:
            self.send(b"error", condition=e.condition.encode())  # no ack before this
            return
        self.send(b"keep-alive")  # the ack: the handler now knows our address
        if req.websocket:
            run_websocket(self, req)
            return
        head = self._exchange(req)
        self.header_sent = True
        self.send(zp.DATA, code=head.status_code, reason=bytes(head.reason),
                  headers=[[n, v] for n, v in head.headers.raw_items()], more=True)
        self._stream_body()

    def _exchange(self, req: ClientRequest) -> Any:
        cfg = self.service.config
        for _hop in range(MAX_REDIRECTS + 1):
            self.origin = open_origin(req, self.service.pool, cfg.deny_out_internal,
                                      cfg.stream_timeout, self.service.blocks)
            self._send_request(req)
            head = _response_head(self.origin, self.until_readable)
            follow = req.follow_redirects and not req.more
            nxt = redirect(req, head.status_code, list(head.headers.raw_items()),
                           HTTP_SCHEMES) if follow else None
            if nxt is None:
                return head
            self._discard_body()
            req = nxt
        raise ClientError("too-many-redirects")

    def _send_request(self, req: ClientRequest) -> None:
        origin = self.origin
        assert origin is not None
        if not req.more:
            length = req.length if req.length is not None else len(req.body)
            origin.send_head(req, "length", length)
            origin.send_body(req.body)
            origin.end()
            return
        origin.send_head(req, "chunked" if req.length is None else "length", req.length or 0)
        origin.send_body(req.body)
        self._upload()

    def _upload(self) -> None:
        """Request body from the handler under our credits, granted as it is written."""
        origin = self.origin
        assert origin is not None
        window = self.service.config.buffer_size
        if any(p is not None and p.type == zp.DATA for p, _ in self.inbox):
            raise BadMessage("request body before any credit")
        self.send(b"credit", credits=window)
        while True:
            pkt = self.take()
            if pkt is None:
                self.wait()
                continue
            if pkt.type != zp.DATA:
                continue  # credit, keep-alive
            if len(pkt.body) > window:
                raise ClientError("undefined-condition", OVERRUN)
            origin.send_body(pkt.body)
            self.last_io = time.monotonic()
            if not pkt.more:
                origin.end()
                return
            if pkt.body:
                self.send(b"credit", credits=len(pkt.body))

    def _discard_body(self) -> None:
        origin = self.origin
        assert origin is not None
        while type(origin.next_event()) is not h11.EndOfMessage:
            pass
        self.service.pool.put(origin)
        self.origin = None

    def _stream_body(self) -> None:
        """The response body through the Outflow: pieces of at most
        min(credits, --buffer-size); the end needs credit too (client.md 5.1)."""
        origin = self.origin
        assert origin is not None
        flow = self.flow
        while True:
            self._handle_control()
            while (piece := flow.next()) is not None:
                more = piece[3]
                self.send(zp.DATA, body=piece[2], more=more)
                if not more:
                    self.service.pool.put(origin)
                    self.origin = None
                    return
            if flow:
                self.wait()  # out of credits: the origin is not read meanwhile
                continue
            ev = origin.next_event(self.until_readable)
            if type(ev) is h11.EndOfMessage:
                flow.end()
            else:
                data, ended = origin.take_buffered(bytes(ev.data))
                if data or ended:
                    flow.body(data, ended)
