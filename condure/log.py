"""condure's log format on stdout: `[LEVEL] YYYY-MM-DD HH:MM:SS.mmm [target] message`.

The target is the Python logger name with '.' replaced by '::', so the logger
`condure.server.http1` prints `[condure::server::http1]`. Local time; levels
ERR WARN INFO DEBUG TRACE. Only the `condure` logger is configured, never the
root logger. RateLimitedWarning keeps warnings about what handlers send (both
modes' "zhttp parse error") to one line a second.
"""

from __future__ import annotations

import logging
import sys
import time
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


def setup(level: int, stream: TextIO | None = None) -> None:
    """Send the `condure` logger's records at `level` and above to `stream` (default stdout).

    `level` is a logging level, e.g. level_for(config.log_level). Calling it
    again replaces the handler installed before, so lines are never doubled.
    """
    logger = logging.getLogger(ROOT_LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, _CondureHandler)]:
        logger.removeHandler(old)
    handler = _CondureHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(CondureFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


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
