"""Req mode (`--listen ...,req`): one DEALER message per request, one reply.

shared/zhttp/server.md section 7 and client.md section 12: the whole body
is read first (at most --body-buffer-size, else 413: our deviation from
condure's hang), the request goes out with no from/seq/credits/stream, the
first data reply for the id is the response (other replies are skipped),
always framed with Content-Length. --req-timeout bounds the whole cycle and
the wait for the next request on a persistent connection (504, D13; the
connection's ReqTimers).
"""
from __future__ import annotations

from ..errors import (PROCESS_FAILED, BadHandlerResponse, BadRequest, ClientGone, CondureError,
                      Timeout)
from ..zhttp import packet as zp
from ..zhttp.session import Session
from . import access, http1
from .request import END, NEED_DATA, Body, RequestHead
from .ports import ClientStream, HandlerLink, Worker

WS_REFUSAL = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 48\r\n\r\n"
              b"WebSockets not supported on req mode interface.\n")
WS_REFUSAL_BODY = len(WS_REFUSAL.partition(b"\r\n\r\n")[2])


class ReqExchange:
    """One request on a req-mode listener: read it whole, ask, write the reply."""

    uri: bytes | None = None
    reply: zp.Packet | None = None
    written = False
    sent = 0  # body bytes of the reply written

    def __init__(self, stream: ClientStream, link: HandlerLink, server: Worker,
                 head: RequestHead, session: Session) -> None:
        self.stream = stream
        self.link = link
        self.server = server
        self.head = head
        self.session = session
        self.started = stream.last_io  # the head was complete then
        self.persistent = False
        self.timeout = float(server.config.req_timeout)

    def run(self) -> bool:
        """The whole exchange; True if the connection may serve another request."""
        stream, head = self.stream, self.head
        if http1.is_websocket(head):
            self._log_access(400, access.CONDURE, None, WS_REFUSAL_BODY)
            self._refuse(WS_REFUSAL)
            return False
        try:
            self.uri = http1.request_uri(head, stream.scheme)
            reply = self.reply = self._ask(self._read_body())
            out = self._response(reply)
            self.written = True
            stream.write(out)
        except BadRequest as e:
            stream.log.info("bad request: %s", e)
            self._answer(e.status or 400, e)
            return False
        except CondureError as e:
            # a response we refuse to write (D9, D17) is the handler's bug: one
            # warning, as in stream mode (Exchange._fail)
            stream.log.log(e.level, "process error: %s (%s)", type(e).__name__, e)
            self._failed(e)
            return False
        finally:
            stream.end_session()
        self._log_access(reply.code, access.HANDLER, None, self.sent)
        if not self.persistent:
            stream.close_gracefully()
            return False
        stream.parser.next_request()
        return True

    def _failed(self, e: CondureError) -> None:
        if e.status is not None and not self.written and not isinstance(e, ClientGone):
            self._answer(e.status, e)
        elif self.written:
            assert self.reply is not None
            self._log_access(self.reply.code, access.HANDLER, e, self.sent)
        else:
            self._log_access(None, access.NOBODY, e)

    def _answer(self, status: int, e: CondureError) -> None:
        """condure's own answer (logged before its drain, up to a second)."""
        self._log_access(status, access.CONDURE, e)
        self.stream.answer_and_close(status, e.text)

    def _log_access(self, status: int | None, by: str, e: CondureError | None,
                    sent: int = 0) -> None:
        """The access log line (D21); `sent`: the body bytes written."""
        if not self.server.access_log:
            return
        stream, head = self.stream, self.head
        uri = self.uri or access.request_uri(head, stream.scheme)
        if by == access.CONDURE and status is not None and e is not None:
            access.own_answer(stream.peer, head, uri, status, self.started, e)
        else:
            access.write(stream.peer, head, uri, status, sent, self.started, by, e)

    def _refuse(self, response: bytes) -> None:
        try:
            self.stream.write(response)
        except CondureError:
            return
        self.stream.close_gracefully()

    def _read_body(self) -> bytes:
        if not self.head.has_body:
            return b""
        stream, parser = self.stream, self.stream.parser
        body = bytearray()
        limit = self.server.config.body_buffer_size
        while True:
            ev = parser.next_event()
            if ev is END:
                return bytes(body)
            if ev is NEED_DATA:
                data = stream.recv()
                if not data:
                    raise ClientGone("client closed the connection")
                parser.feed(data)
            elif isinstance(ev, Body):
                body += ev.data
                if len(body) > limit:
                    # connmgr's 500 and text (its case K); our 413 (D1)
                    raise BadRequest("request body larger than --body-buffer-size", 413,
                                     text=PROCESS_FAILED)

    def _ask(self, body: bytes) -> zp.Packet:
        """Send the request and wait for the first data reply for its id."""
        stream, head, uri, rid = self.stream, self.head, self.uri or b"", self.session.id
        stream.log.debug("request: %s %s", head.method.decode("latin-1"), uri.decode("latin-1"))
        self.server.metrics.packets_out["request"] += 1
        self.link.send_first(rid, zp.request(b"", rid, head.method, uri, head.headers, 0, False,
                                             False, stream.peer, body=body, seq=False))
        while True:
            item = self.link.next_packet()
            if item is None:
                try:
                    stream.check_timeout()
                except Timeout:
                    self.server.warn_handler_timeout(rid, self.timeout)
                    raise
                stream.wait(read=False)
                continue
            got, pkt, _seq = item
            if got == rid and pkt.type == zp.DATA:
                return pkt
            stream.log.debug("unexpected packet in req mode")

    def _response(self, pkt: zp.Packet) -> bytes:
        """The bytes to write (`sent`: how many of them are body)."""
        head = self.head
        if len(pkt.body) > self.server.config.body_buffer_size:
            # condure 1.10 closes with nothing written; a reply condure refuses
            # to write is a 502, as in stream mode (D9)
            raise BadHandlerResponse("reply body larger than --body-buffer-size")
        headers = [(n, v) for n, v in pkt.headers if n.lower() != b"content-length"]
        code = 0 if pkt.code is None else pkt.code  # condure writes a missing code as 0 (D17: 502)
        out, framer, self.persistent = http1.response_head(
            head.version, code, pkt.reason, headers, pkt.body, False,
            http1.is_persistent(head), head.method == b"HEAD")
        out += framer.frame(pkt.body, True)
        self.sent = framer.sent
        return out
