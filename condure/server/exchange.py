"""One HTTP request/response cycle in stream mode (shared/zhttp/server.md 5.1).

1. the head was read by the connection; 2. send the request packet (PUSH);
3. wait for the first handler packet without reading the client; 4. forward
the body under the handler's credits (100 Continue first when asked);
5./6. write the response as data packets arrive, returning credits as bytes
reach the socket. The connection then starts over (step 7) if it persists.

The exchange talks to the client through a `ClientStream` and to the handler
through a `HandlerLink` (server/ports.py), never to a connection object, so
tests/core runs it against in-memory sides.
"""
from __future__ import annotations

import time
from typing import Any

from .. import errors
from ..errors import BadMessage, BufferExceeded, ClientGone, CondureError, HandlerCancel, HandlerError
from ..zhttp import packet as zp
from ..zhttp.flow import Outflow
from ..zhttp.session import Session
from . import access, http1
from .request import END, NEED_DATA, Body, RequestHead
from .ports import ClientStream, HandlerLink, Worker

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def send(part: Any, type_: bytes, **fields: Any) -> None:
    """A session packet to the handler (`part`: an exchange, or the WebSocket
    session after it, with `session`, `server` and `link`)."""
    s: Session = part.session
    if not s.addr or s.paused:
        # no `from` seen: nowhere to route (condure's sends would fail too); or
        # handed off: nothing goes out until the new handler's first packet, a
        # cancel neither (server.md 4.5, connmgr.md 6)
        return
    server = part.server
    payload = zp.session_packet(server.instance_id, s.id, s.next_seq(), type_, **fields)
    server.metrics.packets_out[zp.metric_name(type_)] += 1
    part.link.send_to(s.addr, payload)


def on_keepalive(part: Any, pkt: zp.Packet) -> None:
    pass


def on_cancel(part: Any, pkt: zp.Packet) -> None:
    raise HandlerCancel("handler cancel")


def on_error(part: Any, pkt: zp.Packet) -> None:
    raise HandlerError(f"zhttp error condition={pkt.condition.decode('latin-1')}")


def on_handoff_start(part: Any, pkt: zp.Packet) -> None:
    # everything is written synchronously or queued: condure's order is to
    # answer at once and send nothing more until the next handler packet
    send(part, b"handoff-proceed")
    part.session.paused = True


# what an exchange and the WebSocket session after it do alike with a packet type
SESSION_HANDLERS: dict[bytes, Any] = {
    b"keep-alive": on_keepalive,
    b"cancel": on_cancel,
    b"error": on_error,
    b"handoff-start": on_handoff_start,
}


def pump(part: Any) -> None:
    """Run `part` (an exchange, or the WebSocket session after one) until it is
    done: its handler packets, and client input while it wants to read."""
    stream, link, rid = part.stream, part.link, part.session.id
    while not part.done:
        item = link.next_packet()
        if item is None:
            stream.check_timeout()
            if stream.wait(read=part.want_read()):
                part.on_client_readable()
            continue
        got, pkt, seq = item
        if got == rid:
            part.apply(pkt, seq)


