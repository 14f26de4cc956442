"""Client mode end to end: handlers send ZHTTP requests, condure makes the outgoing
HTTP/WebSocket connections (shared/zhttp/client.md, scenarios of section 17).

Everything is real: condure runs as ``python -m condure --zserver-req ... --zserver-stream ...``
subprocesses, the handler side is pyzmq over ipc in short temporary directories, and the
origins are servers on 127.0.0.1 started by the tests (raw sockets in threads, so the exact
request bytes can be checked; TLS with trustme certificates; WebSocket with wsproto).

Four condure processes are started once per module, in parallel:

* ``main``: default limits; ``SSL_CERT_FILE`` points at a test CA, so certificate chains
  signed by it verify (the "system trust store" of that process);
* ``short``: ``--req-timeout 2 --stream-timeout 2`` for the timeout scenarios;
* ``deny``: ``--deny-out-internal``;
* ``spare``: stopped by the shutdown scenario.

Decided behaviour tested where condure and h11 differ: close-delimited origin bodies are
read to EOF, 1xx interim responses are skipped, HEAD responses follow the HTTP rules;
``stream``, ``max-size``, ``timeout`` and ``user-data`` are ignored, as condure does.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tnetstring
import trustme
import zmq
from wsproto import ConnectionType, WSConnection
from wsproto.extensions import PerMessageDeflate
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Pong,
                            Request, TextMessage)

from conftest import REPO_ROOT, condure_command, get_free_port, stop_process
from zhttp_handler import nested_lists

START_TIMEOUT = 20.0
DEFLATE_LIMIT = 100_000  # the `deflate` process's --compression-message-max
BUFFER_SIZE = 8192  # condure's --buffer-size default: the credit grants
WS_WINDOW = 200_000  # --client-ws-window default: the credits of a WebSocket's 101 (D22)

# --- helpers: tnetstring -------------------------------------------------------


def _b(v: Any) -> Any:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, list):
        return [_b(x) for x in v]
    if isinstance(v, tuple):
        return [_b(x) for x in v]
    if isinstance(v, dict):
        return {_b(k): _b(x) for k, x in v.items()}
    return v


def F(**kw: Any) -> dict:
    """A ZHTTP map from keyword arguments: follow_redirects= -> b"follow-redirects"."""
    return {k.replace("_", "-").encode(): _b(v) for k, v in kw.items()}


def tn(m: dict) -> bytes:
    return b"T" + tnetstring.dumps(m)


def untn(payload: bytes) -> dict:
    assert payload[:1] == b"T", payload
    m = tnetstring.loads(payload[1:])
    assert isinstance(m, dict), payload
    return m


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


def hdr(headers: list, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name.lower()]


# --- helpers: condure processes --------------------------------------------------


class ClientCondure:
    """`python -m condure` in client mode, REQ at ipc://D/req, stream base ipc://D/server."""

    def __init__(self, name: str, args: list[str], logdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="cd", dir="/tmp")
        self.req = f"ipc://{self.dir}/req"
        self.base = f"ipc://{self.dir}/server"
        self.log_path = logdir / f"{name}.log"
        self.log_offset = 0
        level = os.environ.get("CLIENT_MODE_LOG_LEVEL", "3")  # raise to debug a failure
        argv = ["--zserver-req", self.req, "--zserver-stream", self.base, "--log-level", level,
                *args]
        self.argv = argv
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(condure_command(*argv), cwd=REPO_ROOT,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})

    def wait_started(self) -> None:
        end = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"condure {self.name} exited with {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text(errors='replace')}")
            if "] started" in self.log_path.read_text(errors="replace"):
                return
            if time.monotonic() > end:
                raise AssertionError(f"condure {self.name} did not start:\n"
                                     f"{self.log_path.read_text(errors='replace')}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def mark_log(self) -> None:
        self.log_offset = self.log_path.stat().st_size

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Certs:
    trusted: trustme.CA    # in the main process's SSL_CERT_FILE
    untrusted: trustme.CA  # "self-signed": nobody trusts it


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs(trustme.CA(), trustme.CA())


@pytest.fixture(scope="module")
def _condures(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    logdir = tmp_path_factory.mktemp("client_mode")
    ca_file = logdir / "trusted-ca.pem"
    certs.trusted.cert_pem.write_to_path(str(ca_file))
    empty_dir = logdir / "no-certs"
    empty_dir.mkdir()
    tls_env = {"SSL_CERT_FILE": str(ca_file), "SSL_CERT_DIR": str(empty_dir)}
    procs = {
        "main": ClientCondure("main", [], logdir, tls_env),
        "short": ClientCondure("short", ["--req-timeout", "2", "--stream-timeout", "2",
                                         "--client-ws-window", "0"], logdir),
        "deny": ClientCondure("deny", ["--deny-out-internal"], logdir),
        "spare": ClientCondure("spare", ["--workers", "1"], logdir),
        "deflate": ClientCondure("deflate", ["--compression", "--compression-message-max",
                                             str(DEFLATE_LIMIT)], logdir),
        # one spare block, two a head may hold (connmgr.md 8, scenario 19's options)
        "blocks": ClientCondure("blocks", ["--stream-maxconn", "10", "--blocks-max", "21",
                                           "--connection-blocks-max", "4"], logdir),
    }
    try:
        for cd in procs.values():
            cd.wait_started()
        yield procs
    finally:
        for cd in procs.values():
            if cd.alive():
                cd.proc.send_signal(signal.SIGTERM)
        for cd in procs.values():
            cd.stop()


def _use(procs: dict, name: str) -> Iterator[ClientCondure]:
    cd = procs[name]
    assert cd.alive(), cd.log_text()
    cd.mark_log()
    yield cd
    if name != "spare":
        assert cd.alive(), f"condure {name} died during this test:\n{cd.log_text()}"


@pytest.fixture
def main(_condures: dict) -> Iterator[ClientCondure]:
    yield from _use(_condures, "main")


@pytest.fixture
def short(_condures: dict) -> Iterator[ClientCondure]:
    yield from _use(_condures, "short")


@pytest.fixture
def deny(_condures: dict) -> Iterator[ClientCondure]:
    yield from _use(_condures, "deny")


@pytest.fixture
def spare(_condures: dict) -> Iterator[ClientCondure]:
    yield from _use(_condures, "spare")


@pytest.fixture
def deflate(_condures: dict) -> Iterator[ClientCondure]:
    yield from _use(_condures, "deflate")


@pytest.fixture
def blocks(_condures: dict) -> Iterator[ClientCondure]:
    yield from _use(_condures, "blocks")


# --- helpers: the handler side ----------------------------------------------------


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def req_call(ctx: zmq.Context, cd: ClientCondure, msg: dict | bytes,
             timeout: float = 5.0) -> dict | None:
    """One REQ-socket exchange: the decoded reply, or None when none came in `timeout`."""
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cd.req)
    try:
        s.send(msg if isinstance(msg, bytes) else tn(msg))
        if not s.poll(int(timeout * 1000)):
            return None
        frames = s.recv_multipart()
        assert len(frames) == 1, frames
        return untn(frames[0])
    finally:
        s.close(0)


class StreamHandler:
    """PUSH to BASE-in (first messages), ROUTER to BASE-in-stream (later ones),
    SUB on BASE-out subscribed to "<from> "."""

    def __init__(self, ctx: zmq.Context, base: str, from_: bytes = b"h1",
                 condure_id: bytes = b"condure") -> None:
        self.from_ = from_
        self.condure_id = condure_id
        self.push = ctx.socket(zmq.PUSH)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, from_ + b" ")
        for s in (self.push, self.router, self.sub):
            s.setsockopt(zmq.LINGER, 0)
        self.push.connect(base + "-in")
        self.router.connect(base + "-in-stream")
        self.sub.connect(base + "-out")
        self.seqs: dict[bytes, int] = {}
        self.pending: list[dict] = []
        self.frames: list[bytes] = []  # every raw frame received
        time.sleep(0.4)  # PUB/SUB slow joiner

    # sending

    def start(self, fields: dict, rid: bytes | None = None, **over: Any) -> bytes:
        """PUSH a first message {from, id, seq: 0, **fields}; `over` replaces/removes
        (value None) the from/id/seq keys."""
        rid = rid or uuid.uuid4().hex.encode()
        m = {b"from": self.from_, b"id": rid, b"seq": 0}
        for k, v in over.items():
            if v is None:
                m.pop(k.encode(), None)
            else:
                m[k.encode()] = _b(v)
        m.update(fields)
        self.seqs[rid] = 1
        self.push.send(tn(m))
        return rid

    def send(self, rid: bytes, fields: dict | None = None, type: str | None = None,
             seq: int | None = None, retry: float = 3.0) -> None:
        """Send a later message on the ROUTER with the next seq (or `seq`)."""
        if seq is None:
            seq = self.seqs.get(rid, 1)
            self.seqs[rid] = seq + 1
        m = {b"from": self.from_, b"id": rid, b"seq": seq}
        if type:
            m[b"type"] = type.encode()
        m.update(fields or {})
        self.send_map(m, retry)

    def send_map(self, m: dict, retry: float = 3.0) -> None:
        frames = [self.condure_id, b"", tn(m)]
        end = time.monotonic() + retry
        while True:
            try:
                self.router.send_multipart(frames)
                return
            except zmq.ZMQError as e:
                if e.errno != zmq.EHOSTUNREACH or time.monotonic() > end:
                    raise
                time.sleep(0.02)

    # receiving

    @staticmethod
    def _for(m: dict, rid: bytes | None) -> bool:
        if rid is None:
            return True
        i = m.get(b"id")
        if isinstance(i, list):
            return any(isinstance(x, dict) and x.get(b"id") == rid for x in i)
        return i == rid

    def recv(self, rid: bytes | None = None, timeout: float = 3.0) -> dict | None:
        for i, m in enumerate(self.pending):
            if self._for(m, rid):
                return self.pending.pop(i)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not self.sub.poll(int(left * 1000)):
                return None
            frame = self.sub.recv()
            self.frames.append(frame)
            prefix = self.from_ + b" "
            assert frame.startswith(prefix), frame
            m = untn(frame[len(prefix):])
            if self._for(m, rid):
                return m
            if isinstance(m.get(b"id"), bytes) and m[b"id"] in self.seqs:
                self.pending.append(m)  # one of our other sessions

    def expect(self, rid: bytes, timeout: float = 3.0) -> dict:
        m = self.recv(rid, timeout)
        assert m is not None, f"no message for {rid!r} within {timeout} s"
        return m

    def quiet(self, rid: bytes | None, duration: float) -> list[dict]:
        """Every message for `rid` within `duration` (the test usually wants none)."""
        out = []
        end = time.monotonic() + duration
        while (left := end - time.monotonic()) > 0:
            m = self.recv(rid, left)
            if m is None:
                break
            out.append(m)
        return out

    def until_end(self, rid: bytes, credit_back: bool = False, timeout: float = 5.0) -> list[dict]:
        """Messages up to a data message without `more`, an error or a cancel."""
        out = []
        while True:
            m = self.expect(rid, timeout)
            out.append(m)
            t = m.get(b"type")
            if t in (b"error", b"cancel"):
                return out
            if t is None and b"code" not in m and not m.get(b"more"):
                return out
            if t is None and credit_back and m.get(b"body"):
                self.send(rid, F(credits=len(m[b"body"])), type="credit")

    def close(self) -> None:
        for rid in self.seqs:  # best effort: end what the test left open
            try:
                self.send(rid, type="cancel", retry=0)
            except zmq.ZMQError:
                pass
        for s in (self.push, self.router, self.sub):
            s.close(0)


@pytest.fixture
def handler(zctx: zmq.Context) -> Iterator[Callable[..., StreamHandler]]:
    made: list[StreamHandler] = []

    def make(cd: ClientCondure, from_: bytes = b"h1") -> StreamHandler:
        h = StreamHandler(zctx, cd.base, from_)
        made.append(h)
        return h

    try:
        yield make
    finally:
        for h in made:
            h.close()


def body_of(msgs: list[dict]) -> bytes:
    return b"".join(m.get(b"body", b"") for m in msgs
                    if m.get(b"type") is None and b"code" not in m)


def check_stream_fields(msgs: list[dict], rid: bytes, first_seq: int = 0) -> None:
    """Every stream reply: from = instance id, our id, consecutive seq, ext.multi."""
    for i, m in enumerate(msgs):
        assert m[b"from"] == b"condure", m
        assert m[b"id"] == rid, m
        assert m[b"seq"] == first_seq + i, msgs
        assert m[b"ext"] == {b"multi": True}, m


# --- helpers: origins ----------------------------------------------------------------


@dataclass
class HttpReq:
    conn: int
    head: bytes
    body: bytes  # raw: chunk framing included for chunked requests

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def method(self) -> bytes:
        return self.request_line.split(b" ")[0]

    @property
    def target(self) -> bytes:
        return self.request_line.split(b" ")[1]

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return parse_headers(self.head)


def parse_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in head.split(b"\r\n")[1:]:
        if line:
            n, _, v = line.partition(b":")
            out.append((n, v.strip()))
    return out


