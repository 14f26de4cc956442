"""The README's scale-out topology on loopback: handlers bind, several condure
instances (each with its own --id) connect to every handler.

Two `python -m condure` processes and two handlers (threads of this process
with plain pyzmq sockets, each binding PULL on P, ROUTER on P+1 and PUB on
P+2 as the README says). Checked, through real sockets only:

* each instance spreads its requests over both handlers (PUSH round robin),
  so each handler sees requests from both instances;
* every one of many concurrent clients gets its own response (a token in the
  path, echoed back), plain and streamed in several packets, because a
  handler publishes under the `from` of the request and each instance
  subscribes to its own id only;
* WebSocket messages reach the handler that accepted the session (condure's
  ROUTER addresses it by the handler's `from`) and come back;
* SIGTERM to one instance (by PID): it finishes its response in flight and
  exits 0 (D12) while the other instance keeps serving everything.
"""
from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import tnetstring
import zmq
from zmq.utils.monitor import recv_monitor_message

from conftest import get_free_port
from e2e.test_websocket import TEXT, WSClient, upgrade
from rawhttp import Client, Response, get

POLL_MS = 50
READY_TIMEOUT = 10.0
CLIENT_TIMEOUT = 10.0
CLIENTS = 8  # concurrent client threads
PER_INSTANCE = 16  # requests of each kind through each instance, per batch
INSTANCES = (b"condure1", b"condure2")


# --------------------------------------------------------------------------
# a handler that binds, as in the README


@dataclass
class Seen:
    """What one handler received, for the assertions (appended by its thread)."""
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)  # (from, path)
    ws_messages: list[tuple[bytes, bytes]] = field(default_factory=list)  # (from, body)
    unknown: list[dict] = field(default_factory=list)  # ROUTER packets of no session of ours
    topics: set[bytes] = field(default_factory=set)  # current subscriptions
    handshakes: int = 0  # ROUTER peers that completed the ZMTP handshake


