"""`pushpin-connmgr`: condure under the name Pushpin 1.40+ runs (connmgr.md 7, scenario 30).

Pushpin's legacy runner runs `pushpin-connmgr --help` and turns client mode on only
if that exits 0 with `--zserver-stream` on stdout, then starts it with the
arguments of connmgr.md 7.2; both runners pass `--opt=value` and never `--id`.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tnetstring
import zmq

from conftest import REPO_ROOT, get_free_port, stop_process
from rawhttp import Client, get
from zhttp_handler import Handler

# the console script the package installs, next to this interpreter (the venv's)
SCRIPT = Path(sys.executable).with_name("pushpin-connmgr")
ENTRY = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "condure.connmgr"]


def connmgr(*args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run([*ENTRY, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_the_console_script_is_installed() -> None:
    """The venv made from this checkout (README's set-up) has the script."""
    assert SCRIPT.exists(), SCRIPT


def test_help_is_what_pushpins_runner_looks_for() -> None:
    """#30: exit 0, on stdout, naming --zserver-stream (client mode on) and
    connmgr's options."""
    res = connmgr("--help")
    assert res.returncode == 0, res
    assert res.stdout.startswith("usage: pushpin-connmgr "), res.stdout[:200]
    for option in ("--zserver-stream", "--prometheus", "--debug-socket", "--listen",
                   "--zclient-stream"):
        assert option in res.stdout, option
    assert "[default: connmgr]" in res.stdout  # --id


@pytest.mark.parametrize("value,error", [
    ("8000,mode=600", "failed to parse listen: invalid param: mode"),
    ("/tmp/s,local,tls", "failed to parse listen: invalid param: tls"),
    ("8000,stream,foo=1", "failed to parse listen: invalid param: foo"),
    ("x.y:8000", "failed to parse listen: invalid TCP address or port: x.y:8000"),
    ("/tmp/s,local,mode=9", "failed to parse listen: failed to parse mode: "),
])
def test_listen_is_parsed_as_connmgr_does(value: str, error: str) -> None:
    """#30: only the params of each form; the key alone is named. (`condure`
    keeps condure's parsing.)"""
    res = connmgr(f"--listen={value}")
    assert res.returncode == 1, res
    assert error in res.stdout + res.stderr, res


def test_condure_keeps_its_own_listen_parsing() -> None:
    res = subprocess.run([sys.executable, "-m", "condure", "--listen", "8000,foo=1"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=15)
    assert res.returncode == 1
    assert "failed to parse listen: invalid param: foo=1" in res.stdout + res.stderr


@pytest.fixture
def rundir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def runner_args(rundir: Path, port: int, rust: bool) -> list[str]:
    """connmgr.md 7.2's argument list, in the legacy (C++) or the Rust runner's order."""
    head = ["--log-level=3", "--buffer-size=8192", "--stream-maxconn=100", "--compression"]
    server = [f"--listen=127.0.0.1:{port},stream",
              f"--zclient-stream=ipc://{rundir}/pushpin-connmgr"]
    client = [f"--zserver-stream=ipc://{rundir}/pushpin-connmgr-client", "--deny-out-internal"]
    return head + (client + server if rust else server + client)


@pytest.mark.parametrize("rust", [False, True], ids=["legacy-runner", "rust-runner"])
def test_runs_with_pushpins_arguments(rundir: Path, rust: bool) -> None:
    """Both roles in one process, named connmgr: a request reaches a handler
    with from=connmgr and router-resp, the answer over the ROUTER to `connmgr`
    reaches the client; a requester on the connmgr-client sockets that asks
    for router-resp (as Pushpin 1.41+'s proxy does) gets its answer there
    (here a policy-violation: Pushpin passes --deny-out-internal)."""
    port = get_free_port()
    log_path = rundir / "connmgr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*ENTRY, *runner_args(rundir, port, rust)], cwd=REPO_ROOT,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    ctx = zmq.Context()
    try:
        end = time.monotonic() + 20
        while "] started" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < end, log_path.read_text()
            time.sleep(0.05)
        h = Handler(f"ipc://{rundir}/pushpin-connmgr", identity=b"pushpin-handler",
                    instance=b"connmgr")
        with Client(port) as client:
            client.send(get())
            req = h.recv_request()
            assert req[b"from"] == b"connmgr" and req[b"router-resp"] is True
            h.send_routed({b"id": req[b"id"], b"code": 200, b"reason": b"OK",
                           b"headers": [[b"Content-Length", b"3"]], b"body": b"hi\n"})
            assert client.read_response().body == b"hi\n"
        h.close()

        base = f"ipc://{rundir}/pushpin-connmgr-client"
        push, router = ctx.socket(zmq.PUSH), ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.IDENTITY, b"pushpin-proxy")
        for s in (push, router):
            s.setsockopt(zmq.LINGER, 0)
        push.connect(base + "-in")
        router.connect(base + "-in-stream")
        time.sleep(0.3)  # the ROUTER handshake: condure's sends to us need it
        push.send(b"T" + tnetstring.dumps({
            b"from": b"pushpin-proxy", b"id": b"c1", b"seq": 0, b"method": b"GET",
            b"uri": b"http://127.0.0.1:9/", b"stream": True, b"router-resp": True,
            b"credits": 8192}))
        got = []
        while not got or got[-1].get(b"type") != b"error":
            assert router.poll(5000), (got, log_path.read_text())
            frames = router.recv_multipart()
            assert frames[:2] == [b"connmgr", b""], frames
            got.append(tnetstring.loads(frames[2][1:]))
        assert got[-1][b"condition"] == b"policy-violation", got
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        ctx.destroy(linger=0)
        stop_process(proc)
