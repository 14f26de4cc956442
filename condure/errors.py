"""Exception taxonomy: every error knows its consequence.

Each class carries the ZHTTP ``condition`` a session ends with, its log
level, the HTTP status a client gets when nothing was written yet
(deviation D1/D9/D13/D29) and the one line of text of that answer's body
(pushpin-connmgr's wording where connmgr answers the same situation),
whether the handler is told with ``cancel`` (D14: only when the handler did
not cause the end itself) and the log wording operators grep for
(``process error: <name>``).
"""
from __future__ import annotations

import logging

# the body texts pushpin-connmgr answers with (connmgr.md 4.3); ours keep
# connmgr's words where the situation is the same, whatever our status
PROCESS_FAILED = "Failed to process request."
PARSE_FAILED = "Failed to parse request: "  # + the parse error, in httparse's words
INVALID_WEBSOCKET = ('Request contained an Upgrade header with value "websocket" but the request'
                     ' was not a valid WebSocket request.')


class CondureError(Exception):
    condition: str = "undefined-condition"
    status: int | None = None
    text: str | None = None  # the body of the answer with `status`; None: its reason phrase
    cancel: bool = True  # tell the handler (if its address is known)
    level: int = logging.DEBUG  # how `process error: ...` is logged: the usual ends are not news


class BadRequest(CondureError):
    """Malformed client request (D1); answered with `status`, handler sees nothing.

    `parse_error`: what connmgr names the fault (httparse's words, such as
    `invalid header name`), answered as `Failed to parse request: ...`;
    `text`: any other body line. Neither: the status's reason phrase (a case
    connmgr does not refuse, such as a missing Host)."""
    condition = "bad-request"
    status = 400

    def __init__(self, message: str, status: int = 400, parse_error: str | None = None,
                 text: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        if parse_error is not None:
            self.text = PARSE_FAILED + parse_error
        elif text is not None:
            self.text = text


class HeadTooLarge(BadRequest):
    """A request head larger than its read buffer can become (`capacity`
    bytes: --buffer-size, or more with spare blocks, connmgr.md 3). The
    status is ours (431, D1); the body is pushpin-connmgr's text."""

    def __init__(self, capacity: int) -> None:
        super().__init__("request head too large", 431)
        self.capacity = capacity
        self.text = f"Request header size exceeded limit of {capacity} bytes."


class ClientGone(CondureError):
    """The client closed or reset the connection."""


class Timeout(CondureError):
    """Stream timeout or handler silence; D13 answers 504 if nothing was written."""
    condition = "connection-timeout"
    status = 504


class BufferExceeded(CondureError):
    """The handler sent more than fits the connection's buffer (credits exceeded);
    before any response byte, a response condure refuses to write (D9: 502)."""
    status = 502
    level = logging.WARNING  # a handler bug the operator should hear of


class BadHandlerResponse(CondureError):
    """Handler response that cannot be written as given (D9, bad Content-Length)."""
    status: int | None = 502  # None when condure closes without a response
    level = logging.WARNING


class HandlerEnded(CondureError):
    """The handler ended the session itself (cancel, error, bad seq, bad packet).

    Before the response head the client gets connmgr's 500 (D29; condure
    1.9.1 closed silently); the handler gets no cancel."""
    cancel = False
    status: int | None = 500
    text: str | None = PROCESS_FAILED


class RejectionTooLarge(CondureError):
    """A WebSocket `rejected` answer whose body is over --buffer-size (D30):
    connmgr's 500 and text instead of the rejection, and `cancel` (connmgr
    does not count it as the handler's own end; condure 1.9.1 cancels too)."""
    status = 500
    level = logging.WARNING  # a handler bug, as BufferExceeded

    def __init__(self, limit: int) -> None:
        super().__init__(f"rejection body larger than {limit} bytes")
        self.text = f"Non-101 response body size exceeded limit of {limit} bytes."


class HandlerCancel(HandlerEnded):
    pass


class HandlerError(HandlerEnded):
    pass


class BadSeq(HandlerEnded):
    pass


class BadMessage(HandlerEnded):
    pass


class Stopped(CondureError):
    """The process is shutting down."""


# --- client mode (--zserver-stream, --zserver-req) ---------------------------
# No HTTP status here (status stays None): client mode answers no client, only
# the handler, with `error` + condition before the response head reached it and
# `cancel` after (shared/zhttp/client.md 4.2), or with nothing at all. The
# handler ending a session itself is the HandlerEnded family above, as in
# server mode: HandlerCancel, HandlerError, BadSeq, BadMessage.


class ClientError(CondureError):
    """A client-mode session fails with a ZHTTP condition (client.md 4.1):
    the origin, the network, a timeout or a bad request field."""

    def __init__(self, condition: str, message: str = "") -> None:
        super().__init__(message or condition)
        self.condition = condition


class SessionTimeout(CondureError):
    """No handler packet for 60 s (client.md 7.2): the session ends silently."""
    cancel = False


class DropRequest(HandlerEnded):
    """A handler message condure's parser refuses: dropped without any reply
    (client.md 4.3), the session never starts."""
    status = None  # client mode only
    text = None