class Conn:
    """One origin-side connection; `raw` records every byte received."""

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self.buf = bytearray()
        self.raw = bytearray()
        self.eof = threading.Event()
        self.peer: Any = None
        self.closed = False

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise
        except (OSError, ssl.SSLError):
            data = b""
        if not data:
            self.eof.set()
            return False
        self.buf += data
        self.raw += data
        return True

    def recv_some(self, timeout: float = 10.0) -> bytes:
        if not self.buf:
            try:
                if not self._fill(timeout):
                    return b""
            except socket.timeout:
                return b""
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_until(self, marker: bytes, timeout: float = 10.0) -> bytes | None:
        while marker not in self.buf:
            if not self._fill(timeout):
                return None
        i = self.buf.index(marker) + len(marker)
        out = bytes(self.buf[:i])
        del self.buf[:i]
        return out

    def read_exact(self, n: int, timeout: float = 10.0) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill(timeout):
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_request(self, timeout: float = 10.0) -> tuple[bytes, bytes] | None:
        head = self.read_until(b"\r\n\r\n", timeout)
        if head is None:
            return None
        headers = parse_headers(head)
        if any(v.lower() == b"chunked" for v in hdr(headers, b"transfer-encoding")):
            raw = bytearray()
            while True:
                line = self.read_until(b"\r\n", timeout)
                if line is None:
                    return None
                raw += line
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    end = self.read_until(b"\r\n", timeout)  # no trailers from condure
                    if end is None:
                        return None
                    raw += end
                    return head, bytes(raw)
                data = self.read_exact(size + 2, timeout)
                if data is None:
                    return None
                raw += data
        n = int((hdr(headers, b"content-length") or [b"0"])[0])
        body = self.read_exact(n, timeout) if n else b""
        if body is None:
            return None
        return head, body

    def wait_eof(self, timeout: float = 10.0) -> bool:
        """Read (and record) until the peer closes; False on timeout."""
        end = time.monotonic() + timeout
        while not self.eof.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(min(left, 0.5))
            except socket.timeout:
                continue
        return True

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Origin:
    """A TCP (optionally TLS) origin on 127.0.0.1; `script(origin, conn)` runs per connection
    in its own thread."""

    def __init__(self, script: Callable[[Origin, Conn], None],
                 tls: ssl.SSLContext | None = None, tls_delay: float = 0.0,
                 ragged_eofs: bool = True) -> None:
        """`ragged_eofs=False`: a TLS connection closed without close_notify
        makes the script's read raise SSLEOFError instead of returning b""."""
        self.script = script
        self.tls = tls
        self.tls_delay = tls_delay
        self.ragged_eofs = ragged_eofs
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.conns: list[Conn] = []
        self.requests: list[HttpReq] = []
        self.sni: list[str | None] = []
        self.tls_errors: list[Exception] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self._closed = False
        if tls is not None:
            tls.sni_callback = lambda sslobj, name, ctx: self.sni.append(name)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def __enter__(self) -> Origin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                index = self.accepted
                self.accepted += 1
            threading.Thread(target=self._run, args=(sock, index), daemon=True).start()

    def _run(self, sock: socket.socket, index: int) -> None:
        if self.tls is not None:
            time.sleep(self.tls_delay)
            try:
                sock.settimeout(5)
                sock = self.tls.wrap_socket(sock, server_side=True,
                                            suppress_ragged_eofs=self.ragged_eofs)
            except (ssl.SSLError, OSError) as e:
                self.tls_errors.append(e)
                sock.close()
                return
        conn = Conn(sock, index)
        with self.lock:
            self.conns.append(conn)
        try:
            self.script(self, conn)
        except BaseException as e:  # recorded for the test, never raised in a thread
            self.errors.append(e)
        finally:
            conn.close()

    def url(self, path: str = "/", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def conn(self, index: int = 0, timeout: float = 5.0) -> Conn:
        wait_until(lambda: any(c.index == index for c in self.conns), timeout,
                   f"origin connection {index}")
        return next(c for c in self.conns if c.index == index)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for c in list(self.conns):
            c.close()


def response(code: int = 200, reason: str = "OK", headers: list | None = None,
             body: bytes = b"", length: bool = True) -> bytes:
    out = [f"HTTP/1.1 {code} {reason}".encode()]
    hs = [(_b(n), _b(v)) for n, v in (headers or [])]
    if length and not hdr(hs, b"content-length") and not hdr(hs, b"transfer-encoding"):
        hs.append((b"Content-Length", b"%d" % len(body)))
    out += [n + b": " + v for n, v in hs]
    return b"\r\n".join(out) + b"\r\n\r\n" + body


HELLO = response(headers=[("Content-Type", "text/plain")], body=b"hello\n")


def serve(route: Callable[[HttpReq], Any]) -> Callable[[Origin, Conn], None]:
    """HTTP/1.1 keep-alive loop. route(req) returns response bytes, (bytes, close),
    or None to go silent until the peer closes."""
    def script(origin: Origin, conn: Conn) -> None:
        while True:
            r = conn.read_request()
            if r is None:
                return
            req = HttpReq(conn.index, *r)
            origin.requests.append(req)
            out = route(req)
            if out is None:
                conn.wait_eof(30)
                return
            data, close = (out, False) if isinstance(out, bytes) else out
            conn.send(data)
            if close:
                return
    return script


def fixed(data: bytes, close: bool = False) -> Callable[[Origin, Conn], None]:
    return serve(lambda req: (data, close))


def silent(origin: Origin, conn: Conn) -> None:
    """Read the request, never answer; record until EOF."""
    r = conn.read_request()
    if r is not None:
        origin.requests.append(HttpReq(conn.index, *r))
    conn.wait_eof(30)


def tls_server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


# --- helpers: WebSocket origins ----------------------------------------------------------


class WSPeer:
    """The origin side of one WebSocket connection (wsproto, no automatic replies)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.ws = WSConnection(ConnectionType.SERVER)
        self.head = b""
        self.request: Request | None = None
        self.log: list[Any] = []  # every event received from condure
        self._queue: list[Any] = []
        conn.peer = self

    def read_handshake(self) -> Request:
        head = self.conn.read_until(b"\r\n\r\n")
        assert head is not None
        self.head = head
        self.ws.receive_data(head)
        ev = next(self.ws.events())
        assert isinstance(ev, Request), ev
        self.request = ev
        return ev

    def accept(self, **kw: Any) -> None:
        self.conn.send(self.ws.send(AcceptConnection(**kw)))

    def send(self, ev: Any) -> None:
        self.conn.send(self.ws.send(ev))

    def next_event(self, timeout: float = 10.0) -> Any:
        """The next event from condure, or None on EOF/timeout."""
        end = time.monotonic() + timeout
        while not self._queue:
            left = end - time.monotonic()
            if left <= 0:
                return None
            data = self.conn.recv_some(left)
            if not data:
                if self.conn.eof.is_set():
                    return None
                continue
            self.ws.receive_data(data)
            self._queue.extend(self.ws.events())
        ev = self._queue.pop(0)
        self.log.append(ev)
        return ev


def ws_script(body: Callable[[WSPeer], None]) -> Callable[[Origin, Conn], None]:
    def script(origin: Origin, conn: Conn) -> None:
        peer = WSPeer(conn)
        peer.read_handshake()
        body(peer)
    return script


def ws_echo(peer: WSPeer) -> None:
    """Accept; echo whole messages, answer pings with pongs, answer a close."""
    peer.accept(extra_headers=[(b"X-Origin", b"yes")])
    parts: list[Any] = []
    while True:
        ev = peer.next_event(30)
        if ev is None:
            return
        if isinstance(ev, Message):
            parts.append(ev.data)
            if ev.message_finished:
                data = parts[0][:0].join(parts)
                parts = []
                peer.send(TextMessage(data=data) if isinstance(ev, TextMessage)
                          else BytesMessage(data=data))
        elif isinstance(ev, Ping):
            peer.send(ev.response())
        elif isinstance(ev, CloseConnection):
            peer.send(ev.response())
            return


def ws_open(h: StreamHandler, origin: Origin, credits: int = 1000,
            headers: list | None = None, path: str = "/echo") -> tuple[bytes, dict]:
    """Start a WS session; returns (rid, the 101 message) after checking the ack."""
    fields = F(uri=origin.url(path, "ws"), credits=credits)
    if headers:
        fields[b"headers"] = _b(headers)
    rid = h.start(fields)
    ack = h.expect(rid)
    assert ack.get(b"type") == b"keep-alive" and ack[b"seq"] == 0, ack
    resp = h.expect(rid)
    assert resp.get(b"code") == 101, resp
    assert resp[b"seq"] == 1
    return rid, resp


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())



# ====================================================================================
# REQ interface
# ====================================================================================


def test_req_get_exact_head_and_reply_fields(main: ClientCondure, zctx: zmq.Context) -> None:
    """#1: the origin sees exactly the minimal head; one reply frame with code, reason,
    headers as sent, body, and no id/seq/from."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/hello")))
        assert reply == {b"code": 200, b"reason": b"OK",
                         b"headers": [[b"Content-Type", b"text/plain"], [b"Content-Length", b"6"]],
                         b"body": b"hello\n"}
        assert bytes(o.conn(0).raw) == b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % o.port


def test_req_dealer_envelope_and_id(main: ClientCondure, zctx: zmq.Context) -> None:
    """#2: DEALER ["", msg] with id r1 -> ["", payload], payload has id and no seq.
    The bytes match the serializer example of client.md 3.1."""
    with Origin(fixed(HELLO)) as o:
        s = zctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(main.req)
        s.send_multipart([b"", tn(F(id="r1", method="GET", uri=o.url("/hello")))])
        assert s.poll(5000), "no reply"
        frames = s.recv_multipart()
        s.close(0)
    assert frames[0] == b"" and len(frames) == 2, frames
    assert frames[1] == (b"T127:2:id,2:r1,4:code,3:200#6:reason,2:OK,7:headers,60:30:12:"
                         b"Content-Type,10:text/plain,]22:14:Content-Length,1:6,]]4:body,"
                         b"6:hello\n,}")


def test_req_router_multi_hop_envelope(main: ClientCondure, zctx: zmq.Context) -> None:
    """The reply copies every routing frame and the delimiter (client.md 1.4, 16.20)."""
    with Origin(fixed(HELLO)) as o:
        s = zctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(main.req)
        s.send_multipart([b"hop1", b"hop2", b"", tn(F(method="GET", uri=o.url("/")))])
        assert s.poll(5000), "no reply"
        frames = s.recv_multipart()
        s.close(0)
    assert frames[:3] == [b"hop1", b"hop2", b""], frames
    assert untn(frames[3])[b"code"] == 200


def test_req_post_head_rules(main: ClientCondure, zctx: zmq.Context) -> None:
    """#3: Host first from the URI; handler Host/Connection dropped; duplicates kept in
    order; Content-Length last."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(
            method="POST", uri=o.url("/submit?x=1"), body=b"hello body",
            headers=[["Host", "other"], ["X-Multi", "a"], ["Connection", "close"],
                     ["Content-Type", "text/plain"], ["X-Multi", "b"]]))
        assert reply is not None and reply[b"code"] == 200, reply
        assert bytes(o.conn(0).raw) == (
            b"POST /submit?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Multi: a\r\n"
            b"Content-Type: text/plain\r\nX-Multi: b\r\nContent-Length: 10\r\n\r\nhello body"
            % o.port)


def test_req_delete_empty_body_gets_content_length_zero(main: ClientCondure,
                                                        zctx: zmq.Context) -> None:
    """#4: only GET/HEAD/OPTIONS leave out Content-Length: 0."""
    with Origin(fixed(response(code=204, reason="No Content"))) as o:
        reply = req_call(zctx, main, F(method="DELETE", uri=o.url("/thing")))
        assert reply == {b"code": 204, b"reason": b"No Content",
                         b"headers": [[b"Content-Length", b"0"]]}
        assert bytes(o.conn(0).raw) == (b"DELETE /thing HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                        b"Content-Length: 0\r\n\r\n" % o.port)


def test_req_uri_fragment_is_sent_in_target(main: ClientCondure, zctx: zmq.Context) -> None:
    """client.md 6.1: the request target is the URL from the path on, fragment included."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/a/b?c=d#frag")))
        assert reply is not None and reply[b"code"] == 200, reply
        assert o.requests[0].request_line == b"GET /a/b?c=d#frag HTTP/1.1"


def test_req_host_header_from_uri_name(main: ClientCondure, zctx: zmq.Context) -> None:
    """The Host header is the URI's host (a name here) with the non-default port."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/", host="localhost")))
        assert reply is not None and reply[b"code"] == 200, reply
        assert o.requests[0].headers[0] == (b"Host", b"localhost:%d" % o.port)


def test_req_handler_content_length_is_replaced(main: ClientCondure, zctx: zmq.Context) -> None:
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="POST", uri=o.url("/"), body=b"hello body",
                                       headers=[["Content-Length", "999"]]))
        assert reply is not None and reply.get(b"code") == 200, (reply, main.log_text())
        assert o.requests[0].headers == [(b"Host", b"127.0.0.1:%d" % o.port),
                                         (b"Content-Length", b"10")]
        assert o.requests[0].body == b"hello body"


def test_req_more_is_ignored(main: ClientCondure, zctx: zmq.Context) -> None:
    """`more` on the REQ interface: the body is taken as complete (Content-Length)."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="PUT", uri=o.url("/"), body=b"abc", more=True))
        assert reply is not None and reply[b"code"] == 200, reply
        assert hdr(o.requests[0].headers, b"content-length") == [b"3"]
        assert not hdr(o.requests[0].headers, b"transfer-encoding")
        assert o.requests[0].body == b"abc"


def test_req_refused_port_is_remote_connection_failed(main: ClientCondure,
                                                      zctx: zmq.Context) -> None:
    """#5"""
    reply = req_call(zctx, main, F(id="r5", method="GET",
                                   uri=f"http://127.0.0.1:{get_free_port()}/"))
    assert reply == {b"id": b"r5", b"type": b"error", b"condition": b"remote-connection-failed"}


def test_req_silent_origin_times_out(short: ClientCondure, zctx: zmq.Context) -> None:
    """#6: --req-timeout 2 and an origin that never answers -> connection-timeout after ~2 s."""
    with Origin(silent) as o:
        t0 = time.monotonic()
        reply = req_call(zctx, short, F(method="GET", uri=o.url("/slow")), timeout=6)
        elapsed = time.monotonic() - t0
        assert reply == {b"type": b"error", b"condition": b"connection-timeout"}
        assert 1.5 < elapsed < 4.0, elapsed
        assert o.conn(0).eof.wait(3), "origin connection not closed after the timeout"


@pytest.mark.parametrize("fields", [
    F(method="GET", uri="ftp://127.0.0.1/file"),
    F(uri="http://127.0.0.1:1/"),  # no method
    F(method="GET", uri="ws://127.0.0.1:1/"),
    F(method="GET", uri="wss://127.0.0.1:1/"),
    F(method="GET", uri="not a uri"),
    F(method="GET", uri="http:///nohost"),
    F(method="GET"),  # no uri
], ids=["ftp", "no-method", "ws", "wss", "garbage-uri", "no-host", "no-uri"])
def test_req_bad_request(main: ClientCondure, zctx: zmq.Context, fields: dict) -> None:
    """#7"""
    reply = req_call(zctx, main, {b"id": b"bad", **fields})
    assert reply == {b"id": b"bad", b"type": b"error", b"condition": b"bad-request"}


def test_req_too_many_headers_is_bad_request(main: ClientCondure, zctx: zmq.Context) -> None:
    """64 handler headers + Host > 64 header lines -> bad-request (client.md 6.1)."""
    with Origin(fixed(HELLO)) as o:
        headers = [[f"X-H{i}", "v"] for i in range(64)]
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/"), headers=headers))
        assert reply == {b"type": b"error", b"condition": b"bad-request"}
        headers = headers[:63]
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/"), headers=headers))
        assert reply is not None and reply.get(b"code") == 200, reply


# headers server mode refuses to write (D9, D17) are not sent to an origin either
BAD_HEADERS = [[b"X Bad", b"v"], [b"", b"v"], [b"X:Y", b"v"], [b"X-A", b"a\r\nEvil: 1"]]
BAD_HEADER_IDS = ["space", "empty", "colon", "crlf-value"]


@pytest.mark.parametrize("header", BAD_HEADERS, ids=BAD_HEADER_IDS)
def test_req_bad_header_is_bad_request_d17(main: ClientCondure, zctx: zmq.Context,
                                           header: list) -> None:
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/"), headers=[header]))
        assert reply == {b"type": b"error", b"condition": b"bad-request"}
        assert o.accepted == 0  # checked before connecting


@pytest.mark.parametrize("header", BAD_HEADERS, ids=BAD_HEADER_IDS)
@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_stream_bad_header_is_bad_request_d17(main: ClientCondure, handler: Callable,
                                              scheme: str, header: list) -> None:
    h = handler(main)
    with Origin(fixed(HELLO)) as o:
        fields = F(uri=o.url("/", scheme), credits=100, headers=[header])
        if scheme == "http":
            fields[b"method"] = b"GET"
        rid = h.start(fields)
        err = h.expect(rid)  # no ack first: the request is refused as a whole
        assert (err.get(b"type"), err.get(b"condition"), err[b"seq"]) == (
            b"error", b"bad-request", 0), err
        assert h.quiet(rid, 0.3) == []
        assert o.accepted == 0
    log = main.log_text()
    assert "Traceback" not in log and "[ERR]" not in log, log


def test_ws_header_value_h11_refuses_is_bad_request(main: ClientCondure,
                                                   handler: Callable) -> None:
    """A value h11 will not write (leading space): refused under wsproto's handshake,
    after the connection is made; a bad-request like on HTTP, not an exception."""
    h = handler(main)
    with Origin(fixed(HELLO)) as o:
        rid = h.start(F(uri=o.url("/", "ws"), credits=100, headers=[["X-A", " v"]]))
        msgs = [h.expect(rid), h.expect(rid)]
        assert msgs[0][b"type"] == b"keep-alive", msgs
        assert (msgs[1][b"type"], msgs[1][b"condition"]) == (b"error", b"bad-request"), msgs
    log = main.log_text()
    assert "Traceback" not in log and "[ERR]" not in log, log


