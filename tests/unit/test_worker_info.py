"""condure/app.py WorkerInfo: what a parent of --workers N hands a worker (D15)."""
from __future__ import annotations

from condure.app import WorkerInfo


def test_round_trip_with_colons_in_id_and_directory() -> None:
    """--id may hold ':' (and the temporary directory might); the encoding
    must keep every field apart."""
    info = WorkerInfo(1, 2, "/tmp/a:b/condure-w1", (5, 6), b"edge:7-1", 9)
    assert WorkerInfo.decode(info.encode()) == info


def test_no_listeners_and_no_ready_pipe() -> None:
    info = WorkerInfo(0, 3, "/tmp/x", (), b"condure-0")
    decoded = WorkerInfo.decode(info.encode())
    assert decoded == info and decoded.ready_fd == -1
