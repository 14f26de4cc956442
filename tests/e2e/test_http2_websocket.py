"""WebSocket over HTTP/2 (RFC 8441, docs/deviations.md D33), end to end.

condure runs as a `python -m condure` subprocess, the handler is a real
ZeroMQ one (zhttp_handler.Handler) and the client is the `h2` library over a
real socket (`H2Client`) with wsproto's frame layer for the WebSocket frames
(wsproto's own handshake speaks HTTP/1.1 only): an extended CONNECT, then
frames as DATA both ways. The request packet is compared field by field
with the one the same upgrade over HTTP/1.1 produces.
"""
from __future__ import annotations

import base64
import signal
import socket
import ssl
import time

import h2.errors
import h2.events
import pytest
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Frame, FrameProtocol, Opcode

from h2client import H2Client
from rawhttp import Client

# what may follow our END_STREAM on a stream whose client half is still open:
# nothing yet, or RST_STREAM(NO_ERROR), which asks the client to stop sending
# (RFC 9113 8.1; h2 would otherwise keep the half-closed stream)
AFTER_RESPONSE = (None, h2.errors.ErrorCodes.NO_ERROR)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3 example
INVALID_WEBSOCKET = (b'Request contained an Upgrade header with value "websocket" but the request'
                     b' was not a valid WebSocket request.')


@pytest.fixture
def ch(condure, handler_factory) -> tuple:
    c = condure()
    return c, handler_factory(c.base)