def test_req_non_data_message_is_bad_request(main: ClientCondure, zctx: zmq.Context) -> None:
    """#8"""
    reply = req_call(zctx, main, F(id="ka", type="keep-alive"))
    assert reply == {b"id": b"ka", b"type": b"error", b"condition": b"bad-request"}


@pytest.mark.parametrize("payload", [
    b'J{"method": "GET", "uri": "http://127.0.0.1:1/"}',
    b"garbage",
    b"T12:not a tnetstring",
    tn(F(id=[{"id": "a"}, {"id": "b"}], method="GET", uri="http://127.0.0.1:1/")),
    tn(F(id="x" * 65, method="GET", uri="http://127.0.0.1:1/")),
    tn(F(**{"from": "f" * 65}, method="GET", uri="http://127.0.0.1:1/")),
    pytest.param(tn(F(method=5, uri="http://127.0.0.1:1/")), id="wrong-type"),
    pytest.param(tn(F(method="GET", uri="http://127.0.0.1:1/", connect_port="80")),
                 id="wrong-type-connect-port"),
], ids=["json", "garbage", "bad-tnetstring", "two-ids", "long-id", "long-from", "wrong-type",
        "wrong-type-connect-port"])
def test_req_unparsable_gets_no_reply(main: ClientCondure, zctx: zmq.Context,
                                      payload: bytes) -> None:
    """#9 and client.md 4.3: dropped without a reply (the REQ socket would block)."""
    assert req_call(zctx, main, payload, timeout=0.6) is None


@pytest.mark.deadline(90)
def test_deeply_nested_packets_are_one_warning_a_second(main: ClientCondure, zctx: zmq.Context,
                                                        handler: Callable) -> None:
    """Nesting deeper than tnetstring decodes (RecursionError) on each of the three
    sockets condure reads in client mode: a rate-limited parse warning, shared by
    them, as in server mode; no traceback; both interfaces still serve."""
    garbage = b"T" + nested_lists(900)
    h = handler(main)
    dealer = zctx.socket(zmq.DEALER)  # REQ-interface requests that expect no reply
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(main.req)
    sends = [h.push.send, lambda g: h.router.send_multipart([h.condure_id, b"", g]),
             lambda g: dealer.send_multipart([b"", g])]
    for i in range(2000):
        sends[i % 3](garbage)
        if i % 100 == 99:
            time.sleep(0.02)  # the PULL's high-water mark is 128
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/")))
        assert reply is not None and reply.get(b"body") == b"hello\n", reply
        rid = h.start(F(method="GET", uri=o.url("/"), credits=1000))
        assert body_of(h.until_end(rid)) == b"hello\n"
    dealer.close(0)
    log = main.log_text()
    assert "Traceback" not in log and "[ERR]" not in log, log[:3000]
    warnings = [line for line in log.splitlines() if "zhttp parse error" in line]
    assert 1 <= len(warnings) <= 8, warnings
    assert all("[WARN]" in w and "nesting" in w for w in warnings), warnings
    assert len(log) < 6000, log[:6000]


def test_req_response_over_body_buffer_is_undefined_condition(main: ClientCondure,
                                                              zctx: zmq.Context) -> None:
    """#10: 150000-byte body, --body-buffer-size 100000, origin closes after sending."""
    with Origin(fixed(response(body=b"x" * 150000), close=True)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/big")))
        assert reply == {b"type": b"error", b"condition": b"undefined-condition"}


def test_req_response_of_exactly_body_buffer_size(main: ClientCondure, zctx: zmq.Context) -> None:
    with Origin(fixed(response(body=b"y" * 100000))) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/")))
        assert reply is not None and reply[b"body"] == b"y" * 100000


def test_req_request_body_over_body_buffer(main: ClientCondure, zctx: zmq.Context) -> None:
    """A request body larger than --body-buffer-size -> undefined-condition, origin
    never sees it."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="POST", uri=o.url("/"), body=b"z" * 100001))
        assert reply == {b"type": b"error", b"condition": b"undefined-condition"}
        assert not o.requests


def test_req_max_size_is_ignored(main: ClientCondure, zctx: zmq.Context) -> None:
    """#11"""
    with Origin(fixed(response(body=b"b" * 100))) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/"), max_size=10))
        assert reply is not None and reply[b"body"] == b"b" * 100


def test_req_timeout_field_is_ignored(main: ClientCondure, zctx: zmq.Context) -> None:
    """`timeout` (ms) is zurl's; condure only has --req-timeout."""
    def slow(req: HttpReq) -> bytes:
        time.sleep(0.5)
        return HELLO
    with Origin(serve(slow)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/"), timeout=100))
        assert reply is not None and reply[b"code"] == 200, reply


def test_req_user_data_and_from_not_echoed(main: ClientCondure, zctx: zmq.Context) -> None:
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(**{"from": "me"}, id="u1", method="GET", uri=o.url("/"),
                                       user_data={"k": "v"}, ext={"multi": True}))
        assert reply is not None
        assert set(reply) == {b"id", b"code", b"reason", b"headers", b"body"}, reply


def test_req_chunked_response_dechunked_trailers_dropped(main: ClientCondure,
                                                         zctx: zmq.Context) -> None:
    """#12"""
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n0000\r\n6\r\n111111\r\n0\r\nX-Trailer: yes\r\n\r\n")
    with Origin(fixed(chunked)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/")))
        assert reply == {b"code": 200, b"reason": b"OK",
                         b"headers": [[b"Transfer-Encoding", b"chunked"]], b"body": b"0000111111"}


def test_req_response_headers_passed_through(main: ClientCondure, zctx: zmq.Context) -> None:
    """Response headers unmodified and in order, duplicates and case kept (client.md 3.1)."""
    data = (b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nX-Mixed-CASE: v\r\nSet-Cookie: b=2\r\n"
            b"Connection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
    with Origin(fixed(data)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/")))
        assert reply is not None
        assert reply[b"headers"] == [[b"set-cookie", b"a=1"], [b"X-Mixed-CASE", b"v"],
                                     [b"Set-Cookie", b"b=2"], [b"Connection", b"keep-alive"],
                                     [b"Content-Length", b"2"]]


def test_req_close_delimited_body_read_to_eof(main: ClientCondure, zctx: zmq.Context) -> None:
    """#13 (decided: h11/zurl semantics, not condure's empty body)."""
    with Origin(fixed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold style body\n",
                      close=True)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/old")))
        assert reply is not None
        assert (reply[b"code"], reply[b"body"]) == (200, b"old style body\n"), reply


def test_req_interim_1xx_skipped(main: ClientCondure, zctx: zmq.Context) -> None:
    """Decided: 1xx interim responses are skipped (h11), the final response is delivered."""
    with Origin(fixed(b"HTTP/1.1 100 Continue\r\n\r\n"
                      b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + HELLO)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/")))
        assert reply is not None
        assert (reply[b"code"], reply[b"body"]) == (200, b"hello\n"), reply


def test_req_head_response_has_no_body(main: ClientCondure, zctx: zmq.Context) -> None:
    """Decided: a HEAD response's Content-Length announces no body (h11 rules): no hang."""
    with Origin(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")) as o:
        t0 = time.monotonic()
        reply = req_call(zctx, main, F(method="HEAD", uri=o.url("/")))
        assert time.monotonic() - t0 < 2
        assert reply == {b"code": 200, b"reason": b"OK", b"headers": [[b"Content-Length", b"5"]]}
        assert bytes(o.conn(0).raw) == b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % o.port


def _redirecting(req: HttpReq) -> bytes:
    if req.target.startswith(b"/start"):
        code = int(req.target.split(b"=")[1]) if b"=" in req.target else 302
        return response(code=code, reason="Redirect", headers=[("Location", "/echo")])
    return response(body=b"echo " + req.method + b" " + req.body)


def test_req_follow_redirect_post_302_becomes_get(main: ClientCondure, zctx: zmq.Context) -> None:
    """#14"""
    with Origin(serve(_redirecting)) as o:
        reply = req_call(zctx, main, F(method="POST", uri=o.url("/start"), body=b"data",
                                       headers=[["X-Keep", "1"]], follow_redirects=True))
        assert reply is not None and reply[b"code"] == 200, reply
        assert reply[b"body"] == b"echo GET "
        first, second = o.requests
        assert first.method == b"POST" and first.body == b"data"
        assert second.request_line == b"GET /echo HTTP/1.1"
        assert second.body == b""
        assert not hdr(second.headers, b"content-length")
        assert hdr(second.headers, b"x-keep") == [b"1"]
        assert second.headers[0] == (b"Host", b"127.0.0.1:%d" % o.port)


def test_req_follow_redirect_307_keeps_method_and_body(main: ClientCondure,
                                                       zctx: zmq.Context) -> None:
    with Origin(serve(_redirecting)) as o:
        reply = req_call(zctx, main, F(method="POST", uri=o.url("/start?c=307"), body=b"data",
                                       follow_redirects=True))
        assert reply is not None and reply[b"body"] == b"echo POST data", reply
        assert o.requests[1].method == b"POST"
        assert hdr(o.requests[1].headers, b"content-length") == [b"4"]


def test_req_redirect_not_followed_without_flag(main: ClientCondure, zctx: zmq.Context) -> None:
    with Origin(serve(_redirecting)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/start")))
        assert reply is not None and reply[b"code"] == 302, reply
        assert hdr(reply[b"headers"], b"location") == [b"/echo"]
        assert len(o.requests) == 1


def _loop(req: HttpReq) -> bytes:
    n = int(req.target.split(b"=")[1])
    return response(code=302, reason="Found", headers=[("Location", f"/loop?n={n + 1}")])


def test_req_redirect_loop_too_many_redirects(main: ClientCondure, zctx: zmq.Context) -> None:
    """#15: 9 requests reach the origin (8 redirects followed), then too-many-redirects."""
    with Origin(serve(_loop)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/loop?n=0"),
                                       follow_redirects=True))
        assert reply == {b"type": b"error", b"condition": b"too-many-redirects"}
        assert [r.target for r in o.requests] == [b"/loop?n=%d" % i for i in range(9)]


def test_req_deny_out_internal(deny: ClientCondure, zctx: zmq.Context) -> None:
    """#16: 127.0.0.1 is denied; ignore-policies lets it through."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, deny, F(method="GET", uri=o.url("/")))
        assert reply == {b"type": b"error", b"condition": b"policy-violation"}
        assert o.accepted == 0
        reply = req_call(zctx, deny, F(method="GET", uri=o.url("/"), ignore_policies=True))
        assert reply is not None and reply[b"code"] == 200, reply


def test_req_deny_out_internal_checks_resolved_names(deny: ClientCondure,
                                                     zctx: zmq.Context) -> None:
    """#16: the deny list is checked on resolved addresses: localhost is denied too."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, deny, F(method="GET", uri=o.url("/", host="localhost")))
        assert reply == {b"type": b"error", b"condition": b"policy-violation"}
        assert o.accepted == 0


def test_req_deny_out_internal_checks_connect_host(deny: ClientCondure,
                                                   zctx: zmq.Context) -> None:
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, deny, F(method="GET", uri="http://example.com/",
                                       connect_host="127.0.0.1", connect_port=o.port))
        assert reply == {b"type": b"error", b"condition": b"policy-violation"}
        assert o.accepted == 0


def test_req_dns_failure_is_undefined_condition(short: ClientCondure, zctx: zmq.Context) -> None:
    """client.md 9.1: DNS failure -> undefined-condition (zurl: remote-connection-failed)."""
    reply = req_call(zctx, short, F(method="GET", uri="http://no-such-host.invalid/"), timeout=5)
    assert reply == {b"type": b"error", b"condition": b"undefined-condition"}


def test_req_https_self_signed_is_tls_error(main: ClientCondure, zctx: zmq.Context,
                                            certs: Certs) -> None:
    """#17: a certificate nobody trusts -> tls-error; ignore-tls-errors -> 200, SNI localhost."""
    with Origin(fixed(HELLO), tls=tls_server_context(certs.untrusted, "localhost")) as o:
        url = o.url("/", "https", "localhost")
        reply = req_call(zctx, main, F(method="GET", uri=url))
        assert reply == {b"type": b"error", b"condition": b"tls-error"}
        assert not o.requests
        reply = req_call(zctx, main, F(method="GET", uri=url, ignore_tls_errors=True))
        assert reply is not None and reply[b"code"] == 200, reply
        assert o.sni[-1] == "localhost"
        assert o.requests[0].headers[0] == (b"Host", b"localhost:%d" % o.port)


def test_req_https_trusted_chain_verifies(main: ClientCondure, zctx: zmq.Context,
                                          certs: Certs) -> None:
    """Full verification by default: a chain to a trusted CA and the right name pass."""
    with Origin(fixed(HELLO), tls=tls_server_context(certs.trusted, "localhost")) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/", "https", "localhost")))
        assert reply is not None and reply[b"code"] == 200, (reply, main.log_text())
        assert o.sni == ["localhost"]


def test_req_https_name_mismatch_is_tls_error(main: ClientCondure, zctx: zmq.Context,
                                              certs: Certs) -> None:
    """Hostname verification: a trusted certificate for another name fails."""
    with Origin(fixed(HELLO), tls=tls_server_context(certs.trusted, "localhost")) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/", "https", "127.0.0.1")))
        assert reply == {b"type": b"error", b"condition": b"tls-error"}


def test_req_trust_connect_host(main: ClientCondure, zctx: zmq.Context, certs: Certs) -> None:
    """#18: TLS name = connect-host (an IP: no SNI), Host header from the URI."""
    with Origin(fixed(HELLO), tls=tls_server_context(certs.trusted, "127.0.0.1")) as o:
        base = F(method="GET", uri="https://example.com/path", connect_host="127.0.0.1",
                 connect_port=o.port)
        reply = req_call(zctx, main, {**base, **F(trust_connect_host=True)})
        assert reply is not None and reply[b"code"] == 200, (reply, main.log_text())
        assert o.sni == [None]
        assert o.requests[0].head == b"GET /path HTTP/1.1\r\nHost: example.com\r\n\r\n"
        # without trust-connect-host the name checked is example.com: mismatch
        reply = req_call(zctx, main, base)
        assert reply == {b"type": b"error", b"condition": b"tls-error"}


def test_req_connect_host_without_port_fails(main: ClientCondure, zctx: zmq.Context) -> None:
    """#19: connect-port missing -> port 0 -> a connect failure, not the URI's port."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/"), connect_host="127.0.0.1"))
        assert reply is not None and reply.get(b"type") == b"error", reply
        assert reply[b"condition"] in (b"remote-connection-failed", b"undefined-condition")
        assert o.accepted == 0


def test_req_connect_host_and_port(main: ClientCondure, zctx: zmq.Context) -> None:
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, F(method="GET", uri="http://example.com/x",
                                       connect_host="127.0.0.1", connect_port=o.port))
        assert reply is not None and reply[b"code"] == 200, reply
        assert o.requests[0].head == b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n"


def test_req_https_to_plain_port_is_tls_error(main: ClientCondure, zctx: zmq.Context) -> None:
    def plain(origin: Origin, conn: Conn) -> None:
        conn.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    with Origin(plain) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/", "https")))
        assert reply == {b"type": b"error", b"condition": b"tls-error"}


# --- client certificates (pushpin-connmgr's client-cert/client-key, connmgr.md 2) -------


def mtls_context(certs: Certs) -> ssl.SSLContext:
    """An origin for localhost that wants a client certificate from the trusted CA."""
    ctx = tls_server_context(certs.trusted, "localhost")
    ctx.verify_mode = ssl.CERT_REQUIRED
    certs.trusted.configure_trust(ctx)
    return ctx


def identity(ca: trustme.CA, name: str) -> dict:
    """client-cert (the chain, leaf first) and client-key fields for a new client certificate."""
    leaf = ca.issue_cert(name)
    return F(client_cert=b"".join(p.bytes() for p in leaf.cert_chain_pems),
             client_key=leaf.private_key_pem.bytes())


def peer_names(origin: Origin, conn: Conn) -> None:
    """Answer every request with the client certificate's DNS name (or "none")."""
    cert = conn.sock.getpeercert()
    names = [v for k, v in (cert or {}).get("subjectAltName", ()) if k == "DNS"]
    body = (names[0] if names else "none").encode()
    serve(lambda req: response(body=body))(origin, conn)


def test_req_client_certificate_is_shown_to_the_origin(main: ClientCondure, zctx: zmq.Context,
                                                       certs: Certs) -> None:
    """connmgr.md 2.1: the PEM text of client-cert/client-key is the TLS client identity;
    without one, the origin's refusal is a tls-error (with TLS 1.3 it comes after the
    handshake, on the first read)."""
    with Origin(peer_names, tls=mtls_context(certs)) as o:
        url = o.url("/", "https", "localhost")
        reply = req_call(zctx, main, {**F(method="GET", uri=url),
                                      **identity(certs.trusted, "c1.test")})
        assert reply is not None and reply[b"code"] == 200, (reply, main.log_text())
        assert reply[b"body"] == b"c1.test"
        reply = req_call(zctx, main, F(method="GET", uri=url))
        assert reply == {b"type": b"error", b"condition": b"tls-error"}


@pytest.mark.parametrize("fields", [
    {"client_cert": b"not a certificate", "client_key": b"not a key"},
    {"client_cert": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
    "cert without its key",
    "key of another certificate",
], ids=["garbage", "bad-pem", "no-key", "wrong-key"])
def test_req_unusable_client_certificate_is_tls_error(main: ClientCondure, zctx: zmq.Context,
                                                      certs: Certs, fields: Any) -> None:
    """Any problem with the identity ends the request like any TLS failure, before the
    origin sees a request."""
    if fields == "cert without its key":
        fields = {b"client-cert": identity(certs.trusted, "c2.test")[b"client-cert"]}
    elif fields == "key of another certificate":
        fields = {**identity(certs.trusted, "c3.test"),
                  b"client-key": identity(certs.trusted, "c4.test")[b"client-key"]}
    else:
        fields = F(**fields)
    with Origin(fixed(HELLO), tls=tls_server_context(certs.trusted, "localhost")) as o:
        reply = req_call(zctx, main, {**F(method="GET", uri=o.url("/", "https", "localhost")),
                                      **fields})
        assert reply == {b"type": b"error", b"condition": b"tls-error"}, reply
        assert not o.requests


def test_req_client_key_alone_is_ignored(main: ClientCondure, zctx: zmq.Context,
                                         certs: Certs) -> None:
    with Origin(fixed(HELLO), tls=tls_server_context(certs.trusted, "localhost")) as o:
        reply = req_call(zctx, main, {**F(method="GET", uri=o.url("/", "https", "localhost")),
                                      b"client-key": b"whatever"})
        assert reply is not None and reply[b"code"] == 200, reply


def test_req_client_certificate_not_utf8_drops_the_request(main: ClientCondure,
                                                          zctx: zmq.Context) -> None:
    """A field that must be text and is not: dropped without a reply, as connmgr drops a
    packet with a bad field."""
    with Origin(fixed(HELLO)) as o:
        reply = req_call(zctx, main, {**F(method="GET", uri=o.url("/")),
                                      b"client-cert": b"\xff\xfe"}, timeout=1.5)
        assert reply is None
        assert o.accepted == 0


def test_pool_keeps_client_identities_apart_d25(main: ClientCondure, zctx: zmq.Context,
                                                certs: Certs) -> None:
    """D25: pushpin-connmgr pools by address and host only, so a connection opened with
    one certificate can serve a request that asked for another, or for none. Here the
    identity is part of the pool key; the same identity reuses its connection."""
    with Origin(peer_names, tls=mtls_context(certs)) as o:
        url = o.url("/", "https", "localhost")
        a, b = identity(certs.trusted, "a.test"), identity(certs.trusted, "b.test")
        bodies = []
        for fields in (a, a, b, a):
            reply = req_call(zctx, main, {**F(method="GET", uri=url), **fields})
            assert reply is not None and reply[b"code"] == 200, reply
            bodies.append(reply[b"body"])
        assert bodies == [b"a.test", b"a.test", b"b.test", b"a.test"]
        assert o.accepted == 2  # a's connection served three requests, b got its own


def test_stream_client_certificate(main: ClientCondure, handler: Callable,
                                   certs: Certs) -> None:
    h = handler(main)
    with Origin(peer_names, tls=mtls_context(certs)) as o:
        rid = h.start({**F(method="GET", uri=o.url("/", "https", "localhost"), credits=1000),
                       **identity(certs.trusted, "s.test")})
        msgs = h.until_end(rid)
        assert msgs[1][b"code"] == 200, msgs
        assert b"".join(m.get(b"body", b"") for m in msgs) == b"s.test"


def test_wss_client_certificate(main: ClientCondure, handler: Callable, certs: Certs) -> None:
    """wss: the certificate goes with the handshake; without one the origin's refusal
    (after a TLS 1.3 handshake, on the first read) is a tls-error before any 101."""
    h = handler(main)

    def names_then_echo(peer: WSPeer) -> None:
        cert = peer.conn.sock.getpeercert() or {}
        name = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"][0]
        peer.accept(extra_headers=[(b"X-Client", name.encode())])
        peer.next_event(5)

    with Origin(ws_script(names_then_echo), tls=mtls_context(certs)) as o:
        url = o.url("/echo", "wss", "localhost")
        rid = h.start({**F(uri=url, credits=100), **identity(certs.trusted, "w.test")})
        assert h.expect(rid)[b"type"] == b"keep-alive"
        accepted = h.expect(rid)
        assert accepted[b"code"] == 101 and [b"X-Client", b"w.test"] in accepted[b"headers"]
        rid = h.start(F(uri=url, credits=100))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        refused = h.expect(rid)
        assert refused[b"type"] == b"error" and refused[b"condition"] == b"tls-error", refused


def test_tls_close_notify_after_a_normal_end(main: ClientCondure, zctx: zmq.Context,
                                             certs: Certs) -> None:
    """connmgr.md 2.3: an outbound TLS connection that is not pooled after a normal
    exchange ends with close_notify before the TCP close (a bare close is a truncation
    attack to a strict peer)."""
    eofs: list[Any] = []

    def close_after_answer(origin: Origin, conn: Conn) -> None:
        r = conn.read_request()
        assert r is not None
        conn.send(response(headers=[("Connection", "close")], body=b"bye"))
        try:
            eofs.append(conn.sock.recv(1))  # b"": close_notify came; a bare close raises
        except ssl.SSLError as e:
            eofs.append(e)

    strict = tls_server_context(certs.trusted, "localhost")
    strict.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Python's default hides a bare close
    with Origin(close_after_answer, tls=strict, ragged_eofs=False) as o:
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/", "https", "localhost")))
        assert reply is not None and reply[b"code"] == 200, reply
        wait_until(lambda: eofs, 5, "the origin's read after the response")
    assert eofs == [b""], eofs


# --- pooling ---------------------------------------------------------------------------


def test_req_pool_reuses_connection(main: ClientCondure, zctx: zmq.Context) -> None:
    """#46: two sequential GETs share one origin connection; once the origin closes the
    idle connection, the next request opens a new one without error."""
    with Origin(fixed(HELLO)) as o:
        for _ in range(2):
            reply = req_call(zctx, main, F(method="GET", uri=o.url("/")))
            assert reply is not None and reply[b"code"] == 200, reply
        assert o.accepted == 1
        assert [r.conn for r in o.requests] == [0, 0]
        o.conn(0).close()
        time.sleep(0.2)
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/")))
        assert reply is not None and reply[b"code"] == 200, reply
        assert o.accepted == 2
        assert [r.conn for r in o.requests] == [0, 0, 1]


def test_req_pool_connection_close_not_reused(main: ClientCondure, zctx: zmq.Context) -> None:
    """#47: a `Connection: close` response -> the next request uses a new connection."""
    data = response(headers=[("Connection", "close")], body=b"bye")
    with Origin(serve(lambda req: (data, False))) as o:  # the origin keeps it open anyway
        for _ in range(2):
            reply = req_call(zctx, main, F(method="GET", uri=o.url("/")))
            assert reply is not None and reply[b"body"] == b"bye", reply
        assert o.accepted == 2
        assert [r.conn for r in o.requests] == [0, 1]


# ====================================================================================
# stream interface, HTTP
# ====================================================================================


def test_stream_get_exact_messages(main: ClientCondure, handler: Callable) -> None:
    """client.md 3.2: ack, header with more and no body, then the body; byte for byte the
    constructed wire of the doc (instance condure, handler handler1, id r1)."""
    h = handler(main, b"handler1")
    with Origin(fixed(HELLO)) as o:
        h.start(F(method="GET", uri=o.url("/hello"), credits=100), rid=b"r1")
        msgs = h.until_end(b"r1")
        assert body_of(msgs) == b"hello\n"
        assert h.frames[:2] == [
            b"handler1 T83:4:from,7:condure,2:id,2:r1,3:seq,1:0#3:ext,15:5:multi,4:true!}"
            b"4:type,10:keep-alive,}",
            b"handler1 T177:4:from,7:condure,2:id,2:r1,3:seq,1:1#3:ext,15:5:multi,4:true!}"
            b"4:code,3:200#6:reason,2:OK,7:headers,60:30:12:Content-Type,10:text/plain,]"
            b"22:14:Content-Length,1:6,]]4:more,4:true!}",
        ]
        assert bytes(o.conn(0).raw) == b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % o.port


def test_stream_content_length_body_ends_in_last_piece(main: ClientCondure,
                                                       handler: Callable) -> None:
    h = handler(main, b"handler1")
    with Origin(fixed(HELLO)) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=100), rid=b"r2")
        msgs = h.until_end(rid)
        assert [m.get(b"type") for m in msgs] == [b"keep-alive", None, None], msgs
        # the doc's constructed wire (with id r2 instead of r1)
        assert h.frames[2] == (b"handler1 T78:4:from,7:condure,2:id,2:r2,3:seq,1:2#3:ext,15:"
                               b"5:multi,4:true!}4:body,6:hello\n,}")


def test_stream_credits_zero_then_credit(main: ClientCondure, handler: Callable) -> None:
    """#20: header is not subject to credits; nothing after it until a credit arrives."""
    h = handler(main)
    with Origin(fixed(HELLO)) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=0))
        ack, head = h.expect(rid), h.expect(rid)
        assert ack[b"type"] == b"keep-alive"
        assert head[b"code"] == 200 and head[b"more"] is True and b"body" not in head
        assert h.quiet(rid, 0.5) == []
        h.send(rid, F(credits=100), type="credit")
        msgs = [ack, head] + h.until_end(rid)
        check_stream_fields(msgs, rid)
        assert body_of(msgs) == b"hello\n"
        assert msgs[2][b"body"] == b"hello\n"


def test_stream_body_under_credits(main: ClientCondure, handler: Callable) -> None:
    """#21: credits 1000, 2500-byte body, credits granted back: pieces of <= 1000 bytes."""
    body = bytes(range(250)) * 10
    h = handler(main)
    with Origin(fixed(response(body=body))) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=1000))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        assert h.expect(rid)[b"code"] == 200
        first = h.expect(rid)
        assert len(first[b"body"]) == 1000 and first[b"more"] is True
        assert h.quiet(rid, 0.3) == []  # credits used up
        h.send(rid, F(credits=1000), type="credit")
        msgs = [first] + h.until_end(rid, credit_back=True)
        assert body_of(msgs) == body
        assert [len(m.get(b"body", b"")) for m in msgs][:3] == [1000, 1000, 500]
        assert all(len(m.get(b"body", b"")) <= 1000 for m in msgs)


