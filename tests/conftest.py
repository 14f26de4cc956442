"""Shared fixtures: a deadline for every test, short ipc dirs, free ports and
`python -m condure` subprocesses.

Only real parts are used: the condure under test runs as a subprocess of
``sys.executable -m condure`` (never a bare ``condure``: the Debian package
installs one), in the repository root, so both a plain checkout and an
editable install run the code of this checkout.
"""
from __future__ import annotations

import itertools
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
# `CONDURE_TEST_HTTP_PARSER=h11 make test` runs every condure the tests start
# (but those that name a parser themselves) with that --http-parser: the
# whole suite against either parser, as issue 12 asks of their agreement
TEST_HTTP_PARSER = os.environ.get("CONDURE_TEST_HTTP_PARSER")
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
        exc = DeadlineExceeded(f"test ran longer than its {seconds:g} s deadline")
        # In-process gevent tests: the signal may arrive while the hub greenlet
        # runs, which would only print the exception. Throw it into the main
        # greenlet (the test) instead, as gevent does for KeyboardInterrupt.
        greenlet = sys.modules.get("greenlet")
        if greenlet is not None:
            current = greenlet.getcurrent()
            if current.parent is not None:
                main = current
                while main.parent is not None:
                    main = main.parent
                main.throw(exc)
                return
        raise exc

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
    """SIGTERM, wait, SIGKILL on timeout; only ever the process we started.

    Interrupted (a deadline), it still kills the process before re-raising.
    """
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    except BaseException:
        proc.kill()
        proc.wait(timeout)
        raise
    return proc.returncode


