"""In-process: debuglog.DebugSocket on a real Unix socket, and the level
checks the hot path keeps (Connection.debug, zhttp.sockets' trace flag),
which must follow the clients: off with none (the no-cost case), on while
one is connected. The subprocess tests are in tests/e2e/test_debug_socket.py.
"""
from __future__ import annotations

import io
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from condure import debuglog
from condure import log as clog
from condure.config import UnixSocketSpec
from condure.server.connection import Connection
from condure.zhttp import sockets


@pytest.fixture
def debug(tmp_path) -> Iterator[debuglog.DebugSocket]:
    logger = logging.getLogger("condure")
    saved = (logger.handlers[:], logger.level, logger.propagate, clog._stdout_level)
    clog.setup(clog.level_for(0), io.StringIO())
    d = debuglog.DebugSocket(UnixSocketSpec(str(tmp_path / "d.sock")), limit=100)
    d.start()
    yield d
    d.close()
    assert not clog.feeding()
    logger.handlers[:], logger.level, logger.propagate, clog._stdout_level = saved
    clog._apply_level()  # the watchers too


def _wait(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def _connect(d: debuglog.DebugSocket) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(d.spec.path)  # blocking: waits for room in the backlog
    c.settimeout(5)
    return c


def test_level_checks_follow_the_clients(debug: debuglog.DebugSocket) -> None:
    assert not Connection.debug and not sockets._trace and not clog.feeding()
    a, b = _connect(debug), _connect(debug)
    _wait(lambda: len(debug.clients) == 2)
    assert Connection.debug and sockets._trace and clog.feeding()
    a.close()
    _wait(lambda: len(debug.clients) == 1)
    assert Connection.debug and sockets._trace
    b.close()
    _wait(lambda: not debug.clients)
    assert not Connection.debug and not sockets._trace and not clog.feeding()
    assert logging.getLogger("condure").level == logging.ERROR


def test_a_stalled_client_never_blocks_the_logging_thread(debug: debuglog.DebugSocket) -> None:
    c = _connect(debug)  # never reads
    _wait(lambda: clog.feeding())
    logger = logging.getLogger("condure.t")
    start = time.monotonic()
    for i in range(20000):  # ~2 MB: far more than the socket buffer and the queue
        logger.debug("line %d %s", i, "x" * 80)
    assert time.monotonic() - start < 5.0
    [client] = debug.clients
    assert len(client.queue) <= client.queue.limit and client.queue.dropped > 10000
    c.close()


def test_clients_that_leave_at_once_never_leave_the_feed_attached(
        debug: debuglog.DebugSocket) -> None:
    for _ in range(200):
        _connect(debug).close()
    _wait(lambda: not debug.clients)
    time.sleep(0.1)
    assert not clog.feeding() and not Connection.debug
    logging.getLogger("condure").error("quiet")  # an ERR line goes to stdout only
    c = _connect(debug)  # and a new client is still served
    _wait(lambda: clog.feeding())
    c.close()
    _wait(lambda: not clog.feeding())
