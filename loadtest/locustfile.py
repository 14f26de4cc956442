"""Locust users for condure behind loadtest/bench_handler.py (HTTP 200 + WebSocket echo).

    .venv/bin/python -m locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 30s \\
        --host http://127.0.0.1:8000

or `loadtest/locust_run.py`, which also starts condure and the handler. Two users of
equal weight: `HelloUser` (FastHttpUser, GET / must be 200 with bench_handler's
body) and `EchoUser` (one WebSocket per user; each task sends a text message and
waits for its echo, reported as request type "WS", name "echo"; the handshake is
reported as "WS" "connect"). The WebSocket client is wsproto (a runtime dependency
of condure) over a socket that locust's gevent monkey patching makes cooperative.
`--think-time S` adds a pause between tasks (default none: closed loop, full speed).
"""
from __future__ import annotations

import socket
from urllib.parse import urlsplit

from locust import FastHttpUser, User, events, task
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Message, Ping, RejectConnection,
                            Request, TextMessage)

HELLO_BODY = b"hello world\n"
WS_PATH = "/echo"
IO_TIMEOUT = 10.0
RECV_SIZE = 65536


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument("--think-time", type=float, default=0.0,
                        help="seconds each user waits between tasks (default 0)")
    parser.add_argument("--ws-message-size", type=int, default=16,
                        help="bytes per WebSocket echo message (default 16)")


def think(user: User) -> float:
    return user.environment.parsed_options.think_time


class WsError(Exception):
    """The WebSocket was refused, closed or broke; the user reconnects on its next task."""


class WsClient:
    """A blocking (gevent-cooperative) WebSocket client: handshake, echo, close."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        self.ws = WSConnection(ConnectionType.CLIENT)
        try:
            self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=path)))
            for event in self.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    raise WsError(f"handshake rejected with status {event.status_code}")
        except BaseException:
            self.sock.close()
            raise

    def events(self):  # type: ignore[no-untyped-def]
        """wsproto events, reading the socket as needed; answers pings on the way."""
        while True:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                raise WsError("connection closed by the server")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise WsError(f"closed by the server: {event.code} {event.reason}")
                else:
                    yield event

    def echo(self, text: str) -> int:
        """Send `text`, wait for the whole echo; the echoed length."""
        self.sock.sendall(self.ws.send(Message(data=text)))
        got: list[str] = []
        for event in self.events():
            if isinstance(event, TextMessage):
                got.append(event.data)
                if event.message_finished:
                    break
        echoed = "".join(got)
        if echoed != text:
            raise WsError(f"echo mismatch: sent {len(text)} chars, got {len(echoed)}")
        return len(echoed)

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except Exception:
            pass  # already broken: nothing to say goodbye to
        self.sock.close()


class HelloUser(FastHttpUser):
    wait_time = think

    @task
    def hello(self) -> None:
        with self.client.get("/", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif resp.content != HELLO_BODY:
                resp.failure(f"unexpected body {resp.content[:40]!r}")


class EchoUser(User):
    wait_time = think

    def on_start(self) -> None:
        self.conn: WsClient | None = None
        size = self.environment.parsed_options.ws_message_size
        self.text = "x" * size

    @task
    def echo(self) -> None:
        if self.conn is None:
            url = urlsplit(self.host)
            with self.environment.events.request.measure("WS", "connect"):
                self.conn = WsClient(url.hostname or "127.0.0.1", url.port or 80, WS_PATH)
            if self.conn is None:
                return  # reported as a failed "connect"; the next task tries again
        conn = self.conn
        with self.environment.events.request.measure("WS", "echo") as meta:
            try:
                meta["response_length"] = conn.echo(self.text)
            except Exception:
                conn.close()
                self.conn = None
                raise

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
