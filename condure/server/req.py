"""Req mode (`--listen ...,req`): one DEALER message per request, one reply.

shared/zhttp/server.md section 7 and client.md section 12: the whole body
is read first (at most --body-buffer-size, else 413: our deviation from
condure's hang), the request goes out with no from/seq/credits/stream, the
first data reply for the id is the response (other replies are skipped),
always framed with Content-Length. --req-timeout bounds the whole cycle and
the wait for the next request on a persistent connection (504, D13).
"""
from __future__ import annotations

import logging
import time

from ..errors import BadHandlerResponse, BadRequest, ClientGone, CondureError, Timeout
from ..zhttp import packet as zp
from . import access, http1
from .parser import END, NEED_DATA, Body, RequestHead
from .stream import StreamConnection

WS_REFUSAL = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 48\r\n\r\n"
              b"WebSockets not supported on req mode interface.\n")
WS_REFUSAL_BODY = len(WS_REFUSAL.partition(b"\r\n\r\n")[2])


class ReqConnection(StreamConnection):
    """A client connection on a req-mode listener."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.req_timeout = float(self.server.config.req_timeout)
        self.set_io_timeout(self.req_timeout)
        self.cycle_start = time.monotonic()
        self._persistent = False

    def _serve_one(self) -> bool:
        self.cycle_start = time.monotonic()
        return super()._serve_one()

    # --- timers: one deadline per request cycle -------------------------

    def _next_deadline(self) -> float:
        return self.cycle_start + self.req_timeout

    def _check_timers(self, now: float, keepalives: dict) -> float | None:
        if now >= self._next_deadline():
            self._flag("req timeout")
            return None
        return self._next_deadline()

    # --- one request -----------------------------------------------------

    def _exchange(self, head: RequestHead) -> bool:
        self.server.metrics.requests += 1  # every head parsed, as pushpin-connmgr counts
        started = self.last_io  # the head was complete then
        if http1.is_websocket(head):
            if self.server.access_log:
                access.write(self.peer, head, access.request_uri(head, self.scheme), 400,
                             WS_REFUSAL_BODY, started, access.CONDURE)
            self._refuse(WS_REFUSAL)
            return False
        written = False
        uri = None
        try:
            uri = http1.request_uri(head, self.scheme)
            body = self._read_body(head)
            pkt = self._ask(head, uri, body)
            out, sent = self._response(head, pkt)
            written = True
            self.write(out)
        except BadRequest as e:
            self.log.info("bad request: %s", e)
            status = e.status or 400
            if self.server.access_log:  # before the answer's drain (up to a second)
                self._log_access(head, uri, started, status, access.CONDURE, e)
            self._answer_and_close(status)
            return False
        except CondureError as e:
            # a response we refuse to write (D9, D17) is the handler's bug: one
            # warning, as in stream mode (Exchange._fail)
            level = logging.WARNING if isinstance(e, BadHandlerResponse) else logging.DEBUG
            self.log.log(level, "process error: %s (%s)", type(e).__name__, e)
            code = e.status
            if code is not None and not written and not isinstance(e, ClientGone):
                if self.server.access_log:
                    self._log_access(head, uri, started, code, access.CONDURE, e)
                self._answer_and_close(code)
            elif self.server.access_log:
                if written:
                    self._log_access(head, uri, started, pkt.code, access.HANDLER, e, sent)
                else:
                    self._log_access(head, uri, started, None, access.NOBODY, e)
            return False
        finally:
            self._end_session()
        if self.server.access_log:
            self._log_access(head, uri, started, pkt.code, access.HANDLER, None, sent)
        if not self._persistent:
            self.close_gracefully()
            return False
        self.parser.next_request()
        return True

    def _log_access(self, head: RequestHead, uri: bytes | None, started: float,
                    status: int | None, by: str, e: CondureError | None,
                    sent: int = 0) -> None:
        """The access log line (D21); `sent`: the handler's body bytes written."""
        if uri is None:
            uri = access.request_uri(head, self.scheme)
        if by == access.CONDURE and status is not None:
            access.own_answer(self.peer, head, uri, status, started, e)
        else:
            access.write(self.peer, head, uri, status, sent, started, by, e)

    def _refuse(self, response: bytes) -> None:
        try:
            self.write(response)
        except CondureError:
            return
        self.close_gracefully()

    def _read_body(self, head: RequestHead) -> bytes:
        body = bytearray()
        if not head.has_body:
            return b""
        limit = self.server.config.body_buffer_size
        while True:
            ev = self.parser.next_event()
            if ev is END:
                return bytes(body)
            if ev is NEED_DATA:
                data = self.recv()
                if not data:
                    raise ClientGone("client closed the connection")
                self.parser.feed(data)
            elif isinstance(ev, Body):
                body += ev.data
                if len(body) > limit:
                    raise BadRequest("request body larger than --body-buffer-size", 413)

    def _ask(self, head: RequestHead, uri: bytes, body: bytes) -> zp.Packet:
        """Send the request and wait for the first data reply for its id."""
        rid = self.session.id  # type: ignore[union-attr]
        self.log.debug("request: %s %s", head.method.decode("latin-1"), uri.decode("latin-1"))
        self.server.registry.register(rid, self)
        self.server.metrics.packets_out["request"] += 1
        self.server.zreq.send(  # type: ignore[union-attr]  # req mode: zreq is set
            zp.request(b"", rid, head.method, uri, head.headers, 0, False, False, self.peer,
                       body=body, seq=False))
        while True:
            item = self.next_packet()
            if item is None:
                try:
                    self.check_timeout()
                except Timeout:
                    self.server.warn_handler_timeout(rid, self.req_timeout)
                    raise
                self.wait(read=False)
                continue
            got, pkt, _seq = item
            if got == rid and pkt.type == zp.DATA:
                return pkt
            self.log.debug("unexpected packet in req mode")

    def _response(self, head: RequestHead, pkt: zp.Packet) -> tuple[bytes, int]:
        """The bytes to write and how many of them are body."""
        if len(pkt.body) > self.server.config.body_buffer_size:
            err = BadHandlerResponse("reply body larger than --body-buffer-size")
            err.status = None  # condure 1.10 closes with nothing written
            raise err
        headers = [(n, v) for n, v in pkt.headers if n.lower() != b"content-length"]
        code = 0 if pkt.code is None else pkt.code  # condure writes a missing code as 0 (D17: 502)
        out, framer, self._persistent = http1.response_head(
            head.version, code, pkt.reason, headers, pkt.body, False,
            http1.is_persistent(head), head.method == b"HEAD")
        out += framer.frame(pkt.body, True)
        return out, framer.sent

