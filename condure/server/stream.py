"""One client connection in stream mode: HTTP/1.x requests as ZHTTP sessions.

The shell around the pure pieces (parser, http1 mapping, Session): this
greenlet only moves bytes between the client socket and packets between the
handler and the session. Order of events per request follows
shared/zhttp/server.md section 5.1:

1. read and parse the head; 2. send the request packet (PUSH); 3. wait for
the first handler packet without reading the client; 4. forward the body
under the handler's credits (100 Continue first when asked); 5./6. write the
response as data packets arrive, returning credits as bytes reach the
socket; 7. on a persistent connection, start over with a new id.

All waiting goes through `_wait`, which wakes on a handler packet, on client
readability (only when reading is allowed) or on the timer sweeper flagging
a timeout, so one greenlet serves both directions.
"""
from __future__ import annotations

import logging
import select
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import gevent
from gevent import get_hub, getcurrent
from gevent.ssl import SSLSocket

from .. import errors
from ..errors import (BadMessage, BadRequest, BufferExceeded, ClientGone, CondureError,
                      HandlerCancel, HandlerError, Stopped, Timeout)
from ..log import ConnLogger
from ..zhttp import packet as zp
from ..zhttp.session import Session
from . import access, http1
from .listener import green
from .parser import END, NEED_DATA, Body, RequestHead, make_parser

if TYPE_CHECKING:
    from ..app import Server

log = logging.getLogger("condure.connection")

