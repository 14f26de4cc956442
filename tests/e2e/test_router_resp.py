"""router-resp (pushpin-connmgr, shared/zhttp/connmgr.md section 1; D27).

Server mode: every stream-mode request says `router-resp: true`, the
`-out-stream` ROUTER is named `--id`, and handler packets sent to it
(`[id, b"", b"T..."]`, no address prefix) reach their sessions exactly as
SUB packets do; PUB/SUB keeps working and a session may mix both.
Client mode: a requester that sets the flag on a session's first packet
gets every packet of that session on its ROUTER, nothing on the PUB.

The numbers in the docstrings are the scenarios of connmgr.md section 8.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tnetstring
import zmq

from e2e.test_client_mode import HELLO, ClientCondure, Origin, fixed, silent, tn, untn
from e2e.test_websocket import WSClient, upgrade
from rawhttp import Client, get

INSTANCE = b"connmgr"  # connmgr's default --id: the doc's bytes are for it
INSTANCE_CONDURE = b"condure"  # ours


def request_bytes(rid: bytes, port: int) -> bytes:
    """connmgr.md 1.2's request packet, with our id and the client's port."""
    inner = (b"4:from,7:connmgr,2:id,%d:%s,3:seq,1:0#3:ext,15:5:multi,4:true!}6:method,3:GET,"
             b"3:uri,19:http://example.com/,7:headers,26:22:4:Host,11:example.com,]]"
             b"7:credits,4:8192#6:stream,4:true!11:router-resp,4:true!12:peer-address,"
             b"9:127.0.0.1,9:peer-port,%d:%d#" % (len(rid), rid, len(str(port)), port))
    return b"T%d:%s}" % (len(inner), inner)


@pytest.fixture
def ch(condure, handler_factory) -> tuple:
    c = condure("--id", INSTANCE.decode())
    return c, handler_factory(c.base, instance=INSTANCE)


# --- server mode: what handlers get ---------------------------------------------------


def test_stream_request_carries_router_resp(ch) -> None:
    """#1: the request packet byte for byte, `router-resp` after `stream`."""
    c, h = ch
    with Client(c.port) as client:
        client.send(get())
        req = h.recv_request()
        assert h.last_raw == request_bytes(req[b"id"], client.local_port)


def test_websocket_request_carries_router_resp(ch) -> None:
    """#2: a WebSocket request has it too, with neither `stream` nor `more`."""
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        assert req[b"router-resp"] is True
        assert b"stream" not in req and b"more" not in req
        assert b"7:credits,4:8192#11:router-resp,4:true!12:peer-address," in h.last_raw


def test_directed_packets_come_from_the_instance_id(ch) -> None:
    """#8: the ROUTER is named --id: the `credit` for a WebSocket message the
    handler sent reaches it as [b"connmgr", b"", b"T..."], connmgr.md's bytes."""
    c, h = ch
    with WSClient(c.port) as client:
        client.send(upgrade())
        req = h.recv_request()
        h.respond(req, 101, b"Switching Protocols")
        assert client.read_head().status == 101
        h.body(req, b"hello\n")
        assert client.read_frame().payload == b"hello\n"
        credit = h.recv_type(b"credit")
        rid = req[b"id"]
        inner = (b"4:from,7:connmgr,2:id,%d:%s,3:seq,1:1#3:ext,15:5:multi,4:true!}"
                 b"4:type,6:credit,7:credits,1:6#" % (len(rid), rid))
        assert credit[b"credits"] == 6
        assert h.last_frames == [INSTANCE, b"", b"T%d:%s}" % (len(inner), inner)]


