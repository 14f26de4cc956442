"""Fail fast (issue 12, item 5): whatever cannot be set up at start is one ERR
line and exit status 1, at once, as with condure; never a process that stays
alive serving nothing.

Each run has a deadline (`EXIT_WITHIN`): a process that hangs (as it did in
ctx.term() after a failed ZeroMQ bind) fails the test instead of blocking
it, and is killed with its whole process group (workers included).

condure 1.9.1, observed: a failed bind of a zhttp spec logs `failed to set
zhttp client stream|req specs: bind SPEC: REASON` and a failed --listen
`failed to bind ADDR: REASON`, both exit 1; a tcp port over 65535 in a
stream base is refused (`error parsing tcp port in base spec: ...`) but in a
req spec libzmq binds the port it wraps to (we refuse it when parsing the
command line); a --tls-identities-dir that does not exist is not checked
(it starts, and every TLS handshake fails): we refuse it when a tls listener
needs it (D20).
"""
from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO_ROOT, condure_command, get_free_port, run_cli, stop_process

EXIT_WITHIN = 8.0  # seconds; starting takes well under 1 s (3 processes with --workers 2)

LOG_LINE = re.compile(
    r"\[(ERR|WARN|INFO|DEBUG|TRACE)\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[condure(::\w+)*\] .+")

# spec option -> (--listen mode it needs, what condure calls its specs, --*-connect flag)
KINDS = {
    "zclient-stream": ("stream", "zhttp client stream", "--zclient-connect"),
    "zclient-req": ("req", "zhttp client req", "--zclient-connect"),
    "zserver-stream": (None, "zhttp server stream", "--zserver-connect"),
    "zserver-req": (None, "zhttp server req", "--zserver-connect"),
}
# the endpoint of a spec that is bound (or connected) first: a stream base
# expands to three, the first being -out (server mode) or -in (client mode)
FIRST_SUFFIX = {"zclient-stream": "-out", "zclient-req": "", "zserver-stream": "-in",
                "zserver-req": ""}
# client mode does not run with --workers N yet (test_cli checks it is refused)
KIND_WORKERS = [(kind, w) for kind in KINDS for w in ((1, 2) if kind.startswith("zclient") else (1,))]
KIND_WORKERS_IDS = [f"{kind}-workers{w}" for kind, w in KIND_WORKERS]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback TCP port another program (this test) holds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def spec_args(kind: str, spec: str, workers: int, connect: bool = False) -> list[str]:
    """A command line that uses `spec` as its --<kind>, with the listener it needs."""
    mode, _, connect_flag = KINDS[kind]
    args = [f"--{kind}", spec]
    if mode is not None:
        args += ["--listen", f"127.0.0.1:{get_free_port()},{mode}"]
    if connect:
        args.append(connect_flag)
    if workers > 1:
        args += ["--workers", str(workers)]
    return args


def assert_fails_fast(args: list[str], message: str, user: str | None = None) -> list[str]:
    """Exit status 1 within EXIT_WITHIN seconds, one ERR line containing
    `message`, every line in condure's format, no traceback. Returns the lines."""
    start = time.monotonic()
    r = run_cli(*args, timeout=EXIT_WITHIN, user=user)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert time.monotonic() - start < EXIT_WITHIN
    assert "Traceback" not in out, out
    lines = r.stdout.splitlines()
    assert all(LOG_LINE.fullmatch(line) for line in lines), out
    errors = [line for line in lines if line.startswith("[ERR]")]
    assert len(errors) == 1 and message in errors[0], out
    return lines


# ---------------------------------------------------------------------------
# ZeroMQ binds and connects


@pytest.mark.parametrize("kind,workers", KIND_WORKERS, ids=KIND_WORKERS_IDS)
def test_bind_in_a_missing_ipc_directory(zdir: str, kind: str, workers: int) -> None:
    spec = f"ipc://{zdir}/missing/h"
    what = KINDS[kind][1]
    assert_fails_fast(spec_args(kind, spec, workers),
                      f"failed to set {what} specs: bind {spec}{FIRST_SUFFIX[kind]}: "
                      "No such file or directory")


