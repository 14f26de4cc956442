"""Buffer blocks and growing heads (issue 15, item 4; connmgr.md 3 and 8,
scenarios 16-19), server mode, end to end.

`--blocks-max` and `--connection-blocks-max` let a request head outgrow
`--buffer-size` a block at a time while the worker's pool of spare blocks
has one; a head that cannot grow gets our 431 (D1) with pushpin-connmgr's
body text, naming the capacity the head had reached. Response heads are not
limited by `--buffer-size` at all. Scenario 16 (the option errors) is in
tests/e2e/test_cli.py and tests/unit/test_config.py, the pool itself in
tests/unit/test_blocks.py, client mode in tests/e2e/test_client_mode.py.
"""
from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

import pytest

from conftest import get_free_port
from rawhttp import Client, get
from zhttp_handler import Handler

CT = (b"Content-Type", b"text/plain")
Start = Callable[..., tuple]

# connmgr.md 8, scenario 18: a head may reach 8192 x (4 - 1) = 24576 bytes
GROWN = ("--stream-maxconn", "10", "--blocks-max", "40", "--connection-blocks-max", "4")
# scenario 19: the same allowance, but one spare block for all connections
ONE_SPARE = ("--stream-maxconn", "10", "--blocks-max", "21", "--connection-blocks-max", "4")
SETTLE = 0.5  # seconds for condure to read what a client sent (nothing shows it outside)


def big_head(size: int, path: str = "/big") -> bytes:
    """A GET head of exactly `size` bytes (one large X-Big field)."""
    start = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: example.com\r\nX-Big: "
    end = b"\r\n\r\n"
    return start + b"b" * (size - len(start) - len(end)) + end


