"""In-memory sides for the server core: a client stream, a handler link, a worker.

Real objects that record what an exchange does (no mocks): `MemoryStream`
plays a script of steps whenever the exchange waits, `MemoryLink` keeps
every packet sent (decoded back into a dict) and holds the inbox the script
fills, `MemoryWorker` carries a real Config and real Metrics. The parser is
the real one, so bytes after a request head stay buffered in it as they
would in production.

A step is one of the small classes below: client bytes arriving (`Client`),
a handler packet (`Handler`, its `from`, `id` and `seq` filled in), the
client's EOF (`Eof`), a flag for `check_timeout` (`Flag`), a slow client
(`Slow`: queued writes are held) and its catching up (`Drain`), and an
assertion to run at that point (`Check`). When the
exchange waits and the script is over, `Stalled` is raised: not a
CondureError, so no exchange catches it and a test can look at what
happened up to then.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Union

import tnetstring

from condure.config import Config
from condure.log import ConnLogger
from condure.metrics import Metrics
from condure.server import http1
from condure.server.connection import flagged
from condure.server.parser import make_parser
from condure.server.request import RequestHead
from condure.server.ports import ClientStream, HandlerLink, Inbound, Worker
from condure.zhttp import packet as zp
from condure.zhttp.session import Session

RID = b"test-0-1"
HANDLER = b"handler-1"
PEER = (b"127.0.0.1", 40000)

log = logging.getLogger("condure.tests.core")


class Stalled(Exception):
    """The exchange waits for more and the script has nothing left."""


# --- script steps ---------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """Bytes from the client (buffered like a kernel would, read or not)."""
    data: bytes


@dataclass(frozen=True)
class Eof:
    """The client closed its side."""


@dataclass(frozen=True)
class Flag:
    """What the timer sweeper or shutdown flags: "stream timeout", "handler
    timeout", "stopped" or "inbox overflow" (raised by `check_timeout`)."""
    reason: str


@dataclass(frozen=True)
class Slow:
    """The client stops taking bytes: queued writes are held from now on."""


@dataclass(frozen=True)
class Drain:
    """The client takes everything held (callbacks run); it stays slow."""


@dataclass(frozen=True)
class Check:
    """Run an assertion at this point of the script (it wakes nothing)."""
    check: Callable[[], object]


class Handler:
    """A handler packet: `Handler(type=b"credit", credits=10)`.

    Keyword names are ZHTTP field names with `_` for `-` (`content_type`),
    `from_` for `from`. `from`, `id` and `seq` are filled in unless given;
    `seq=None` leaves it out.
    """

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __repr__(self) -> str:
        return f"Handler({self.fields!r})"


Step = Union[Client, Eof, Flag, Slow, Drain, Check, Handler]


def wire_fields(fields: dict[str, Any]) -> dict[bytes, Any]:
    """Python keyword names to ZHTTP map keys (headers as lists)."""
    out: dict[bytes, Any] = {}
    for name, value in fields.items():
        key = b"from" if name == "from_" else name.replace("_", "-").encode()
        if key == b"headers":
            value = [[n, v] for n, v in value]
        out[key] = value
    return out


# --- the handler side -------------------------------------------------------------


@dataclass
class Sent:
    """One packet condure sent: `first` (the request) or to `addr`."""
    first: bool
    addr: bytes | None
    fields: dict[str, Any]  # the decoded map, keys as str

    @property
    def type(self) -> str:
        if self.first:
            return "request"
        t: bytes = self.fields.get("type", b"")
        return t.decode() or "data"