def test_stream_buffer_size_caps_body_messages(main: ClientCondure, handler: Callable) -> None:
    """A body message carries at most --buffer-size bytes even with more credits."""
    body = b"q" * 20000
    h = handler(main)
    with Origin(fixed(response(body=body))) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=100000))
        msgs = h.until_end(rid)
        assert body_of(msgs) == body
        assert max(len(m.get(b"body", b"")) for m in msgs) <= BUFFER_SIZE


def test_stream_204_end_needs_a_credit(main: ClientCondure, handler: Callable) -> None:
    """#22 and 16.2: the header goes out with more:true; the bodiless end waits for credits."""
    h = handler(main)
    with Origin(fixed(response(code=204, reason="No Content", length=False))) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=0))
        ack, head = h.expect(rid), h.expect(rid)
        assert head[b"code"] == 204 and head[b"more"] is True and b"body" not in head
        assert h.quiet(rid, 0.5) == []
        h.send(rid, F(credits=1), type="credit")
        end = h.expect(rid)
        check_stream_fields([ack, head, end], rid)
        assert b"body" not in end and b"more" not in end and b"type" not in end, end
        assert h.quiet(rid, 0.3) == []


def test_stream_chunked_origin_final_empty_message(main: ClientCondure, handler: Callable) -> None:
    """#23: three chunks 0.2 s apart -> three body messages with more, then an empty end."""
    def chunks(origin: Origin, conn: Conn) -> None:
        r = conn.read_request()
        origin.requests.append(HttpReq(conn.index, *r))
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"one", b"two", b"three"):
            time.sleep(0.2)
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.2)
        conn.send(b"0\r\n\r\n")
        conn.wait_eof(10)
    h = handler(main)
    with Origin(chunks) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=1000))
        msgs = h.until_end(rid)
        check_stream_fields(msgs, rid)
        assert [m.get(b"body") for m in msgs[2:]] == [b"one", b"two", b"three", None], msgs
        assert [m.get(b"more") for m in msgs[1:]] == [True, True, True, True, None]


def test_stream_stream_false_user_data_ignored(main: ClientCondure, handler: Callable) -> None:
    """`stream: false` still streams (ack, header, body); `user-data` is not echoed."""
    h = handler(main)
    with Origin(fixed(HELLO)) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=100, stream=False,
                        user_data={"k": "v"}, max_size=2, timeout=1))
        msgs = h.until_end(rid)
        assert msgs[0][b"type"] == b"keep-alive"
        assert msgs[1][b"code"] == 200 and msgs[1][b"more"] is True
        assert body_of(msgs) == b"hello\n"
        assert not any(b"user-data" in m for m in msgs)


