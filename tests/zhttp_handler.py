"""A scripted ZHTTP handler for tests, built on plain (blocking) pyzmq.

Socket layout is the handler recipe of shared/zhttp/server.md section 2.2:
PULL on BASE-out (first packets), ROUTER with identity = our `from` on
BASE-out-stream (later packets of our sessions), and a PUB towards BASE-in.
The PUB is an XPUB so that the constructor can wait until condure's SUB
subscription has arrived (PUB/SUB slow joiner: anything published before
that is silently lost); the ROUTER waits for its ZMTP handshake, because
condure's ROUTER_MANDATORY sends to an unknown identity fail.

tnetstring3 takes and returns bytes only; `send` converts str keys and
values to bytes for convenience, `send_raw` sends exactly what it is given.
"""
from __future__ import annotations

import time
from typing import Any

import tnetstring
import zmq

DEFAULT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0

Req = dict | bytes | str


def to_bytes(value: Any) -> Any:
    """str -> bytes recursively (dict keys too); everything else unchanged."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return {to_bytes(k): to_bytes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_bytes(v) for v in value]
    return value


def nested_lists(depth: int) -> bytes:
    """A tnetstring of `depth` lists, each holding the next (900: about 5 KB),
    deeper than tnetstring's decoder will go (it raises RecursionError)."""
    out = b"0:]"
    for _ in range(depth):
        out = b"%d:%s]" % (len(out), out)
    return out


def rid_of(req: Req) -> bytes:
    """The session id of a request packet (or an id given directly)."""
    if isinstance(req, dict):
        return req[b"id"]
    return to_bytes(req)


def field_name(name: str) -> bytes:
    """Python keyword -> ZHTTP field name: content_type -> b"content-type"."""
    return name.replace("_", "-").encode()


