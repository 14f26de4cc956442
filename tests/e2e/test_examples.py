"""The README walkthrough (shared/seed), run for real: condure as a subprocess,
the example handlers from examples/ as subprocesses, a raw client and curl.

The examples read the spec base from CONDURE_ZBASE, so they can talk to a
condure whose ipc files live in a temporary directory.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from rawhttp import Client, get

HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world\n"
FROM_ANOTHER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\r\n"
                b"responding from another process\n")
# The examples connect and then publish after a short sleep; PUB drops what it
# sends before condure's subscription has arrived. Give them time to start.
HANDLER_STARTUP = 0.7


def example_env(base: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CONDURE_ZBASE"] = base
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_example(processes, tmp_path: Path, base: str, name: str) -> tuple:
    log_path = tmp_path / f"{name}.out"
    with open(log_path, "wb") as out:
        proc = processes([sys.executable, f"examples/{name}.py"], env=example_env(base),
                         stdout=out, stderr=subprocess.STDOUT)
    time.sleep(HANDLER_STARTUP)
    assert proc.poll() is None, log_path.read_text()
    return proc, log_path


def curl_request(port: int) -> bytes:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    r = subprocess.run(["curl", "-s", "-i", "--max-time", "10", f"http://127.0.0.1:{port}/"],
                       capture_output=True, timeout=15, env=env)
    assert r.returncode == 0, r
    return r.stdout


def test_basichandler_hello_world(condure, processes, tmp_path: Path) -> None:
    c = condure()
    proc, out = start_example(processes, tmp_path, c.base, "basichandler")
    with Client(c.port) as client:
        client.send(get("/", host=b"localhost:%d" % c.port,
                        extra=b"User-Agent: curl/8.0\r\nAccept: */*\r\n"))
        assert client.read_response().raw == HELLO
        # persistent: a second request on the same connection works too
        client.send(get("/again", host=b"localhost"))
        assert client.read_response().raw == HELLO
    if shutil.which("curl"):
        assert curl_request(c.port) == HELLO
    log = out.read_text()
    assert "IN {" in log and "OUT {" in log, log


def test_printreq_piped_to_sendresp(condure, processes, tmp_path: Path) -> None:
    c = condure()
    py = shlex.quote(sys.executable)
    pipeline = (f'{py} -u examples/printreq.py | '
                f'xargs -n 2 {py} examples/sendresp.py "responding from another process"')
    log_path = tmp_path / "pipeline.out"
    with open(log_path, "wb") as out:
        processes(["bash", "-c", pipeline], env=example_env(c.base), stdout=out,
                  stderr=subprocess.STDOUT)
    time.sleep(HANDLER_STARTUP)
    with Client(c.port, timeout=10) as client:
        client.send(get("/", host=b"localhost"))
        assert client.read_response().raw == FROM_ANOTHER, log_path.read_text()
    if shutil.which("curl"):
        assert curl_request(c.port) == FROM_ANOTHER


def test_sendresp_answers_a_request_by_id(condure, handler_factory, tmp_path: Path) -> None:
    """The manual form: `python examples/sendresp.py BODY ADDR ID`."""
    c = condure()
    h = handler_factory(c.base)  # plays printreq: only reads the request
    with Client(c.port, timeout=10) as client:
        client.send(get("/"))
        req = h.recv_request()
        r = subprocess.run([sys.executable, "examples/sendresp.py",
                            "responding from another process", req[b"from"].decode(),
                            req[b"id"].decode()],
                           cwd=REPO_ROOT, env=example_env(c.base), capture_output=True,
                           timeout=15)
        assert r.returncode == 0, r
        assert client.read_response().raw == FROM_ANOTHER


def test_sendresp_usage() -> None:
    r = subprocess.run([sys.executable, "examples/sendresp.py"], cwd=REPO_ROOT,
                       capture_output=True, timeout=15, text=True)
    assert r.returncode == 1 and "usage:" in r.stderr, r


@pytest.mark.deadline(40)
def test_streamhandler_sends_five_chunks(condure, processes, tmp_path: Path) -> None:
    c = condure()
    proc, out = start_example(processes, tmp_path, c.base, "streamhandler")
    body = b"x" * 20000
    parts = [b"part %d of 5\n" % i for i in range(1, 6)]
    with Client(c.port, timeout=10) as getter, Client(c.port, timeout=10) as poster:
        getter.send(get("/stream"))
        poster.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        for client in (getter, poster):
            r = client.read_response()
            assert r.head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n"), r.head
            assert r.chunks == parts
            assert r.raw.endswith(b"0\r\n\r\n")
    log = out.read_text()
    assert "BODY " in log and " 20000 bytes" in log, log
    assert log.count("END ") == 2 and " done" in log, log


def test_streamhandler_refuses_websocket(condure, processes, tmp_path: Path) -> None:
    c = condure()
    start_example(processes, tmp_path, c.base, "streamhandler")
    with Client(c.port, timeout=10) as client:
        client.send(get("/ws", extra=b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                     b"Sec-WebSocket-Version: 13\r\n"
                                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
        r = client.read_response()
        assert r.status == 400, r.raw
        assert r.body == b"this handler does not speak WebSocket\n"
        assert r.header(b"Upgrade") is None and r.header(b"Sec-WebSocket-Accept") is None
        assert client.read_until_close() == b""


def test_client_mode_get_example(processes, zdir: str, tmp_path: Path) -> None:
    """The README's client-mode example: condure with only --zserver-req, a local
    origin (python -m http.server), examples/get.py printing the response."""
    from conftest import get_free_port
    spec = f"ipc://{zdir}/server"
    condure_log = tmp_path / "condure.log"
    with open(condure_log, "wb") as out:
        cd = processes([sys.executable, "-m", "condure", "--zserver-req", spec],
                       stdout=out, stderr=subprocess.STDOUT)
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_bytes(b"hello from the origin\n")
    port = get_free_port()
    processes([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
               "--directory", str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while not (Path(zdir) / "server").is_socket() or not _accepts(port):
        assert cd.poll() is None, condure_log.read_text()
        assert time.monotonic() < end, condure_log.read_text()
        time.sleep(0.05)
    env = {**os.environ, "CONDURE_ZSERVER": spec, "CONDURE_TIMEOUT": "10"}
    r = subprocess.run([sys.executable, "examples/get.py", f"http://127.0.0.1:{port}/hello.txt"],
                       cwd=REPO_ROOT, env=env, capture_output=True, timeout=20)
    assert r.returncode == 0, r
    head, _, body = r.stdout.partition(b"\n\n")
    assert head.splitlines()[0] == b"code=200 reason=OK", r.stdout
    assert b"Content-Length: 22" in head.splitlines(), r.stdout
    assert body == b"hello from the origin\n", r.stdout


def _accepts(port: int) -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- the examples on condure.handler (issue 18) ---------------------------------


def start_lib_example(processes, tmp_path: Path, base: str, argv: list[str], name: str):
    """An example on the library: this checkout's condure on the path (the
    examples import it as an installed package would be)."""
    env = example_env(base)
    env["PYTHONPATH"] = str(REPO_ROOT)
    log_path = tmp_path / f"{name}.out"
    with open(log_path, "wb") as out:
        proc = processes([sys.executable, *argv], env=env, stdout=out, stderr=subprocess.STDOUT)
    end = time.monotonic() + 10
    while b"connected to" not in log_path.read_bytes():  # the library logs once it is attached
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < end, log_path.read_text()
        time.sleep(0.05)
    return proc, log_path


def test_hello_lib(condure, processes, tmp_path: Path) -> None:
    """The seed's hello world, on the library: the same bytes as basichandler."""
    c = condure()
    start_lib_example(processes, tmp_path, c.base, ["examples/hello_lib.py"], "hello_lib")
    with Client(c.port) as client:
        for path in ("/", "/again"):
            client.send(get(path, host=b"localhost"))
            assert client.read_response().raw == HELLO
    if shutil.which("curl"):
        assert curl_request(c.port) == HELLO