def test_stream_head_response(main: ClientCondure, handler: Callable) -> None:
    """16.1: the header message has more:true even for HEAD; the end is a separate message
    (HEAD semantics decided: the Content-Length announces no body)."""
    h = handler(main)
    with Origin(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")) as o:
        rid = h.start(F(method="HEAD", uri=o.url("/"), credits=10))
        msgs = h.until_end(rid, timeout=3)
        check_stream_fields(msgs, rid)
        assert msgs[1][b"code"] == 200 and msgs[1][b"more"] is True
        assert msgs[1][b"headers"] == [[b"Content-Length", b"5"]]
        assert len(msgs) == 3 and b"body" not in msgs[2] and b"more" not in msgs[2], msgs


def test_stream_https_get(main: ClientCondure, handler: Callable, certs: Certs) -> None:
    h = handler(main)
    with Origin(fixed(HELLO), tls=tls_server_context(certs.trusted, "localhost")) as o:
        rid = h.start(F(method="GET", uri=o.url("/s", "https", "localhost"), credits=100))
        msgs = h.until_end(rid)
        assert msgs[1][b"code"] == 200 and body_of(msgs) == b"hello\n", msgs
        assert o.sni == ["localhost"]


def test_stream_large_initial_body(main: ClientCondure, handler: Callable) -> None:
    """A whole body in the first message (no `more`), larger than --buffer-size."""
    body = bytes(range(256)) * 80  # 20480 bytes
    h = handler(main)
    with Origin(_upload_origin) as o:
        rid = h.start(F(method="PUT", uri=o.url("/big"), body=body, credits=100))
        msgs = h.until_end(rid)
        assert body_of(msgs) == b"got it"
        assert [m.get(b"type") for m in msgs[:2]] == [b"keep-alive", None]  # no upload credit
        assert hdr(o.requests[0].headers, b"content-length") == [b"20480"]
        assert o.requests[0].body == body


def test_stream_refused_is_error_after_ack(main: ClientCondure, handler: Callable) -> None:
    """client.md 4.2: refused -> keep-alive(0), error remote-connection-failed(1)."""
    h = handler(main)
    rid = h.start(F(method="GET", uri=f"http://127.0.0.1:{get_free_port()}/", credits=10))
    msgs = [h.expect(rid), h.expect(rid)]
    check_stream_fields(msgs, rid)
    assert msgs[0][b"type"] == b"keep-alive"
    assert msgs[1][b"type"] == b"error" and msgs[1][b"condition"] == b"remote-connection-failed"
    assert h.quiet(rid, 0.3) == []


@pytest.mark.parametrize("fields", [
    F(method="GET", uri="ftp://127.0.0.1/"),
    F(uri="http://127.0.0.1:1/"),
], ids=["ftp", "no-method"])
def test_stream_bad_request_error_without_ack(main: ClientCondure, handler: Callable,
                                              fields: dict) -> None:
    """client.md 4.2: the URI/method checks fail before the ack -> error(0) bad-request."""
    h = handler(main)
    rid = h.start(fields)
    m = h.expect(rid)
    check_stream_fields([m], rid)
    assert m[b"type"] == b"error" and m[b"condition"] == b"bad-request"
    assert h.quiet(rid, 0.3) == []


@pytest.mark.parametrize("case", ["no-seq", "seq-1", "two-ids", "non-data", "long-from",
                                  "long-id", pytest.param("wrong-type")])
def test_stream_invalid_first_message_dropped(main: ClientCondure, handler: Callable,
                                              case: str) -> None:
    """#24 and 16.7: no reply at all; the origin is not contacted."""
    from_ = b"f" * 65 if case == "long-from" else b"h1"
    h = handler(main, from_)
    with Origin(fixed(HELLO)) as o:
        fields = F(method="GET", uri=o.url("/"), credits=100)
        rid = uuid.uuid4().hex.encode()
        if case == "no-seq":
            h.start(fields, rid, seq=None)
        elif case == "seq-1":
            h.start(fields, rid, seq=1)
        elif case == "two-ids":
            h.start(fields, rid, id=[{"id": rid, "seq": 0}, {"id": b"other", "seq": 0}],
                    seq=None)
        elif case == "non-data":
            h.start({**fields, b"type": b"keep-alive"}, rid)
        elif case == "long-from":
            h.start(fields, rid)
        elif case == "wrong-type":
            h.start({**fields, b"follow-redirects": b"yes"}, rid)
        else:
            rid = b"i" * 65
            h.start(fields, rid)
        assert h.quiet(None, 0.6) == []
        assert o.accepted == 0


def test_stream_empty_from_publishes_with_empty_prefix(main: ClientCondure,
                                                       handler: Callable) -> None:
    """Empty `from` is accepted; replies are published as " T..." (client.md 2)."""
    h = handler(main, b"")
    with Origin(fixed(HELLO)) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=100))
        msgs = h.until_end(rid)
        assert body_of(msgs) == b"hello\n"
        assert all(f.startswith(b" T") for f in h.frames)


def test_stream_duplicate_session_ignored(main: ClientCondure, handler: Callable) -> None:
    """#25: the same (from, id) started twice while live: the second is dropped."""
    def slow(req: HttpReq) -> bytes:
        time.sleep(0.5)
        return HELLO
    h = handler(main)
    with Origin(serve(slow)) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=100))
        time.sleep(0.1)
        h.start(F(method="GET", uri=o.url("/"), credits=100), rid)
        msgs = h.until_end(rid)
        msgs += h.quiet(rid, 0.5)
        check_stream_fields(msgs, rid)
        assert body_of(msgs) == b"hello\n"
        assert o.accepted == 1 and len(o.requests) == 1


def test_stream_id_list_credit_fans_out(main: ClientCondure, handler: Callable) -> None:
    """16.6: one handler message with an id list reaches every named session."""
    h = handler(main)
    with Origin(fixed(HELLO)) as o:
        a = h.start(F(method="GET", uri=o.url("/a"), credits=0))
        b = h.start(F(method="GET", uri=o.url("/b"), credits=0))
        for rid in (a, b):
            assert h.expect(rid)[b"type"] == b"keep-alive"
            assert h.expect(rid)[b"code"] == 200
        h.send_map({b"from": b"h1", b"id": [{b"id": a, b"seq": 1}, {b"id": b, b"seq": 1}],
                    b"type": b"credit", b"credits": 100})
        for rid in (a, b):
            assert body_of(h.until_end(rid)) == b"hello\n"


def test_stream_finished_session_forgotten(main: ClientCondure, handler: Callable) -> None:
    """After the final message the id is forgotten: later messages get no answer."""
    h = handler(main)
    with Origin(fixed(HELLO)) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=100))
        h.until_end(rid)
        h.send(rid, F(credits=10), type="credit")
        h.send(rid, type="handoff-start")
        assert h.quiet(rid, 0.5) == []


def test_stream_follow_redirects(main: ClientCondure, handler: Callable) -> None:
    h = handler(main)
    with Origin(serve(_redirecting)) as o:
        rid = h.start(F(method="POST", uri=o.url("/start"), body=b"data", credits=100,
                        follow_redirects=True))
        msgs = h.until_end(rid)
        assert msgs[1][b"code"] == 200
        assert body_of(msgs) == b"echo GET "
        assert [r.request_line for r in o.requests] == [b"POST /start HTTP/1.1",
                                                        b"GET /echo HTTP/1.1"]


def test_stream_redirect_loop_too_many_redirects(main: ClientCondure, handler: Callable) -> None:
    """#15 on the stream interface: keep-alive(0), 9 requests, error too-many-redirects(1)."""
    h = handler(main)
    with Origin(serve(_loop)) as o:
        rid = h.start(F(method="GET", uri=o.url("/loop?n=0"), credits=100,
                        follow_redirects=True))
        msgs = [h.expect(rid), h.expect(rid)]
        check_stream_fields(msgs, rid)
        assert msgs[1][b"type"] == b"error" and msgs[1][b"condition"] == b"too-many-redirects"
        assert len(o.requests) == 9


def test_stream_upload_more_disables_redirects(main: ClientCondure, handler: Callable) -> None:
    """client.md 11: with `more` in the first message, redirects are never followed."""
    h = handler(main)
    with Origin(serve(_redirecting)) as o:
        rid = h.start(F(method="POST", uri=o.url("/start"), credits=100, more=True,
                        follow_redirects=True, headers=[["Content-Length", "4"]]))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        credit = h.expect(rid)
        assert credit[b"type"] == b"credit"
        h.send(rid, F(body=b"data"))
        msgs = h.until_end(rid)
        assert msgs[0][b"code"] == 302
        assert len(o.requests) == 1


def _upload_origin(origin: Origin, conn: Conn) -> None:
    r = conn.read_request()
    if r is None:
        return
    origin.requests.append(HttpReq(conn.index, *r))
    conn.send(response(body=b"got it"))
    conn.wait_eof(10)


def test_stream_chunked_upload(main: ClientCondure, handler: Callable) -> None:
    """#26: more:true without Content-Length -> chunked; credit 8192 after connect, then
    grants for what was written; exact bytes at the origin."""
    h = handler(main)
    with Origin(_upload_origin) as o:
        rid = h.start(F(method="POST", uri=o.url("/up"), body=b"first-", more=True,
                        credits=100))
        ack = h.expect(rid)
        grant = h.expect(rid)
        assert ack[b"type"] == b"keep-alive"
        assert grant[b"type"] == b"credit" and grant[b"credits"] == BUFFER_SIZE, grant
        h.send(rid, F(body=b"second-", more=True))
        h.send(rid, F(body=b"third"))
        msgs = h.until_end(rid)
        later = [m for m in msgs if m.get(b"type") == b"credit"]
        resp = [m for m in msgs if m.get(b"type") is None]
        check_stream_fields([ack, grant] + msgs, rid)
        assert sum(m[b"credits"] for m in later) in (7, 12), later
        assert resp[0][b"code"] == 200 and body_of(resp) == b"got it"
        assert bytes(o.conn(0).raw) == (
            b"POST /up HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: Transfer-Encoding\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n6\r\nfirst-\r\n7\r\nsecond-\r\n5\r\nthird\r\n"
            b"0\r\n\r\n" % o.port)


def test_stream_upload_with_content_length(main: ClientCondure, handler: Callable) -> None:
    """#27: a handler Content-Length chooses a raw (non-chunked) upload."""
    h = handler(main)
    with Origin(_upload_origin) as o:
        rid = h.start(F(method="POST", uri=o.url("/up"), body=b"first-", more=True,
                        credits=100, headers=[["Content-Length", "18"]]))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        assert h.expect(rid)[b"credits"] == BUFFER_SIZE
        h.send(rid, F(body=b"second-", more=True))
        h.send(rid, F(body=b"third"))
        msgs = h.until_end(rid)
        assert body_of(msgs) == b"got it"
        assert bytes(o.conn(0).raw) == (
            b"POST /up HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 18\r\n\r\n"
            b"first-second-third" % o.port)


def test_stream_bad_handler_content_length(main: ClientCondure, handler: Callable) -> None:
    """client.md 6.2: an unparsable handler Content-Length -> error undefined-condition."""
    h = handler(main)
    with Origin(_upload_origin) as o:
        rid = h.start(F(method="POST", uri=o.url("/"), body=b"x", credits=10,
                        headers=[["Content-Length", "abc"]]))
        msgs = [h.expect(rid)]
        if msgs[0].get(b"type") == b"keep-alive":
            msgs.append(h.expect(rid))
        assert msgs[-1][b"type"] == b"error", msgs
        assert msgs[-1][b"condition"] == b"undefined-condition"
        assert not o.requests


def test_stream_upload_data_before_credit_ends_session(main: ClientCondure,
                                                       handler: Callable, certs: Certs) -> None:
    h = handler(main)
    ctx = tls_server_context(certs.untrusted, "127.0.0.1")
    with Origin(_upload_origin, tls=ctx, tls_delay=0.6) as o:
        rid = h.start(F(method="POST", uri=o.url("/up", "https"), body=b"first-", more=True,
                        credits=100, ignore_tls_errors=True))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        h.send(rid, F(body=b"early", more=True))  # no credit yet: TLS still pending
        got = h.quiet(rid, 1.5)
        assert got == [], got
        wait_until(lambda: o.tls_errors or (o.conns and o.conns[0].eof.is_set()), 3,
                   "origin connection closed")
        assert not o.conns or b"early" not in o.conns[0].raw


def test_stream_upload_bad_seq_ends_silently(main: ClientCondure, handler: Callable) -> None:
    """#29: seq 5 when 2 is expected -> silent end, origin sees EOF."""
    h = handler(main)
    with Origin(_upload_origin) as o:
        rid = h.start(F(method="POST", uri=o.url("/up"), more=True, credits=100))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        assert h.expect(rid)[b"type"] == b"credit"
        h.send(rid, F(body=b"first-", more=True))  # seq 1
        h.send(rid, F(body=b"x", more=True), seq=5)
        got = h.quiet(rid, 1.0)
        assert all(m.get(b"type") == b"credit" for m in got), got
        assert o.conn(0).eof.wait(3), "origin connection still open"
        assert not o.requests  # the chunked body never ended
        assert bytes(o.conn(0).raw).endswith(b"6\r\nfirst-\r\n")


def test_stream_cancel_mid_upload(main: ClientCondure, handler: Callable) -> None:
    """#30: cancel -> no reply, the origin sees EOF."""
    h = handler(main)
    with Origin(_upload_origin) as o:
        rid = h.start(F(method="POST", uri=o.url("/up"), more=True, credits=100))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        assert h.expect(rid)[b"type"] == b"credit"
        h.send(rid, F(body=b"first-", more=True))
        h.send(rid, type="cancel")
        got = h.quiet(rid, 1.0)
        assert all(m.get(b"type") == b"credit" for m in got), got
        assert o.conn(0).eof.wait(3), "origin connection still open"
        assert not o.requests


def test_stream_origin_drops_mid_body_cancel(main: ClientCondure, handler: Callable) -> None:
    """#32: after the header went out, a failure is `cancel` (no condition)."""
    def drop(origin: Origin, conn: Conn) -> None:
        conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        time.sleep(0.2)
    h = handler(main)
    with Origin(drop) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=1000))
        msgs = h.until_end(rid)
        check_stream_fields(msgs, rid)
        assert msgs[1][b"code"] == 200
        assert msgs[-1][b"type"] == b"cancel" and b"condition" not in msgs[-1], msgs
        assert body_of(msgs) in (b"", b"0123456789")


def test_stream_malformed_response_error(main: ClientCondure, handler: Callable) -> None:
    """A malformed response head -> error undefined-condition (before any header)."""
    with Origin(fixed(b"SPAM 200 nonsense\r\n\r\n", close=True)) as o:
        h = handler(main)
        rid = h.start(F(method="GET", uri=o.url("/"), credits=10))
        msgs = [h.expect(rid), h.expect(rid)]
        assert msgs[1][b"type"] == b"error" and msgs[1][b"condition"] == b"undefined-condition"


def test_stream_timeout_before_headers(short: ClientCondure, handler: Callable) -> None:
    """#33: --stream-timeout 2, origin silent -> keep-alive(0), then error connection-timeout."""
    h = handler(short)
    with Origin(silent) as o:
        t0 = time.monotonic()
        rid = h.start(F(method="GET", uri=o.url("/"), credits=10))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        m = h.expect(rid, timeout=5)
        assert m[b"type"] == b"error" and m[b"condition"] == b"connection-timeout", m
        assert 1.5 < time.monotonic() - t0 < 4.5
        assert o.conn(0).eof.wait(3)


def test_stream_timeout_refreshed_by_upload(short: ClientCondure, handler: Callable) -> None:
    h = handler(short)
    with Origin(_upload_origin) as o:
        rid = h.start(F(method="POST", uri=o.url("/up"), more=True, credits=100))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        assert h.expect(rid)[b"type"] == b"credit"
        for _ in range(7):  # 2.8 s of steady upload, --stream-timeout 2
            h.send(rid, F(body=b"x", more=True))
            time.sleep(0.4)
        h.send(rid, F(body=b"end"))
        msgs = [m for m in h.until_end(rid) if m.get(b"type") != b"credit"]
        assert msgs[0].get(b"code") == 200, (msgs, short.log_text())
        assert body_of(msgs) == b"got it"


def test_stream_handoff(main: ClientCondure, handler: Callable) -> None:
    """#34: handoff-start -> handoff-proceed; nothing more until the handler's next message."""
    def slow(req: HttpReq) -> bytes:
        time.sleep(0.3)
        return HELLO
    h = handler(main)
    with Origin(serve(slow)) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=100))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        h.send(rid, type="handoff-start")
        m = h.expect(rid)
        assert m[b"type"] == b"handoff-proceed" and m[b"seq"] == 1, m
        assert h.quiet(rid, 0.8) == []  # the origin answered meanwhile
        assert o.requests
        h.send(rid, type="keep-alive")
        msgs = h.until_end(rid)
        check_stream_fields(msgs, rid, first_seq=2)
        assert msgs[0][b"code"] == 200 and body_of(msgs) == b"hello\n"