class BoundHandler:
    """A ZHTTP handler in a thread: PULL on P, ROUTER on P+1, XPUB on P+2.

    Answers by path: `/echo/T` with one packet, `/stream/T` with a head and
    three body packets, `/hold/T` with a head and a first part, the rest
    once `release` is set; `/ws/T` accepts a WebSocket and echoes each text
    message prefixed with the handler's name. Sessions are keyed by
    (instance, id): ids of different instances may be equal.
    """

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.seen = Seen()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._seq: dict[tuple[bytes, bytes], int] = {}
        self._held: list[tuple[bytes, bytes, bytes]] = []  # (instance, id, token)
        self._ws: set[tuple[bytes, bytes]] = set()
        self.ctx = zmq.Context()
        self.pull = self._socket(zmq.PULL)
        self.router = self._socket(zmq.ROUTER)
        self.router.setsockopt(zmq.IDENTITY, name)
        self.pub = self._socket(zmq.XPUB)
        self.monitor = self.router.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.port = self._bind_run()
        self.thread = threading.Thread(target=self._run, name=name.decode(), daemon=True)
        self.thread.start()

    @property
    def spec(self) -> str:
        """The --zclient-stream base a condure instance connects with."""
        return f"tcp://127.0.0.1:{self.port}"

    def _socket(self, kind: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        return s

    def _bind_run(self) -> int:
        """Bind the three sockets on consecutive ports (a tcp base uses P, P+1,
        P+2); another free port on a clash, a bounded number of times."""
        socks = (self.pull, self.router, self.pub)
        for _ in range(50):
            base = get_free_port()
            if base + 2 > 65535:
                continue
            bound: list[tuple[zmq.Socket, str]] = []
            try:
                for offset, sock in enumerate(socks):
                    endpoint = f"tcp://127.0.0.1:{base + offset}"
                    sock.bind(endpoint)
                    bound.append((sock, endpoint))
                return base
            except zmq.ZMQError:
                for sock, endpoint in bound:
                    sock.unbind(endpoint)
        raise AssertionError("no run of three free ports found")

    # --- the thread ---------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        for sock in (self.pull, self.router, self.pub, self.monitor):
            poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if self.pub in ready:
                    self._on_subscription(self.pub.recv())
                if self.monitor in ready:
                    recv_monitor_message(self.monitor)
                    self.seen.handshakes += 1
                if self.pull in ready:
                    self._on_request(self._decode(self.pull.recv()))
                if self.router in ready:
                    self._on_packet(self._decode(self.router.recv_multipart()[-1]))
                if self._held and self.release.is_set():
                    self._finish_held()
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self.error = e

    @staticmethod
    def _decode(raw: bytes) -> dict:
        assert raw[:1] == b"T", raw[:40]
        return tnetstring.loads(raw[1:])

    def _on_subscription(self, msg: bytes) -> None:
        if msg[:1] == b"\x01":
            self.seen.topics.add(msg[1:])
        elif msg[:1] == b"\x00":
            self.seen.topics.discard(msg[1:])

    def _send(self, instance: bytes, rid: bytes, fields: dict) -> None:
        """Publish a packet of session (instance, rid) under the instance's id."""
        key = (instance, rid)
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        msg = {b"from": self.name, b"id": rid, b"seq": seq, **fields}
        self.pub.send(instance + b" T" + tnetstring.dumps(msg))

    def _on_request(self, req: dict) -> None:
        instance, rid = req[b"from"], req[b"id"]
        path = req[b"uri"].split(b"/", 3)[-1] if req[b"uri"].count(b"/") >= 3 else b""
        kind, _, token = path.partition(b"/")
        self.seen.requests.append((instance, b"/" + path))
        headers = [[b"X-Handler", self.name], [b"X-Token", token]]
        if kind == b"echo":
            self._send(instance, rid, {b"code": 200, b"reason": b"OK",
                                       b"headers": headers + [[b"Content-Type", b"text/plain"]],
                                       b"body": b"echo %s\n" % token})
        elif kind in (b"stream", b"hold"):
            self._send(instance, rid, {b"code": 200, b"reason": b"OK", b"headers": headers,
                                       b"body": b"part0 %s\n" % token, b"more": True})
            if kind == b"hold":
                self._held.append((instance, rid, token))
            else:
                self._finish(instance, rid, token)
        elif kind == b"ws":
            self._ws.add((instance, rid))
            self._send(instance, rid, {b"code": 101, b"reason": b"Switching Protocols",
                                       b"headers": headers, b"credits": 8192})
        else:
            self._send(instance, rid, {b"code": 404, b"reason": b"Not Found",
                                       b"headers": [], b"body": b"no such path\n"})

    def _finish(self, instance: bytes, rid: bytes, token: bytes) -> None:
        self._send(instance, rid, {b"body": b"part1 %s\n" % token, b"more": True})
        self._send(instance, rid, {b"body": b"part2 %s\n" % token})

    def _finish_held(self) -> None:
        held, self._held = self._held, []
        for instance, rid, token in held:
            self._finish(instance, rid, token)

    def _on_packet(self, p: dict) -> None:
        """A later packet of a session (condure's ROUTER found us by our `from`)."""
        instance, rid, ptype = p.get(b"from"), p.get(b"id"), p.get(b"type")
        if ptype in (b"credit", b"keep-alive", b"cancel", b"close"):
            if ptype in (b"cancel", b"close"):
                self._ws.discard((instance, rid))
            return
        if ptype is None and (instance, rid) in self._ws:
            body = p.get(b"body", b"")
            self.seen.ws_messages.append((instance, body))
            self._send(instance, rid, {b"content-type": b"text",
                                       b"body": self.name + b": " + body})
            return
        self.seen.unknown.append(p)

    # --- the test's side ----------------------------------------------------

    def wait_ready(self, topics: set[bytes], routers: int) -> None:
        """Until every instance subscribed here (a PUB drops what it publishes
        before) and every instance's ROUTER finished its handshake with ours."""
        end = time.monotonic() + READY_TIMEOUT
        while not (topics <= self.seen.topics and self.seen.handshakes >= routers):
            self.check()
            assert time.monotonic() < end, \
                f"{self.name!r}: topics {self.seen.topics}, handshakes {self.seen.handshakes}"
            time.sleep(0.02)

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"handler {self.name!r} failed") from self.error
        assert self.thread.is_alive() or self._stop.is_set(), "handler thread ended"

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "handler thread did not stop"
        self.router.disable_monitor()
        self.ctx.destroy(linger=0)


@pytest.fixture
def handlers() -> Iterator[list[BoundHandler]]:
    made = [BoundHandler(b"handler1"), BoundHandler(b"handler2")]
    yield made
    for h in made:
        h.close()
    for h in made:
        h.check()


# --------------------------------------------------------------------------
# clients


def token() -> str:
    return "%08x" % random.getrandbits(32)


def fetch(port: int, path: str) -> Response:
    with Client(port, timeout=CLIENT_TIMEOUT) as client:
        client.send(get(path, host=b"localhost"))
        return client.read_response()


@dataclass
class Outcome:
    instance: bytes
    kind: str
    token: str
    handler: bytes  # X-Handler of the response


def check_response(resp: Response, kind: str, tok: str) -> bytes:
    """Assert the response is the one for this client's token; its handler."""
    assert resp.status == 200, resp.raw
    assert resp.header(b"X-Token") == tok.encode(), resp.raw
    if kind == "echo":
        assert resp.body == f"echo {tok}\n".encode(), resp.raw
    else:
        assert resp.body == "".join(f"part{i} {tok}\n" for i in range(3)).encode(), resp.raw
        assert len(resp.chunks) == 3, resp.raw  # one chunk per handler packet
    return resp.header(b"X-Handler")


def one_request(port: int, instance: bytes, kind: str) -> Outcome:
    tok = token()
    return Outcome(instance, kind, tok, check_response(fetch(port, f"/{kind}/{tok}"), kind, tok))


def batch(instances: dict[bytes, int], per_instance: int = PER_INSTANCE) -> list[Outcome]:
    """Plain and streamed requests through each instance, CLIENTS at a time, interleaved."""
    jobs: list[Callable[[], Outcome]] = []
    for i in range(per_instance):
        for instance, port in instances.items():
            kind = "echo" if i % 2 else "stream"
            jobs.append(lambda p=port, n=instance, k=kind: one_request(p, n, k))
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result(timeout=60) for f in futures]