def test_router_is_named_by_id(condure, zdir: str) -> None:
    """A handler's ROUTER (ROUTER_MANDATORY) can address condure by its --id,
    in one process and behind the parent of --workers N; other names fail."""
    ctx = zmq.Context()
    try:
        for args in ((), ("--workers", "2")):
            c = condure("--id", "named", *args)
            r = ctx.socket(zmq.ROUTER)
            r.setsockopt(zmq.LINGER, 0)
            r.setsockopt(zmq.ROUTER_MANDATORY, 1)
            r.connect(c.base + "-out-stream")
            end = time.monotonic() + 5
            while True:  # until the ZMTP handshake has told it the peer's name
                try:
                    r.send_multipart([b"named", b"", b"T0:}"])
                    break
                except zmq.ZMQError as e:
                    assert e.errno == zmq.EHOSTUNREACH and time.monotonic() < end, args
                    time.sleep(0.02)
            with pytest.raises(zmq.ZMQError):
                r.send_multipart([b"condure", b"", b"T0:}"])
            r.close(0)
            assert c.alive()
    finally:
        ctx.destroy(linger=0)


# --- server mode: handler packets over the ROUTER ------------------------------------


@pytest.mark.parametrize("routed", [True, False], ids=["router", "pub"])
def test_response_over_router_or_pub(ch, routed: bool) -> None:
    """#4: the whole response sent to the ROUTER reaches the client; #5: so
    does one published as ever, for handlers that ignore the flag."""
    c, h = ch
    with Client(c.port) as client:
        client.send(get())
        req = h.recv_request()
        response = {b"id": req[b"id"], b"code": 200, b"reason": b"OK",
                    b"headers": [[b"Content-Length", b"2"]], b"body": b"hi"}
        (h.send_routed if routed else h.send)(response)
        assert client.read_head().raw == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        assert client.read_exact(2) == b"hi"


def test_session_mixes_router_and_pub(ch) -> None:
    """#6: head over the ROUTER, the rest over the PUB, then the ROUTER again."""
    c, h = ch
    with Client(c.port) as client:
        client.send(get())
        req = h.recv_request()
        # one packet at a time: order across the two sockets is not kept (connmgr.md 1.3)
        h.send_routed({b"id": req[b"id"], b"code": 200, b"reason": b"OK",
                       b"headers": [[b"Content-Length", b"6"]], b"body": b"ab", b"more": True})
        assert client.read_head().status == 200
        assert client.read_exact(2) == b"ab"
        h.body(req, b"cd", more=True)
        assert client.read_exact(2) == b"cd"
        h.send_routed({b"id": req[b"id"], b"body": b"ef"})
        assert client.read_exact(2) == b"ef"


def test_prefixed_packet_on_router_is_dropped(ch) -> None:
    """#7: the ROUTER takes no `<id> ` prefix: such a packet is dropped with a
    warning and the client gets nothing; the session goes on."""
    c, h = ch
    with Client(c.port) as client:
        client.send(get())
        req = h.recv_request()
        packet = {b"from": h.identity, b"id": req[b"id"], b"seq": 0, b"code": 200,
                  b"reason": b"OK", b"headers": [[b"Content-Length", b"2"]], b"body": b"hi"}
        h.send_routed({}, raw=INSTANCE + b" T" + tnetstring.dumps(packet))
        client.expect_silence(0.5)
        c.wait_log("zhttp parse error")
        h.send_routed(packet)
        assert client.read_response().body == b"hi"


def test_multi_id_packet_over_router(ch) -> None:
    """Pushpin batches keep-alives and cancels for its sessions as one packet
    with an id list, over the ROUTER too: both sessions get it."""
    c, h = ch
    with Client(c.port) as a, Client(c.port) as b:
        reqs = []
        for client in (a, b):
            client.send(get())
            req = h.recv_request()
            h.respond(req, 200, b"OK", [], b"x", more=True)  # a response that goes on
            reqs.append(req)
        for client in (a, b):
            assert client.read_head().status == 200
            assert client.read_chunk()[1] == b"x"
        ids = [{b"id": r[b"id"], b"seq": h.seq[r[b"id"]]} for r in reqs]
        h.router.send_multipart([INSTANCE, b"", b"T" + tnetstring.dumps(
            {b"from": h.identity, b"id": ids, b"type": b"cancel"})])
        for client in (a, b):
            assert client.closed_within(3)