def test_stream_deny_out_internal(deny: ClientCondure, handler: Callable) -> None:
    h = handler(deny)
    with Origin(fixed(HELLO)) as o:
        rid = h.start(F(method="GET", uri=o.url("/"), credits=10))
        msgs = [h.expect(rid), h.expect(rid)]
        assert msgs[0][b"type"] == b"keep-alive"
        assert msgs[1][b"type"] == b"error" and msgs[1][b"condition"] == b"policy-violation"
        assert o.accepted == 0


@pytest.mark.deadline(30)
def test_stream_shutdown_cancels_batched(spare: ClientCondure, handler: Callable) -> None:
    h = handler(spare)
    with Origin(silent) as o:
        rids = [h.start(F(method="GET", uri=o.url(f"/{i}"), credits=10)) for i in range(3)]
        for rid in rids:
            assert h.expect(rid)[b"type"] == b"keep-alive"
        wait_until(lambda: len(o.requests) == 3, 3, "three origin requests")
        spare.proc.send_signal(signal.SIGTERM)
        m = h.recv(None, 2.5)
        stop_process(spare.proc)
        assert m is not None, f"no cancel before exit:\n{spare.log_text()}"
        assert m[b"type"] == b"cancel" and m[b"ext"] == {b"multi": True}, m
        assert sorted((x[b"id"], x[b"seq"]) for x in m[b"id"]) == sorted((r, 1) for r in rids)


# ====================================================================================
# stream interface, WebSocket
# ====================================================================================


def _ws_open_with_headers(h: StreamHandler, o: Origin) -> tuple[bytes, list[dict]]:
    """#36's session: credits 1000, handler headers Sec-WebSocket-Protocol and X-Extra;
    returns (rid, [ack, 101])."""
    rid = h.start(F(uri=o.url("/echo", "ws"), credits=1000,
                    headers=[["Sec-WebSocket-Protocol", "chat"], ["X-Extra", "1"]]))
    return rid, [h.expect(rid), h.expect(rid)]


def test_ws_handshake_head_and_101(main: ClientCondure, handler: Callable) -> None:
    """#36 and client.md 8.1: GET with Host first, then Upgrade and Connection, the key and
    version, then the handler's headers; the handler gets keep-alive(0) and the 101(1) with
    credits = --client-ws-window (D22; not its own 1000), no body, no more."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid, msgs = _ws_open_with_headers(h, o)
        check_stream_fields(msgs, rid)
        ack, resp = msgs
        assert ack[b"type"] == b"keep-alive", ack
        assert resp.get(b"code") == 101, (resp, main.log_text())
        assert b"type" not in resp and b"body" not in resp and b"more" not in resp, resp
        assert resp[b"reason"] == b"Switching Protocols"
        assert resp[b"credits"] == WS_WINDOW
        peer = o.conn(0).peer
        assert peer.head.split(b"\r\n", 1)[0] == b"GET /echo HTTP/1.1"
        headers = parse_headers(peer.head)
        names = [n.lower() for n, _ in headers]
        assert headers[0] == (b"Host", b"127.0.0.1:%d" % o.port), headers
        assert names[1:3] == [b"upgrade", b"connection"], headers
        assert sorted(names[3:5]) == [b"sec-websocket-key", b"sec-websocket-version"], headers
        assert names[5:] == [b"sec-websocket-protocol", b"x-extra"], headers
        assert [v.lower() for v in hdr(headers, b"upgrade")] == [b"websocket"]
        assert [v.lower() for v in hdr(headers, b"connection")] == [b"upgrade"]
        assert hdr(headers, b"sec-websocket-version") == [b"13"]
        (key,) = hdr(headers, b"sec-websocket-key")
        assert len(base64.b64decode(key, validate=True)) == 16, key
        assert hdr(headers, b"sec-websocket-protocol") == [b"chat"]
        assert hdr(headers, b"x-extra") == [b"1"]
        assert h.quiet(rid, 0.3) == []


def test_ws_handshake_head_exact_order(main: ClientCondure, handler: Callable) -> None:
    """#36: the exact order of client.md 8.1: Host, Upgrade, Connection, Version, Key, then
    the handler's headers."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid, msgs = _ws_open_with_headers(h, o)
        assert msgs[1].get(b"code") == 101, msgs
        names = [n.lower() for n, _ in parse_headers(o.conn(0).peer.head)]
        assert names == [b"host", b"upgrade", b"connection", b"sec-websocket-version",
                         b"sec-websocket-key", b"sec-websocket-protocol", b"x-extra"], names


def test_ws_101_carries_origin_extra_header(main: ClientCondure, handler: Callable) -> None:
    """client.md 3.3: the 101 carries the origin's response headers (ws_echo adds
    X-Origin: yes)."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        _, resp = ws_open(h, o)
        assert hdr(resp[b"headers"], b"x-origin") == [b"yes"], resp


def test_ws_101_carries_all_origin_headers(main: ClientCondure, handler: Callable) -> None:
    """client.md 3.3: Upgrade, Connection and Sec-WebSocket-Accept as the origin sent them are
    in the 101's headers too, next to X-Origin."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        _, resp = ws_open(h, o)
        headers = resp[b"headers"]
        assert hdr(headers, b"x-origin") == [b"yes"], resp
        (key,) = hdr(parse_headers(o.conn(0).peer.head), b"sec-websocket-key")
        assert [v.lower() for v in hdr(headers, b"upgrade")] == [b"websocket"], headers
        assert [v.lower() for v in hdr(headers, b"connection")] == [b"upgrade"], headers
        assert hdr(headers, b"sec-websocket-accept") == [ws_accept(key)], headers


def test_ws_handshake_ignores_method_body_and_handshake_headers(main: ClientCondure,
                                                                 handler: Callable) -> None:
    """client.md 8.1: the method is always GET, a handler body is not sent, and the handler's
    Host, Connection, Upgrade, Sec-WebSocket-Version/Key, Content-Length and
    Transfer-Encoding are left out (the handshake still validates: condure's own key)."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid = h.start(F(method="POST", uri=o.url("/echo?x=1", "ws"), body=b"xyz", credits=100,
                        headers=[["Host", "other"], ["Connection", "close"], ["Upgrade", "h2c"],
                                 ["Sec-WebSocket-Version", "8"],
                                 ["Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="],
                                 ["Content-Length", "3"], ["Transfer-Encoding", "chunked"],
                                 ["X-Keep", "1"]]))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        resp = h.expect(rid)
        assert resp.get(b"code") == 101, (resp, main.log_text())
        peer = o.conn(0).peer
        assert peer.head.split(b"\r\n", 1)[0] == b"GET /echo?x=1 HTTP/1.1"
        headers = parse_headers(peer.head)
        assert headers[0] == (b"Host", b"127.0.0.1:%d" % o.port), headers
        assert hdr(headers, b"host") == [b"127.0.0.1:%d" % o.port]
        assert [v.lower() for v in hdr(headers, b"upgrade")] == [b"websocket"]
        assert [v.lower() for v in hdr(headers, b"connection")] == [b"upgrade"]
        assert hdr(headers, b"sec-websocket-version") == [b"13"]
        assert hdr(headers, b"sec-websocket-key") != [b"AAAAAAAAAAAAAAAAAAAAAA=="]
        assert len(hdr(headers, b"sec-websocket-key")) == 1
        assert not hdr(headers, b"content-length") and not hdr(headers, b"transfer-encoding")
        assert hdr(headers, b"x-keep") == [b"1"]
        h.send(rid, F(body=b"first"))  # the first frame follows the head directly: no body
        msgs = []
        while not any(m.get(b"body") == b"first" for m in msgs):
            msgs.append(h.expect(rid))
        assert [type(e).__name__ for e in peer.log] == ["TextMessage"], peer.log


def test_ws_subprotocol_header_passes_through(main: ClientCondure, handler: Callable) -> None:
    def accept_chat(peer: WSPeer) -> None:
        peer.accept(subprotocol="chat")
        peer.next_event(10)
    h = handler(main)
    with Origin(ws_script(accept_chat)) as o:
        rid = h.start(F(uri=o.url("/", "ws"), credits=100,
                        headers=[["Sec-WebSocket-Protocol", "chat"]]))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        resp = h.expect(rid)
        assert hdr(parse_headers(o.conn(0).peer.head), b"sec-websocket-protocol") == [b"chat"]
        assert resp.get(b"code") == 101, (resp, main.log_text())
        assert hdr(resp[b"headers"], b"sec-websocket-protocol") == [b"chat"]


def test_ws_echo_text_binary_ping_fragments(main: ClientCondure, handler: Callable) -> None:
    """#37"""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid, _ = ws_open(h, o, credits=1000)
        h.send(rid, F(body=b"hello"))
        h.send(rid, F(body=b"\x00\x01", content_type="binary"))
        h.send(rid, F(body=b"pp"), type="ping")
        h.send(rid, F(body=b"a", more=True))
        h.send(rid, F(body=b"b"))
        msgs = []
        while not any(m.get(b"body") == b"ab" for m in msgs):
            msgs.append(h.expect(rid))
        msgs += h.quiet(rid, 0.3)
        check_stream_fields(msgs, rid, first_seq=2)
        data = [(m.get(b"content-type"), m[b"body"]) for m in msgs if m.get(b"type") is None]
        assert data == [(b"text", b"hello"), (b"binary", b"\x00\x01"), (b"text", b"ab")], msgs
        pongs = [m for m in msgs if m.get(b"type") == b"pong"]
        assert [p[b"body"] for p in pongs] == [b"pp"]
        credits = [m[b"credits"] for m in msgs if m.get(b"type") == b"credit"]
        assert sum(credits) == 5 + 2 + 2 + 1 + 1, msgs
        peer = o.conn(0).peer
        got = [(type(e).__name__, getattr(e, "data", getattr(e, "payload", None)),
                getattr(e, "message_finished", None)) for e in peer.log]
        assert got == [("TextMessage", "hello", True), ("BytesMessage", b"\x00\x01", True),
                       ("Ping", b"pp", None), ("TextMessage", "a", False),
                       ("TextMessage", "b", True)], got


def test_ws_origin_ping_forwarded_no_auto_pong(main: ClientCondure, handler: Callable) -> None:
    """#38"""
    def pinger(peer: WSPeer) -> None:
        peer.accept()
        peer.send(Ping(payload=b"pp"))
        while peer.next_event(10) is not None:
            pass
    h = handler(main)
    with Origin(ws_script(pinger)) as o:
        rid, _ = ws_open(h, o)
        m = h.expect(rid)
        assert m[b"type"] == b"ping" and m[b"body"] == b"pp", m
        time.sleep(0.5)
        assert not any(isinstance(e, Pong) for e in o.conn(0).peer.log)
        h.send(rid, F(body=b"pp"), type="pong")  # the handler answers
        wait_until(lambda: any(isinstance(e, Pong) for e in o.conn(0).peer.log), 3, "pong")


def sends_text(text: str) -> Callable[[WSPeer], None]:
    """An origin script: accept, send one text message, then read until the end."""
    def script(peer: WSPeer) -> None:
        peer.accept()
        peer.send(TextMessage(data=text))
        while peer.next_event(10) is not None:
            pass
    return script


def message_pieces(h, rid: bytes) -> list[dict]:
    """The data packets of one origin message, granting each piece's credits back."""
    pieces = []
    while True:
        m = h.expect(rid)
        assert m.get(b"type") is None, m
        pieces.append(m)
        if not m.get(b"more"):
            return pieces
        h.send(rid, F(credits=len(m[b"body"])), type="credit")


def test_ws_large_origin_message_in_pieces(main: ClientCondure, handler: Callable) -> None:
    """#39: 20000 bytes, credits 8192 granted back: pieces <= 8192 with more, no error."""
    text = "".join(chr(0x41 + i % 26) for i in range(20000))
    h = handler(main)
    with Origin(ws_script(sends_text(text))) as o:
        rid, _ = ws_open(h, o, credits=BUFFER_SIZE)
        pieces = message_pieces(h, rid)
        assert all(len(p[b"body"]) <= BUFFER_SIZE for p in pieces)
        assert len(pieces) >= 3
        assert b"".join(p[b"body"] for p in pieces) == text.encode()
        assert all(p[b"content-type"] == b"text" for p in pieces)


def test_ws_origin_text_split_inside_a_character_arrives_whole(main: ClientCondure,
                                                              handler: Callable) -> None:
    """Issue 13: credits count bytes, so a piece may end inside a UTF-8
    character; its other bytes must follow as sent (they were re-decoded on
    their own and replaced: "é" with 1 credit arrived as c3 ef bf bd)."""
    text = "é€😀" * 50  # 2-, 3- and 4-byte characters, 450 bytes
    h = handler(main)
    with Origin(ws_script(sends_text(text))) as o:
        rid, _ = ws_open(h, o, credits=7)  # 7 bytes a piece: most pieces end mid-character
        pieces = message_pieces(h, rid)
        assert len(pieces) > 50
        assert b"".join(p[b"body"] for p in pieces) == text.encode()


def test_ws_handler_text_split_inside_a_character_reaches_the_origin_whole(
        main: ClientCondure, handler: Callable) -> None:
    """The other way: a handler's text message in pieces cut inside a
    character is decoded whole for the origin."""
    h = handler(main)
    data = "é€😀".encode()
    with Origin(ws_script(ws_echo)) as o:
        rid, _ = ws_open(h, o, credits=1000)
        for i in range(len(data)):  # one byte a packet
            h.send(rid, F(body=data[i:i + 1], more=i < len(data) - 1))
        wait_until(lambda: any(isinstance(e, TextMessage) and e.message_finished
                               for e in o.conn(0).peer.log), 3, "the whole message")
        got = "".join(e.data for e in o.conn(0).peer.log if isinstance(e, TextMessage))
        assert got == "é€😀", got


def test_ws_handler_message_type_is_decided_by_its_first_piece(main: ClientCondure,
                                                                handler: Callable) -> None:
    """A message the handler starts as binary stays binary when a later piece
    omits content-type (the server rule, zhttp/wsmap.Writer); it used to fail
    the session (a text frame inside a binary message)."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid, _ = ws_open(h, o, credits=1000)
        h.send(rid, F(body=b"ab", content_type="binary", more=True))
        h.send(rid, F(body=b"cd"))
        m = h.expect(rid)
        while m.get(b"type") == b"credit":
            m = h.expect(rid)
        assert m.get(b"type") is None and m[b"content-type"] == b"binary", m
        assert m[b"body"] == b"abcd", m
        got = [(type(e).__name__, e.data) for e in o.conn(0).peer.log]
        assert got == [("BytesMessage", b"ab"), ("BytesMessage", b"cd")], got


def test_ws_origin_empty_non_final_frame_makes_no_packet(main: ClientCondure,
                                                         handler: Callable) -> None:
    """An empty fragment that does not end its message has nothing to carry:
    no packet (zhttp/flow.Outflow, as in server mode); the message arrives whole."""
    def empty_first(peer: WSPeer) -> None:
        peer.accept()
        peer.send(TextMessage(data="", message_finished=False))
        peer.send(TextMessage(data="hi", message_finished=True))
        peer.next_event(5)
    h = handler(main)
    with Origin(ws_script(empty_first)) as o:
        rid, _ = ws_open(h, o, credits=1000)
        msgs = [h.expect(rid)] + h.quiet(rid, 0.3)
        assert [(m.get(b"type"), m.get(b"body"), m.get(b"more")) for m in msgs] == \
            [(None, b"hi", None)], msgs


def test_ws_rejected(main: ClientCondure, handler: Callable) -> None:
    """#40: non-101 -> error rejected with code, reason, headers, body."""
    def reject(origin: Origin, conn: Conn) -> None:
        conn.read_until(b"\r\n\r\n")
        conn.send(b"HTTP/1.1 403 Forbidden\r\nX-Why: test\r\nContent-Length: 4\r\n\r\nnope")
        conn.wait_eof(5)
    h = handler(main)
    with Origin(reject) as o:
        rid = h.start(F(uri=o.url("/", "ws"), credits=100))
        msgs = [h.expect(rid), h.expect(rid)]
        check_stream_fields(msgs, rid)
        err = msgs[1]
        assert err[b"type"] == b"error" and err[b"condition"] == b"rejected", err
        assert (err[b"code"], err[b"reason"], err[b"body"]) == (403, b"Forbidden", b"nope")
        assert hdr(err[b"headers"], b"x-why") == [b"test"]
        assert h.quiet(rid, 0.3) == []