def assert_routed(outcomes: list[Outcome], handlers: list[BoundHandler]) -> None:
    """Each response came from the handler that logged its token, via the
    instance its client used; each handler saw requests from every instance."""
    by_token = {}
    for h in handlers:
        for instance, path in h.seen.requests:
            by_token[path.rsplit(b"/", 1)[-1]] = (h.name, instance)
    for o in outcomes:
        assert by_token.get(o.token.encode()) == (o.handler, o.instance), (o, by_token)
    instances = {o.instance for o in outcomes}
    for h in handlers:
        froms = {by_token[o.token.encode()][1] for o in outcomes if o.handler == h.name}
        assert froms == instances, f"{h.name!r} got requests only from {froms}"


def ws_echo(port: int, tok: str) -> tuple[bytes, bytes]:
    """Open a WebSocket, send one text message, return (accepting handler, echo)."""
    with WSClient(port, timeout=CLIENT_TIMEOUT) as client:
        client.send(upgrade(f"/ws/{tok}", host=b"localhost"))
        head = client.read_head()
        assert head.status == 101, head.raw
        client.send_frame(TEXT, f"hello {tok}".encode())
        opcode, content, _ = client.read_message()
        assert opcode == TEXT
        return head.header(b"X-Handler"), content


# --------------------------------------------------------------------------
# the test


def start_instance(condure, handlers: list[BoundHandler], name: bytes, *args: str):
    """`python -m condure --id NAME --zclient-connect` with one
    --zclient-stream per handler, as in the README."""
    first, *rest = (h.spec for h in handlers)
    more = [a for spec in rest for a in ("--zclient-stream", spec)]
    return condure("--id", name.decode(), "--zclient-connect", *more, *args, base=first)


@pytest.mark.deadline(120)
def test_two_instances_share_two_handlers(condure, handlers: list[BoundHandler]) -> None:
    c1 = start_instance(condure, handlers, b"condure1", "--shutdown-timeout", "20")
    c2 = start_instance(condure, handlers, b"condure2")
    for h in handlers:
        h.wait_ready({b"condure1 ", b"condure2 "}, routers=2)
        # each instance subscribes to its own id only (the space ends the topic)
        assert h.seen.topics == {b"condure1 ", b"condure2 "}, h.seen.topics
    both = {b"condure1": c1.port, b"condure2": c2.port}

    outcomes = batch(both)
    assert_routed(outcomes, handlers)
    for h in handlers:
        assert not h.seen.unknown, h.seen.unknown

    # WebSocket: two sessions in a row through each instance go to the two
    # handlers in turn; messages reach the accepting handler over the ROUTER
    for name, port in both.items():
        accepted = set()
        for _ in range(2):
            tok = token()
            handler, echo = ws_echo(port, tok)
            assert echo == handler + f": hello {tok}".encode()
            accepted.add(handler)
        assert accepted == {b"handler1", b"handler2"}, (name, accepted)
    ws_seen = {(h.name, i) for h in handlers for i, _ in h.seen.ws_messages}
    assert ws_seen == {(h.name, i) for h in handlers for i in INSTANCES}, ws_seen

    # a response in flight through condure1, then SIGTERM to condure1 alone
    held = token()
    slow = Client(c1.port, timeout=CLIENT_TIMEOUT)
    try:
        slow.send(get(f"/hold/{held}", host=b"localhost"))
        head = slow.read_head()
        assert head.status == 200 and head.header(b"X-Token") == held.encode(), head.raw
        assert slow.read_chunk()[1] == f"part0 {held}\n".encode()
        c1.proc.send_signal(signal.SIGTERM)
        c1.wait_log("stopping...")
        assert c1.alive(), "condure1 should wait for its response in flight (D12)"
        # condure2 serves everything meanwhile, over both handlers
        assert_routed(batch({b"condure2": c2.port}), handlers)
        assert c1.alive(), "condure1 should still wait for its response in flight (D12)"
        for h in handlers:
            h.release.set()
        rest = [slow.read_chunk()[1] for _ in range(3)]
        assert rest == [f"part1 {held}\n".encode(), f"part2 {held}\n".encode(), b""], rest
    finally:
        slow.close()
    assert c1.proc.wait(15) == 0, c1.log_text()

    # condure1 is gone: refused at its port, unsubscribed at the handlers
    with pytest.raises(OSError):
        Client(c1.port, timeout=1).close()
    for h in handlers:
        end = time.monotonic() + READY_TIMEOUT
        while h.seen.topics != {b"condure2 "}:
            assert time.monotonic() < end, h.seen.topics
            time.sleep(0.02)

    # and condure2 still serves every request, over both handlers
    after = batch({b"condure2": c2.port})
    assert_routed(after, handlers)
    tok = token()
    handler, echo = ws_echo(c2.port, tok)
    assert echo == handler + f": hello {tok}".encode()
    for h in handlers:
        h.check()
        assert not h.seen.unknown, h.seen.unknown
    assert c2.alive(), c2.log_text()