def run_all(actions: list[Callable[[], object]]) -> None:
    """Run every cleanup action even if one fails; re-raise the first failure."""
    first: BaseException | None = None
    for action in actions:
        try:
            action()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            first = first or e
    if first is not None:
        raise first


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
    """A running `python -m condure`; `base` is its --zclient-stream spec base.

    `log_text()` returns the log from `log_offset` on: 0 for a process of
    one test, the start of the current test for a shared process
    (see `shared_condure`).
    """

    def __init__(self, proc: subprocess.Popen, port: int, base: str, log_path: Path,
                 args: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.base = base
        self.log_path = log_path
        self.args = args
        self.log_offset = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def mark_log(self) -> None:
        """Make log_text() start at the current end of the log."""
        self.log_offset = self.log_path.stat().st_size

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        """Wait until `text` shows up in the log; return the log."""
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
    if TEST_HTTP_PARSER and not any(a.startswith("--http-parser") for a in args):
        args = (*args, f"--http-parser={TEST_HTTP_PARSER}")
    return [sys.executable, "-m", "condure", *args]


def run_cli(*args: str, timeout: float = 15, user: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run condure expecting it to exit by itself. If it does not (it started
    serving after all), end its whole process group, workers included.
    `user`: run it as that user (the tests run as root, e.g. in a container);
    `env`: added to the environment."""
    proc = subprocess.Popen(condure_command(*args), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True, user=user,
                            env=None if env is None else {**os.environ, **env})
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class Launcher:
    """Starts condure processes whose ipc files go to `zdir` and logs to `logdir`."""

    def __init__(self, zdir: str, logdir: Path) -> None:
        self.zdir = zdir
        self.logdir = logdir
        self.started: list[CondureProcess] = []
        self.cache: dict[tuple, CondureProcess] = {}  # for shared_condure

    def start(self, *args: str, log_level: int = 3, port: int | None = None,
              base: str | None = None, wait: bool = True) -> CondureProcess:
        n = len(self.started)
        port = get_free_port() if port is None else port
        base = base or f"ipc://{self.zdir}/client{n + 1 if n else ''}"
        argv = [f"--log-level={log_level}", "--listen", f"127.0.0.1:{port},stream",
                "--zclient-stream", base, *args]
        log_path = self.logdir / f"condure{n + 1}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(condure_command(*argv), cwd=REPO_ROOT,
                                    stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        cp = CondureProcess(proc, port, base, log_path, argv)
        self.started.append(cp)
        if wait:
            wait_for_port(port, proc, log_path)
        return cp

    def stop_all(self) -> None:
        # signal them all first, so that their graceful stops overlap
        for cp in self.started:
            if cp.proc.poll() is None:
                cp.proc.send_signal(signal.SIGTERM)
        run_all([lambda cp=cp: stop_process(cp.proc) for cp in reversed(self.started)])


@pytest.fixture
def condure(zdir: str, tmp_path: Path) -> Iterator[Callable[..., CondureProcess]]:
    """Factory: condure(*args, log_level=3) -> a started CondureProcess.

    Listens on 127.0.0.1:<free port> in stream mode with
    `--zclient-stream ipc://ZDIR/client` (a later call in the same test gets
    ipc://ZDIR/client2 and so on); returns once the TCP port accepts.
    Every process is stopped (SIGTERM, then SIGKILL) at teardown.
    """
    launcher = Launcher(zdir, tmp_path)
    try:
        yield launcher.start
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def _shared_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    zdir = tempfile.mkdtemp(prefix="cd", dir="/tmp")
    launcher = Launcher(zdir, tmp_path_factory.mktemp("shared"))
    try:
        yield launcher
    finally:
        launcher.stop_all()
        shutil.rmtree(zdir, ignore_errors=True)


@pytest.fixture
def shared_condure(_shared_launcher: Launcher) -> Iterator[Callable[..., CondureProcess]]:
    """Like `condure`, but one process per distinct argument list per test module.

    Saves a process start per test. The test gets the process with its log
    view starting at the test's beginning; at teardown the process must
    still run (a test that kills it fails, and the next test gets a new one).
    Use it only for tests that leave nothing behind: every client closed,
    every handler closed (handlers should use an identity of their own).
    """
    cache = _shared_launcher.cache
    used: list[CondureProcess] = []

    def get(*args: str, log_level: int = 3) -> CondureProcess:
        key = (args, log_level)
        cp = cache.get(key)
        if cp is None or not cp.alive():
            cp = cache[key] = _shared_launcher.start(*args, log_level=log_level)
        cp.mark_log()
        used.append(cp)
        return cp

    yield get
    for cp in used:
        assert cp.alive(), f"condure died during this test:\n{cp.log_text()}"


_handler_ids = itertools.count(1)


@pytest.fixture
def handler_factory() -> Iterator[Callable[..., object]]:
    """Factory for tests.zhttp_handler.Handler objects, closed at teardown."""
    from zhttp_handler import Handler

    made: list[Handler] = []

    def make(base: str, **kwargs: object) -> Handler:
        # an identity never used before: late packets condure still sends to an
        # earlier test's handler (on a shared process) cannot reach this one
        kwargs.setdefault("identity", f"test-handler-{next(_handler_ids)}".encode())
        h = Handler(base, **kwargs)  # type: ignore[arg-type]
        made.append(h)
        return h

    try:
        yield make
    finally:
        # cancel what the test left open, so that condure's graceful stop
        # (D12) or a shared process does not wait for it
        run_all([lambda h=h: h.close(cancel_sessions=True) for h in made])


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
        run_all([lambda p=p: _stop_group(p) for p in reversed(started)])


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
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
            raise


@pytest.fixture
def app(request: pytest.FixtureRequest):
    """The real App in this process's gevent hub (tests/component), on real ipc
    sockets. Indirect parameters: more Config fields, e.g. {"http_parser": "h11"}."""
    from condure.app import App
    from condure.config import Config, ListenSpec

    zdir = tempfile.mkdtemp(prefix="cdt", dir="/tmp")
    fields = {"http_parser": TEST_HTTP_PARSER} if TEST_HTTP_PARSER else {}
    fields.update(getattr(request, "param", {}))
    cfg = Config(log_level=2, listen=(ListenSpec(addr="127.0.0.1", port=0),),
                 zclient_stream=(f"ipc://{zdir}/client",), **fields)
    a = App(cfg)
    a.start()
    a.base = f"ipc://{zdir}/client"
    a.port = a.listeners[0].port
    yield a
    a.stop()
    shutil.rmtree(zdir, ignore_errors=True)