class H2WebSocket:
    """One WebSocket over a stream of `cl` (RFC 8441): the extended CONNECT,
    then wsproto frames in DATA. Nothing here answers pings or closes on its
    own: the tests say what the client does."""

    def __init__(self, cl: H2Client, path: bytes = b"/ws", headers: list | tuple = (),
                 deflate: bytes | None = None, authority: bytes = b"example.com",
                 protocol: bytes = b"websocket", version: bytes = b"13") -> None:
        self.cl = cl
        self.offer = deflate
        fields = [(b":method", b"CONNECT"), (b":protocol", protocol), (b":scheme", cl.scheme),
                  (b":path", path), (b":authority", authority),
                  (b"sec-websocket-version", version), *headers]
        if deflate is not None:
            fields.append((b"sec-websocket-extensions", deflate))
        self.sid = cl.conn.get_next_available_stream_id()
        cl.conn.send_headers(self.sid, fields)
        cl.flush()
        cl.responses[self.sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        self.frames: FrameProtocol | None = None
        self._read = 0  # bytes of the stream's DATA given to `frames`
        self._frames: list[Frame] = []  # parsed, not yet taken by `next_frame`

    @property
    def state(self) -> dict:
        return self.cl.responses[self.sid]

    def pump_until(self, done, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                raise AssertionError(f"timed out; stream {self.sid}: {self.state}")
            self.cl.pump()

    def response(self) -> list:
        """The response HEADERS; a 200 sets up the frame layer with the
        permessage-deflate the server answered, if any."""
        self.pump_until(lambda: self.state["headers"] is not None or self.state["reset"] is not None)
        headers = self.state["headers"]
        assert headers is not None, self.state
        if headers[0] == (b":status", b"200"):
            extensions = []
            answer = dict(headers).get(b"sec-websocket-extensions")
            if answer is not None:
                ext = PerMessageDeflate()
                ext.finalize(answer.decode())
                extensions.append(ext)
            self.frames = FrameProtocol(client=True, extensions=extensions)
        return headers

    def accepted(self) -> list:
        headers = self.response()
        assert headers[0] == (b":status", b"200"), headers
        return headers

    # --- frames ------------------------------------------------------------

    def send_raw(self, data: bytes, end: bool = False) -> None:
        self.cl.conn.send_data(self.sid, data, end_stream=end)
        self.cl.flush()

    def send(self, payload: bytes | str, fin: bool = True) -> None:
        assert self.frames is not None
        self.send_raw(bytes(self.frames.send_data(payload, fin)))

    def send_close(self, code: int | None = 1000, reason: str | None = None,
                   end: bool = False) -> None:
        assert self.frames is not None
        self.send_raw(bytes(self.frames.close(code, reason)), end)

    def _parsed(self) -> list[Frame]:
        assert self.frames is not None
        body = self.state["body"]
        if len(body) > self._read:
            self.frames.receive_bytes(body[self._read:])
            self._read = len(body)
        return list(self.frames.received_frames())

    def next_frame(self, timeout: float = 5.0) -> Frame:
        got = self._frames

        def done() -> bool:
            got.extend(self._parsed())
            return bool(got)

        self.pump_until(done, timeout)
        return got.pop(0)

    def message(self) -> tuple[Opcode, bytes | str]:
        """One whole data message (its frames joined)."""
        f = self.next_frame()
        opcode, payload = f.opcode, f.payload
        while not f.message_finished:
            f = self.next_frame()
            payload += f.payload
        return opcode, payload


def _pump_briefly(cl: H2Client, seconds: float) -> None:
    """Read what the server sends for `seconds` (nothing may come)."""
    cl.sock.settimeout(seconds)
    try:
        cl.pump()
    except socket.timeout:
        pass
    finally:
        cl.sock.settimeout(5.0)


def accept(h, ws: H2WebSocket, credits: int | None = 200000, headers: list | tuple = ()) -> dict:
    req = h.recv_request()
    extra = {} if credits is None else {"credits": credits}
    h.respond(req, 101, b"Switching Protocols", headers, **extra)
    ws.accepted()
    return req


def recv_message(h, req: dict) -> tuple[bytes, bytes]:
    """(content-type, content) of one client message, its data packets joined."""
    body, ctype = b"", None
    while True:
        p = h.recv()
        assert p[b"id"] == req[b"id"] and b"type" not in p, p
        ctype = p.get(b"content-type", ctype)
        body += p.get(b"body", b"")
        if not p.get(b"more"):
            return ctype, body


# ---------------------------------------------------------------------------
# SETTINGS and the request


def test_settings_announce_enable_connect_protocol(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        cl.pump()
        assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in cl.events)
        assert cl.conn.remote_settings.enable_connect_protocol == 1


def test_request_packet_is_the_http1_upgrades(ch) -> None:
    """Field by field the packet of the same upgrade over HTTP/1.1: names lower
    case, and the fields an HTTP/2 client does not send (Upgrade, Connection,
    Sec-WebSocket-Key) where an HTTP/1.1 client puts them, the key a fresh one."""
    c, h = ch
    with Client(c.port) as c1:
        c1.send(b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
                b"Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n"
                b"Sec-WebSocket-Protocol: chat, superchat\r\n\r\n")
        h1 = h.recv_request()
        port1 = c1.local_port
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl, b"/chat?room=1", [(b"origin", b"http://example.com"),
                                               (b"sec-websocket-protocol", b"chat, superchat")],
                         authority=b"example.com:8080")
        req = h.recv_request()
        assert list(req) == list(h1)
        for key in h1:
            if key == b"id":
                assert req[key] != h1[key]
            elif key == b"peer-port":
                assert (req[key], h1[key]) == (cl.local_port, port1)
            elif key == b"headers":
                names = [[n.lower(), v] for n, v in h1[key]]
                assert [n for n, _ in req[key]] == [n for n, _ in names]
                for (n, v), (_, v1) in zip(req[key], names):
                    if n == b"sec-websocket-key":  # made for the handler: 16 random bytes
                        assert len(base64.b64decode(v, validate=True)) == 16 and v != v1
                    else:
                        assert v == v1, n
            else:
                assert req[key] == h1[key], key
        assert req[b"uri"] == b"ws://example.com:8080/chat?room=1"
        assert req[b"headers"][:3] == [[b"host", b"example.com:8080"], [b"upgrade", b"websocket"],
                                       [b"connection", b"Upgrade"]]
        for absent in (b"stream", b"more", b"body"):
            assert absent not in req
        # the accept: a 200 with the handler's fields as the 101 carries them
        h.respond(req, 101, b"Switching Protocols",
                  [(b"Sec-WebSocket-Protocol", b"chat"), (b"X-Custom", b"1"),
                   (b"Upgrade", b"bogus"), (b"connection", b"bogus"),
                   (b"Sec-WebSocket-Accept", b"bogus"), (b"Sec-WebSocket-Extensions", b"bogus")],
                  credits=1000)
        assert ws.accepted() == [(b":status", b"200"), (b"sec-websocket-protocol", b"chat"),
                                 (b"x-custom", b"1")]
        assert not ws.state["ended"]


def test_a_key_sent_by_the_client_is_kept(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        H2WebSocket(cl, headers=[(b"sec-websocket-key", KEY)])
        req = h.recv_request()
        assert req[b"headers"] == [[b"host", b"example.com"], [b"upgrade", b"websocket"],
                                   [b"connection", b"Upgrade"], [b"sec-websocket-version", b"13"],
                                   [b"sec-websocket-key", KEY]]


# ---------------------------------------------------------------------------
# refusals


def test_plain_connect_is_still_501(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        sid = cl.conn.get_next_available_stream_id()
        cl.conn.send_headers(sid, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],
                             end_stream=True)
        cl.flush()
        cl.responses[sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        r = cl.response(sid)
        assert r["headers"][0] == (b":status", b"501")
    h.expect_nothing(0.3)


def test_other_protocol_is_501(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl, protocol=b"connect-udp")
        assert ws.response()[0] == (b":status", b"501")
        ws.pump_until(lambda: ws.state["ended"])
    h.expect_nothing(0.3)


def test_invalid_upgrade_is_400_as_over_http1(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl, version=b"8")
        assert ws.response()[0] == (b":status", b"400")
        ws.pump_until(lambda: ws.state["ended"])
        assert ws.state["body"] == INVALID_WEBSOCKET + b"\n"
    h.expect_nothing(0.3)


def test_handler_plain_response_is_the_answer_on_the_stream(ch) -> None:
    """D3: a non-101 answer is a plain response (HTTP/1.1 then closes the
    connection; here the stream ends and the connection goes on)."""
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = h.recv_request()
        h.respond(req, 403, b"Forbidden", [(b"Content-Type", b"text/plain"),
                                           (b"Sec-WebSocket-Accept", b"x")], b"no\n")
        r = cl.response(ws.sid)
        assert r["headers"] == [(b":status", b"403"), (b"content-type", b"text/plain"),
                                (b"content-length", b"3")]
        assert r["body"] == b"no\n" and r["reset"] in AFTER_RESPONSE
        # the connection serves on
        sid = cl.request(b"GET", b"/after")
        req2 = h.recv_request()
        h.respond(req2, 200, b"OK", [], b"ok")
        assert cl.response(sid)["body"] == b"ok"


def test_rejected_is_the_handlers_answer(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = h.recv_request()
        h.packet(req, "error", condition="rejected", code=403, reason=b"Forbidden",
                 headers=[[b"Content-Type", b"text/plain"], [b"Upgrade", b"websocket"],
                          [b"Sec-WebSocket-Accept", b"x"]],
                 body=b"go away\n")
        r = cl.response(ws.sid)
        assert r["headers"] == [(b":status", b"403"), (b"content-type", b"text/plain"),
                                (b"content-length", b"8")]
        assert r["body"] == b"go away\n" and r["reset"] in AFTER_RESPONSE
    h.expect_nothing(0.3)


def test_refused_accept_is_502_and_cancel(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = h.recv_request()
        h.respond(req, 101, b"Switching Protocols", [(b"X-A", b"a\r\nEvil: 1")], credits=10)
        assert ws.response()[0] == (b":status", b"502")
        assert h.recv_type(b"cancel")[b"id"] == req[b"id"]


# ---------------------------------------------------------------------------
# messages


def test_text_and_binary_both_ways(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        ws.send("hello")
        assert recv_message(h, req) == (b"text", b"hello")
        ws.send(b"\x00\x01\xff")
        assert recv_message(h, req) == (b"binary", b"\x00\x01\xff")
        ws.send("frag", fin=False)
        ws.send("mented")
        assert recv_message(h, req) == (b"text", b"fragmented")
        h.body(req, b"h\xc3\xa9llo", content_type="text")
        assert ws.message() == (Opcode.TEXT, "h\u00e9llo")
        h.body(req, b"\x02\x03", content_type="binary")
        assert ws.message() == (Opcode.BINARY, b"\x02\x03")
        h.body(req, b"ab", more=True, content_type="binary")
        h.body(req, b"cd", content_type="binary")
        assert ws.message() == (Opcode.BINARY, b"abcd")
        # the credits for the bytes written, as over HTTP/1.1
        got = 0
        while got < 6 + 2 + 4:
            p = h.recv_type(b"credit")
            got += p[b"credits"]
        assert got == 12
        # pings are relayed, not answered by condure
        ws.send_raw(bytes(ws.frames.ping(b"p1")))
        p = h.recv_type(b"ping")
        assert p[b"body"] == b"p1"
        h.packet(req, "pong", body=b"p1")
        f = ws.next_frame()
        assert (f.opcode, f.payload) == (Opcode.PONG, b"p1")


def _http1_deflate_answer(port: int, h, offer: bytes) -> bytes | None:
    with Client(port) as c1:
        c1.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
                b"Sec-WebSocket-Extensions: " + offer + b"\r\n\r\n")
        req = h.recv_request()
        h.respond(req, 101, b"Switching Protocols", credits=1000)
        r = c1.read_head()
        assert r.status == 101
        return r.header(b"sec-websocket-extensions")


@pytest.mark.parametrize("offer", [
    b"permessage-deflate",
    b"permessage-deflate; client_max_window_bits",
    b"permessage-deflate; client_no_context_takeover; server_no_context_takeover",
    b"permessage-deflate; server_max_window_bits=10",  # declined
    b"permessage-deflate; foo=1, permessage-deflate; client_no_context_takeover",
])
def test_deflate_negotiated_as_over_http1(condure, handler_factory, offer: bytes) -> None:
    c = condure("--compression")
    h = handler_factory(c.base)
    expected = _http1_deflate_answer(c.port, h, offer)
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl, deflate=offer)
        req = h.recv_request()
        assert [b"sec-websocket-extensions", offer] in req[b"headers"]
        h.respond(req, 101, b"Switching Protocols", credits=1000)
        assert dict(ws.accepted()).get(b"sec-websocket-extensions") == expected


def test_compressed_messages_both_ways(condure, handler_factory) -> None:
    c = condure("--compression")
    h = handler_factory(c.base)
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl, deflate=b"permessage-deflate")
        req = accept(h, ws, credits=100000)
        text = "compress me please " * 50
        raw = bytes(ws.frames.send_data(text))
        assert raw[0] & 0x40 and len(raw) < len(text) // 4  # RSV1: compressed on the wire
        ws.send_raw(raw)
        assert recv_message(h, req) == (b"text", text.encode())
        h.body(req, text, content_type="text")
        before = len(ws.state["body"])
        assert ws.message() == (Opcode.TEXT, text)
        wire = ws.state["body"][before:]
        assert wire[0] & 0x40 and len(wire) < len(text) // 4  # compressed by condure
        assert h.recv_type(b"credit")[b"credits"] == len(text)  # the plain bytes


def test_protocol_violation_closes_with_1002_d2(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        ws.send_raw(b"\x81\x02hi")  # an unmasked client frame
        p = h.recv_type(b"close")
        assert p[b"id"] == req[b"id"] and p[b"code"] == 1002
        f = ws.next_frame()
        assert f.opcode == Opcode.CLOSE and f.payload[0] == 1002


def test_inflation_is_bounded_as_over_http1_d18(condure, handler_factory) -> None:
    """A compressed message past --compression-message-max closes with 1009
    (D18); the handler got no more than the limit, a piece at a time."""
    limit = 100_000
    c = condure("--compression", "--compression-message-max", str(limit))
    h = handler_factory(c.base)
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl, deflate=b"permessage-deflate")
        req = accept(h, ws, credits=65536)
        raw = bytes(ws.frames.send_data(b"\0" * (limit + 1)))
        assert len(raw) < 1000
        ws.send_raw(raw)
        total = 0
        while True:
            p = h.recv()
            if p.get(b"type") == b"close":
                break
            assert p.get(b"type") is None, p
            total += len(p.get(b"body", b""))
            h.credit(req, len(p.get(b"body", b"")))
        assert p[b"code"] == 1009 and total <= limit
        f = ws.next_frame()
        assert f.opcode == Opcode.CLOSE and f.payload[0] == 1009


# ---------------------------------------------------------------------------
# endings


def test_close_from_client(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        ws.send_close(1000, "bye")
        p = h.recv_type(b"close")
        assert p[b"id"] == req[b"id"] and p[b"code"] == 1000 and p[b"body"] == b"bye"
        h.packet(req, "close", code=1000)
        f = ws.next_frame()
        assert f.opcode == Opcode.CLOSE and f.payload[0] == 1000
        ws.pump_until(lambda: ws.state["ended"])  # the close ends the stream
        assert ws.state["reset"] in AFTER_RESPONSE
        h.expect_nothing(0.3)  # clean: no cancel


def test_close_from_handler_first(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        h.packet(req, "close", code=1001, body=b"going")
        f = ws.next_frame()
        assert f.opcode == Opcode.CLOSE and f.payload == (1001, "going")
        # condure reads on until the client's close: messages still arrive
        ws.send("after")
        assert recv_message(h, req) == (b"text", b"after")
        ws.send_close(1001, "ok", end=True)
        p = h.recv_type(b"close")
        assert p[b"code"] == 1001 and p[b"body"] == b"ok"
        ws.pump_until(lambda: ws.state["ended"])
        assert ws.state["reset"] is None
        h.expect_nothing(0.3)


def test_client_reset_cancels(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        cl.conn.reset_stream(ws.sid, h2.errors.ErrorCodes.CANCEL)
        cl.flush()
        assert h.recv_type(b"cancel")[b"id"] == req[b"id"]


@pytest.mark.parametrize("with_the_frame", [True, False])
def test_end_stream_without_close_is_a_tcp_close(ch, with_the_frame: bool) -> None:
    """END_STREAM without a close frame (on the DATA of the last frame, or on
    an empty one after it): what a TCP close is over HTTP/1.1 (the handler gets
    cancel); the stream is reset."""
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        ws.send_raw(bytes(ws.frames.send_data("last")), end=with_the_frame)
        if not with_the_frame:
            ws.send_raw(b"", end=True)
        assert recv_message(h, req) == (b"text", b"last")
        assert h.recv_type(b"cancel")[b"id"] == req[b"id"]
        ws.pump_until(lambda: ws.state["reset"] is not None)


def test_handler_cancel_resets_the_stream(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        h.packet(req, "cancel")
        ws.pump_until(lambda: ws.state["reset"] is not None)
        assert ws.state["reset"] == h2.errors.ErrorCodes.CANCEL
        h.expect_nothing(0.3)


def test_a_get_in_parallel_on_the_same_connection(ch) -> None:
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        wreq = accept(h, ws)
        sid = cl.request(b"GET", b"/plain")
        req = h.recv_request()
        assert req[b"uri"] == b"http://example.com/plain" and req[b"id"] != wreq[b"id"]
        ws.send("during")
        assert recv_message(h, wreq) == (b"text", b"during")
        h.respond(req, 200, b"OK", [(b"Content-Type", b"text/plain")], b"plain\n")
        assert cl.response(sid)["body"] == b"plain\n"
        h.body(wreq, b"still open", content_type="text")
        assert ws.message() == (Opcode.TEXT, "still open")
        assert not ws.state["ended"] and ws.state["reset"] is None


# ---------------------------------------------------------------------------
# flow control: the handler's credits hold the client's frames


def _send_within_window(cl: H2Client, sid: int, data: bytes) -> int:
    """As much of `data` as the windows take now; how much that was."""
    sent = 0
    while sent < len(data):
        n = min(len(data) - sent, cl.conn.local_flow_control_window(sid),
                cl.conn.max_outbound_frame_size)
        if n <= 0:
            break
        cl.conn.send_data(sid, data[sent:sent + n])
        sent += n
    cl.flush()
    return sent


def test_frames_wait_for_the_handlers_credits(ch) -> None:
    """The handler grants nothing after its accept: the client's frames stop
    at what the windows hold, and no WINDOW_UPDATE reopens them; once it
    grants, the rest flows."""
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws, credits=1000)
        wire = b"".join(bytes(ws.frames.send_data(bytes([i]) * 4000)) for i in range(50))
        total = 50 * 4000
        sent = _send_within_window(cl, ws.sid, wire)
        got = b""
        while True:
            try:
                p = h.recv(timeout=0.5)
            except AssertionError:
                break
            got += p.get(b"body", b"")
        assert len(got) == 1000  # the credits of the accept, no more
        # the window is spent, and stays so: condure took (and acknowledged) one
        # buffer (8192 bytes) of the frames, for the 1000 bytes of credits
        for _ in range(5):
            _pump_briefly(cl, 0.3)
            sent += _send_within_window(cl, ws.sid, wire[sent:])
        assert 65535 <= sent <= 65535 + 2 * 8192
        assert cl.conn.local_flow_control_window(ws.sid) == 0
        h.expect_nothing(0.3)
        # credits: the frames flow, the windows open
        while len(got) < total:
            h.credit(req, 20000)
            while True:
                try:
                    p = h.recv(timeout=0.2)
                except AssertionError:
                    break
                got += p.get(b"body", b"")
            _pump_briefly(cl, 0.05)
            sent += _send_within_window(cl, ws.sid, wire[sent:])
        assert got == b"".join(bytes([i]) * 4000 for i in range(50))


def test_frames_to_the_client_wait_for_its_window(ch) -> None:
    """A client that opens no window: condure sends 65,535 bytes, the handler's
    credits stop there; the client's close is still read meanwhile."""
    c, h = ch
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        chunk = b"w" * 8000
        credited = 0
        for _ in range(12):  # 96,000 bytes of messages
            h.body(req, chunk, content_type="binary")
        while True:
            try:
                credited += h.recv_type(b"credit", timeout=1.0)[b"credits"]
            except AssertionError:
                break
        # frame headers take 4 bytes each: 8 whole messages fit the window
        assert credited == 8 * 8000
        # the client reads but opens nothing, then closes: condure reads that
        received = 0
        cl.sock.settimeout(0.5)
        try:
            while True:
                for ev in cl.conn.receive_data(cl.sock.recv(65536)):
                    if isinstance(ev, h2.events.DataReceived):
                        received += len(ev.data)
        except socket.timeout:
            pass
        cl.sock.settimeout(5.0)
        assert received == 65535
        ws.send_close(1000)
        p = h.recv_type(b"close")
        assert p[b"code"] == 1000
        # opening the window lets the rest out, and its credits back
        cl.conn.acknowledge_received_data(received, ws.sid)
        cl.flush()
        rest = 0
        while credited + rest < 12 * 8000:
            rest += h.recv_type(b"credit")[b"credits"]
        assert credited + rest == 12 * 8000



# ---------------------------------------------------------------------------
# as any stream session: handoff, shutdown; wss over TLS


def test_handoff_to_a_second_handler(ch, handler_factory) -> None:
    c, h1 = ch
    h2 = handler_factory(c.base, identity=b"second-handler", pull=False)
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h1, ws)
        rid = req[b"id"]
        h1.packet(req, "handoff-start")
        p = h1.recv_type(b"handoff-proceed")
        assert p[b"id"] == rid and p[b"seq"] == 1
        ws.send("held")  # nothing goes out until the new owner's first packet
        h1.expect_nothing(0.3)
        h2.seq[rid] = h1.seq[rid]
        h2.body(req, b"from h2", content_type="text")
        assert ws.message() == (Opcode.TEXT, "from h2")
        # the held message and the credit for "from h2", in either order
        got = sorted([h2.recv(), h2.recv()], key=lambda p: p.get(b"type", b""))
        assert [p[b"id"] for p in got] == [rid, rid]
        assert (got[0].get(b"type"), got[0][b"body"]) == (None, b"held")
        assert (got[1][b"type"], got[1][b"credits"]) == (b"credit", 7)
        h1.expect_nothing(0.2)


def test_shutdown_closes_with_1001(condure, handler_factory) -> None:
    """D12 as over HTTP/1.1: the WebSocket is closed with 1001 at once and its
    stream ended; the connection gets its GOAWAY and ends."""
    c = condure("--shutdown-timeout", "5")
    h = handler_factory(c.base)
    with H2Client(c.port) as cl:
        ws = H2WebSocket(cl)
        req = accept(h, ws)
        c.proc.send_signal(signal.SIGTERM)
        assert h.recv_type(b"cancel")[b"id"] == req[b"id"]
        # the client's h2 takes nothing after a GOAWAY: the frames, read raw
        data = b""
        while chunk := cl.sock.recv(65536):
            data += chunk
    frames = []  # (type, flags, stream, payload)
    while data:
        n, sid = int.from_bytes(data[:3], "big"), int.from_bytes(data[5:9], "big")
        frames.append((data[3], data[4], sid, data[9:9 + n]))
        data = data[9 + n:]
    goaway = [f for f in frames if f[0] == 7]
    assert goaway and int.from_bytes(goaway[0][3][4:8], "big") == 0  # NO_ERROR
    on_ws = [(kind, flags & 1, payload) for kind, flags, sid, payload in frames if sid == ws.sid]
    # DATA: the close frame (1001), then END_STREAM as HTTP/1.1 closes the socket; then
    # perhaps RST_STREAM(NO_ERROR), the client's half being still open (RFC 9113 8.1)
    if on_ws[-1] == (3, 0, b"\x00\x00\x00\x00"):
        on_ws.pop()
    assert on_ws in ([(0, 0, b"\x88\x02\x03\xe9"), (0, 1, b"")], [(0, 1, b"\x88\x02\x03\xe9")])
    assert c.proc.wait(10) == 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("identities")
    cert = ca.issue_cert("localhost", common_name="localhost")
    (d / "localhost.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (d / "localhost.key").write_bytes(cert.private_key_pem.bytes())
    return ca, str(d)


def test_wss_over_tls(condure, handler_factory, pki) -> None:
    from conftest import get_free_port, wait_for_port

    ca, directory = pki
    port = get_free_port()
    c = condure("--listen", f"127.0.0.1:{port},stream,tls,default-cert=localhost",
                "--tls-identities-dir", directory)
    wait_for_port(port, c.proc, c.log_path)
    h = handler_factory(c.base)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["h2"])
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                          server_hostname="localhost")
    assert tls.selected_alpn_protocol() == "h2"
    with H2Client(port, sock=tls, scheme=b"https") as cl:
        ws = H2WebSocket(cl, authority=b"localhost")
        req = accept(h, ws)
        assert req[b"uri"] == b"wss://localhost/ws"
        ws.send(b"secure")
        assert recv_message(h, req) == (b"binary", b"secure")
