"""condure/log.py: condure's log line format, level mapping and per-connection prefix."""

from __future__ import annotations

import io
import logging
import re
import sys
import time
from collections.abc import Iterator

import pytest

from condure import log

LINE = re.compile(
    r"^\[(ERR|WARN|INFO|DEBUG|TRACE)\] "
    r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}) "
    r"\[([^\]]+)\] (.*)$"
)


@pytest.fixture(autouse=True)
def clean_condure_logger() -> Iterator[None]:
    """Leave the `condure` logger as we found it."""
    logger = logging.getLogger("condure")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    log.setup(log.TRACE, out)
    return out


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_line_format(stream: io.StringIO) -> None:
    before = time.time()
    logging.getLogger("condure.server").info("listening on %s", "127.0.0.1:7999")
    [line] = lines(stream)
    match = LINE.match(line)
    assert match, line
    level, stamp, target, message = match.groups()
    assert (level, target, message) == ("INFO", "condure::server", "listening on 127.0.0.1:7999")
    seconds = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))  # local time
    assert before - 1 <= seconds + int(stamp[20:]) / 1000 <= time.time() + 1


@pytest.mark.parametrize(
    "name,target",
    [
        ("condure", "condure"),
        ("condure.app", "condure::app"),
        ("condure.server.http1", "condure::server::http1"),
        ("condure.zhttp.sockets", "condure::zhttp::sockets"),
    ],
)
def test_target(stream: io.StringIO, name: str, target: str) -> None:
    logging.getLogger(name).warning("x")
    match = LINE.match(lines(stream)[0])
    assert match and match.group(3) == target


@pytest.mark.parametrize(
    "level,name",
    [
        (logging.CRITICAL, "ERR"),
        (logging.ERROR, "ERR"),
        (logging.WARNING, "WARN"),
        (logging.INFO, "INFO"),
        (logging.DEBUG, "DEBUG"),
        (log.TRACE, "TRACE"),
    ],
)
def test_level_names(stream: io.StringIO, level: int, name: str) -> None:
    logging.getLogger("condure").log(level, "m")
    assert lines(stream)[0].startswith(f"[{name}] ")


@pytest.mark.parametrize(
    "n,level",
    [(0, logging.ERROR), (1, logging.WARNING), (2, logging.INFO), (3, logging.DEBUG),
     (4, log.TRACE), (5, log.TRACE), (99, log.TRACE)],
)
def test_level_for(n: int, level: int) -> None:
    assert log.level_for(n) == level


def test_trace_level_is_registered() -> None:
    assert log.TRACE == 5
    assert logging.getLevelName(log.TRACE) == "TRACE"
    assert log.TRACE < logging.DEBUG


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4])
def test_setup_filters_by_level(n: int) -> None:
    out = io.StringIO()
    log.setup(log.level_for(n), out)
    logger = logging.getLogger("condure.test")
    logger.error("e")
    logger.warning("w")
    logger.info("i")
    logger.debug("d")
    log.trace(logger, "t")
    assert [line[-1] for line in lines(out)] == ["e", "w", "i", "d", "t"][: n + 1]


def test_setup_is_idempotent() -> None:
    out = io.StringIO()
    log.setup(logging.INFO, out)
    log.setup(logging.INFO, out)
    logging.getLogger("condure.app").info("once")
    assert len(lines(out)) == 1
    handlers = logging.getLogger("condure").handlers
    assert len([h for h in handlers if isinstance(h, logging.StreamHandler)]) == 1


def test_setup_again_moves_to_new_stream_and_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    log.setup(logging.INFO, first)
    log.setup(logging.DEBUG, second)
    logging.getLogger("condure").debug("d")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1


def test_setup_does_not_touch_root_logger() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    log.setup(logging.DEBUG, io.StringIO())
    assert root.handlers == handlers and root.level == level
    assert logging.getLogger("condure").propagate is False


def test_setup_defaults_to_current_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    log.setup(logging.INFO)
    assert sys.stdout is not sys.__stdout__  # capsys replaced it before setup ran
    logging.getLogger("condure").info("to stdout")
    out, err = capsys.readouterr()
    assert LINE.match(out.rstrip("\n")) and out.rstrip().endswith("to stdout")
    assert err == ""