@pytest.mark.parametrize("kind,workers", KIND_WORKERS, ids=KIND_WORKERS_IDS)
def test_bind_to_a_tcp_port_in_use(busy_port: int, kind: str, workers: int) -> None:
    spec = f"tcp://127.0.0.1:{busy_port}"  # a stream base's first port is its own
    what = KINDS[kind][1]
    assert_fails_fast(spec_args(kind, spec, workers),
                      f"failed to set {what} specs: bind {spec}: Address already in use")


@pytest.mark.parametrize("kind,workers", KIND_WORKERS, ids=KIND_WORKERS_IDS)
def test_bind_without_permission(zdir: str, kind: str, workers: int) -> None:
    locked = os.path.join(zdir, "locked")
    os.mkdir(locked, 0o500)
    user = None
    if os.geteuid() == 0:  # root may bind anywhere: run condure as an ordinary user
        try:
            user = pwd.getpwnam("nobody").pw_name
        except KeyError:
            pytest.skip("running as root and there is no user `nobody`")
        os.chmod(zdir, 0o755)
    spec = f"ipc://{locked}/h"
    what = KINDS[kind][1]
    assert_fails_fast(spec_args(kind, spec, workers),
                      f"failed to set {what} specs: bind {spec}{FIRST_SUFFIX[kind]}: "
                      "Permission denied", user=user)


@pytest.mark.parametrize("kind,workers", KIND_WORKERS, ids=KIND_WORKERS_IDS)
def test_connect_that_fails(zdir: str, kind: str, workers: int) -> None:
    """A connect fails only for an endpoint libzmq cannot use at all (it
    connects in the background): here an ipc path over the 107-byte limit."""
    spec = f"ipc://{zdir}/{'x' * 110}"
    what = KINDS[kind][1]
    assert_fails_fast(spec_args(kind, spec, workers, connect=True),
                      f"failed to set {what} specs: connect {spec}{FIRST_SUFFIX[kind]}: "
                      "File name too long")


# ---------------------------------------------------------------------------
# ports over 65535: refused while parsing the command line (nothing logged
# before, nothing bound; libzmq would bind tcp://...:70000 as port 4464)


TOO_LARGE = "number too large to fit in target type"
OVER_65535 = {  # kind -> (spec, message)
    "zclient-stream": ("tcp://127.0.0.1:70000", f"error parsing tcp port in base spec: {TOO_LARGE}"),
    "zclient-req": ("tcp://127.0.0.1:70000",
                    f"failed to parse zclient-req: invalid tcp port in tcp://127.0.0.1:70000: {TOO_LARGE}"),
    "zserver-stream": ("tcp://127.0.0.1:70000", f"error parsing tcp port in base spec: {TOO_LARGE}"),
    "zserver-req": ("tcp://127.0.0.1:70000",
                    f"failed to parse zserver-req: invalid tcp port in tcp://127.0.0.1:70000: {TOO_LARGE}"),
}


@pytest.mark.parametrize("kind,workers", KIND_WORKERS, ids=KIND_WORKERS_IDS)
def test_tcp_port_over_65535_in_a_spec(kind: str, workers: int) -> None:
    spec, message = OVER_65535[kind]
    lines = assert_fails_fast(spec_args(kind, spec, workers), message)
    assert len(lines) == 1, lines  # refused before "starting..."


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_stream_base_whose_third_port_is_over_65535(workers: int) -> None:
    spec = "tcp://127.0.0.1:65534"  # condure 1.9.1 binds 65534, 65535 and 0 (any port)
    lines = assert_fails_fast(spec_args("zclient-stream", spec, workers),
                              f"error parsing tcp port in base spec: {spec}")
    assert len(lines) == 1, lines


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_listen_port_over_65535(zdir: str, workers: int) -> None:
    lines = assert_fails_fast(["--listen", "127.0.0.1:70000", "--zclient-stream",
                               f"ipc://{zdir}/h", "--workers", str(workers)],
                              "failed to parse listen: invalid port 70000")
    assert len(lines) == 1, lines
    assert os.listdir(zdir) == [], "sockets were bound"