class MemoryLink:
    """A `HandlerLink` that records what is sent and serves an inbox."""

    def __init__(self) -> None:
        self.inbox: deque[Inbound] = deque()
        self.sent: list[Sent] = []

    def send_first(self, rid: bytes, payload: bytes) -> None:
        self.sent.append(Sent(True, None, decode(payload)))

    def send_to(self, addr: bytes, payload: bytes) -> None:
        self.sent.append(Sent(False, addr, decode(payload)))

    def next_packet(self) -> Inbound | None:
        return self.inbox.popleft() if self.inbox else None

    # --- for assertions -------------------------------------------------------------

    def types(self) -> list[str]:
        return [s.type for s in self.sent]

    def after_request(self) -> list[Sent]:
        return [s for s in self.sent if not s.first]

    def bodies(self) -> list[tuple[bytes, bool]]:
        """(body, more) of each data packet condure sent after the request."""
        return [(s.fields.get("body", b""), bool(s.fields.get("more")))
                for s in self.after_request() if s.type == "data"]

    def credits(self) -> list[int]:
        return [s.fields["credits"] for s in self.sent if s.type == "credit"]


def decode(payload: bytes) -> dict[str, Any]:
    assert payload[:1] == b"T"
    m = tnetstring.loads(payload[1:])
    return {k.decode(): v for k, v in m.items()}


# --- the worker -------------------------------------------------------------------


class MemoryWorker:
    """A `Worker` with a real Config (fields overridable) and real Metrics."""

    def __init__(self, **config: Any) -> None:
        self.config = replace(Config(), **config)
        self.instance_id = self.config.id.encode()
        self.metrics = Metrics()
        self.access_log = self.config.access_log
        self.handler_timeouts: list[tuple[bytes, float]] = []

    def warn_handler_timeout(self, rid: bytes, seconds: float) -> None:
        self.handler_timeouts.append((rid, seconds))


# --- the client side ---------------------------------------------------------------


@dataclass
class _Held:
    data: bytes
    on_written: Callable[[], None] | None


