"""A minimal HTTP/2 client for the tests (the h2 library over a real socket):
h2c with prior knowledge, or over a TLS socket the caller made."""
from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events


class H2Client:
    """A minimal HTTP/2 client (h2c, prior knowledge) for the tests."""

    def __init__(self, port: int, timeout: float = 5.0, sock: socket.socket | None = None,
                 scheme: bytes = b"http") -> None:
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.scheme = scheme
        self.local_port = self.sock.getsockname()[1]
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.flush()
        self.responses: dict[int, dict] = {}
        self.events: list = []
        self.terminated: h2.events.ConnectionTerminated | None = None

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: bytes, path: bytes, headers: list = (), body: bytes | None = None,
                authority: bytes = b"example.com") -> int:
        sid = self.conn.get_next_available_stream_id()
        hs = [(b":method", method), (b":scheme", self.scheme), (b":authority", authority),
              (b":path", path), *headers]
        self.conn.send_headers(sid, hs, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        self.responses[sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        return sid

    def pump(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        for ev in self.conn.receive_data(data):
            self.events.append(ev)
            r = self.responses.get(getattr(ev, "stream_id", 0))
            if isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = ev
            elif isinstance(ev, h2.events.ResponseReceived):
                r["headers"] = ev.headers
            elif isinstance(ev, h2.events.DataReceived):
                r["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                r["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and r is not None:
                r["reset"] = ev.error_code
        self.flush()

    def response(self, sid: int, timeout: float = 5.0) -> dict:
        end = time.monotonic() + timeout
        r = self.responses[sid]
        while not (r["ended"] or r["reset"] is not None):
            if time.monotonic() > end:
                raise AssertionError(f"no complete response on stream {sid}: {r}")
            self.pump()
        return r
