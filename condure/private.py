"""Every private or semi-private API of gevent, `_socket` and pyzmq condure uses.

The hot path was tuned with calls below the libraries' public surface: they
save a Python layer per message or per connection, but nothing promises they
stay. They are all reached here, nowhere else, and at import this module
checks that the installed versions are the ones it was written for (same
major.minor as `TESTED`) and that each private attribute is there with the
expected shape. Whatever fails its check is replaced by the public API that
does the same job, slower; `report()` (called once by the command-line entry
point) logs one WARNING naming what failed. `CONDURE_PUBLIC_APIS=1` in the
environment selects the public APIs throughout (for tests, or to rule the
private ones out when hunting a bug).

Three groups, each checked and selected as a whole:

- `zmq` (pyzmq): the Cython `send`/`recv`/`get` of
  `zmq.backend.cython._zmq.Socket`, called unbound on zmq.green and plain
  sockets (subclasses of it), skip zmq.green's wrappers (10x the cost).
  Fallback: the sockets' own methods with `zmq.NOBLOCK` (zmq.green then
  runs its bookkeeping, which is harmless).
- `server` (gevent + `_socket`): a StreamServer whose internal hooks
  `do_read`/`do_handle` are overridden to accept with the listening
  socket's `_socket.socket._accept` (reached through gevent's `sock._sock`)
  and hand over a plain `_socket.socket`, not gevent's cooperative wrapper.
  Fallback: gevent's own accept (public `handle` and `spawn` arguments),
  the accepted socket's fd moved to a non-blocking `socket.socket`.
- `hub` (gevent): the hub and loop interface (`get_hub()`, `hub.switch()`,
  `hub.wait()`, `loop.io()`, `loop.run_callback()`), documented by gevent
  (`gevent._interfaces`) but below `gevent.spawn`/`Event`. There is no
  public layer beneath it (every gevent wait is built on it), so the helpers
  below are always these calls; when the check fails, callers that have a
  simpler way out take it (`HUB_OK`): the listener stops reusing connection
  greenlets, the ZeroMQ readers wait with `gevent.socket.wait_read`.
"""
from __future__ import annotations

import _socket
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.socket as gsocket
import zmq
import zmq.green
from gevent.server import StreamServer

PUBLIC_ENV = "CONDURE_PUBLIC_APIS"

# The versions this module was written and measured against (`pip show`);
# another patch release is accepted, another minor release is not.
TESTED: Mapping[str, str] = {"python": "3.11", "gevent": "26.9", "pyzmq": "27.3"}
# which group each version check guards (`_socket` is CPython's, not a package's)
GUARDS: Mapping[str, tuple[str, ...]] = {
    "python": ("server",),
    "gevent": ("server", "hub"),
    "pyzmq": ("zmq",),
}
GROUPS = ("zmq", "server", "hub")

log = logging.getLogger("condure")

# any socket condure handles raw: `_socket.socket` is the base class of both
# the private-mode sockets and the public `socket.socket`
RawSocket = _socket.socket


# --- checks ------------------------------------------------------------------

def major_minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string such as `26.9.0` or `27.3.0b1`."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def version_problems(installed: Mapping[str, str],
                     tested: Mapping[str, str] = TESTED) -> dict[str, str]:
    """Pure: {name: why} for each installed version whose major.minor is not
    the tested one (or that cannot be read)."""
    out = {}
    for name, want in tested.items():
        have = installed.get(name, "")
        if major_minor(have) is None or major_minor(have) != major_minor(want):
            out[name] = f"{name} {have or '(unknown)'} (written for {want}.x)"
    return out


def installed_versions() -> dict[str, str]:
    return {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "gevent": str(getattr(gevent, "__version__", "")),
        "pyzmq": str(getattr(zmq, "__version__", "")),
    }


def _zmq_shape() -> str | None:
    """None if pyzmq's Cython socket is as expected, else what is not."""
    try:
        from zmq.backend.cython._zmq import Socket as raw
    except ImportError as e:
        return f"zmq.backend.cython._zmq: {e}"
    for name in ("send", "recv", "get"):
        if not callable(getattr(raw, name, None)):
            return f"zmq.backend.cython._zmq.Socket.{name} missing"
    # the unbound Cython methods are called on these sockets
    if not (issubclass(zmq.green.Socket, raw) and issubclass(zmq.Socket, raw)):
        return "zmq sockets no longer derive from zmq.backend.cython._zmq.Socket"
    return None


