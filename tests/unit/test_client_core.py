"""Client mode's part of the shared rules: its errors, its close mapping and
its module layout (pure: no sockets, no greenlets)."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from wsproto.events import CloseConnection

from condure import errors
from condure.client.websocket import _handler_close
from condure.zhttp.packet import Packet

CLIENT_DIR = Path(errors.__file__).parent / "client"


# --- errors ---------------------------------------------------------------------


def test_client_error_carries_its_condition() -> None:
    e = errors.ClientError("remote-connection-failed", "refused")
    assert e.condition == "remote-connection-failed" and str(e) == "refused"
    assert str(errors.ClientError("too-many-redirects")) == "too-many-redirects"


@pytest.mark.parametrize("exc, cancel, status", [
    (errors.ClientError("tls-error"), True, None),  # the handler is told: error or cancel
    (errors.SessionTimeout(), False, None),  # silence is answered with silence
    (errors.DropRequest("bad type"), False, None),
    # shared with server mode, where a client gets 500 before the head (D29);
    # client mode has no client to answer and never reads the status
    (errors.HandlerCancel("cancel"), False, 500),
    (errors.BadSeq("bad seq"), False, 500),
])
def test_client_errors_are_condure_errors(exc: errors.CondureError, cancel: bool,
                                          status: int | None) -> None:
    """One taxonomy: each knows whether the handler hears of it, its log
    level, and the status a server-mode client would get (none for the
    client-mode-only errors)."""
    assert isinstance(exc, errors.CondureError)
    assert exc.cancel is cancel
    assert exc.status == status
    assert exc.level == logging.DEBUG


def test_a_dropped_request_is_the_handlers_doing() -> None:
    assert issubclass(errors.DropRequest, errors.HandlerEnded)


# --- the handler's close --------------------------------------------------------


def test_handler_close_with_code_keeps_its_reason() -> None:
    ev = _handler_close(Packet([(b"r", 1)], type=b"close", code=4000, body=b"bye"))
    assert isinstance(ev, CloseConnection) and (ev.code, ev.reason) == (4000, "bye")


def test_handler_close_without_code_is_1000_and_drops_the_reason() -> None:
    """client.md 8.3 (server mode keeps the reason)."""
    ev = _handler_close(Packet([(b"r", 1)], type=b"close", body=b"dropped"))
    assert ev.code == 1000 and not ev.reason


@pytest.mark.parametrize("code", [1000, None])
def test_handler_close_reason_must_be_utf8(code: int | None) -> None:
    with pytest.raises(errors.HandlerError):
        _handler_close(Packet([(b"r", 1)], type=b"close", code=code, body=b"\xff"))


# --- module layout --------------------------------------------------------------


def _sibling_imports(path: Path) -> set[str]:
    """The condure.client modules `path` imports, anywhere in it (also lazily
    or under TYPE_CHECKING)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("condure.client."):
            out.add(node.module.split(".")[2])
    return out


def test_client_modules_import_one_way() -> None:
    """No cycles among condure/client/*: service -> session -> websocket ->
    context, http1, request, connect."""
    graph = {p.stem: _sibling_imports(p) for p in CLIENT_DIR.glob("*.py")}
    assert "session" in graph["service"] and "websocket" in graph["session"]
    seen: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert seen.get(name) != 1, f"import cycle: {' -> '.join(path + (name,))}"
        if seen.get(name) == 2:
            return
        seen[name] = 1
        for dep in graph.get(name, ()):
            visit(dep, path + (name,))
        seen[name] = 2

    for name in graph:
        visit(name, ())
