"""condure's log format on stdout: `[LEVEL] YYYY-MM-DD HH:MM:SS.mmm [target] message`.

The target is the Python logger name with '.' replaced by '::', so the logger
`condure.server.http1` prints `[condure::server::http1]`. Local time; levels
ERR WARN INFO DEBUG TRACE. Only the `condure` logger is configured, never the
root logger. RateLimitedWarning keeps warnings about what handlers send (both
modes' "zhttp parse error") to one line a second.

Feeds (`--debug-socket`): while a feed handler is attached, the logger lets
every level through and stdout keeps its own level on its handler; with no
feed the logger's level is stdout's, so a record below it costs what it cost
before (one cached level check). Code that keeps a level check of its own
(a class attribute, a module flag) registers a watcher, called whenever the
logger's level changes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

ROOT_LOGGER = "condure"

# --log-level N -> logging level; N >= 4 is TRACE
_LEVELS = (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)


def level_for(n: int) -> int:
    """Map condure's --log-level number to a logging level (0 ERROR ... >=4 TRACE)."""
    if n < 0:
        raise ValueError(f"log level must be >= 0, got {n}")
    return _LEVELS[n] if n < len(_LEVELS) else TRACE


def level_name(levelno: int) -> str:
    """condure's name for a level: ERR, WARN, INFO, DEBUG or TRACE."""
    if levelno >= logging.ERROR:
        return "ERR"
    if levelno >= logging.WARNING:
        return "WARN"
    if levelno >= logging.INFO:
        return "INFO"
    if levelno >= logging.DEBUG:
        return "DEBUG"
    return "TRACE"


def target_for(name: str) -> str:
    """Logger name -> condure target (`condure.server` -> `condure::server`)."""
    return name.replace(".", "::")


class CondureFormatter(logging.Formatter):
    """Formats a record as condure does; a traceback, if any, follows on the next lines."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line = (f"[{level_name(record.levelno)}] {self.formatTime(record)}"
                f" [{target_for(record.name)}] {record.getMessage()}")
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


class _CondureHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marker class so setup() can find the handler it installed before."""


_stdout_level = logging.INFO  # what setup() was given: the logger's level with no feed
_feeds: list[logging.Handler] = []  # attached by add_feed
_watchers: list[Callable[[], None]] = []


def setup(level: int, stream: TextIO | None = None) -> None:
    """Send the `condure` logger's records at `level` and above to `stream` (default stdout).

    `level` is a logging level, e.g. level_for(config.log_level). Calling it
    again replaces the handler installed before, so lines are never doubled.
    """
    global _stdout_level
    logger = logging.getLogger(ROOT_LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, _CondureHandler)]:
        logger.removeHandler(old)
    handler = _CondureHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(CondureFormatter())
    handler.setLevel(level)  # a feed lowers the logger's level, never stdout's
    logger.addHandler(handler)
    logger.propagate = False
    _stdout_level = level
    _apply_level()


def add_feed(handler: logging.Handler) -> None:
    """Attach `handler` to the `condure` logger and let every level through
    (TRACE included) until remove_feed; stdout keeps its level."""
    if handler in _feeds:
        return
    _feeds.append(handler)
    logging.getLogger(ROOT_LOGGER).addHandler(handler)
    _apply_level()


def remove_feed(handler: logging.Handler) -> None:
    """Detach a feed; with none left the logger is back at stdout's level."""
    if handler not in _feeds:
        return
    _feeds.remove(handler)
    logging.getLogger(ROOT_LOGGER).removeHandler(handler)
    _apply_level()


def feeding() -> bool:
    """Whether a feed is attached (every level is being logged)."""
    return bool(_feeds)


def watch_level(refresh: Callable[[], None]) -> None:
    """Call `refresh` now and whenever the `condure` logger's level changes."""
    _watchers.append(refresh)
    refresh()


def _apply_level() -> None:
    logging.getLogger(ROOT_LOGGER).setLevel(TRACE if _feeds else _stdout_level)
    for refresh in _watchers:
        refresh()


def line_bytes(formatter: logging.Formatter, record: logging.LogRecord) -> bytes:
    """One record as a feed sends it: the stdout line (and any traceback), then LF."""
    return (formatter.format(record) + "\n").encode("utf-8", "replace")


class LineQueue:
    """The lines waiting for one slow reader, at most `limit`.

    A line that finds the queue full is dropped and counted; the next line
    that fits is preceded by `** dropped N logs`, so the reader knows. Not
    thread-safe: the caller holds its lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: deque[bytes] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.lines)

    def put(self, line: bytes) -> None:
        if len(self.lines) >= self.limit:
            self.dropped += 1
            return
        if self.dropped:
            self.lines.append(b"** dropped %d logs\n" % self.dropped)
            self.dropped = 0
        self.lines.append(line)

    def take(self, max_bytes: int = 65536) -> bytes:
        """Whole lines from the front, at least one (if any), about `max_bytes` together."""
        out: list[bytes] = []
        size = 0
        lines = self.lines
        while lines and (not out or size + len(lines[0]) <= max_bytes):
            line = lines.popleft()
            out.append(line)
            size += len(line)
        return b"".join(out)


def trace(logger: logging.Logger | logging.LoggerAdapter[Any], msg: str, *args: object) -> None:
    """Log at TRACE, checking first that TRACE is enabled."""
    if logger.isEnabledFor(TRACE):
        logger.log(TRACE, msg, *args)


class ConnLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every message with `conn <id>: ` (condure style: `conn 0-0-0: assigning id`).

    `conn_id` may be reassigned at any time (each new session gets a new id);
    `prefix` is the word before the id.
    """

    def __init__(self, logger: logging.Logger, conn_id: str | bytes,
                 prefix: str = "conn") -> None:
        super().__init__(logger, {})
        self.conn_id = conn_id
        self.prefix = prefix

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        cid = self.conn_id
        if isinstance(cid, bytes):  # session ids are decoded only when a line is written
            cid = cid.decode("ascii", "replace")
        head = f"{self.prefix} {cid}: "
        if args:  # the message is %-formatted later: keep the prefix literal
            head = head.replace("%", "%%")
        msg, kw = self.process(f"{head}{msg}", kwargs)
        self.logger.log(level, msg, *args, **kw)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs  # keep the caller's `extra`, if any

    def trace(self, msg: str, *args: object) -> None:
        """Log at TRACE with the connection prefix."""
        self.log(TRACE, msg, *args)


PARSE_WARN_INTERVAL = 1.0  # seconds between two "zhttp parse error" lines of one side


class RateLimitedWarning:
    """At most one warning per `interval` seconds: the ones in between are
    counted, and the next line written says how many were left out.

    For what handlers send: a handler spraying garbage must cost a line a
    second, not a line (or a traceback) a packet. `clock` is for tests.
    """

    def __init__(self, logger: logging.Logger, interval: float = PARSE_WARN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._count = 0  # warnings since the last line written
        self._written_at = float("-inf")

    def warning(self, msg: str, *args: object) -> None:
        self._count += 1
        now = self._clock()
        if now - self._written_at < self.interval:
            return
        left_out = self._count - 1
        extra = f" ({left_out} more suppressed)" if left_out else ""
        self.logger.warning(msg + "%s", *args, extra)
        self._count = 0
        self._written_at = now