# ---------------------------------------------------------------------------
# --listen


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_listen_port_in_use(zdir: str, busy_port: int, workers: int) -> None:
    assert_fails_fast(["--listen", f"127.0.0.1:{busy_port}", "--zclient-stream",
                       f"ipc://{zdir}/h", "--workers", str(workers)],
                      f"failed to bind 127.0.0.1:{busy_port}: Address already in use")


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_listen_address_not_on_this_host(zdir: str, workers: int) -> None:
    port = get_free_port()
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine
    assert_fails_fast(["--listen", f"192.0.2.1:{port}", "--zclient-stream",
                       f"ipc://{zdir}/h", "--workers", str(workers)],
                      f"failed to bind 192.0.2.1:{port}: Cannot assign requested address")


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_listen_unix_socket_in_a_missing_directory(zdir: str, workers: int) -> None:
    path = f"{zdir}/missing/s.sock"
    assert_fails_fast(["--listen", f"{path},local", "--zclient-stream", f"ipc://{zdir}/h",
                       "--workers", str(workers)],
                      f"failed to bind {path}: No such file or directory")


# ---------------------------------------------------------------------------
# a worker that cannot start


def test_prometheus_port_in_use(zdir: str, busy_port: int) -> None:
    assert_fails_fast(["--listen", f"127.0.0.1:{get_free_port()}", "--zclient-stream",
                       f"ipc://{zdir}/h", "--prometheus", f"127.0.0.1:{busy_port}"],
                      "prometheus listener: Address already in use")


# Python imports `sitecustomize` at start from the path: this one ends worker 1
# (and only it) before it has started, as a worker that cannot bind or load would
FAILING_WORKER = """\
import json, os
info = os.environ.get("CONDURE_WORKER")
if info and json.loads(info)["index"] == 1:
    print("[ERR] worker 1 cannot start (test)", flush=True)
    os._exit(3)
"""


def test_worker_that_fails_to_start_ends_the_process(zdir: str, tmp_path: Path) -> None:
    """Worker 1 exits before it has started where worker 0 starts. The parent
    must not start it again and again (it would fail each time): it stops
    worker 0 and exits 1."""
    (tmp_path / "sitecustomize.py").write_text(FAILING_WORKER)
    start = time.monotonic()
    r = run_cli("--listen", f"127.0.0.1:{get_free_port()}", "--zclient-stream",
                f"ipc://{zdir}/h", "--workers", "2", timeout=EXIT_WITHIN,
                env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])})
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert time.monotonic() - start < EXIT_WITHIN
    assert "Traceback" not in out and "restarting" not in out, out
    errors = [line for line in r.stdout.splitlines() if line.startswith("[ERR]")]
    # the worker's reason, then the parent's consequence
    assert len(errors) == 2, out
    assert "worker 1 cannot start (test)" in errors[0], out
    assert "[condure::workers] worker 1 failed to start (exit status 3)" in errors[1], out


def test_worker_prometheus_port_is_the_parents(zdir: str, busy_port: int) -> None:
    """With --workers N the parent serves the metrics port: taken, it is one
    line and exit 1 before any worker starts."""
    r = run_cli("--listen", f"127.0.0.1:{get_free_port()}", "--zclient-stream",
                f"ipc://{zdir}/h", "--prometheus", f"127.0.0.1:{busy_port}", "--workers", "2",
                timeout=EXIT_WITHIN)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "[condure::workers] prometheus listener: Address already in use" in out, out
    assert "worker 0 started" not in out and "Traceback" not in out, out


# ---------------------------------------------------------------------------
# TLS identities


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_missing_tls_identities_dir_fails_fast_d20(zdir: str, workers: int) -> None:
    """condure 1.9.1 starts and fails every handshake; we refuse at start (D20)."""
    missing = f"{zdir}/no-certs"
    assert_fails_fast(["--listen", f"127.0.0.1:{get_free_port()},tls", "--zclient-stream",
                       f"ipc://{zdir}/h", "--tls-identities-dir", missing,
                       "--workers", str(workers)],
                      f"tls identities dir {missing} is not a directory")


def test_missing_tls_identities_dir_is_fine_without_a_tls_listener(zdir: str, tmp_path: Path) -> None:
    port = get_free_port()
    log_path = tmp_path / "condure.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            condure_command("--listen", f"127.0.0.1:{port}", "--zclient-stream",
                            f"ipc://{zdir}/h", "--tls-identities-dir", f"{zdir}/no-certs"),
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + EXIT_WITHIN
        while "[condure] started" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
        assert "[condure] started" in log_path.read_text()
    finally:
        status = stop_process(proc)
    assert status == 0, log_path.read_text()