def _server_shape() -> str | None:
    """None if gevent's StreamServer and socket internals are as expected."""
    for name in ("do_read", "do_handle", "_do_read", "full"):
        if not callable(getattr(StreamServer, name, None)):
            return f"gevent StreamServer.{name} missing"
    if not callable(getattr(_socket.socket, "_accept", None)):
        return "_socket.socket._accept missing"
    probe = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if not isinstance(getattr(probe, "_sock", None), _socket.socket):
            return "gevent socket has no _sock"
    finally:
        probe.close()
    return None


def _hub_shape() -> str | None:
    """None if gevent's hub and loop have the calls the helpers below make."""
    hub_ = gevent.get_hub()
    for name in ("switch", "wait", "loop"):
        if getattr(hub_, name, None) is None:
            return f"gevent hub.{name} missing"
    for name in ("io", "run_callback"):
        if not callable(getattr(hub_.loop, name, None)):
            return f"gevent loop.{name} missing"
    return None


SHAPES: Mapping[str, Callable[[], str | None]] = {
    "zmq": _zmq_shape, "server": _server_shape, "hub": _hub_shape}


@dataclass(frozen=True)
class Selection:
    """Which groups use their private APIs, and why the others do not."""

    zmq: bool
    server: bool
    hub: bool
    problems: tuple[str, ...]  # one phrase per failed check
    forced: bool  # CONDURE_PUBLIC_APIS


def select(installed: Mapping[str, str], forced: bool,
           shapes: Mapping[str, Callable[[], str | None]] = SHAPES) -> Selection:
    """Decide per group: private only if not forced, the versions it depends
    on are the tested ones and its attributes are there."""
    if forced:
        return Selection(False, False, False, (), True)
    versions = version_problems(installed)
    problems = list(versions.values())
    ok = {}
    for group in GROUPS:
        bad_version = any(group in GUARDS[name] for name in versions)
        shape = None if bad_version else shapes[group]()
        if shape is not None:
            problems.append(shape)
        ok[group] = not bad_version and shape is None
    return Selection(ok["zmq"], ok["server"], ok["hub"], tuple(problems), False)


def _forced() -> bool:
    return os.environ.get(PUBLIC_ENV, "") not in ("", "0")


SELECTED = select(installed_versions(), _forced())
HUB_OK = SELECTED.hub
_reported = False


def report() -> None:
    """Log, once per process, one WARNING if any private API is not used."""
    global _reported
    if _reported:
        return
    _reported = True
    sel = SELECTED
    if sel.forced:
        log.warning("%s is set: using public gevent/pyzmq/socket APIs (slower)", PUBLIC_ENV)
    elif sel.problems:
        off = [g for g in GROUPS if not getattr(sel, g)]
        log.warning("private APIs not used for %s (slower public ones instead): %s",
                    ", ".join(off), "; ".join(sel.problems))


# --- zmq -------------------------------------------------------------------------
# Called as send(sock, data, flags, copy, track), recv(sock, flags, copy, track),
# get(sock, option): the Cython methods unbound (no Python frame in between)
# or the sockets' public methods.

def _public_send(sock: zmq.Socket[Any], data: Any, flags: int, copy: bool, track: bool) -> Any:
    return sock.send(data, flags, copy=copy, track=track)


def _public_recv(sock: zmq.Socket[Any], flags: int, copy: bool, track: bool) -> Any:
    return sock.recv(flags, copy=copy, track=track)


def _public_get(sock: zmq.Socket[Any], option: int) -> Any:
    return sock.get(option)


zmq_send: Callable[..., Any] = _public_send
zmq_recv: Callable[..., Any] = _public_recv
zmq_get: Callable[..., Any] = _public_get
if SELECTED.zmq:
    from zmq.backend.cython._zmq import Socket as _CythonSocket

    zmq_send = _CythonSocket.send
    zmq_recv = _CythonSocket.recv
    zmq_get = _CythonSocket.get