def test_other_loggers_are_not_formatted(stream: io.StringIO) -> None:
    logging.getLogger("someone.else").error("not ours")
    assert stream.getvalue() == ""


def test_trace_helper(stream: io.StringIO) -> None:
    logger = logging.getLogger("condure.zhttp")
    log.trace(logger, "OUT stream %s", "{}")
    match = LINE.match(lines(stream)[0])
    assert match
    assert (match.group(1), match.group(3), match.group(4)) == (
        "TRACE", "condure::zhttp", "OUT stream {}"
    )


def test_trace_helper_skips_formatting_when_disabled() -> None:
    out = io.StringIO()
    log.setup(logging.DEBUG, out)

    class Explodes:
        def __str__(self) -> str:
            raise AssertionError("formatted although TRACE is off")

    log.trace(logging.getLogger("condure"), "%s", Explodes())
    assert out.getvalue() == ""


def test_exception_traceback_follows_line(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("condure").exception("our bug")
    first, *rest = lines(stream)
    assert LINE.match(first) and first.startswith("[ERR] ") and first.endswith("] our bug")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


# --- ConnLogger -------------------------------------------------------------

def test_conn_logger_prefix(stream: io.StringIO) -> None:
    conn = log.ConnLogger(logging.getLogger("condure.connection"), "0-0-0")
    conn.debug("assigning id")
    match = LINE.match(lines(stream)[0])
    assert match
    assert match.groups()[2:] == ("condure::connection", "conn 0-0-0: assigning id")


def test_conn_logger_id_can_change(stream: io.StringIO) -> None:
    conn = log.ConnLogger(logging.getLogger("condure"), "0-0-0")
    conn.debug("finished")
    conn.conn_id = "0-0-1"
    conn.info("request: %s %s", "GET", "http://a/")
    assert lines(stream)[0].endswith("] conn 0-0-0: finished")
    assert lines(stream)[1].endswith("] conn 0-0-1: request: GET http://a/")


def test_conn_logger_levels_and_trace(stream: io.StringIO) -> None:
    conn = log.ConnLogger(logging.getLogger("condure"), "1-2-3")
    conn.warning("w")
    conn.error("e")
    conn.trace("t %d", 1)
    log.trace(conn, "t2")
    levels = [line.split(" ")[0] for line in lines(stream)]
    assert levels == ["[WARN]", "[ERR]", "[TRACE]", "[TRACE]"]
    assert lines(stream)[2].endswith("conn 1-2-3: t 1")
    assert lines(stream)[3].endswith("conn 1-2-3: t2")


def test_conn_logger_respects_level() -> None:
    out = io.StringIO()
    log.setup(logging.INFO, out)
    conn = log.ConnLogger(logging.getLogger("condure"), "0-0-0")
    conn.debug("hidden")
    conn.trace("hidden")
    assert out.getvalue() == ""


def test_conn_logger_percent_in_id_and_message(stream: io.StringIO) -> None:
    conn = log.ConnLogger(logging.getLogger("condure"), "a%sb")
    conn.info("100%")
    conn.info("x=%s", 1)
    assert lines(stream)[0].endswith("] conn a%sb: 100%")
    assert lines(stream)[1].endswith("] conn a%sb: x=1")


def test_conn_logger_custom_prefix(stream: io.StringIO) -> None:
    conn = log.ConnLogger(logging.getLogger("condure"), "0-0-0", prefix="server-conn")
    conn.info("hi")
    assert lines(stream)[0].endswith("] server-conn 0-0-0: hi")


# --- RateLimitedWarning ------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_warning_writes_one_line_per_interval(stream: io.StringIO) -> None:
    clock = FakeClock()
    w = log.RateLimitedWarning(logging.getLogger("condure.app"), 1.0, clock)
    for i in range(2000):  # a burst: one line
        w.warning("zhttp parse error: %s", f"bad {i}")
    clock.now += 0.5
    w.warning("zhttp parse error: %s", "still within the second")
    assert [LINE.match(x).group(4) for x in lines(stream)] == ["zhttp parse error: bad 0"]
    clock.now += 0.5
    w.warning("zhttp parse error: %s", "next")  # the next line counts what was left out
    clock.now += 5
    w.warning("zhttp parse error: %s", "alone")
    messages = [LINE.match(x).group(4) for x in lines(stream)]
    assert messages == ["zhttp parse error: bad 0",
                        "zhttp parse error: next (2000 more suppressed)",
                        "zhttp parse error: alone"]
    assert all(LINE.match(x).group(1) == "WARN" for x in lines(stream))
    assert all(LINE.match(x).group(3) == "condure::app" for x in lines(stream))


def test_rate_limited_warning_first_line_is_written_at_once(stream: io.StringIO) -> None:
    log.RateLimitedWarning(logging.getLogger("condure.client")).warning("x %s", "%d")
    assert [LINE.match(x).group(4) for x in lines(stream)] == ["x %d"]


# --- feeds (--debug-socket) and their queues ---------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(log.line_bytes(log.CondureFormatter(), record).decode())


@pytest.fixture
def feed() -> Iterator[_Lines]:
    handler = _Lines()
    yield handler
    log.remove_feed(handler)


def test_feed_gets_every_level_while_stdout_keeps_its_own(feed: _Lines) -> None:
    out = io.StringIO()
    log.setup(log.level_for(0), out)
    logger = logging.getLogger("condure.x")
    assert not logger.isEnabledFor(log.TRACE)
    log.add_feed(feed)
    assert log.feeding()
    log.trace(logger, "t %d", 1)
    logger.debug("d")
    logger.error("e")
    assert [LINE.match(line.rstrip("\n")).group(1) for line in feed.lines] == \
        ["TRACE", "DEBUG", "ERR"]  # type: ignore[union-attr]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in feed.lines)
    assert out.getvalue().count("\n") == 1 and "[ERR]" in out.getvalue()


def test_without_a_feed_the_logger_is_back_at_stdouts_level(feed: _Lines) -> None:
    """What makes the option free when no client is connected: the logger
    refuses a record below stdout's level by its own (cached) check, and
    nothing else is attached."""
    log.setup(log.level_for(1), io.StringIO())
    logger = logging.getLogger("condure")
    handlers = list(logger.handlers)
    log.add_feed(feed)
    log.add_feed(feed)  # once only
    assert logger.handlers.count(feed) == 1 and logger.isEnabledFor(log.TRACE)
    log.remove_feed(feed)
    assert not log.feeding()
    assert logger.handlers == handlers
    assert logger.level == logging.WARNING and not logger.isEnabledFor(logging.INFO)
    logging.getLogger("condure.y").info("not formatted")
    assert feed.lines == []


def test_watchers_see_every_level_change(feed: _Lines) -> None:
    seen: list[bool] = []
    log.watch_level(lambda: seen.append(logging.getLogger("condure").isEnabledFor(logging.DEBUG)))
    try:
        log.setup(log.level_for(2), io.StringIO())
        log.add_feed(feed)
        log.remove_feed(feed)
        assert seen[-3:] == [False, True, False]
    finally:
        log._watchers.pop()


def test_line_queue_drops_past_its_limit_and_says_so_before_the_next_line() -> None:
    q = log.LineQueue(3)
    for i in range(5):
        q.put(b"%d\n" % i)
    assert len(q) == 3 and q.dropped == 2
    assert q.take() == b"0\n1\n2\n"
    q.put(b"5\n")
    q.put(b"6\n")
    assert q.take() == b"** dropped 2 logs\n5\n6\n"
    assert q.take() == b"" and q.dropped == 0


def test_line_queue_take_is_whole_lines_about_max_bytes() -> None:
    q = log.LineQueue(10)
    for line in (b"a" * 5 + b"\n", b"b" * 5 + b"\n", b"c" * 20 + b"\n"):
        q.put(line)
    assert q.take(13) == b"aaaaa\nbbbbb\n"
    assert q.take(13) == b"c" * 20 + b"\n"  # one line, even longer than max_bytes