def test_probe_and_malformed_router_messages_are_ignored(ch) -> None:
    """A ZMQ_PROBE_ROUTER probe ([peer, b""]), a message without a delimiter
    and one with nothing after it: dropped, no answer, condure serves on."""
    c, h = ch
    h.router.send_multipart([INSTANCE, b""])
    h.router.send_multipart([INSTANCE, b"T0:}"])
    h.router.send_multipart([INSTANCE, b"x", b"y", b""])
    with Client(c.port) as client:
        client.send(get())
        req = h.recv_request()
        h.send_routed({b"id": req[b"id"], b"code": 200, b"reason": b"OK",
                       b"headers": [[b"Content-Length", b"2"]], b"body": b"hi"})
        assert client.read_response().body == b"hi"
    assert c.alive()
    assert "probe-ack" not in c.log_text()


def test_workers_requests_have_no_router_resp(condure) -> None:
    """D27: behind the parent of --workers N a worker's `from` is its own
    (D15), not the ROUTER's name, so an answer sent to it over the ROUTER could
    not reach it: requests do not offer router-resp; PUB answers work as ever."""
    c = condure("--workers", "2")
    ctx = zmq.Context()
    try:
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.connect(c.base + "-out")
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(c.base + "-in")
        subscribed = set()
        while len(subscribed) < 2:  # each worker's, through the parent's XSUB
            assert pub.poll(10000), subscribed
            subscribed.add(pub.recv())
        with Client(c.port) as client:
            client.send(get())
            assert pull.poll(10000)
            req = tnetstring.loads(pull.recv()[1:])
            assert b"router-resp" not in req
            resp = {b"from": b"h", b"id": req[b"id"], b"seq": 0, b"code": 200, b"reason": b"OK",
                    b"body": b"hi"}
            pub.send(req[b"from"] + b" T" + tnetstring.dumps(resp))
            assert client.read_response().body == b"hi"
    finally:
        ctx.destroy(linger=0)


# --- client mode ------------------------------------------------------------------------


class Requester:
    """connmgr.md 8's "R": PUSH on -in, ROUTER named `from` on -in-stream,
    SUB `<from> ` on -out."""

    def __init__(self, ctx: zmq.Context, base: str, from_: bytes = b"p1") -> None:
        self.from_ = from_
        self.push = ctx.socket(zmq.PUSH)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.IDENTITY, from_)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, from_ + b" ")
        for s in (self.push, self.router, self.sub):
            s.setsockopt(zmq.LINGER, 0)
        self.push.connect(base + "-in")
        self.router.connect(base + "-in-stream")
        self.sub.connect(base + "-out")
        time.sleep(0.4)  # PUB/SUB slow joiner; the ROUTER handshake

    def start(self, rid: bytes, uri: str, router_resp: bool, **fields: object) -> None:
        m = {b"from": self.from_, b"id": rid, b"seq": 0, b"ext": {b"multi": True},
             b"method": b"GET", b"uri": uri.encode(), b"stream": True, b"credits": 8192,
             **{k.encode(): v for k, v in fields.items()}}
        if router_resp:
            m[b"router-resp"] = True
        self.push.send(tn(m))

    def routed(self, timeout: float = 5.0) -> list[bytes]:
        assert self.router.poll(timeout * 1000), "nothing on the ROUTER"
        return self.router.recv_multipart()

    def published(self, timeout: float = 5.0) -> bytes:
        assert self.sub.poll(timeout * 1000), "nothing on the SUB"
        return self.sub.recv()

    def nothing(self, seconds: float = 0.5) -> None:
        for s in (self.router, self.sub):
            assert not s.poll(seconds * 1000), s.recv_multipart()


@pytest.fixture(scope="module")
def client_condure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientCondure]:
    cd = ClientCondure("router-resp", ["--id", INSTANCE.decode()],
                       tmp_path_factory.mktemp("router_resp"))
    try:
        cd.wait_started()
        yield cd
    finally:
        cd.stop()


@pytest.fixture
def requester(client_condure: ClientCondure) -> Iterator[Callable[..., Requester]]:
    ctx = zmq.Context()
    client_condure.mark_log()
    try:
        yield lambda from_=b"p1": Requester(ctx, client_condure.base, from_)
    finally:
        ctx.destroy(linger=0)
    assert client_condure.alive(), client_condure.log_text()