def test_ws_rejected_carries_origin_reason(main: ClientCondure, handler: Callable) -> None:
    """#40: `403 Go Away` -> the rejected error's reason is `Go Away`, not the standard
    phrase."""
    def reject(origin: Origin, conn: Conn) -> None:
        conn.read_until(b"\r\n\r\n")
        conn.send(b"HTTP/1.1 403 Go Away\r\nX-Why: test\r\nContent-Length: 4\r\n\r\nnope")
        conn.wait_eof(5)
    h = handler(main)
    with Origin(reject) as o:
        rid = h.start(F(uri=o.url("/", "ws"), credits=100))
        msgs = [h.expect(rid), h.expect(rid)]
        check_stream_fields(msgs, rid)
        err = msgs[1]
        assert err[b"type"] == b"error" and err[b"condition"] == b"rejected", err
        assert (err[b"code"], err[b"body"]) == (403, b"nope"), err
        assert hdr(err[b"headers"], b"x-why") == [b"test"]
        assert err[b"reason"] == b"Go Away", err


def _rejecting(answer: bytes, close: bool) -> Callable[[Origin, Conn], None]:
    def reject(origin: Origin, conn: Conn) -> None:
        conn.read_until(b"\r\n\r\n")
        conn.send(answer)
        if not close:
            conn.wait_eof(5)
    return reject


@pytest.mark.parametrize("answer, close, code, headers", [
    (b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n", False, 302,
     [[b"Location", b"/elsewhere"], [b"Content-Length", b"0"]]),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False, 200,
     [[b"Content-Length", b"0"]]),
    (b"HTTP/1.1 403 Forbidden\r\n\r\n", True, 403, None),
], ids=["302-not-followed", "plain-200", "no-headers"])
def test_ws_rejected_any_non_101(main: ClientCondure, handler: Callable, answer: bytes,
                                 close: bool, code: int, headers: list | None) -> None:
    """client.md 3.3 and 8.2: any non-101 (a 3xx, not followed; a plain HTTP 200) is
    `rejected` with the code and an empty body; headers are left out when the origin sent
    none."""
    h = handler(main)
    with Origin(_rejecting(answer, close)) as o:
        rid = h.start(F(uri=o.url("/", "ws"), credits=100))
        msgs = [h.expect(rid), h.expect(rid)]
        check_stream_fields(msgs, rid)
        err = msgs[1]
        assert err[b"type"] == b"error" and err[b"condition"] == b"rejected", err
        assert err[b"code"] == code and err.get(b"body", b"") == b"", err
        if headers is None:
            assert b"headers" not in err, err
        else:
            assert [[n.lower(), v] for n, v in err[b"headers"]] == \
                [[n.lower(), v] for n, v in headers], err
        assert h.quiet(rid, 0.3) == []
        assert o.accepted == 1


def test_ws_rejected_empty_body_is_present(main: ClientCondure, handler: Callable) -> None:
    h = handler(main)
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    with Origin(_rejecting(answer, False)) as o:
        rid = h.start(F(uri=o.url("/", "ws"), credits=100))
        msgs = [h.expect(rid), h.expect(rid)]
        err = msgs[1]
        assert err[b"type"] == b"error" and err[b"condition"] == b"rejected", err
        assert err[b"code"] == 403, err
        assert b"body" in err and err[b"body"] == b"", err


@pytest.mark.parametrize("size, condition", [(BUFFER_SIZE, b"rejected"),
                                             (BUFFER_SIZE + 1, b"rejection-too-large")])
def test_ws_rejection_body_limit(main: ClientCondure, handler: Callable, size: int,
                                 condition: bytes) -> None:
    """connmgr.md 6: a rejection body of up to --buffer-size is delivered whole; past it
    the handler gets `rejection-too-large` (condure 1.10.1 hung)."""
    h = handler(main)
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    with Origin(_rejecting(answer, False)) as o:
        rid = h.start(F(uri=o.url("/", "ws"), credits=100))
        msgs = [h.expect(rid), h.expect(rid)]
        check_stream_fields(msgs, rid)
        err = msgs[1]
        assert err[b"type"] == b"error" and err[b"condition"] == condition, err
        if condition == b"rejected":
            assert err[b"code"] == 403 and err[b"body"] == b"x" * size
        assert h.quiet(rid, 0.3) == []


def test_ws_bad_accept_is_undefined_condition(main: ClientCondure, handler: Callable) -> None:
    """#41: a 101 with a wrong Sec-WebSocket-Accept -> keep-alive(0), error
    undefined-condition(1); no 101 reaches the handler; the origin connection is closed."""
    wrong = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's example: for another key

    def bad_accept(origin: Origin, conn: Conn) -> None:
        head = conn.read_until(b"\r\n\r\n")
        assert head is not None
        origin.requests.append(HttpReq(conn.index, head, b""))
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + wrong + b"\r\n\r\n")
        conn.wait_eof(10)
    h = handler(main)
    with Origin(bad_accept) as o:
        rid = h.start(F(uri=o.url("/echo", "ws"), credits=1000))
        msgs = [h.expect(rid), h.expect(rid)]
        msgs += h.quiet(rid, 0.5)
        check_stream_fields(msgs, rid)
        assert len(msgs) == 2, msgs
        assert msgs[0][b"type"] == b"keep-alive"
        assert msgs[1][b"type"] == b"error", msgs
        assert msgs[1][b"condition"] == b"undefined-condition", msgs
        assert not any(m.get(b"code") == 101 for m in msgs)
        (key,) = hdr(o.requests[0].headers, b"sec-websocket-key")
        assert ws_accept(key) != wrong
        assert o.conn(0).eof.wait(3), "origin connection still open"


def test_ws_origin_close_relayed(main: ClientCondure, handler: Callable) -> None:
    """#42: the origin sends `hi` then closes with 4001 "bye": the handler gets the data,
    then `close` code 4001 body bye; after the handler's close the origin gets it and the
    session ends silently."""
    def hi_bye(peer: WSPeer) -> None:
        peer.accept()
        peer.send(TextMessage(data="hi"))
        peer.send(CloseConnection(code=4001, reason="bye"))
        while peer.next_event(10) is not None:
            pass
    h = handler(main)
    with Origin(ws_script(hi_bye)) as o:
        rid, _ = ws_open(h, o)
        data, close = h.expect(rid), h.expect(rid)
        check_stream_fields([data, close], rid, first_seq=2)
        assert data.get(b"type") is None and data[b"body"] == b"hi", data
        assert data[b"content-type"] == b"text" and b"more" not in data, data
        assert close[b"type"] == b"close", close
        assert (close[b"code"], close[b"body"]) == (4001, b"bye"), close
        h.send(rid, F(code=4001, body=b"bye"), type="close")
        assert h.quiet(rid, 0.8) == []
        peer = o.conn(0).peer
        wait_until(lambda: any(isinstance(e, CloseConnection) for e in peer.log), 3,
                   "close reply at the origin")
        closes = [e for e in peer.log if isinstance(e, CloseConnection)]
        assert [(e.code, e.reason) for e in closes] == [(4001, "bye")]
        assert o.conn(0).eof.wait(3), "origin connection still open"


def test_ws_session_ends_after_origin_first_close(main: ClientCondure,
                                                  handler: Callable) -> None:
    def closer(peer: WSPeer) -> None:
        peer.accept()
        peer.send(CloseConnection(code=4001, reason="bye"))
        while peer.next_event(10) is not None:  # RFC 6455 lets the client close TCP too
            pass
    h = handler(main)
    with Origin(ws_script(closer)) as o:
        rid, _ = ws_open(h, o)
        assert h.expect(rid)[b"type"] == b"close"
        h.send(rid, F(code=4001), type="close")
        peer = o.conn(0).peer
        wait_until(lambda: any(isinstance(e, CloseConnection) for e in peer.log), 3,
                   "close reply at the origin")
        assert o.conn(0).eof.wait(2), f"origin connection still open:\n{main.log_text()}"


def test_ws_handler_close_relayed(main: ClientCondure, handler: Callable) -> None:
    """#43: handler close 1000 done -> origin gets it; its echo reaches the handler; then
    nothing (data after the handler's close is ignored)."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid, _ = ws_open(h, o)
        h.send(rid, F(code=1000, body=b"done"), type="close")
        h.send(rid, F(body=b"after close"))
        msgs = []
        while not any(m.get(b"type") == b"close" for m in msgs):
            msgs.append(h.expect(rid))
        msgs += h.quiet(rid, 0.5)
        close = [m for m in msgs if m.get(b"type") == b"close"]
        assert len(close) == 1 and close[0][b"code"] == 1000 and close[0][b"body"] == b"done"
        assert not [m for m in msgs if m.get(b"type") in (None, b"cancel", b"error")], msgs
        closes = [e for e in o.conn(0).peer.log if isinstance(e, CloseConnection)]
        assert [(e.code, e.reason) for e in closes] == [(1000, "done")]
        assert not any(isinstance(e, Message) for e in o.conn(0).peer.log)


def test_ws_handler_close_without_code(main: ClientCondure, handler: Callable) -> None:
    """client.md 8.3: `close` without code -> 1000, the body is dropped."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid, _ = ws_open(h, o)
        h.send(rid, F(body=b"dropped"), type="close")
        wait_until(lambda: any(isinstance(e, CloseConnection) for e in o.conn(0).peer.log), 3,
                   "close at the origin")
        closes = [e for e in o.conn(0).peer.log if isinstance(e, CloseConnection)]
        assert [(e.code, e.reason) for e in closes] == [(1000, "")]


def test_ws_handler_close_reason_not_utf8_ends_the_session(main: ClientCondure,
                                                            handler: Callable) -> None:
    """A close reason that is not UTF-8 is the handler's fault, as in server
    mode (HandlerError): the origin connection is dropped without a close
    frame and the handler hears nothing."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid, _ = ws_open(h, o)
        h.send(rid, F(code=1000, body=b"\xff"), type="close")
        assert o.conn(0).wait_eof(5), "origin connection not closed"
        assert not any(isinstance(e, CloseConnection) for e in o.conn(0).peer.log)
        assert h.quiet(rid, 0.3) == []


def test_ws_origin_close_without_code(main: ClientCondure, handler: Callable) -> None:
    """A close frame with no payload -> `close` without code."""
    def bare_close(origin: Origin, conn: Conn) -> None:
        peer = WSPeer(conn)
        peer.read_handshake()
        peer.accept()
        conn.send(b"\x88\x00")
        conn.wait_eof(5)
    h = handler(main)
    with Origin(bare_close) as o:
        rid, _ = ws_open(h, o)
        m = h.expect(rid)
        assert m[b"type"] == b"close" and b"code" not in m, m


def test_ws_origin_drops_tcp_cancel(main: ClientCondure, handler: Callable) -> None:
    """#44"""
    def dropper(peer: WSPeer) -> None:
        peer.accept()
        time.sleep(0.2)
    h = handler(main)
    with Origin(ws_script(dropper)) as o:
        rid, _ = ws_open(h, o)
        m = h.expect(rid)
        assert m[b"type"] == b"cancel" and b"condition" not in m, m
        assert h.quiet(rid, 0.3) == []


def test_ws_unknown_opcode_cancel(main: ClientCondure, handler: Callable) -> None:
    def weird(origin: Origin, conn: Conn) -> None:
        peer = WSPeer(conn)
        peer.read_handshake()
        peer.accept()
        conn.send(b"\x83\x00")  # FIN, reserved opcode 3
        conn.wait_eof(5)
    h = handler(main)
    with Origin(weird) as o:
        rid, _ = ws_open(h, o)
        m = h.expect(rid)
        assert m[b"type"] == b"cancel", m


def deflating_origin(*sizes: int) -> Callable[[Origin, Conn], None]:
    """Accepts with permessage-deflate, sends one message of zeros per size, then
    waits for the end (a close from condure, or EOF)."""
    def body(peer: WSPeer) -> None:
        peer.accept(extensions=[PerMessageDeflate()])
        for size in sizes:
            peer.send(BytesMessage(data=b"\0" * size))
        while peer.next_event(30) is not None:
            pass
    return ws_script(body)


def receive_message(cd: ClientCondure, h: StreamHandler, rid: bytes) -> tuple[int, bytes | None,
                                                                              int]:
    """Data for one origin message, credits given back as it comes: (bytes received,
    None if the message ended else the packet type that ended the session, how much
    condure's peak RSS (VmHWM: transient peaks too) grew meanwhile, in KB)."""
    def hwm() -> int:
        with open(f"/proc/{cd.proc.pid}/status") as f:
            return int(f.read().split("VmHWM:")[1].split()[0])
    before = hwm()
    total = 0
    while True:
        m = h.expect(rid, timeout=10)
        if m.get(b"type") is not None:
            return total, m[b"type"], hwm() - before
        total += len(m.get(b"body", b""))
        if m.get(b"body"):
            h.send(rid, F(credits=len(m[b"body"])), type="credit")
        if not m.get(b"more"):
            return total, None, hwm() - before


def test_ws_origin_message_at_the_limit_passes_one_more_byte_cancels_d18(
        deflate: ClientCondure, handler: Callable) -> None:
    """--compression-message-max bounds what an origin's compressed message may inflate
    to, as in server mode; past it the session fails like on a bad frame (cancel)."""
    h = handler(deflate)
    with Origin(deflating_origin(DEFLATE_LIMIT, DEFLATE_LIMIT, DEFLATE_LIMIT + 1)) as o:
        rid, resp = ws_open(h, o, credits=65536)
        assert hdr(resp[b"headers"], b"sec-websocket-extensions"), resp
        assert receive_message(deflate, h, rid)[:2] == (DEFLATE_LIMIT, None)
        assert receive_message(deflate, h, rid)[:2] == (DEFLATE_LIMIT, None)  # per message
        total, end, _ = receive_message(deflate, h, rid)
        assert end == b"cancel" and total <= DEFLATE_LIMIT
        assert o.conn(0).eof.wait(5), "origin connection not closed"


def test_ws_origin_decompression_bomb_is_bounded_d18(deflate: ClientCondure,
                                                      handler: Callable) -> None:
    """64 MiB of zeros in about 65 KB: inflated a piece at a time, so condure's memory
    does not follow the bomb even before the limit ends it."""
    h = handler(deflate)
    with Origin(deflating_origin(64 * 1024 * 1024)) as o:
        rid, _ = ws_open(h, o, credits=65536)
        total, end, growth = receive_message(deflate, h, rid)
        assert end == b"cancel" and total <= DEFLATE_LIMIT
        assert growth < 8 * 1024, f"peak RSS grew {growth} KB"
    assert deflate.alive()