INBOX_MAX = 1024  # handler packets queued for one connection before it is aborted
DRAIN_TIME = 1.0  # seconds to drain client input before closing after an early answer
DRAIN_BYTES = 65536
INF = float("inf")
_POLL = select.poll()  # see StreamConnection._input_pending
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class StreamConnection:
    """Serves HTTP/1.x requests of one client socket, one session at a time."""

    # State every connection starts with, as class attributes: an instance
    # gets its own value when it first assigns one (a connection is set up
    # once per accept, so fewer assignments there count)
    _logger: ConnLogger | None = None  # made for the first line logged
    _log_id = b""
    session: Session | None = None
    keepalive_due: float | None = None
    _armed = INF  # the deadline this connection is on the timer wheel for
    stopping = False  # shutting down: no further requests
    waiting_for_request = False
    websocket = False
    protocol = "http"  # "websocket" once upgraded (for the connection gauge)
    _waiting = False  # parked in wait(): a wake-up may switch back to us
    _wake_queued = False
    _readable = _writable = False
    _timeout: str | None = None
    _fresh = True  # nothing read yet: the first request is usually there already
    _io: Any = None  # read/write watchers, made on first use
    _wio: Any = None
    # queued output (WebSocket): bytes not yet written, and callbacks to run once
    # the bytes before an offset are out (credits go back only for written bytes);
    # both are made by the first queue_write, until which the shared class defaults
    # (empty bytes, an empty tuple) stand in for them
    _out: bytearray = b""  # type: ignore[assignment]
    _out_done: deque[tuple[int, Any]] = ()  # type: ignore[assignment]  # (queued-total at the end of a piece, callback)
    _out_total = _out_sent = 0

    def __init__(self, server: Server, sock: Any, peer: Any, slot: int,
                 scheme: bytes = b"http") -> None:
        """`sock`: a plain non-blocking socket, or gevent's TLS socket."""
        self.server = server
        self.scheme = scheme
        self.peer = _peer_fields(peer)
        self.slot = slot
        cfg = server.config
        self.buffer_size = cfg.buffer_size
        self.stream_timeout = float(cfg.stream_timeout)
        self.parser = make_parser(cfg.http_parser, cfg.buffer_size)
        self.debug = log.isEnabledFor(logging.DEBUG)  # checked once: the hot path logs nothing
        self.last_io = time.monotonic()
        self._inbox: deque = deque()
        self._greenlet = getcurrent()
        self._hub = get_hub()
        self._tls = isinstance(sock, SSLSocket)  # may hold decrypted bytes the fd does not show
        # plain I/O that does not block goes to `_raw`; what must block goes
        # through gevent's cooperative socket (`sock`), made on first use
        self._raw: Any = None if self._tls else sock
        self._green: Any = sock if self._tls else None
        self._fd = sock.fileno()
        self.io_timeout = self.stream_timeout  # for the blocking calls
        if self._tls:
            sock.settimeout(self.io_timeout)

    def __repr__(self) -> str:
        return f"<StreamConnection slot={self.slot} session={self.session!r}>"

    @property
    def log(self) -> ConnLogger:
        """This connection's logger (`conn <session id>: ...`)."""
        if self._logger is None:
            self._logger = ConnLogger(log, "")
        self._logger.conn_id = self._log_id
        return self._logger

    @property
    def sock(self) -> Any:
        """The cooperative socket, for calls that may have to wait."""
        if self._green is None:
            self._green = green(self._raw)
            self._green.settimeout(self.io_timeout)
        return self._green

    def set_io_timeout(self, seconds: float) -> None:
        self.io_timeout = seconds
        if self._green is not None:
            self._green.settimeout(seconds)

    def _close_socket(self) -> None:
        try:
            if self._green is None:
                self._raw.close()
            else:
                if self._raw is not None:
                    self._raw.detach()  # the fd is closed once, by the wrapper
                self._green.close()
        except OSError:
            pass

    # --- greenlet entry -----------------------------------------------

    def run(self) -> None:
        self.server.connections.add(self)
        try:
            # no explicit yield between requests: every request waits for its
            # handler's answer (and every read waits for readiness) through the
            # hub, so a busy keep-alive client cannot starve the others
            while self._serve_one():
                pass
        except Exception:
            self.log.exception("connection failed")
        finally:
            self.server.connections.discard(self)
            self._end_session()
            self.server.wheel.remove(self)
            self.parser.close()
            if self._io is not None:
                self._io.close()
            if self._wio is not None:
                self._wio.close()
            self._close_socket()

    # --- one request ----------------------------------------------------

    def _serve_one(self) -> bool:
        """Handle one request; True if the connection stays open for the next."""
        now = time.monotonic()
        rid = self.server.registry.new_id(self.slot)
        self.session = Session(rid, now)
        self._log_id = rid
        if self.debug:
            self.log.debug("assigning id")
        self._inbox.clear()
        self._timeout = None
        # keep-alives go out every interval from the start of the session once the
        # handler's address is known: like condure's sweep, whose first one comes
        # 0-45 s after the start (server.md 4.2)
        self.keepalive_due = now + self.server.keepalive_interval
        self._arm()
        if self.stopping:
            return False
        self.waiting_for_request = True
        try:
            head = self._read_head()
        except BadRequest as e:
            self.server.metrics.parse_errors += 1
            self.log.info("bad request: %s", e)
            status = e.status or 400
            if self.server.access_log:  # before the answer's drain (up to a second)
                access.own_answer(self.peer, None, None, status, now, e)
            self._answer_and_close(status)
            return False
        except (ClientGone, Timeout, Stopped) as e:
            self.log.debug("process error: %s", type(e).__name__)
            return False
        finally:
            self.waiting_for_request = False
        if head is None:
            return False
        return self._exchange(head)

    def _exchange(self, head: RequestHead) -> bool:
        # counted as pushpin-connmgr counts: every head parsed, whatever comes of it
        self.server.metrics.requests += 1
        if http1.is_websocket(head):
            from .websocket import WebSocketExchange, valid_upgrade
            if not valid_upgrade(head):
                self.log.debug("process error: InvalidWebSocketRequest")
                if self.server.access_log:
                    uri = access.request_uri(head, b"wss" if self.scheme == b"https" else b"ws")
                    access.write(self.peer, head, uri, None, 0, self.last_io, access.NOBODY,
                                 "InvalidWebSocketRequest")
                return False
            return WebSocketExchange(self, head).run()
        return Exchange(self, head).run()

    def _read_head(self) -> RequestHead | None:
        parser = self.parser
        while True:
            ev = parser.next_event()
            if ev is NEED_DATA:
                data = self.recv()
                if not data:
                    return None
                parser.feed(data)
                continue
            if isinstance(ev, RequestHead):
                self.last_io = time.monotonic()
                return ev
            raise BadRequest("unexpected data before request head")

    def _end_session(self) -> None:
        s = self.session
        if s is not None:
            self.server.registry.unregister(s.id)
            self.session = None

    # --- waiting --------------------------------------------------------

    def deliver(self, rid: bytes, pkt: zp.Packet, seq: int | None) -> None:
        """Called by the SUB reader for each packet addressed to this connection."""
        if len(self._inbox) >= INBOX_MAX:
            self._timeout = "inbox overflow"
        else:
            self._inbox.append((rid, pkt, seq))
        self._wake_soon()

    def on_timer(self, now: float, keepalives: dict[bytes, list]) -> float | None:
        """Called by the timer sweeper, which took this connection off the wheel;
        returns the deadline to put it back at (None: the connection ends)."""
        d = self._check_timers(now, keepalives)
        self._armed = INF if d is None else d
        return d

    def _check_timers(self, now: float, keepalives: dict[bytes, list]) -> float | None:
        s = self.session
        if now >= self.last_io + self.stream_timeout:
            self._flag("stream timeout")
            return None
        if s is not None and now >= s.last_handler + self.server.handler_timeout:
            self.server.metrics.handler_timeouts += 1
            if not self.waiting_for_request:  # an idle keep-alive connection waits for nobody
                self.server.warn_handler_timeout(s.id, self.server.handler_timeout)
            self._flag("handler timeout")
            return None
        if s is not None and self.keepalive_due is not None and now >= self.keepalive_due:
            if s.addr and not s.paused:
                keepalives.setdefault(s.addr, []).append((s.id, s.next_seq()))
            self.keepalive_due = now + self.server.keepalive_interval
        return self._next_deadline()

    def _flag(self, reason: str) -> None:
        self._timeout = reason
        self._wake_soon()

    def _next_deadline(self) -> float:
        d = self.last_io + self.stream_timeout
        s = self.session
        if s is not None:
            d = min(d, s.last_handler + self.server.handler_timeout)
        if self.keepalive_due is not None:
            d = min(d, self.keepalive_due)
        return d

    def _arm(self) -> None:
        """Make sure the sweeper looks at this connection by its next deadline.

        Deadlines nearly always move later (every request, every byte, every
        handler packet), and a connection swept early only gets put back at its
        real deadline (see `on_timer`), so the wheel is touched only when the
        deadline comes before the one armed.
        """
        d = self._next_deadline()
        if d < self._armed:
            self.server.wheel.add(d, self)
            self._armed = d

    # Waking: `wait` parks the greenlet in the hub. Watcher callbacks run in
    # the hub and switch straight back; other greenlets (the SUB reader, the
    # sweeper) queue one hub callback. A wake-up that arrives after the
    # greenlet moved on finds `_waiting` false and does nothing; one that
    # finds a later wait ends it early, which every caller of `wait` allows.

    def _on_readable(self) -> None:
        self._readable = True
        self._resume()

    def _on_writable(self) -> None:
        self._writable = True
        self._resume()

    def _resume(self) -> None:
        self._wake_queued = False
        if self._waiting:
            self._waiting = False
            self._greenlet.switch()

    def _wake_soon(self) -> None:
        if self._waiting and not self._wake_queued:
            self._wake_queued = True
            self._hub.loop.run_callback(self._resume)

    def wait(self, read: bool) -> bool:
        """Block until a handler packet, a timeout or (if `read`) client input.

        Returns True when the client socket is readable.
        """
        if self._inbox or self._timeout:
            return False
        if read and self._tls and self.sock.pending():
            return True
        self._readable = self._writable = False
        loop = self._hub.loop
        if read:
            if self._io is None:
                self._io = loop.io(self._fd, 1)
            self._io.start(self._on_readable)
        if self._out:
            if self._wio is None:
                self._wio = loop.io(self._fd, 2)
            self._wio.start(self._on_writable)
        self._waiting = True
        try:
            self._hub.switch()
        finally:
            self._waiting = False
            if read:
                self._io.stop()
            if self._wio is not None:
                self._wio.stop()
        if self._writable:
            self.flush()
        return self._readable

    def queue_write(self, data: bytes, on_written: Any = None) -> None:
        """Write without blocking: what the socket does not take now waits in
        the queue and goes out as it becomes writable (see `wait`), so client
        input and handler packets are handled meanwhile. `on_written` runs
        once `data` is out."""
        if type(self._out) is bytes:  # the class default: first use
            self._out = bytearray()
            self._out_done = deque()
        self._out += data
        self._out_total += len(data)
        if on_written is not None:
            self._out_done.append((self._out_total, on_written))
        self.flush()

    @property
    def queued_pieces(self) -> int:
        return len(self._out_done)

    @property
    def queued_bytes_sent(self) -> int:
        """Bytes of the write queue (WebSocket frames) written so far."""
        return self._out_sent

    def flush(self) -> None:
        """Send what the socket takes now; run the callbacks of what got out."""
        if self._out:
            try:
                sent = self.sock.send(self._out) if self._raw is None else self._raw.send(self._out)
            except BlockingIOError:
                sent = 0
            except (ConnectionError, OSError) as e:
                raise ClientGone(str(e)) from None
            if sent:
                del self._out[:sent]
                self._out_sent += sent
                self.last_io = time.monotonic()
                self.server.metrics.bytes["out"] += sent
        done = self._out_done
        while done and done[0][0] <= self._out_sent:
            done.popleft()[1]()

    def flush_all(self) -> None:
        """Block until the queue is written (at the end of a session)."""
        while self._out:
            self.write(bytes(self._out))  # blocking, under the stream timeout
            self._out_sent += len(self._out)
            self._out.clear()
        self.flush()

    def check_timeout(self) -> None:
        if self._timeout:
            reason, self._timeout = self._timeout, None
            if reason == "inbox overflow":
                raise BufferExceeded(reason)
            if reason == "stopped":
                raise Stopped("shutting down")
            raise Timeout(reason)

    def stop(self, force: bool) -> None:
        """Shutdown (D12): idle connections and WebSockets end now; a request
        in flight may finish (then the connection closes) unless `force`."""
        self.stopping = True
        if force or self.waiting_for_request or self.websocket:
            self._flag("stopped")

    def next_packet(self) -> tuple[bytes, zp.Packet, int | None] | None:
        if self._inbox:
            return self._inbox.popleft()
        return None

    # --- client I/O -----------------------------------------------------

    def recv(self) -> bytes:
        """Read what the client sent (b"" at EOF), waiting only for the client."""
        if self._fresh:
            self._fresh = False
            data = self._recv_ready()
            if data is not None:
                return data
        while True:
            self.check_timeout()
            if self.wait(read=True):
                return self.recv_now()

    def _recv_ready(self) -> bytes | None:
        """What the client already sent (b"" at EOF), or None if reading would
        wait (or the socket is TLS, which only `sock` reads)."""
        if self._raw is None:
            return None
        try:
            data = self._raw.recv(self.buffer_size)
        except BlockingIOError:
            return None
        except (ConnectionError, OSError) as e:
            raise ClientGone(str(e)) from None
        return self._took(data)

    def recv_now(self) -> bytes:
        """Read after `wait` said the socket is readable."""
        data = self._recv_ready()
        if data is None:  # TLS, or readiness that did not last: the cooperative read
            try:
                data = self._took(self.sock.recv(self.buffer_size))
            except (ConnectionError, OSError) as e:
                raise ClientGone(str(e)) from None
        return data

    def _took(self, data: bytes) -> bytes:
        # Bytes of a request head that is not complete yet do not move the
        # stream deadline (condure refreshes it when the head is received):
        # a head trickled in a byte at a time must still be whole by then.
        if not self.waiting_for_request:
            self.last_io = time.monotonic()
        self.server.metrics.bytes["in"] += len(data)
        return data

    def write(self, data: bytes) -> None:
        try:
            if self._raw is not None:
                try:
                    sent = self._raw.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    self.sock.sendall(data[sent:])
            else:
                self.sock.sendall(data)
            self.server.metrics.bytes["out"] += len(data)
        except socket.timeout:
            raise Timeout("write timeout") from None
        except (ConnectionError, OSError) as e:
            raise ClientGone(str(e)) from None
        self.last_io = time.monotonic()

    def _answer_and_close(self, status: int) -> None:
        """Write condure's own error response, then close without an RST (D1)."""
        try:
            self.write(http1.error_response(status))
            self.sock.shutdown(socket.SHUT_WR)
            self._drain()
        except (CondureError, OSError):
            pass

    def _drain(self) -> None:
        # unread input at close() makes the kernel send RST, which can destroy
        # the response before the client reads it
        total = 0
        with gevent.Timeout(DRAIN_TIME, False):
            while total < DRAIN_BYTES:
                data = self.sock.recv(self.buffer_size)
                if not data:
                    break
                total += len(data)

    def close_gracefully(self) -> None:
        """Close after a response. Only unread input makes close() send an RST,
        so the drain (a round trip with the client) is needed only then."""
        if not self.parser.buffered and not self._input_pending():
            return  # run() closes the socket
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self._drain()
        except OSError:
            pass

    def _input_pending(self) -> bool:
        if self._raw is None:
            return True  # TLS: be careful
        # a zero-timeout poll gives the usual answer (nothing) at less than
        # half the cost of the BlockingIOError a non-blocking peek would raise
        # (one poll object for all: nothing switches greenlets in between)
        _POLL.register(self._fd, select.POLLIN)
        ready = _POLL.poll(0)
        _POLL.unregister(self._fd)
        if not ready:
            return False
        try:
            return bool(self._raw.recv(1, socket.MSG_PEEK))  # data, or b"" at EOF
        except OSError:
            return False