@pytest.mark.deadline(40)
def test_stream_lib(condure, processes, tmp_path: Path) -> None:
    """streamhandler.py's behaviour in a few lines of the library, and a WebSocket echo."""
    import websocket
    c = condure()
    proc, out = start_lib_example(processes, tmp_path, c.base, ["examples/stream_lib.py"],
                                  "stream_lib")
    body = b"x" * 20000
    parts = [b"part %d of 5\n" % i for i in range(1, 6)]
    with Client(c.port, timeout=10) as getter, Client(c.port, timeout=10) as poster:
        getter.send(get("/stream"))
        poster.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        ws = websocket.create_connection(f"ws://127.0.0.1:{c.port}/ws", timeout=10,
                                         subprotocols=["echo"])
        try:
            assert ws.getsubprotocol() == "echo"
            ws.send("hello")
            assert ws.recv() == "hello"
            ws.send_binary(b"\x00\x01")
            assert ws.recv() == b"\x00\x01"
        finally:
            ws.close()
        for client in (getter, poster):
            r = client.read_response()
            assert r.head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n"), r.head
            assert r.chunks == parts
    assert "BODY http://localhost/upload 20000 bytes" in out.read_text()


def test_flask_app_through_the_gateway(condure, processes, tmp_path: Path) -> None:
    """examples/flask_app.py as the README runs it: python -m condure.wsgi."""
    c = condure()
    start_lib_example(processes, tmp_path, c.base,
                      ["-m", "condure.wsgi", "--chdir", "examples", "flask_app:app",
                       "--zclient-stream", c.base], "flask_app")
    with Client(c.port, timeout=10) as client:
        client.send(get("/", host=b"localhost"))
        assert client.read_response().raw == HELLO
        client.send(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello")
        assert client.read_response().body == b'{"bytes":5,"first":"hello"}\n'
        client.send(get("/stream", host=b"localhost"))
        assert client.read_response().chunks == [b"part %d of 5\n" % i for i in range(1, 6)]
