"""Fixtures of the end-to-end tests that run against both condures: ours
(`python -m condure`) and the Rust condure 1.9.1 of the Debian package."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

import shutil
import sys

from conftest import REPO_ROOT, get_free_port, stop_process, wait_for_port

RUST_CONDURE = "/usr/bin/condure"  # by its full path: `condure` may be either


class Target:
    """A running condure of either kind: `port`, `base`, `log_text()`."""

    def __init__(self, port: int, base: str, log_text: Callable[[], str]) -> None:
        self.port = port
        self.base = base
        self.log_text = log_text


def start_rust(zdir: str, tmp_path: Path, started: list[subprocess.Popen],
               *args: str) -> Target:
    port = get_free_port()
    base = f"ipc://{zdir}/rust"
    log_path = tmp_path / "rust-condure.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([RUST_CONDURE, "--listen", f"127.0.0.1:{port}",
                                 "--zclient-stream", base, *args],
                                cwd=zdir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    started.append(proc)
    wait_for_port(port, proc, log_path)
    return Target(port, base, lambda: log_path.read_text(errors="replace"))


@pytest.fixture(params=["python", "rust"])
def target(request: pytest.FixtureRequest, condure, zdir: str,
           tmp_path: Path) -> Iterator[Callable[..., Target]]:
    """Factory: a started condure of the parametrized kind."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> Target:
        if request.param == "rust":
            if not os.access(RUST_CONDURE, os.X_OK):
                pytest.skip("the Rust condure (Debian package) is not installed")
            return start_rust(zdir, tmp_path, started, *args)
        c = condure(*args)
        return Target(c.port, c.base, c.log_text)

    try:
        yield start
    finally:
        for proc in started:
            stop_process(proc)


@pytest.fixture(params=["python", "rust"])
def target_kind_req(request: pytest.FixtureRequest, zdir: str, tmp_path: Path,
                    processes) -> tuple[int, str]:
    """(port, --zclient-req spec) of a condure in req mode."""
    port = get_free_port()
    spec = f"ipc://{zdir}/req"
    args = ["--listen", f"127.0.0.1:{port},req", "--zclient-req", spec]
    if request.param == "rust":
        if not shutil.which(RUST_CONDURE):
            pytest.skip("the Rust condure is not installed")
        argv, cwd = [RUST_CONDURE, *args], zdir
    else:
        argv, cwd = [sys.executable, "-m", "condure", *args], str(REPO_ROOT)
    log_path = tmp_path / "req-condure.log"
    with open(log_path, "wb") as out:
        proc = processes(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, proc, log_path)
    return port, spec
