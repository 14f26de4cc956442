"""The in-process tests' App: real ipc sockets, this process's gevent hub."""
from __future__ import annotations

import shutil
import tempfile

import pytest

from condure.app import App
from condure.config import Config, ListenSpec


@pytest.fixture
def app(request: pytest.FixtureRequest):
    """Indirect parameters: more Config fields, e.g. {"http_parser": "h11"}."""
    zdir = tempfile.mkdtemp(prefix="cdt", dir="/tmp")
    cfg = Config(log_level=2, listen=(ListenSpec(addr="127.0.0.1", port=0),),
                 zclient_stream=(f"ipc://{zdir}/client",), **getattr(request, "param", {}))
    a = App(cfg)
    a.start()
    a.base = f"ipc://{zdir}/client"
    a.port = a.listeners[0].port
    yield a
    a.stop()
    shutil.rmtree(zdir, ignore_errors=True)