def test_ws_handler_exceeds_credits_cancel(main: ClientCondure, handler: Callable) -> None:
    """#45 with the window of D22: one byte more than the 101 granted."""
    h = handler(main)
    with Origin(ws_script(ws_echo)) as o:
        rid, resp = ws_open(h, o, credits=100000)
        assert resp[b"credits"] == WS_WINDOW
        h.send(rid, F(body=b"x" * (WS_WINDOW + 1)))
        msgs = []
        while not msgs or msgs[-1].get(b"type") not in (b"cancel", b"error"):
            m = h.recv(rid, 1.0)
            if m is None:
                break
            msgs.append(m)
        assert msgs and msgs[-1].get(b"type") == b"cancel", msgs


def test_ws_window_zero_is_buffer_size(short: ClientCondure, handler: Callable) -> None:
    """--client-ws-window 0: the 101 grants --buffer-size, as condure 1.10.1 (D22)."""
    h = handler(short)
    with Origin(ws_script(ws_echo)) as o:
        rid, resp = ws_open(h, o, credits=1000)
        assert resp[b"credits"] == BUFFER_SIZE, resp
        h.send(rid, F(body=b"x" * (BUFFER_SIZE + 1)))
        m = h.expect(rid)
        assert m.get(b"type") == b"cancel", m


def test_ws_window_usable_without_grants(main: ClientCondure, handler: Callable) -> None:
    """D22: the handler may send the whole window at once, before any grant
    comes back (Pushpin's proxy relies on it, as it does with Zurl)."""
    h = handler(main)
    half = WS_WINDOW // 2
    with Origin(ws_script(ws_echo)) as o:
        rid, resp = ws_open(h, o, credits=1000)
        assert resp[b"credits"] == WS_WINDOW
        h.send(rid, F(body=b"a" * half, more=True))
        h.send(rid, F(body=b"b" * half))
        got, others = b"", []
        while len(got) < WS_WINDOW:
            m = h.expect(rid, 10)
            if m.get(b"type") is None:
                got += m.get(b"body", b"")
                h.send(rid, F(credits=len(m.get(b"body", b""))), type="credit")
            else:
                others.append(m)
        assert got == b"a" * half + b"b" * half
        others += h.quiet(rid, 0.3)
        assert [m.get(b"type") for m in others] == [b"credit"] * len(others), others
        assert sum(m[b"credits"] for m in others) == WS_WINDOW, others
    assert main.alive()


def test_ws_origin_pieces_up_to_the_window(main: ClientCondure, handler: Callable) -> None:
    """D22: with the credits for it, an origin message reaches the handler in
    pieces larger than --buffer-size (as Zurl sends whole frames), never past
    the window or the credits."""
    text = "w" * 150_000
    h = handler(main)
    with Origin(ws_script(sends_text(text))) as o:
        rid, _ = ws_open(h, o, credits=WS_WINDOW)
        pieces = message_pieces(h, rid)
        sizes = [len(p[b"body"]) for p in pieces]
        assert b"".join(p[b"body"] for p in pieces) == text.encode()
        assert max(sizes) > BUFFER_SIZE, sizes
        assert max(sizes) <= WS_WINDOW, sizes


def _kernel_send_buffer_max() -> int:
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


@pytest.fixture
def bigwin(tmp_path: Path) -> Iterator[ClientCondure]:
    """A condure whose WebSocket window is well over what the kernel buffers for
    a socket (4 x tcp_wmem's max), so that a handler can fill it while
    condure is blocked writing to an origin that reads nothing."""
    window = 4 * _kernel_send_buffer_max()
    cd = ClientCondure("bigwin", ["--client-ws-window", str(window)], tmp_path)
    cd.window = window  # type: ignore[attr-defined]
    try:
        cd.wait_started()
        yield cd
    finally:
        if cd.alive():
            cd.proc.send_signal(signal.SIGTERM)
        cd.stop()


def stalled_origin(release: threading.Event) -> Origin:
    """A WebSocket origin that accepts, reads nothing until `release` is set,
    then reads to the end (every event in its peer's log)."""
    def body(peer: WSPeer) -> None:
        peer.accept()
        release.wait(30)
        while (ev := peer.next_event(10)) is not None and not isinstance(ev, CloseConnection):
            pass
    o = Origin(ws_script(body))
    # inherited by the accepted socket: the origin's side buffers a few KB
    o.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return o


def _text_received(o: Origin) -> int:
    return sum(len(e.data) for e in list(o.conn(0).peer.log) if isinstance(e, TextMessage))


@pytest.mark.deadline(60)
def test_ws_window_held_while_origin_stalls(bigwin: ClientCondure, handler: Callable) -> None:
    """The memory bound of D22, both sides of it, while condure is blocked
    writing to an origin that reads nothing: the whole window is accepted and
    held (no grant until written), and reaches the origin once it reads; one
    byte past the window ends the session at once (cancel) instead of being
    queued."""
    window = bigwin.window  # type: ignore[attr-defined]
    half = window // 2
    h = handler(bigwin)
    release = threading.Event()
    o = stalled_origin(release)
    try:  # exactly the window
        rid, resp = ws_open(h, o, credits=1000)
        assert resp[b"credits"] == window
        h.send(rid, F(body=b"a" * half, more=True))  # condure blocks writing this
        h.send(rid, F(body=b"b" * (window - half)))
        assert h.quiet(rid, 0.5) == []  # neither a grant nor a cancel
        release.set()
        wait_until(lambda: _text_received(o) == window, 20, "the whole window at the origin")
        grants = []
        while sum(grants) < window:
            m = h.expect(rid, 5)
            assert m.get(b"type") == b"credit", m
            grants.append(m[b"credits"])
        assert sum(grants) == window
    finally:
        release.set()
        o.close()
    release = threading.Event()
    o = stalled_origin(release)
    try:  # one byte more
        rid, resp = ws_open(h, o, credits=1000)
        h.send(rid, F(body=b"a" * window, more=True))
        assert h.quiet(rid, 0.5) == []
        h.send(rid, F(body=b"b"))
        m = h.expect(rid, 3)
        assert m.get(b"type") == b"cancel", m
    finally:
        release.set()
        o.close()
    assert "handler sent more than its credits" in bigwin.log_text()
    assert bigwin.alive()


def test_wss_echo(main: ClientCondure, handler: Callable, certs: Certs) -> None:
    """wss:// with a verified certificate (SNI = URI host)."""
    h = handler(main)
    with Origin(ws_script(ws_echo), tls=tls_server_context(certs.trusted, "localhost")) as o:
        rid = h.start(F(uri=o.url("/echo", "wss", "localhost"), credits=100))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        assert h.expect(rid)[b"code"] == 101
        h.send(rid, F(body=b"secure"))
        msgs = []
        while not any(m.get(b"body") == b"secure" for m in msgs):
            msgs.append(h.expect(rid))
        assert o.sni == ["localhost"]


def test_wss_close_notify_after_both_closed(main: ClientCondure, handler: Callable,
                                           certs: Certs) -> None:
    """connmgr.md 2.3: a WebSocket that ends normally (closed both ways) ends its TLS
    connection with close_notify."""
    eofs: list[Any] = []

    def echo_then_read(peer: WSPeer) -> None:
        ws_echo(peer)  # returns after answering the handler's close
        try:
            eofs.append(peer.conn.sock.recv(1))  # b"": close_notify came; a bare close raises
        except ssl.SSLError as e:
            eofs.append(e)

    strict = tls_server_context(certs.trusted, "localhost")
    strict.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    h = handler(main)
    with Origin(ws_script(echo_then_read), tls=strict, ragged_eofs=False) as o:
        rid = h.start(F(uri=o.url("/echo", "wss", "localhost"), credits=100))
        assert h.expect(rid)[b"type"] == b"keep-alive"
        assert h.expect(rid)[b"code"] == 101
        h.send(rid, F(code=1000), type="close")
        assert h.expect(rid).get(b"type") == b"close"
        wait_until(lambda: eofs, 5, "the origin's read after the close")
    assert eofs == [b""], eofs


def test_ws_refused_error_after_ack(main: ClientCondure, handler: Callable) -> None:
    h = handler(main)
    rid = h.start(F(uri=f"ws://127.0.0.1:{get_free_port()}/", credits=10))
    msgs = [h.expect(rid), h.expect(rid)]
    check_stream_fields(msgs, rid)
    assert msgs[0][b"type"] == b"keep-alive"
    assert msgs[1][b"type"] == b"error" and msgs[1][b"condition"] == b"remote-connection-failed"


# ====================================================================================
# the example programs
# ====================================================================================


def _example_env(spec: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["CONDURE_ZSERVER"] = spec
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_example_get(main: ClientCondure) -> None:
    with Origin(fixed(HELLO)) as o:
        r = subprocess.run([sys.executable, "examples/get.py", o.url("/hello")], cwd=REPO_ROOT,
                           env=_example_env(main.req), capture_output=True, timeout=20)
        assert r.returncode == 0, r
        assert r.stdout == (b"code=200 reason=OK\nContent-Type: text/plain\n"
                            b"Content-Length: 6\n\nhello\n"), r.stdout
        assert o.requests[0].request_line == b"GET /hello HTTP/1.1"
        refused = f"http://127.0.0.1:{get_free_port()}/"
        r = subprocess.run([sys.executable, "examples/get.py", refused], cwd=REPO_ROOT,
                           env=_example_env(main.req), capture_output=True, timeout=20)
        assert r.returncode == 1 and b"error: remote-connection-failed" in r.stderr, r


def test_example_getstream(main: ClientCondure) -> None:
    body = b"".join(b"%05d\n" % i for i in range(4000))  # 24000 bytes: several pieces
    with Origin(fixed(response(body=body))) as o:
        r = subprocess.run([sys.executable, "examples/getstream.py", o.url("/big")],
                           cwd=REPO_ROOT, env=_example_env(main.base), capture_output=True,
                           timeout=20)
        assert r.returncode == 0, r
        head, _, got = r.stdout.partition(b"\n\n")
        assert head == b"code=200 reason=OK\nContent-Length: 24000", r.stdout[:200]
        assert got == body
        pieces = [int(line.split()[2]) for line in r.stderr.decode().splitlines()
                  if line.startswith("body piece:")]
        assert sum(pieces) == len(body) and len(pieces) >= 3, r.stderr
        assert max(pieces) <= BUFFER_SIZE


# --- buffer blocks: response heads grow, request heads of any size (connmgr.md 3.3, 3.4) ---


def big_response(size: int) -> bytes:
    """A 200 response whose head is exactly `size` bytes (one large X-Big field), body hello."""
    start = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Big: "
    return start + b"b" * (size - len(start) - 4) + b"\r\n\r\nhello\n"


def stream_get(h: StreamHandler, o: Origin, path: str = "/") -> bytes:
    return h.start(F(method="GET", uri=o.url(path), credits=100))


def grew(h: StreamHandler, rid: bytes, size: int) -> None:
    """The session delivers a head of `size` bytes and its body."""
    msgs = h.until_end(rid)
    head = next(m for m in msgs if b"code" in m)
    assert head[b"headers"][1] == [b"X-Big", b"b" * (size - len(big_response(0)) + 6)]
    assert body_of(msgs) == b"hello\n"


def failed(h: StreamHandler, rid: bytes) -> None:
    msgs = h.until_end(rid)
    assert [m.get(b"type") for m in msgs] == [b"keep-alive", b"error"], msgs
    assert msgs[-1][b"condition"] == b"undefined-condition"


def test_stream_origin_head_is_limited_to_buffer_size(main: ClientCondure,
                                                      handler: Callable) -> None:
    """With the defaults a response head is --buffer-size at most, as in
    condure and pushpin-connmgr (the session fails with undefined-condition);
    h11's own limit (16 KiB) used to decide."""
    h = handler(main)
    with Origin(fixed(big_response(8192))) as o:
        grew(h, stream_get(h, o), 8192)
    with Origin(fixed(big_response(8193))) as o:
        failed(h, stream_get(h, o))


def test_req_origin_head_is_limited_to_buffer_size(blocks: ClientCondure,
                                                   zctx: zmq.Context) -> None:
    """REQ exchanges never borrow blocks (as pushpin-connmgr's)."""
    with Origin(fixed(big_response(8192))) as o:
        reply = req_call(zctx, blocks, F(method="GET", uri=o.url("/")))
        assert reply is not None and reply[b"body"] == b"hello\n"
    with Origin(fixed(big_response(9000))) as o:
        reply = req_call(zctx, blocks, F(method="GET", uri=o.url("/")))
        assert reply == {b"type": b"error", b"condition": b"undefined-condition"}


def test_stream_origin_head_grows_with_a_spare_block(blocks: ClientCondure,
                                                     handler: Callable) -> None:
    h = handler(blocks)
    with Origin(fixed(big_response(16384))) as o:
        grew(h, stream_get(h, o), 16384)
        grew(h, stream_get(h, o), 16384)  # on the pooled connection: the block came back
    with Origin(fixed(big_response(16385))) as o:  # past what one spare block gives
        failed(h, stream_get(h, o))
    with Origin(fixed(big_response(12000))) as o:  # and the refusal gave it back
        grew(h, stream_get(h, o), 12000)


def test_stream_spare_block_is_held_by_one_head_at_a_time(blocks: ClientCondure,
                                                         handler: Callable) -> None:
    """connmgr.md 8, scenario 19 on the client side."""
    h = handler(blocks)
    go_on = threading.Event()
    first = big_response(12000)

    def stall(origin: Origin, conn: Conn) -> None:
        conn.read_request()
        conn.send(first[:10000])
        go_on.wait(10)
        conn.send(first[10000:])
        conn.wait_eof(10)

    with Origin(stall) as slow, Origin(fixed(big_response(12000))) as o:
        rid1 = stream_get(h, slow)
        assert h.expect(rid1)[b"type"] == b"keep-alive"
        slow.conn(0)
        time.sleep(0.5)  # condure has read the first 10000 bytes
        failed(h, stream_get(h, o))
        go_on.set()
        grew(h, rid1, 12000)
        grew(h, stream_get(h, o), 12000)


@pytest.mark.parametrize("end", ["origin-closes", "handler-cancels"])
def test_stream_block_comes_back_when_a_head_is_cut_short(blocks: ClientCondure,
                                                          handler: Callable, end: str) -> None:
    h = handler(blocks)
    done = threading.Event()

    def cut(origin: Origin, conn: Conn) -> None:
        conn.read_request()
        conn.send(big_response(12000)[:10000])
        if end == "handler-cancels":
            conn.wait_eof(10)
        else:
            done.wait(0.5)

    with Origin(cut) as broken, Origin(fixed(big_response(12000))) as o:
        rid = stream_get(h, broken)
        assert h.expect(rid)[b"type"] == b"keep-alive"
        if end == "handler-cancels":
            broken.conn(0)
            time.sleep(0.5)
            h.send(rid, type="cancel")
            assert broken.conn(0).eof.wait(5)  # condure closed the origin connection
        else:
            m = h.expect(rid)
            assert (m.get(b"type"), m.get(b"condition")) == (b"error", b"undefined-condition")
        time.sleep(0.2)
        grew(h, stream_get(h, o), 12000)


def test_request_head_of_any_size_is_sent(main: ClientCondure, handler: Callable,
                                          zctx: zmq.Context) -> None:
    """connmgr.md 3.4: an outbound request head is not limited by --buffer-size."""
    big = [[b"X-Large", b"v" * 30000]]
    with Origin(fixed(HELLO)) as o:
        h = handler(main)
        rid = h.start(F(method="GET", uri=o.url("/s"), headers=big, credits=100))
        assert body_of(h.until_end(rid)) == b"hello\n"
        reply = req_call(zctx, main, F(method="GET", uri=o.url("/r"), headers=big))
        assert reply is not None and reply[b"body"] == b"hello\n"
        assert [hdr(r.headers, b"x-large") for r in o.requests] == [[b"v" * 30000]] * 2

