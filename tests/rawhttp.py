"""A tiny raw HTTP/1.x client: exact bytes out, exact bytes in.

No HTTP library on purpose: the tests check the bytes condure writes
(status line, header order and case, chunk framing) and when it closes.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 5.0


class Closed(Exception):
    """The server closed the connection before the expected bytes came."""


@dataclass
class Response:
    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    head: bytes  # the raw head, up to and including the blank line
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)  # raw chunk payloads, if chunked
    raw: bytes = b""  # head + body exactly as received

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def names(self) -> list[bytes]:
        return [n for n, _ in self.headers]


class Client:
    def __init__(self, port: int, timeout: float = DEFAULT_TIMEOUT,
                 host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    # --- low level ---------------------------------------------------------

    def _fill(self, timeout: float | None = None) -> None:
        """Read once more into the buffer; Closed at EOF or reset."""
        if self.eof:
            raise Closed(bytes(self.buf))
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise Closed(bytes(self.buf))
        self.buf += data

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        return self._take(n)

    def read_line(self) -> bytes:
        """One line including its CRLF."""
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        return self._take(i + 2)

    def read_until_close(self, timeout: float | None = None) -> bytes:
        """Everything up to EOF (reset counts as EOF); fails if EOF does not come."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection not closed; got {bytes(self.buf)!r}")
            try:
                self._fill(left)
            except Closed:
                return self._take(len(self.buf))
            except socket.timeout:
                continue

    def closed_within(self, timeout: float) -> bool:
        """True if EOF arrives within `timeout` with no data before it."""
        if self.buf:
            return False
        try:
            self._fill(timeout)
        except Closed:
            return True
        except socket.timeout:
            return False
        return False

    def expect_silence(self, seconds: float = 0.3) -> None:
        """Assert no byte and no EOF arrives within `seconds`."""
        assert not self.buf, bytes(self.buf)
        try:
            self._fill(seconds)
        except socket.timeout:
            return
        except Closed:
            raise AssertionError("connection closed unexpectedly") from None
        raise AssertionError(f"unexpected bytes: {bytes(self.buf)!r}")

    # --- HTTP ------------------------------------------------------------

    def read_head(self) -> Response:
        """A response head (status line + headers + blank line)."""
        while (i := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = self._take(i + 4)
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep, f"bad header line {line!r} in {head!r}"
            headers.append((name, value.strip()))
        return Response(version, int(code), reason, headers, head, raw=head)

    def read_chunk(self) -> tuple[bytes, bytes]:
        """One chunk: (size line without CRLF, data); (b"0", b"") ends the body."""
        size_line = self.read_line()[:-2]
        size = int(size_line.split(b";")[0], 16)
        data = self.read_exact(size)
        if size == 0:
            assert self.read_exact(2) == b"\r\n"  # no trailers expected from condure
        else:
            assert self.read_exact(2) == b"\r\n", "chunk not followed by CRLF"
        return size_line, data

    def read_response(self, head_request: bool = False) -> Response:
        """A whole response; the body framing follows the head (RFC 9112 section 6.3)."""
        r = self.read_head()
        length = r.header(b"content-length")
        te = r.header(b"transfer-encoding")
        if head_request or 100 <= r.status < 200 or r.status in (204, 304):
            return r
        if te is not None:
            assert te.lower() == b"chunked", te
            raw = bytearray(r.head)
            while True:
                size_line, data = self.read_chunk()
                raw += size_line + b"\r\n" + data + b"\r\n"
                if not data:
                    break
                r.chunks.append(data)
            r.body = b"".join(r.chunks)
            r.raw = bytes(raw)
        elif length is not None:
            r.body = self.read_exact(int(length))
            r.raw = r.head + r.body
        else:
            r.body = self.read_until_close()
            r.raw = r.head + r.body
        return r


def request(port: int, data: bytes, head_request: bool = False) -> Response:
    """Send one request on a new connection and read one response."""
    with Client(port) as c:
        c.send(data)
        return c.read_response(head_request)


def get(path: str = "/", host: bytes = b"example.com", extra: bytes = b"",
        version: bytes = b"1.1", method: bytes = b"GET") -> bytes:
    """Bytes of a simple request without a body."""
    host_line = b"Host: " + host + b"\r\n" if host else b""
    return (method + b" " + path.encode() + b" HTTP/" + version + b"\r\n" + host_line
            + extra + b"\r\n")