def test_client_mode_answers_on_the_router(requester: Callable[..., Requester]) -> None:
    """#9: every packet of a router-resp session comes to the requester's ROUTER
    as [b"connmgr", b"", b"T..."], the doc's bytes; nothing on the SUB."""
    r = requester()
    with Origin(fixed(HELLO)) as o:
        r.start(b"r1", o.url("/"), router_resp=True)
        ack, head, body = r.routed(), r.routed(), r.routed()
        assert ack == [INSTANCE, b"", b"T83:4:from,7:connmgr,2:id,2:r1,3:seq,1:0#"
                       b"3:ext,15:5:multi,4:true!}4:type,10:keep-alive,}"]
        assert [f[:2] for f in (head, body)] == [[INSTANCE, b""]] * 2
        head_pkt, body_pkt = untn(head[2]), untn(body[2])
        assert head_pkt[b"seq"] == 1 and head_pkt[b"code"] == 200 and head_pkt[b"more"] is True
        assert body_pkt[b"seq"] == 2 and body_pkt[b"body"] == b"hello\n"
        assert b"more" not in body_pkt
        r.nothing()


def test_client_mode_without_the_flag_answers_on_the_pub(
        requester: Callable[..., Requester]) -> None:
    """#10: the same request without router-resp: the same packets on the PUB."""
    r = requester()
    with Origin(fixed(HELLO)) as o:
        r.start(b"r2", o.url("/"), router_resp=False)
        ack = r.published()
        assert ack == (b"p1 T83:4:from,7:connmgr,2:id,2:r2,3:seq,1:0#"
                       b"3:ext,15:5:multi,4:true!}4:type,10:keep-alive,}")
        head, body = untn(r.published()[3:]), untn(r.published()[3:])
        assert head[b"code"] == 200 and body[b"body"] == b"hello\n"
        r.nothing()


def test_client_mode_router_flag_set_by_the_first_packet_only(
        requester: Callable[..., Requester]) -> None:
    """A later packet cannot switch the path: credits sent over the ROUTER
    with router-resp false still get answers on the ROUTER."""
    r = requester()
    with Origin(fixed(HELLO)) as o:
        r.start(b"r3", o.url("/"), router_resp=True, credits=0)
        assert untn(r.routed()[2])[b"type"] == b"keep-alive"
        assert untn(r.routed()[2])[b"code"] == 200
        r.router.send_multipart([INSTANCE, b"", tn({b"from": b"p1", b"id": b"r3", b"seq": 1,
                                                   b"type": b"credit", b"credits": 100,
                                                   b"router-resp": False})])
        assert untn(r.routed()[2])[b"body"] == b"hello\n"
        r.nothing()


def test_client_mode_requester_gone(client_condure: ClientCondure,
                                    requester: Callable[..., Requester]) -> None:
    """#11: the requester's ROUTER disconnects before the origin answers: the
    packets are lost (logged at debug), condure goes on serving."""
    r = requester(b"p-gone")
    with Origin(silent) as o:
        r.start(b"r4", o.url("/"), router_resp=True)
        assert untn(r.routed()[2])[b"type"] == b"keep-alive"
        r.router.close(0)
        time.sleep(0.2)
        o.conn(0).send(HELLO)  # the answer comes once the requester is gone
        end = time.monotonic() + 5
        while "zmq send to b'p-gone'" not in client_condure.log_text():
            assert time.monotonic() < end, client_condure.log_text()
            time.sleep(0.05)
    r2 = requester(b"p2")
    with Origin(fixed(HELLO)) as o:
        r2.start(b"r5", o.url("/"), router_resp=True)
        assert untn(r2.routed()[2])[b"type"] == b"keep-alive"


