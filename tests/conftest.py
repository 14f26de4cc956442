"""Shared fixtures: a deadline for every test, short ipc dirs, free ports and
`python -m condure` subprocesses.

Only real parts are used: the condure under test runs as a subprocess of
``sys.executable -m condure`` (never a bare ``condure``: the Debian package
installs one), in the repository root, so both a plain checkout and an
editable install run the code of this checkout.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:  # the helper modules next to this file
    sys.path.insert(0, str(TESTS_DIR))

DEFAULT_DEADLINE = 30.0
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class DeadlineExceeded(BaseException):
    """Raised in the main thread when a test runs past its deadline.

    A BaseException, so that no `except Exception` in a test or helper can
    swallow it; pytest still reports it as an ordinary failure.
    """


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "deadline(seconds): fail the test if it runs longer (default 30 s)")


@pytest.fixture(autouse=True)
def _deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    """Turn a hung test into a failure instead of a blocked CI job.

    Autouse, so it is set up before (and torn down after) every other
    fixture of the test: a hang in a fixture's teardown fails too.
    """
    marker = request.node.get_closest_marker("deadline")
    seconds = float(marker.args[0]) if marker else DEFAULT_DEADLINE

    def expired(signum: int, frame: object) -> None:
        raise DeadlineExceeded(f"test ran longer than its {seconds:g} s deadline")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def zdir() -> Iterator[str]:
    """A short temporary directory for ipc endpoints (zmq ipc paths max 107 chars)."""
    path = tempfile.mkdtemp(prefix="cd", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def get_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return get_free_port()


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, wait, SIGKILL on timeout; only ever the process we started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def wait_for_port(port: int, proc: subprocess.Popen, log_path: Path,
                  timeout: float = START_TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"condure exited with {proc.returncode} before listening:\n"
                f"{log_path.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > end:
            raise AssertionError(
                f"condure did not listen on {port} within {timeout} s:\n"
                f"{log_path.read_text(errors='replace')}")
        time.sleep(0.02)


class CondureProcess:
    """A running `python -m condure`; `base` is its --zclient-stream spec base."""

    def __init__(self, proc: subprocess.Popen, port: int, base: str, log_path: Path,
                 args: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.base = base
        self.log_path = log_path
        self.args = args

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        """Wait until `text` shows up in the log; return the whole log."""
        end = time.monotonic() + timeout
        while True:
            log = self.log_text()
            if text in log:
                return log
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} not logged within {timeout} s:\n{log}")
            time.sleep(0.05)

    def stop(self) -> int:
        return stop_process(self.proc)


def condure_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "condure", *args]


@pytest.fixture
def condure(zdir: str, tmp_path: Path) -> Iterator[Callable[..., CondureProcess]]:
    """Factory: condure(*args, log_level=3) -> a started CondureProcess.

    Listens on 127.0.0.1:<free port> in stream mode with
    `--zclient-stream ipc://ZDIR/client` (a later call in the same test gets
    ipc://ZDIR/client2 and so on); returns once the TCP port accepts.
    Every process is stopped (SIGTERM, then SIGKILL) at teardown.
    """
    started: list[CondureProcess] = []

    def start(*args: str, log_level: int = 3, port: int | None = None,
              base: str | None = None, wait: bool = True) -> CondureProcess:
        n = len(started)
        port = get_free_port() if port is None else port
        base = base or f"ipc://{zdir}/client{n + 1 if n else ''}"
        argv = [f"--log-level={log_level}", "--listen", f"127.0.0.1:{port},stream",
                "--zclient-stream", base, *args]
        log_path = tmp_path / f"condure{n + 1}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(condure_command(*argv), cwd=REPO_ROOT,
                                    stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        cp = CondureProcess(proc, port, base, log_path, argv)
        started.append(cp)
        if wait:
            wait_for_port(port, proc, log_path)
        return cp

    try:
        yield start
    finally:
        for cp in reversed(started):
            stop_process(cp.proc)


@pytest.fixture
def handler_factory() -> Iterator[Callable[..., object]]:
    """Factory for tests.zhttp_handler.Handler objects, closed at teardown."""
    from zhttp_handler import Handler

    made: list[Handler] = []

    def make(base: str, **kwargs: object) -> Handler:
        h = Handler(base, **kwargs)  # type: ignore[arg-type]
        made.append(h)
        return h

    try:
        yield make
    finally:
        for h in made:
            h.close()


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen]]:
    """Factory for helper subprocesses (examples, pipelines); stopped at teardown.

    Each one is started in its own process group so a `bash -c` pipeline
    can be ended as a whole; only groups we created are signalled.
    """
    started: list[subprocess.Popen] = []

    def spawn(argv: list[str], **kwargs: object) -> subprocess.Popen:
        kwargs.setdefault("cwd", REPO_ROOT)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in reversed(started):
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the group we created, then SIGKILL it if its leader does not exit."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # a start_new_session child leads its own group
        except ProcessLookupError:
            break
        try:
            proc.wait(STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            continue