class MemoryStream:
    """A `ClientStream` over a script; records what reaches the client."""

    peer: tuple[bytes, int] | None = PEER
    scheme = b"http"
    last_io = 0.0
    stopping = False
    debug = True  # the debug lines run too

    def __init__(self, link: MemoryLink, worker: MemoryWorker, session: Session,
                 steps: Iterable[Step] = ()) -> None:
        self.link = link
        self.session: Session | None = session
        self.buffer_size = worker.config.buffer_size
        self.parser = make_parser(worker.config.http_parser, self.buffer_size)
        self.script: deque[Step] = deque(steps)
        self.steps_taken = 0
        self._log = ConnLogger(log, session.id)
        self._input = bytearray()  # what the client sent and nobody read yet
        self._eof = False
        self._timeout: str | None = None
        self._slow = False
        self._held: list[_Held] = []
        self._sent_queued = 0
        self._handler_seq = 0
        self._handler_from = HANDLER
        # what happened
        self.written = bytearray()
        self.closed: str | None = None  # "graceful" or "answered"
        self.answers: list[int] = []
        self.upgrades = 0
        self.sessions_ended = 0

    @property
    def log(self) -> ConnLogger:
        return self._log

    # --- the script ------------------------------------------------------------------

    def play(self, *steps: Step) -> None:
        self.script.extend(steps)

    def _take_step(self) -> Step:
        if not self.script:
            raise Stalled(f"script over after {self.steps_taken} steps")
        self.steps_taken += 1
        step = self.script.popleft()
        if isinstance(step, Client):
            self._input += step.data
        elif isinstance(step, Eof):
            self._eof = True
        elif isinstance(step, Flag):
            self._timeout = step.reason
        elif isinstance(step, Slow):
            self._slow = True
        elif isinstance(step, Drain):
            self._release()
        elif isinstance(step, Check):
            step.check()
        else:
            self.link.inbox.append(self._inbound(step))
        return step

    def _inbound(self, step: Handler) -> Inbound:
        fields = dict(step.fields)
        if "from_" in fields:
            self._handler_from = fields["from_"]  # later packets come from there too
        fields.setdefault("from_", self._handler_from)
        fields.setdefault("id", RID if self.session is None else self.session.id)
        if "seq" not in fields:
            fields["seq"] = self._handler_seq
            self._handler_seq += 1
        elif fields["seq"] is None:
            del fields["seq"]
        pkt = zp.parse(b"T" + tnetstring.dumps(wire_fields(fields)))
        rid, seq = pkt.ids[0]
        return rid, pkt, seq

    def _readable(self) -> bool:
        return bool(self._input) or self._eof

    # --- waiting and reading ---------------------------------------------------------

    def wait(self, read: bool) -> bool:
        """As ClientIO.wait: at once if a packet or a flag waits; else steps
        until a packet, a flag, a drain or (if `read`) client input."""
        if self.link.inbox or self._timeout:
            return False
        if read and self._readable():
            return True
        while True:
            step = self._take_step()
            if self.link.inbox or self._timeout or isinstance(step, Drain):
                return False
            if read and self._readable():
                return True

    def check_timeout(self) -> None:
        if self._timeout:
            reason, self._timeout = self._timeout, None
            raise flagged(reason)  # as the real connection does

    def recv(self) -> bytes:
        while not self._readable():
            self.check_timeout()
            self._take_step()
        return self.recv_now()

    def recv_now(self) -> bytes:
        assert self._readable(), "recv_now without input"
        data = bytes(self._input[:self.buffer_size])
        del self._input[:self.buffer_size]
        return data

    # --- writing ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert not self._held, "a blocking write behind queued bytes"
        self.written += data

    def queue_write(self, data: bytes, on_written: Callable[[], None] | None = None) -> None:
        if self._slow:
            self._held.append(_Held(data, on_written))
            return
        self._put(data, on_written)

    def _put(self, data: bytes, on_written: Callable[[], None] | None) -> None:
        self.written += data
        self._sent_queued += len(data)
        if on_written is not None:
            on_written()

    def _release(self) -> None:
        held, self._held = self._held, []
        for h in held:
            self._put(h.data, h.on_written)

    @property
    def queued_pieces(self) -> int:
        return sum(1 for h in self._held if h.on_written is not None)

    @property
    def queued_bytes_sent(self) -> int:
        return self._sent_queued

    def flush_all(self) -> None:
        """A blocking write of what is held: the client takes it in the end."""
        self._release()

    # --- endings ---------------------------------------------------------------------

    def close_gracefully(self) -> None:
        self.closed = "graceful"

    def answer_and_close(self, status: int, body: bytes | None = None) -> None:
        self.written += http1.error_response(status, body=body)
        self.answers.append(status)
        self.closed = "answered"

    def upgraded(self) -> None:
        self.upgrades += 1

    def end_session(self) -> None:
        self.sessions_ended += 1

    # --- for assertions ----------------------------------------------------------------

    @property
    def unread(self) -> bytes:
        """Client bytes nobody has read (the kernel's buffer)."""
        return bytes(self._input)


@dataclass
class Core:
    """One exchange's sides, ready to build it (see `core`)."""
    stream: MemoryStream
    link: MemoryLink
    worker: MemoryWorker
    head: RequestHead
    session: Session

    @property
    def ctor(self) -> tuple[ClientStream, HandlerLink, Worker, RequestHead, Session]:
        """The arguments every exchange class takes."""
        return self.stream, self.link, self.worker, self.head, self.session


def core(raw: bytes, *steps: Step, **config: Any) -> Core:
    """Parse the request head at the start of `raw` (what follows it stays in
    the parser, as bytes read with the head do) and set up the three sides.
    The parser is --http-parser auto unless CONDURE_TEST_HTTP_PARSER names
    one, as for the condure subprocesses of the other tests."""
    config.setdefault("http_parser", os.environ.get("CONDURE_TEST_HTTP_PARSER", "auto"))
    link = MemoryLink()
    worker = MemoryWorker(**config)
    session = Session(RID, 0.0)
    stream = MemoryStream(link, worker, session, steps)
    stream.parser.feed(raw)
    head = stream.parser.next_event()
    assert isinstance(head, RequestHead), f"no complete head in {raw!r}"
    return Core(stream, link, worker, head, session)