class Exchange:
    """One request/response cycle on a connection (steps 2-6 of section 5.1)."""

    HANDLERS: dict[bytes, Any]  # packet type -> method, set below the class

    # the state every exchange starts in (class attributes, as in Connection)
    flow: Outflow | None = None  # the request body, let out under the handler's credits
    body_ended = True  # the parser saw the end of the body (or there is none)
    then: Any = None  # what runs on the connection after the response (a WebSocket session)
    started = False  # first handler packet seen
    response: http1.ResponseBody | None = None
    written = False  # any response byte written (D13)
    done = False
    body_sent = True  # the final body packet went out (or there is no body)
    continue_pending = False
    code = 0  # the status of the response written for the handler
    uri = b""  # as forwarded (the access log's)
    started_at = 0.0  # for the access log only
    h2_stream: int | None = None  # the HTTP/2 stream id (H2Exchange), for the access log

    def __init__(self, stream: ClientStream, link: HandlerLink, server: Worker,
                 head: RequestHead, session: Session) -> None:
        self.stream = stream
        self.link = link
        self.server = server
        self.head = head
        self.session = session
        self.persistent = http1.is_persistent(head)
        if head.has_body:
            self.body_ended = False  # until the parser sees the end of the body
            self.flow = Outflow(stream.buffer_size)
            self.body_sent = False
            self.continue_pending = http1.wants_continue(head)
        if server.access_log:
            self.started_at = stream.last_io  # the head was complete then

    # --- flow -------------------------------------------------------------

    def run(self) -> bool:
        """The whole exchange; True if the connection may serve another request."""
        try:
            self._send_request()
            pump(self)
            if self.then is not None:
                self.then.run()
        except CondureError as e:
            self._fail(e)
            return False
        return self._finish()

    def _finish(self) -> bool:
        stream = self.stream
        stream.end_session()
        if self.server.access_log:
            self._log_access(None, None)
        if self.response is not None and self.response.overflow:
            stream.log.warning("handler sent more body than its Content-Length; closing")
            self.persistent = False
        if not self.persistent or stream.stopping:
            stream.close_gracefully()
            return False
        if stream.debug:
            stream.log.debug("finished")
        stream.parser.next_request()
        return True

    def _send_request(self) -> None:
        stream, head = self.stream, self.head
        uri = self.uri = http1.request_uri(head, stream.scheme)
        if stream.debug:
            stream.log.debug("request: %s %s%s", head.method.decode("latin-1"), uri.decode("latin-1"),
                             " HTTP/2" if head.version == b"2" else "")
        more = head.chunked or bool(head.content_length)
        self._send_first(uri, more=more, stream=True)

    def _send_first(self, uri: bytes, more: bool, stream: bool) -> None:
        head, s = self.head, self.session
        s.next_seq()  # the request packet is seq 0
        payload = zp.request(self.server.instance_id, s.id, head.method, uri, head.headers,
                             self.stream.buffer_size, more, stream, self.stream.peer,
                             router_resp=self.server.router_resp)
        self.server.metrics.packets_out["request"] += 1
        self.link.send_first(s.id, payload)

    def want_read(self) -> bool:
        if not self.started or self.session.paused:
            return False
        flow = self.flow
        if self.response is None and not self.body_ended:
            return flow is not None and flow.credits > 0 and not flow.body_waiting
        if not self.body_ended:
            return False  # early response: the rest of the body stays unread
        # watch for EOF; keep pipelined bytes, but no more than one buffer
        buffered: int = self.stream.parser.buffered
        return buffered < self.stream.buffer_size

    def on_client_readable(self) -> None:
        data = self.stream.recv_now()
        if not data:
            raise errors.ClientGone("client closed the connection")
        self.stream.parser.feed(data)
        if not self.body_ended:
            self._pull_body()
            self._forward_body()

    # --- request body -----------------------------------------------------

    def _pull_body(self) -> None:
        parser, flow = self.stream.parser, self.flow
        assert flow is not None
        while not self.body_ended:
            ev = parser.next_event()
            if ev is NEED_DATA:
                return
            if ev is END:
                self.body_ended = True
                flow.end()
            elif isinstance(ev, Body):
                flow.body(ev.data)

    def _forward_body(self) -> None:
        """Send the parsed body to the handler, never more than its credits."""
        flow = self.flow
        if flow is None or self.body_sent:
            return
        while (piece := flow.next()) is not None:
            send(self, zp.DATA, body=piece[2], more=piece[3])
            if not piece[3]:
                self.body_sent = True

    # --- handler packets --------------------------------------------------

    def apply(self, pkt: zp.Packet, seq: int | None) -> None:
        self.session.accept(pkt, seq, time.monotonic())
        if not self.started:
            self.started = True
            if self.continue_pending and not self.body_ended:
                self.continue_pending = False
                self._send_continue()
            if self.flow is not None:
                self._pull_body()
        handler = self.HANDLERS.get(pkt.type)
        if handler is None:
            raise BadMessage(f"unexpected packet type {pkt.type_name}")
        handler(self, pkt)

    def _send_continue(self) -> None:
        """The interim `100 Continue` a client that sent `Expect: 100-continue`
        waits for, once the handler has answered (it wants the body)."""
        self.stream.write(CONTINUE)

    def _on_data(self, pkt: zp.Packet) -> None:
        if self.flow is not None:  # as _on_credit, without the call: every response comes here
            self.flow.grant(pkt.credits)
            self._forward_body()
        if self.response is None:
            self._start_response(pkt)
        else:
            self._write_body(pkt.body, pkt.more)

    def _on_credit(self, pkt: zp.Packet) -> None:
        if self.flow is not None:
            self.flow.grant(pkt.credits)
            self._forward_body()

    # --- response ---------------------------------------------------------

    def _start_response(self, pkt: zp.Packet) -> None:
        stream = self.stream
        if not self.body_sent:
            self.persistent = False  # answered before the whole body was read
        code = 0 if pkt.code is None else pkt.code  # condure writes a missing code as 0 (D17: 502)
        self.code = code
        head, body, self.persistent = http1.response_head(
            self.head.version, code, pkt.reason, pkt.headers, pkt.body, pkt.more,
            self.persistent, self.head.method == b"HEAD")
        # a head of any size is written (pushpin-connmgr, connmgr.md 3.4; condure
        # refused one over --buffer-size); the body keeps to the handler's credits
        if len(pkt.body) > stream.buffer_size:
            raise BufferExceeded("response does not fit the write buffer")
        self.response = body
        self.written = True
        stream.write(head + body.frame(pkt.body, not pkt.more))
        self._after_write(pkt.body, pkt.more)

    def _write_body(self, data: bytes, more: bool) -> None:
        if len(data) > self.stream.buffer_size:
            raise BufferExceeded("handler sent more than its credits")
        assert self.response is not None
        out = self.response.frame(data, not more)
        if out:
            self.stream.write(out)
        self._after_write(data, more)

    def _after_write(self, data: bytes, more: bool) -> None:
        if not more:
            self.done = True
        elif data:
            send(self, b"credit", credits=len(data))

    # --- endings ----------------------------------------------------------------

    def _fail(self, e: CondureError) -> None:
        stream = self.stream
        stream.log.log(e.level, "process error: %s (%s)", type(e).__name__, e)
        if e.cancel:
            send(self, b"cancel")
        stream.end_session()
        status = e.status
        if status is None or self.written or isinstance(e, ClientGone):
            status = None  # nothing of ours to write
        if self.server.access_log:  # before the answer's drain (up to a second)
            self._log_access(e, status)
        if status is not None:
            stream.answer_and_close(status, e.text)

    def _log_access(self, e: CondureError | None, own_status: int | None) -> None:
        """The access log line (D21); `own_status`: condure's own answer, if it gave one."""
        uri = self.uri or access.request_uri(self.head, self.stream.scheme)
        peer, head, started = self.stream.peer, self.head, self.started_at
        sid = self.h2_stream
        if own_status is not None:
            access.own_answer(peer, head, uri, own_status, started, e, sid)
        elif self.written:
            access.write(peer, head, uri, self.code, self._body_bytes(), started, access.HANDLER, e,
                         sid)
        else:
            access.write(peer, head, uri, None, 0, started, access.NOBODY, e, sid)

    def _body_bytes(self) -> int:
        return 0 if self.response is None else self.response.sent


Exchange.HANDLERS = {
    **SESSION_HANDLERS,
    zp.DATA: Exchange._on_data,
    b"credit": Exchange._on_credit,
}