def refusal(capacity: int) -> bytes:
    """Our answer to a head over `capacity` bytes, byte for byte: the status and
    framing of D1, pushpin-connmgr's text (connmgr.md 4.3 C)."""
    body = b"Request header size exceeded limit of %d bytes.\n" % capacity
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest.fixture(params=["h11", "httptools"])
def parser(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def start(condure, handler_factory) -> Start:
    """start(*condure_args) -> (a condure process of this test only, handler)."""

    def _start(*args: str, **kwargs: object) -> tuple:
        c = condure(*args, **kwargs)
        return c, handler_factory(c.base)

    return _start


@pytest.fixture
def sstart(shared_condure, handler_factory) -> Start:
    """Like `start`, on a process shared by the tests of this module with the same arguments."""

    def _start(*args: str, **kwargs: object) -> tuple:
        c = shared_condure(*args, **kwargs)
        return c, handler_factory(c.base)

    return _start


def accepted(c, h: Handler, size: int, client: Client | None = None) -> None:
    """A head of `size` bytes reaches the handler whole and is answered."""
    own = client is None
    client = client or Client(c.port)
    try:
        client.send(big_head(size))
        req = h.recv_request()
        assert len(req[b"headers"][1][1]) == size - len(big_head(0)), req[b"headers"][1][0]
        assert req[b"credits"] == 8192  # the read buffer is back to --buffer-size
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert client.read_response().body == b"ok\n"
    finally:
        if own:
            client.close()


def eventually_accepted(c, h: Handler, size: int, within: float = 5.0) -> None:
    """A head of `size` bytes is accepted once condure has seen the end of
    another connection (it may take a moment: the test cannot see when); a
    block that never comes back fails at the deadline."""
    deadline = time.monotonic() + within
    while True:
        with Client(c.port) as client:
            client.send(big_head(size))
            if select.select([client.sock], [], [], 0.5)[0]:  # answered at once: refused
                assert client.read_until_close() == refusal(8192)
                assert time.monotonic() < deadline, "the spare block did not come back"
                continue
            req = h.recv_request()
            h.respond(req, 200, b"OK", [CT], b"ok\n")
            assert client.read_response().body == b"ok\n"
            return


def refused(c, h: Handler, size: int, capacity: int) -> None:
    with Client(c.port) as client:
        client.send(big_head(size))
        assert client.read_until_close() == refusal(capacity)
    h.expect_nothing(0.2)


# --- scenario 17: the defaults ------------------------------------------------


def test_head_over_buffer_size_gets_connmgr_text_scenario_17(sstart: Start, parser: str) -> None:
    c, h = sstart("--http-parser", parser)
    with Client(c.port) as client:
        client.send(big_head(9000))
        raw = client.read_until_close()
    assert raw == refusal(8192)
    assert raw.endswith(b"Content-Length: 50\r\n\r\nRequest header size exceeded limit of 8192 bytes.\n")
    h.expect_nothing(0.3)  # the handler sees nothing
    accepted(c, h, 8192)  # the limit is exact: a head of --buffer-size fits
    refused(c, h, 8193, 8192)


def test_limit_follows_buffer_size(sstart: Start, parser: str) -> None:
    c, h = sstart("--http-parser", parser, "--buffer-size", "1024")
    with Client(c.port) as client:
        client.send(big_head(1500))
        assert client.read_until_close() == refusal(1024)
    h.expect_nothing(0.2)


def test_head_arriving_a_byte_at_a_time(sstart: Start, parser: str) -> None:
    """The limit is checked as the head grows, whatever the reads were."""
    c, h = sstart("--http-parser", parser)
    with Client(c.port) as client:
        data = big_head(9000)
        client.send(data[:8000])
        time.sleep(0.1)
        for i in range(8000, 8300):
            client.send(data[i:i + 1])
        assert client.read_until_close() == refusal(8192)


# --- scenario 18: heads grow --------------------------------------------------


def test_head_grows_to_the_connection_allowance_scenario_18(sstart: Start, parser: str) -> None:
    c, h = sstart("--http-parser", parser, *GROWN)
    accepted(c, h, 20000)
    refused(c, h, 25000, 24576)
    accepted(c, h, 24576)  # exactly three blocks
    refused(c, h, 24577, 24576)


def test_grown_head_then_keep_alive_requests(sstart: Start, parser: str) -> None:
    """After a grown head the connection goes on as usual, and a pipelined
    request after it is served: the blocks go back with the head."""
    c, h = sstart("--http-parser", parser, *GROWN)
    with Client(c.port) as client:
        accepted(c, h, 16000, client)
        client.send(big_head(20000) + get("/after"))
        req = h.recv_request()
        assert req[b"uri"] == b"http://example.com/big"
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert client.read_response().body == b"ok\n"
        req = h.recv_request()
        assert req[b"uri"] == b"http://example.com/after"
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert client.read_response().body == b"ok\n"
        accepted(c, h, 24000, client)


def test_grown_head_with_a_body(sstart: Start, parser: str) -> None:
    c, h = sstart("--http-parser", parser, *GROWN)
    with Client(c.port) as client:
        head = big_head(18000).replace(b"GET ", b"POST ", 1)
        head = head[:-2] + b"Content-Length: 5\r\n\r\n"
        client.send(head + b"hello")
        req = h.recv_request()
        assert req[b"credits"] == 8192
        h.respond(req, 200, b"OK", [CT], b"ok\n", credits=1000)
        p = h.recv()
        assert (p[b"seq"], p[b"body"]) == (1, b"hello") and b"more" not in p
        assert client.read_response().body == b"ok\n"


def test_trailers_stay_within_buffer_size(sstart: Start, parser: str) -> None:
    """Blocks are for request heads: they are back before the body is read
    (connmgr.md 3.3), so a trailer section is limited by --buffer-size still."""
    c, h = sstart("--http-parser", parser, *GROWN)
    with Client(c.port) as client:
        head = big_head(12000, "/t").replace(b"GET ", b"POST ", 1)  # a grown head
        client.send(head[:-2] + b"Transfer-Encoding: chunked\r\n\r\n")
        req = h.recv_request()
        h.credit(req, 100000)
        client.send(b"0\r\nX-T: " + b"t" * 9000 + b"\r\n\r\n")
        raw = client.read_until_close()
        assert raw.startswith(b"HTTP/1.1 431 ")
        assert b"exceeded limit" not in raw  # the text is the head's only
    assert h.recv_type(b"cancel")[b"id"] == req[b"id"]


def test_websocket_handshake_with_a_grown_head(sstart: Start) -> None:
    c, h = sstart(*GROWN)
    with Client(c.port) as client:
        client.send(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Big: "
                    + b"w" * 15000 + b"\r\n\r\n")
        req = h.recv_request()
        assert req[b"uri"] == b"ws://example.com/ws"
        h.respond(req, 101, b"Switching Protocols", [], credits=1000)
        head = client.read_head()
        assert head.status == 101


# --- scenario 19: one pool for all connections ----------------------------------


def test_spare_block_is_held_by_one_head_at_a_time_scenario_19(start: Start, parser: str) -> None:
    c, h = start("--http-parser", parser, *ONE_SPARE)
    first = big_head(12000, "/first")
    with Client(c.port) as one:
        one.send(first[:10000])  # stalls mid-head, holding the spare block
        time.sleep(SETTLE)
        refused(c, h, 12000, 8192)
        one.send(first[10000:])  # finishes: forwarded, and the block goes back
        req = h.recv_request()
        assert req[b"uri"] == b"http://example.com/first"
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert one.read_response().body == b"ok\n"
        accepted(c, h, 12000)
        refused(c, h, 17000, 16384)  # the allowance is 2 blocks; the pool has 1


def test_block_comes_back_when_the_client_leaves_mid_head(start: Start) -> None:
    c, h = start(*ONE_SPARE)
    with Client(c.port) as one:
        one.send(big_head(12000)[:10000])
        time.sleep(SETTLE)
        refused(c, h, 12000, 8192)
    eventually_accepted(c, h, 12000)  # once condure has read the EOF


def test_block_comes_back_when_the_client_resets_mid_head(start: Start) -> None:
    c, h = start(*ONE_SPARE)
    one = Client(c.port)
    one.send(big_head(12000)[:10000])
    time.sleep(SETTLE)
    one.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    one.close()  # RST
    eventually_accepted(c, h, 12000)


def test_block_comes_back_after_a_refusal(start: Start) -> None:
    c, h = start(*ONE_SPARE)
    refused(c, h, 17000, 16384)  # took the spare block, still too large
    accepted(c, h, 12000)


def test_block_comes_back_after_a_bad_head(start: Start) -> None:
    c, h = start(*ONE_SPARE)
    with Client(c.port) as client:
        client.send(big_head(12000)[:10000] + b"\r\nBad Line\r\n\r\n")
        assert client.read_until_close().startswith(b"HTTP/1.1 400 ")
    accepted(c, h, 12000)


@pytest.mark.deadline(20)
def test_block_comes_back_after_the_stream_timeout(start: Start) -> None:
    c, h = start(*ONE_SPARE, "--stream-timeout", "1")
    with Client(c.port) as one:
        one.send(big_head(12000)[:10000])
        assert one.closed_within(4.0)
    eventually_accepted(c, h, 12000)


def test_req_listeners_never_grow_heads(start: Start, zdir: str) -> None:
    """Req mode has no blocks (connmgr.md 3.2): its heads stay --buffer-size."""
    port = get_free_port()
    c, h = start(*GROWN, "--listen", f"127.0.0.1:{port},req", "--zclient-req", f"ipc://{zdir}/req")
    with Client(port) as client:
        client.send(big_head(12000))
        assert client.read_until_close() == refusal(8192)
    accepted(c, h, 12000)  # while the stream listener's heads grow


@pytest.mark.parametrize("blocks_max,grows", [("40", True), ("21", False)])
def test_workers_split_the_pool(condure, handler_factory, blocks_max: str, grows: bool) -> None:
    """--workers 2: each worker keeps 2 blocks for each of its 5 connections and
    gets half the spare ones (20 // 2 = 10; 1 // 2 = 0: that block is not used)."""
    c = condure("--workers", "2", "--stream-maxconn", "10", "--blocks-max", blocks_max,
                "--connection-blocks-max", "4")
    h = handler_factory(c.base, wait=False)  # the workers subscribe with their own `from`
    time.sleep(0.5)
    for _ in range(4):  # whichever worker takes the connection
        with Client(c.port) as client:
            client.send(big_head(20000 if grows else 12000))
            if not grows:
                assert client.read_until_close() == refusal(8192)
                continue
            req = h.recv_request()
            h.send({b"id": req[b"id"], b"code": 200, b"reason": b"OK", b"body": b"ok\n"},
                   instance=req[b"from"])
            assert client.read_response().body == b"ok\n"


# --- response heads (connmgr.md 3.4) --------------------------------------------


def test_response_head_larger_than_buffer_size(sstart: Start) -> None:
    c, h = sstart("--buffer-size", "1024")
    with Client(c.port) as client:
        client.send(get("/r"))
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT, (b"X-Large", b"v" * 20000)], b"ok\n")
        r = client.read_response()
        assert r.header(b"X-Large") == b"v" * 20000
        assert r.body == b"ok\n"
        client.send(get("/again"))  # and the connection goes on
        req = h.recv_request()
        h.respond(req, 200, b"OK", [CT], b"ok\n")
        assert client.read_response().body == b"ok\n"


def test_websocket_accept_head_larger_than_buffer_size(sstart: Start) -> None:
    c, h = sstart("--buffer-size", "1024")
    with Client(c.port) as client:
        client.send(b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        req = h.recv_request()
        h.respond(req, 101, b"Switching Protocols", [(b"X-Large", b"v" * 5000)], credits=1000)
        head = client.read_head()
        assert head.status == 101
        assert head.header(b"X-Large") == b"v" * 5000