class Exchange:
    """One request/response cycle on a connection (steps 2-6 of section 5.1)."""

    HANDLERS: dict[bytes, Any]  # packet type -> method, set below the class

    # the state every exchange starts in (class attributes, as in StreamConnection)
    credits = 0  # request-body bytes the handler lets us send
    started = False  # first handler packet seen
    response: http1.ResponseBody | None = None
    written = False  # any response byte written (D13)
    done = False
    continue_pending = False
    code = 0  # the status of the response written for the handler
    uri = b""  # as forwarded (the access log's)
    started_at = 0.0  # for the access log only

    def __init__(self, conn: StreamConnection, head: RequestHead) -> None:
        self.conn = conn
        self.head = head
        self.session: Session = conn.session  # type: ignore[assignment]
        self.server = conn.server
        self.persistent = http1.is_persistent(head)
        self.pending = bytearray()  # parsed request body not yet forwarded
        has_body = head.has_body
        self.body_ended = not has_body  # parser saw the end of the body
        self.body_sent = not has_body  # final body packet went out
        if has_body:
            self.continue_pending = http1.wants_continue(head)
        if self.server.access_log:
            self.started_at = conn.last_io  # the head was complete then

    # --- flow -------------------------------------------------------------

    def run(self) -> bool:
        conn = self.conn
        try:
            self._send_request()
            while not self.done:
                item = conn.next_packet()
                if item is None:
                    conn.check_timeout()
                    if conn.wait(read=self._want_read()):
                        self._on_client_readable()
                    continue
                rid, pkt, seq = item
                if rid == self.session.id:
                    self._apply(pkt, seq)
            conn.flush_all()  # a WebSocket's last frames may still be queued
        except CondureError as e:
            self._fail(e)
            return False
        conn._end_session()
        if self.server.access_log:
            self._log_access(None, None)
        if self.response is not None and self.response.overflow:
            conn.log.warning("handler sent more body than its Content-Length; closing")
            self.persistent = False
        if not self.persistent or conn.stopping:
            conn.close_gracefully()
            return False
        if conn.debug:
            conn.log.debug("finished")
        conn.parser.next_request()
        return True

    def _send_request(self) -> None:
        conn, head = self.conn, self.head
        uri = self.uri = http1.request_uri(head, conn.scheme)
        if conn.debug:
            conn.log.debug("request: %s %s", head.method.decode("latin-1"), uri.decode("latin-1"))
        more = head.chunked or bool(head.content_length)
        self._send_first(uri, more=more, stream=True)

    def _send_first(self, uri: bytes, more: bool, stream: bool) -> None:
        conn, head = self.conn, self.head
        self.session.next_seq()  # the request packet is seq 0
        payload = zp.request(self.server.instance_id, self.session.id, head.method, uri,
                             head.headers, conn.buffer_size, more, stream, conn.peer)
        self.server.registry.register(self.session.id, conn)
        self.server.metrics.packets_out["request"] += 1
        self.server.zsockets.send_first(payload)  # type: ignore[union-attr]  # stream mode

    def _want_read(self) -> bool:
        if not self.started or self.session.paused:
            return False
        if self.response is None and not self.body_ended:
            return self.credits > 0 and not self.pending
        if not self.body_ended:
            return False  # early response: the rest of the body stays unread
        # watch for EOF; keep pipelined bytes, but no more than one buffer
        return self.conn.parser.buffered < self.conn.buffer_size

    def _on_client_readable(self) -> None:
        data = self.conn.recv_now()
        if not data:
            raise errors.ClientGone("client closed the connection")
        self.conn.parser.feed(data)
        if not self.body_ended:
            self._pull_body()
            self._forward_body()

    # --- request body -----------------------------------------------------

    def _pull_body(self) -> None:
        parser = self.conn.parser
        while not self.body_ended:
            ev = parser.next_event()
            if ev is NEED_DATA:
                return
            if ev is END:
                self.body_ended = True
            elif isinstance(ev, Body):
                self.pending += ev.data

    def _forward_body(self) -> None:
        """Send parsed body to the handler, never more than its credits."""
        while self.credits > 0 and not self.body_sent:
            n = min(self.credits, self.conn.buffer_size, len(self.pending))
            if n == 0 and not self.body_ended:
                return
            chunk = bytes(self.pending[:n])
            del self.pending[:n]
            self.credits -= n
            last = self.body_ended and not self.pending
            self._send(zp.DATA, body=chunk, more=not last)
            self.body_sent = last

    # --- handler packets --------------------------------------------------

    def _apply(self, pkt: zp.Packet, seq: int | None) -> None:
        self.session.accept(pkt, seq, time.monotonic())
        if not self.started:
            self.started = True
            if self.continue_pending and not self.body_ended:
                self.continue_pending = False
                self.conn.write(CONTINUE)
            self._pull_body()
        handler = self.HANDLERS.get(pkt.type)
        if handler is None:
            raise BadMessage(f"unexpected packet type {pkt.type_name}")
        handler(self, pkt)

    def _on_data(self, pkt: zp.Packet) -> None:
        self.credits += pkt.credits
        self._forward_body()
        if self.response is None:
            self._start_response(pkt)
        else:
            self._write_body(pkt.body, pkt.more)

    def _on_credit(self, pkt: zp.Packet) -> None:
        self.credits += pkt.credits
        self._forward_body()

    def _on_keepalive(self, pkt: zp.Packet) -> None:
        pass

    def _on_cancel(self, pkt: zp.Packet) -> None:
        raise HandlerCancel("handler cancel")

    def _on_error(self, pkt: zp.Packet) -> None:
        raise HandlerError(f"zhttp error condition={pkt.condition.decode('latin-1')}")

    def _on_handoff_start(self, pkt: zp.Packet) -> None:
        # everything is written synchronously, so nothing is left to flush
        self._send(b"handoff-proceed")
        self.session.paused = True

    # --- response ---------------------------------------------------------

    def _start_response(self, pkt: zp.Packet) -> None:
        conn = self.conn
        if not self.body_sent:
            self.persistent = False  # answered before the whole body was read
        code = 0 if pkt.code is None else pkt.code  # condure writes a missing code as 0 (D17: 502)
        self.code = code
        head, body, self.persistent = http1.response_head(
            self.head.version, code, pkt.reason, pkt.headers, pkt.body, pkt.more,
            self.persistent, self.head.method == b"HEAD")
        if len(head) > conn.buffer_size or len(pkt.body) > conn.buffer_size:
            raise BufferExceeded("response does not fit the write buffer")
        self.response = body
        self.written = True
        conn.write(head + body.frame(pkt.body, not pkt.more))
        self._after_write(pkt.body, pkt.more)

    def _write_body(self, data: bytes, more: bool) -> None:
        if len(data) > self.conn.buffer_size:
            raise BufferExceeded("handler sent more than its credits")
        assert self.response is not None
        out = self.response.frame(data, not more)
        if out:
            self.conn.write(out)
        self._after_write(data, more)

    def _after_write(self, data: bytes, more: bool) -> None:
        if not more:
            self.done = True
        elif data:
            self._send(b"credit", credits=len(data))

    # --- output to the handler and endings ---------------------------------

    def _send(self, type_: bytes, **fields: Any) -> None:
        s = self.session
        if not s.addr:
            return  # no `from` seen: nowhere to route (condure's sends would fail too)
        payload = zp.session_packet(self.server.instance_id, s.id, s.next_seq(), type_, **fields)
        self.server.metrics.packets_out[zp.metric_name(type_)] += 1
        self.server.zsockets.send_to(s.addr, payload)  # type: ignore[union-attr]  # stream mode

    def _fail(self, e: CondureError) -> None:
        conn = self.conn
        name = type(e).__name__
        if isinstance(e, errors.HandlerEnded):
            conn.log.debug("process error: %s (%s)", name, e)
        elif isinstance(e, (errors.BadHandlerResponse, BufferExceeded)):
            conn.log.warning("process error: %s (%s)", name, e)
        else:
            conn.log.debug("process error: %s (%s)", name, e)
        if e.cancel:
            self._send(b"cancel")
        conn._end_session()
        status = e.status
        if status is None or self.written or isinstance(e, ClientGone):
            status = None  # nothing of ours to write
        if self.server.access_log:  # before the answer's drain (up to a second)
            self._log_access(e, status)
        if status is not None:
            conn._answer_and_close(status)

    def _log_access(self, e: CondureError | None, own_status: int | None) -> None:
        """The access log line (D21); `own_status`: condure's own answer, if it gave one."""
        uri = self.uri or access.request_uri(self.head, self.conn.scheme)
        peer, head, started = self.conn.peer, self.head, self.started_at
        if own_status is not None:
            access.own_answer(peer, head, uri, own_status, started, e)
        elif self.written:
            access.write(peer, head, uri, self.code, self._body_bytes(), started, access.HANDLER, e)
        else:
            access.write(peer, head, uri, None, 0, started, access.NOBODY, e)

    def _body_bytes(self) -> int:
        return 0 if self.response is None else self.response.sent


def _peer_fields(peer: Any) -> tuple[bytes, int] | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return peer[0].encode(), int(peer[1])
    return None  # unix socket peers have no address


Exchange.HANDLERS = {
    zp.DATA: Exchange._on_data,
    b"credit": Exchange._on_credit,
    b"keep-alive": Exchange._on_keepalive,
    b"cancel": Exchange._on_cancel,
    b"error": Exchange._on_error,
    b"handoff-start": Exchange._on_handoff_start,
}
