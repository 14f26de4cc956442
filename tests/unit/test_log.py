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
