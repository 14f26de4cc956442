"""condure-pushpin as Pushpin's runner uses it: exec'd condure keeps the pid and
serves both roles; bad arguments exit 2 with one line on stderr."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import REPO_ROOT, get_free_port, stop_process

# the console script's body, run by this interpreter (the script itself exists
# only in a venv installed from this checkout)
WRAPPER = [sys.executable, "-c", "from condure.pushpin import run; run()"]
# condure-pushpin execs `python -P -m condure`: -P leaves the working directory
# off sys.path, so name this checkout explicitly
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def test_bad_arguments_exit_2_with_one_line() -> None:
    res = subprocess.run([*WRAPPER, "--listen=127.0.0.1:1,stream", "--zclient-stream=tcp://x:1"],
                         cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=15)
    assert res.returncode == 2, res
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        "condure-pushpin: --zclient-stream 'tcp://x:1' is not ipc://...condure: "
        "cannot tell where Pushpin's proxy expects Zurl"], res.stderr


def test_execs_condure_in_both_roles_keeping_the_pid() -> None:
    rundir = Path(tempfile.mkdtemp(prefix="cp", dir="/tmp"))
    port = get_free_port()
    args = ["--log-level=2", f"--listen=127.0.0.1:{port},stream",
            f"--zclient-stream=ipc://{rundir}/pushpin-condure", "--buffer-size=8192"]
    proc = subprocess.Popen([*WRAPPER, *args], cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        names = ("pushpin-condure-out", "pushpin-condure-out-stream", "pushpin-condure-in",
                 "pushpin-zurl-in", "pushpin-zurl-in-stream", "pushpin-zurl-out",
                 "pushpin-zurl-req")
        end = time.monotonic() + 15
        while not all((rundir / name).is_socket() for name in names):
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < end, sorted(p.name for p in rundir.iterdir())
            time.sleep(0.05)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            cmdline = [a.decode() for a in f.read().split(b"\0") if a]
        base = f"ipc://{rundir}/pushpin-zurl"
        assert cmdline == [sys.executable, "-P", "-m", "condure", *args,
                           "--zserver-stream", base, "--zserver-req", f"{base}-req"], cmdline
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
        for p in rundir.iterdir():
            p.unlink()
        rundir.rmdir()