# --- hub -------------------------------------------------------------------------

def hub() -> Any:
    """This thread's gevent hub (`gevent.get_hub()`), to keep in an attribute."""
    return gevent.get_hub()


def current() -> Any:
    """The running greenlet; `.switch(*args)` resumes it once it has parked."""
    return gevent.getcurrent()


def io_watcher(fd: int, events: int) -> Any:
    """A loop watcher on `fd` (events: 1 read, 2 write): `.start(callback)`
    runs `callback()` in the hub each time the fd is ready, until `.stop()`;
    `.close()` frees it. Reusable: start and stop it as often as needed."""
    return gevent.get_hub().loop.io(fd, events)


def run_callback(fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` in the hub at its next turn (before waiting for I/O):
    the way for a greenlet to resume another without running it itself."""
    gevent.get_hub().loop.run_callback(fn, *args)


def park(hub_: Any) -> Any:
    """Suspend the running greenlet in `hub_` (from `hub()`) until something
    switches to it (a watcher callback or `run_callback(g.switch, ...)`);
    returns the switch's arguments. Cheaper than an Event: no link lists."""
    return hub_.switch()


def fd_waiter(fd: int) -> Callable[[], None]:
    """A function that blocks the calling greenlet until `fd` is readable;
    one watcher for all its calls (or `gevent.socket.wait_read` per call)."""
    if not HUB_OK:
        return lambda: gsocket.wait_read(fd)
    hub_ = gevent.get_hub()
    watcher = hub_.loop.io(fd, 1)
    return lambda: hub_.wait(watcher)


# --- server ----------------------------------------------------------------------

Accepted = Callable[[RawSocket, Any], None]


def accept_server(sock: gsocket.socket, accepted: Accepted, full: Callable[[], bool]) -> Any:
    """A gevent StreamServer on the listening `sock` that calls, in the hub,
    `full()` before each accept and `accepted(raw_sock, address)` after: a
    plain non-blocking socket (gevent's cooperative one is made only by the
    connections that must block), which `accepted` must hand to a greenlet
    without blocking. The server's start/stop_accepting/close are gevent's."""
    cls = _PrivateServer if SELECTED.server else _PublicServer
    return cls(sock, accepted, full)


class _PrivateServer(StreamServer):  # type: ignore[misc]  # gevent ships no types
    """gevent's accept loop with its per-connection hooks replaced: no
    cooperative socket per accept, no greenlet spawned by gevent."""

    def __init__(self, sock: gsocket.socket, accepted: Accepted, full: Callable[[], bool]) -> None:
        super().__init__(sock, accepted)
        self.full = full  # as gevent itself does with a Pool's `full`
        self._accepted = accepted
        raw = sock._sock
        self._accept = raw._accept
        # looked up once: gevent's do_read converts family and type to enums per accept
        self._kind = (int(raw.family), int(raw.type))

    def do_read(self) -> tuple[RawSocket, Any] | None:
        try:
            fd, address = self._accept()
        except BlockingIOError:
            return None
        sock = _socket.socket(*self._kind, 0, fd)
        sock.setblocking(False)
        return sock, address

    def do_handle(self, sock: RawSocket, address: Any) -> None:
        self._accepted(sock, address)


def _run_inline(fn: Callable[..., Any], *args: Any) -> None:
    """A StreamServer `spawn`: runs the handler in the accept loop itself."""
    fn(*args)


class _PublicServer(StreamServer):  # type: ignore[misc]  # gevent ships no types
    """Only public StreamServer arguments: the handler runs inline in the
    accept loop (`spawn`) and moves the accepted socket's fd to a plain one."""

    def __init__(self, sock: gsocket.socket, accepted: Accepted, full: Callable[[], bool]) -> None:
        super().__init__(sock, self._handle_green, spawn=_run_inline)
        self.full = full
        self._accepted = accepted

    def _handle_green(self, gsock: gsocket.socket, address: Any) -> None:
        # gevent closes `gsock` after this returns: by then it no longer owns the fd
        sock = socket.socket(gsock.family, gsock.type, 0, gsock.detach())
        sock.setblocking(False)
        self._accepted(sock, address)
