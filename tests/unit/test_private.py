"""condure.private: the version and shape checks that choose between the
private APIs and their public fallbacks, and the fallbacks' zmq calls."""
from __future__ import annotations

import logging

import pytest
import zmq

from condure import private

TESTED = {"python": "3.11", "gevent": "26.9", "pyzmq": "27.3"}


def ok() -> None:
    return None


SHAPES_OK = {"zmq": ok, "server": ok, "hub": ok}


@pytest.mark.parametrize("version, expected", [
    ("26.9.0", (26, 9)), ("27.3", (27, 3)), ("27.3.0b1", (27, 3)), ("3.11.2", (3, 11)),
    ("26", None), ("", None), ("dev", None),
])
def test_major_minor(version: str, expected: tuple[int, int] | None) -> None:
    assert private.major_minor(version) == expected


def test_tested_versions_pass() -> None:
    installed = {"python": "3.11.9", "gevent": "26.9.3", "pyzmq": "27.3.0"}
    assert private.version_problems(installed, TESTED) == {}


def test_version_mismatch_is_reported() -> None:
    installed = {"python": "3.12.1", "gevent": "25.5.1", "pyzmq": "27.3.0"}
    problems = private.version_problems(installed, TESTED)
    assert problems == {"python": "python 3.12.1 (written for 3.11.x)",
                        "gevent": "gevent 25.5.1 (written for 26.9.x)"}


def test_unreadable_or_missing_version_is_a_mismatch() -> None:
    problems = private.version_problems({"python": "3.11.0", "gevent": "?"}, TESTED)
    assert problems == {"gevent": "gevent ? (written for 26.9.x)",
                        "pyzmq": "pyzmq (unknown) (written for 27.3.x)"}


def test_select_all_private_when_everything_matches() -> None:
    sel = private.select({"python": "3.11.2", "gevent": "26.9.0", "pyzmq": "27.3.0"},
                         False, SHAPES_OK)
    assert (sel.zmq, sel.server, sel.hub, sel.problems) == (True, True, True, ())


def test_select_a_gevent_mismatch_turns_off_its_groups_only() -> None:
    called = []

    def shape(name: str) -> object:
        return lambda: called.append(name)

    sel = private.select({"python": "3.11.2", "gevent": "27.0.0", "pyzmq": "27.3.0"},
                         False, {g: shape(g) for g in private.GROUPS})
    assert (sel.zmq, sel.server, sel.hub) == (True, False, False)
    assert sel.problems == ("gevent 27.0.0 (written for 26.9.x)",)
    assert called == ["zmq"]  # the attributes of a mismatched version are not probed


def test_select_a_missing_attribute_turns_off_its_group() -> None:
    shapes = {**SHAPES_OK, "zmq": lambda: "zmq.backend.cython._zmq.Socket.recv missing"}
    sel = private.select({"python": "3.11.2", "gevent": "26.9.0", "pyzmq": "27.3.0"},
                         False, shapes)
    assert (sel.zmq, sel.server, sel.hub) == (False, True, True)
    assert sel.problems == ("zmq.backend.cython._zmq.Socket.recv missing",)


def test_select_forced_public() -> None:
    sel = private.select({"python": "3.11.2", "gevent": "26.9.0", "pyzmq": "27.3.0"},
                         True, SHAPES_OK)
    assert (sel.zmq, sel.server, sel.hub, sel.forced) == (False, False, False, True)


def test_installed_versions_match_what_this_tree_was_written_for() -> None:
    """Fails after an upgrade of gevent, pyzmq or Python: check the private
    APIs (see condure/private.py), then update TESTED."""
    assert private.version_problems(private.installed_versions()) == {}
    assert all(private.SHAPES[g]() is None for g in private.GROUPS)


def test_report_logs_one_warning(monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    sel = private.Selection(False, True, True, ("pyzmq 28.0.0 (written for 27.3.x)",), False)
    monkeypatch.setattr(private, "SELECTED", sel)
    monkeypatch.setattr(private, "_reported", False)
    with caplog.at_level(logging.WARNING, logger="condure"):
        private.report()
        private.report()
    assert [r.getMessage() for r in caplog.records] == [
        "private APIs not used for zmq (slower public ones instead): "
        "pyzmq 28.0.0 (written for 27.3.x)"]


def test_report_is_silent_when_all_private(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(private, "SELECTED", private.Selection(True, True, True, (), False))
    monkeypatch.setattr(private, "_reported", False)
    with caplog.at_level(logging.DEBUG, logger="condure"):
        private.report()
    assert caplog.records == []


@pytest.mark.parametrize("fast", [True, False], ids=["cython", "public"])
def test_zmq_calls(fast: bool) -> None:
    """Both implementations: a non-blocking multipart send and receive, RCVMORE, EAGAIN."""
    if fast:
        from zmq.backend.cython._zmq import Socket as raw
        send, recv, get = raw.send, raw.recv, raw.get
    else:
        send, recv, get = private._public_send, private._public_recv, private._public_get
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://private-test")
        b.connect("inproc://private-test")
        send(a, b"one", zmq.SNDMORE | zmq.NOBLOCK, True, False)
        send(a, b"two", zmq.NOBLOCK, True, False)
        assert b.poll(2000) == zmq.POLLIN
        assert recv(b, zmq.NOBLOCK, True, False) == b"one"
        assert get(b, zmq.RCVMORE) == 1
        assert recv(b, zmq.NOBLOCK, True, False) == b"two"
        assert get(b, zmq.RCVMORE) == 0
        with pytest.raises(zmq.Again):
            recv(b, zmq.NOBLOCK, True, False)
    finally:
        a.close(0)
        b.close(0)
        ctx.term()