def test_client_mode_shutdown_cancels_grouped_by_path(tmp_path: Path) -> None:
    """#12's grouping, at shutdown: two sessions of the same requester, one with
    router-resp and one without, get one `cancel` each, on their own path."""
    cd = ClientCondure("cancel", ["--id", INSTANCE.decode()], tmp_path)
    ctx = zmq.Context()
    try:
        cd.wait_started()
        r = Requester(ctx, cd.base)
        with Origin(silent) as o:
            r.start(b"routed", o.url("/"), router_resp=True)
            r.start(b"published", o.url("/"), router_resp=False)
            assert untn(r.routed()[2])[b"id"] == b"routed"
            assert untn(r.published()[3:])[b"id"] == b"published"
            o.conn(1)  # both requests reached the origin
            cd.proc.send_signal(signal.SIGTERM)
            routed, published = untn(r.routed()[2]), untn(r.published()[3:])
        assert (routed[b"type"], routed[b"id"], routed[b"seq"]) == (b"cancel", b"routed", 1)
        assert (published[b"type"], published[b"id"], published[b"seq"]) == (
            b"cancel", b"published", 1)
    finally:
        ctx.destroy(linger=0)
        cd.stop()


def test_router_read_and_written_under_backpressure(condure) -> None:
    """The ROUTER is read and written by two greenlets: while condure's sends to
    a handler that does not read are blocked by the high-water mark, a packet
    the handler sends over the ROUTER still reaches its client, and once the
    handler reads again every blocked packet reaches it."""
    c = condure("--stream-maxconn", "20")  # high-water marks (100 + 20) / 20 = 6
    ctx = zmq.Context()
    try:
        pull = ctx.socket(zmq.PULL)
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.IDENTITY, b"slow")
        router.setsockopt(zmq.RCVHWM, 1)
        router.setsockopt(zmq.RCVBUF, 4096)
        xpub = ctx.socket(zmq.XPUB)
        for s in (pull, router, xpub):
            s.setsockopt(zmq.LINGER, 0)
        pull.connect(c.base + "-out")
        router.connect(c.base + "-out-stream")
        xpub.connect(c.base + "-in")
        assert xpub.poll(5000)
        xpub.recv()  # condure's subscription
        with WSClient(c.port) as client:
            client.send(upgrade())
            assert pull.poll(5000)
            req = tnetstring.loads(pull.recv()[1:])
            rid, total, size = req[b"id"], 0, 4000
            accept = {b"from": b"slow", b"id": rid, b"seq": 0, b"code": 101,
                      b"reason": b"Switching Protocols", b"credits": 50_000_000}
            xpub.send(INSTANCE_CONDURE + b" T" + tnetstring.dumps(accept))
            assert client.read_head().status == 101
            client.sock.settimeout(0.05)
            for _ in range(800):  # 3.2 MB at the handler's door, which does not read
                try:
                    client.send_frame(2, b"m" * size)
                    total += size
                except TimeoutError:
                    break  # condure stopped reading the client: its sends are blocked
            client.sock.settimeout(5)
            time.sleep(0.5)
            assert total > 1_000_000, total
            reply = {b"from": b"slow", b"id": rid, b"seq": 1, b"content-type": b"text",
                     b"body": b"still here"}
            router.send_multipart([INSTANCE_CONDURE, b"", b"T" + tnetstring.dumps(reply)])
            assert client.read_frame().payload == b"still here"
            got, end = 0, time.monotonic() + 20
            while got < total:
                assert router.poll(max(0.0, end - time.monotonic()) * 1000), (got, total)
                pkt = tnetstring.loads(router.recv_multipart()[-1][1:])
                if pkt.get(b"type") is None:
                    got += len(pkt.get(b"body", b""))
            assert got == total
    finally:
        ctx.destroy(linger=0)


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_condure_does_not_spin(condure) -> None:
    """The ROUTER's reader looks for input once a second until a handler first
    uses it (SharedWait): that look must not turn into a busy loop. Over 3.5 s
    an idle condure uses a few milliseconds of CPU; a spinning one, seconds."""
    c = condure()
    time.sleep(1.0)  # start-up is over
    before = process_cpu_seconds(c.pid)
    time.sleep(3.5)
    assert process_cpu_seconds(c.pid) - before < 0.7