class Handler:
    """One handler process's worth of sockets.

    `seq` maps a session id to the seq of our next packet on it; `send`
    fills it in (and `from`) unless the packet gives its own.
    """

    def __init__(self, base: str, identity: bytes = b"test-handler",
                 instance: bytes = b"condure", pull: bool = True, bind: bool = False,
                 wait: bool = True) -> None:
        self.base = base
        self.identity = identity
        self.instance = instance
        self.seq: dict[bytes, int] = {}
        self.sessions: dict[bytes, None] = {}  # ids seen, in order
        self.ctx = zmq.Context()
        attach = "bind" if bind else "connect"  # bind: for condure --zclient-connect
        self.pull: zmq.Socket | None = None
        if pull:
            self.pull = self._socket(zmq.PULL)
            getattr(self.pull, attach)(base + "-out")
        self.router = self._socket(zmq.ROUTER)
        self.router.setsockopt(zmq.IDENTITY, identity)
        self._monitor = self.router.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        getattr(self.router, attach)(base + "-out-stream")
        self.pub = self._socket(zmq.XPUB)
        getattr(self.pub, attach)(base + "-in")
        if wait:
            self.wait_ready()

    def _socket(self, kind: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        return s

    def wait_ready(self, timeout: float = CONNECT_TIMEOUT) -> None:
        """Wait for condure's subscription and for the ROUTER handshake.

        Called by the constructor unless wait=False (a binding handler must
        exist before condure connects to it).
        """
        monitor = self._monitor
        try:
            if not self.pub.poll(timeout * 1000):
                raise AssertionError(f"no subscription from condure on {self.base}-in")
            sub = self.pub.recv()
            assert sub == b"\x01" + self.instance + b" ", sub
            if not monitor.poll(timeout * 1000):
                raise AssertionError(f"ROUTER handshake with {self.base}-out-stream timed out")
            monitor.recv_multipart()
        finally:
            self.router.disable_monitor()
            monitor.close(0)

    def close(self, cancel_sessions: bool = False) -> None:
        """Close the sockets; with cancel_sessions, first send condure a
        `cancel` for every session this handler has seen, so that nothing
        waits on it (a finished session ignores the cancel)."""
        if cancel_sessions and self.sessions:
            ids = [{b"id": rid} for rid in self.sessions]
            for i in range(0, len(ids), 128):  # at most 128 ids per packet
                self.send({b"id": ids[i:i + 128], b"type": b"cancel"})
            self.pub.close(linger=1000)  # deliver them; no wait if condure is gone
        self.ctx.destroy(linger=0)

    # --- receiving ------------------------------------------------------

    def recv_request(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The next first packet from the PULL socket, as a dict (wire order kept)."""
        assert self.pull is not None, "this handler has no PULL socket"
        if not self.pull.poll(timeout * 1000):
            raise AssertionError(f"no request packet within {timeout} s")
        frames = self.pull.recv_multipart()
        assert len(frames) == 1, frames
        self.last_raw = frames[0]
        assert frames[0][:1] == b"T", frames[0]
        req = tnetstring.loads(frames[0][1:])
        self.sessions[req[b"id"]] = None
        return req

    def recv(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The next packet on the ROUTER (the last frame, without its T)."""
        if not self.router.poll(timeout * 1000):
            raise AssertionError(f"no packet on the ROUTER within {timeout} s")
        frames = self.router.recv_multipart()
        self.last_frames = frames
        payload = frames[-1]
        assert payload[:1] == b"T", frames
        return tnetstring.loads(payload[1:])

    def recv_type(self, ptype: bytes | None, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """The next ROUTER packet, asserting its type (None = data)."""
        p = self.recv(timeout)
        assert p.get(b"type") == ptype, p
        return p

    def expect_nothing(self, seconds: float = 0.3) -> None:
        """Assert that neither the PULL nor the ROUTER gets anything for `seconds`."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.pull is not None:
            poller.register(self.pull, zmq.POLLIN)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready = dict(poller.poll(left * 1000))
            if ready:
                sock = next(iter(ready))
                raise AssertionError(f"unexpected packet: {sock.recv_multipart()!r}")

    # --- sending --------------------------------------------------------

    def send(self, msg: dict, instance: bytes | None = None) -> dict:
        """Publish a packet; fills in `from` and the session's next `seq`.

        A key given with the value None is left out (e.g. seq=None sends a
        packet without seq). Multi-id packets (an id list) get no seq.
        Returns the packet as sent.
        """
        msg = self._filled(msg)
        prefix = self.instance if instance is None else instance
        self.pub.send(prefix + b" T" + tnetstring.dumps(msg))
        return msg

    def send_routed(self, msg: dict, raw: bytes | None = None) -> dict:
        """Send a packet to condure's ROUTER instead of publishing it
        (pushpin-connmgr's router-resp): `[instance, b"", b"T..."]`, no address
        prefix; filled in as by `send`. `raw`: this payload instead of the
        packet (for malformed ones)."""
        msg = self._filled(msg)
        payload = raw if raw is not None else b"T" + tnetstring.dumps(msg)
        self.router.send_multipart([self.instance, b"", payload])
        return msg

    def _filled(self, msg: dict) -> dict:
        """`msg` with `from` and the session's next `seq` (see `send`)."""
        msg = to_bytes(dict(msg))
        msg.setdefault(b"from", self.identity)
        rid = msg.get(b"id")
        if isinstance(rid, bytes):
            self.sessions[rid] = None
            if b"seq" not in msg:
                msg[b"seq"] = self.seq.get(rid, 0)
            if isinstance(msg[b"seq"], int) and not isinstance(msg[b"seq"], bool):
                self.seq[rid] = msg[b"seq"] + 1
        return {k: v for k, v in msg.items() if v is not None}

    def send_raw(self, data: bytes) -> None:
        """Publish bytes exactly as given (for garbage)."""
        self.pub.send(data)

    def respond(self, req: Req, code: int = 200, reason: bytes | str = b"OK",
                headers: list | tuple = (), body: bytes | str = b"", more: bool = False,
                **extra: Any) -> dict:
        """The response head (and first body bytes) for a request."""
        msg: dict[bytes, Any] = {b"id": rid_of(req), b"code": code, b"reason": reason,
                                 b"headers": [list(h) for h in headers]}
        if body:
            msg[b"body"] = body
        if more:
            msg[b"more"] = True
        msg.update({field_name(k): v for k, v in extra.items()})
        return self.send(msg)

    def body(self, req: Req, data: bytes | str = b"", more: bool = False, **extra: Any) -> dict:
        """A later data packet of a response."""
        msg: dict[bytes, Any] = {b"id": rid_of(req)}
        if data:
            msg[b"body"] = data
        if more:
            msg[b"more"] = True
        msg.update({field_name(k): v for k, v in extra.items()})
        return self.send(msg)

    def packet(self, req: Req, ptype: bytes | str, **extra: Any) -> dict:
        """A packet of the given type (keep-alive, cancel, handoff-start, ...)."""
        msg: dict[bytes, Any] = {b"id": rid_of(req), b"type": ptype}
        msg.update({field_name(k): v for k, v in extra.items()})
        return self.send(msg)

    def credit(self, req: Req, n: int, **extra: Any) -> dict:
        return self.packet(req, b"credit", credits=n, **extra)
