"""The container recipe (Dockerfile, docker-compose.yml, the README's Docker
section), proved without Docker: there is no engine on this machine or in CI.

The Dockerfile is read for its structure, then its pip steps are run as
written (with /wheels replaced by a temporary directory) on a copy of exactly
the files its builder stage COPYs, into a fresh venv, and the installed
`condure` script is started with the image's ENTRYPOINT and default CMD
(moved to free ports on 127.0.0.1) behind a handler that connects over TCP,
as one in another container would.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import tnetstring
import zmq
from zmq.utils.monitor import recv_monitor_message

from conftest import REPO_ROOT, get_free_port, stop_process, wait_for_port
from rawhttp import Client, get

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE = REPO_ROOT / "docker-compose.yml"
WHEELS = "/wheels"
HELLO = b"hello world\n"
PIP_TIMEOUT = 420.0


# --------------------------------------------------------------------------
# reading the Dockerfile

@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str
    stage: int  # 0 for ARGs before the first FROM, then 1, 2, ...


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped
    (as the Docker parser does, also inside a continued instruction)."""
    out: list[Instruction] = []
    stage = 0
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, " ".join(args.split()) if not args.lstrip().startswith("[")
                               else args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; fails for the shell form."""
    assert args.startswith("["), f"not exec form: {args}"
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def one(instructions: list[Instruction], keyword: str, stage: int | None = None) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword and stage in (None, i.stage)]
    assert len(found) == 1, f"expected one {keyword} (stage {stage}), found {found}"
    return found[0]


def env_of(instructions: list[Instruction], stage: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ENV" and i.stage == stage:
            for item in shlex.split(i.args):
                key, sep, value = item.partition("=")
                assert sep, f"use ENV KEY=VALUE: {i.args}"
                env[key] = value
    return env


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    args = one(instructions, "HEALTHCHECK").args
    _, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    return exec_form(command.strip())


def pip_command(run_args: str) -> list[str]:
    """The `pip ...` words of a RUN (after its --mount options), up to any `&&`."""
    words = shlex.split(run_args)
    words = words[words.index("pip"):]
    if "&&" in words:
        words = words[:words.index("&&")]
    return words


def pip_runs(instructions: list[Instruction], stage: int) -> list[list[str]]:
    return [pip_command(i.args) for i in instructions
            if i.keyword == "RUN" and i.stage == stage and re.search(r"\bpip\b", i.args)]


def with_wheel_dir(words: list[str], wheel_dir: Path) -> list[str]:
    return [w.replace(WHEELS, str(wheel_dir)) for w in words]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


# --------------------------------------------------------------------------
# the structure


def test_dockerfile_is_multi_stage_with_a_wheel_builder(dockerfile: list[Instruction]) -> None:
    froms = [i for i in dockerfile if i.keyword == "FROM"]
    assert len(froms) == 2, froms
    builder, final = froms
    assert re.search(r"\bAS builder$", builder.args, re.I), builder
    base = one(dockerfile, "ARG", stage=0).args
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-bookworm)?", base), base
    assert final.args == "${PYTHON_IMAGE}" and builder.args.startswith("${PYTHON_IMAGE} ")

    assert pip_runs(dockerfile, 1) == [
        ["pip", "wheel", "--wheel-dir", WHEELS, "-r", "requirements.txt", "."]]
    assert pip_runs(dockerfile, 2) == [
        ["pip", "install", "--no-cache-dir", "--no-index", f"--find-links={WHEELS}", "condure"]]
    final_text = " ".join(i.args for i in dockerfile if i.stage == 2)
    for tool in ("build-essential", "gcc", "python3-dev"):
        assert tool not in final_text, f"{tool} belongs in the builder only"
    # the wheels come from the builder, and only the wheels
    assert "from=builder,source=/wheels" in final_text
    assert not [i for i in dockerfile if i.keyword == "COPY" and i.stage == 2
                and "--from" in i.args]


def test_dockerfile_runtime_settings(dockerfile: list[Instruction]) -> None:
    user = one(dockerfile, "USER", stage=2).args
    assert user.split(":")[0] not in ("root", "0"), user
    assert exec_form(one(dockerfile, "ENTRYPOINT", stage=2).args) == [
        "/usr/bin/tini", "--", "condure"]
    assert exec_form(one(dockerfile, "CMD", stage=2).args) == [
        "--listen", "0.0.0.0:8000", "--zclient-stream", "tcp://0.0.0.0:5560"]
    assert one(dockerfile, "EXPOSE", stage=2).args.split() == ["8000", "5560", "5561", "5562"]
    assert env_of(dockerfile, 2).get("PYTHONUNBUFFERED") == "1"
    assert one(dockerfile, "WORKDIR", stage=2).args.startswith("/")
    tini = [i.args for i in dockerfile if i.keyword == "RUN" and i.stage == 2 and "tini" in i.args]
    assert len(tini) == 1 and "--no-install-recommends" in tini[0], tini
    assert "rm -rf /var/lib/apt/lists/*" in tini[0]
    check = healthcheck_command(dockerfile)
    assert check[:2] == ["python", "-c"] and "create_connection" in check[2], check
    # USER comes after every step that needs root
    user_index = dockerfile.index(one(dockerfile, "USER", stage=2))
    assert all(i.keyword != "RUN" for i in dockerfile[user_index:])


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".git", ".venv", "**/__pycache__", ".pytest_cache", "tests", "client-out"):
        assert needed in patterns, needed
    for kept in ("condure", "examples", "requirements.txt", "setup.py", "pyproject.toml"):
        assert kept not in patterns, kept


def test_compose_file_services() -> None:
    text = COMPOSE.read_text()
    assert re.search(r"^  condure:\n    build: \.$", text, re.M), text
    assert re.search(r"^  handler:$", text, re.M)
    assert '- "8000:8000"' in text
    assert "CONDURE_ZBASE: tcp://condure:5560" in text
    assert 'command: ["examples/basichandler.py"]' in text


# --------------------------------------------------------------------------
# a handler that talks TCP, as one in another container does


def free_port_run(count: int = 3) -> int:
    """A port P with P..P+count-1 all free on 127.0.0.1 (tcp spec bases use three)."""
    for _ in range(50):
        base = get_free_port()
        if base + count >= 65535:
            continue
        probes = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                probes.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in probes:
                s.close()
    raise AssertionError("no run of free ports found")


class TcpHandler:
    """PULL on port P, ROUTER on P+1, XPUB on P+2 (condure's PUSH, ROUTER, SUB).

    `bind=True` is the other side of `--zclient-connect`."""

    def __init__(self, host: str, port: int, bind: bool = False,
                 identity: bytes = b"recipe-handler") -> None:
        self.identity = identity
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.IDENTITY, identity)
        self.pub = self.ctx.socket(zmq.XPUB)
        self.monitor = self.router.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.topics: set[bytes] = set()
        for offset, sock in enumerate((self.pull, self.router, self.pub)):
            sock.setsockopt(zmq.LINGER, 0)
            endpoint = f"tcp://{host}:{port + offset}"
            sock.bind(endpoint) if bind else sock.connect(endpoint)

    def wait_ready(self, topics: set[bytes], routers: int = 1, timeout: float = 10.0) -> None:
        """Until condure's SUB subscribed (PUB drops what it sends before) and its
        ROUTER finished the handshake with ours."""
        end = time.monotonic() + timeout
        while not topics <= self.topics:
            assert self.pub.poll(max(1, int((end - time.monotonic()) * 1000))), \
                f"subscriptions {topics} not seen; got {self.topics}"
            msg = self.pub.recv()
            if msg[:1] == b"\x01":
                self.topics.add(msg[1:])
        for _ in range(routers):
            assert self.monitor.poll(max(1, int((end - time.monotonic()) * 1000))), \
                "ROUTER handshake with condure's ROUTER timed out"
            recv_monitor_message(self.monitor)

    def answer(self, timeout: float = 5.0) -> dict:
        """Answer one request with 200 hello world; return the request packet."""
        assert self.pull.poll(int(timeout * 1000)), "no request reached the handler"
        raw = self.pull.recv()
        assert raw[:1] == b"T", raw[:40]
        req = tnetstring.loads(raw[1:])
        resp = {b"from": self.identity, b"id": req[b"id"], b"seq": 0, b"code": 200,
                b"reason": b"OK", b"headers": [[b"Content-Type", b"text/plain"]],
                b"body": HELLO}
        self.pub.send(req[b"from"] + b" T" + tnetstring.dumps(resp))
        return req

    def close(self) -> None:
        self.router.disable_monitor()
        self.ctx.destroy(linger=0)


def request_through(port: int, handler: TcpHandler) -> dict:
    with Client(port) as client:
        client.send(get("/", host=b"localhost"))
        req = handler.answer()
        resp = client.read_response()
    assert resp.status == 200 and resp.body == HELLO, resp.raw
    return req


# --------------------------------------------------------------------------
# the image's pip steps, without Docker


def index_reachable(tmp: Path) -> str | None:
    """None if pip can fetch from its index; else why not. The wheel step needs
    it (build isolation fetches setuptools, the pins come from the index)."""
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "-d", str(tmp), "setuptools>=68"],
        capture_output=True, text=True, timeout=120)
    if probe.returncode == 0:
        return None
    return (probe.stderr.strip().splitlines() or ["pip download failed"])[-1]


def builder_context(dockerfile: list[Instruction], dest: Path) -> Path:
    """Copy exactly what the builder stage COPYs: a missing file fails the build here too."""
    dest.mkdir()
    for i in dockerfile:
        if i.keyword != "COPY" or i.stage != 1:
            continue
        *sources, target = i.args.split()
        assert target.startswith("./"), f"builder COPY target should be relative: {i.args}"
        for source in sources:
            src = REPO_ROOT / source
            to = dest / (source if target == "./" else target[2:])
            if src.is_dir():
                shutil.copytree(src, to, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, to)
    return dest


def run_checked(argv: list[str], cwd: Path, timeout: float = PIP_TIMEOUT) -> str:
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{argv} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory,
               dockerfile: list[Instruction]) -> Path:
    """A fresh venv holding what the final stage installs; built once per module."""
    tmp = tmp_path_factory.mktemp("image")
    why = index_reachable(tmp / "probe")
    if why is not None:
        pytest.skip(f"no package index reachable for the wheel step: {why}")
    context = builder_context(dockerfile, tmp / "src")
    wheels = tmp / "wheels"
    (wheel_step,) = pip_runs(dockerfile, 1)
    run_checked([sys.executable, "-m", *with_wheel_dir(wheel_step, wheels),
                 "--disable-pip-version-check"], cwd=context)
    names = sorted(p.name for p in wheels.iterdir())
    assert any(n.startswith("condure-") for n in names), names
    assert all(n.endswith(".whl") for n in names), names
    fresh = tmp / "fresh"
    run_checked([sys.executable, "-m", "venv", str(fresh)], cwd=tmp)
    (install_step,) = pip_runs(dockerfile, 2)
    run_checked([str(fresh / "bin" / "python"), "-m", *with_wheel_dir(install_step, wheels),
                 "--disable-pip-version-check"], cwd=tmp)
    return fresh


def image_argv(dockerfile: list[Instruction], fresh: Path, port: int, zport: int) -> list[str]:
    """ENTRYPOINT + CMD with `condure` from the fresh venv, on free loopback ports.
    tini is kept when it is installed (Debian's, the image's path)."""
    entry = exec_form(one(dockerfile, "ENTRYPOINT", stage=2).args)
    cmd = exec_form(one(dockerfile, "CMD", stage=2).args)
    moves = {"0.0.0.0:8000": f"127.0.0.1:{port}", "tcp://0.0.0.0:5560": f"tcp://127.0.0.1:{zport}"}
    argv = [str(fresh / "bin" / "condure") if a == "condure" else a for a in entry]
    if not os.path.exists(argv[0]):
        argv = argv[2:]  # no tini here: condure gets the signal directly
    return argv + [moves.get(a, a) for a in cmd]


def image_env(dockerfile: list[Instruction], port: int) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    env.update(env_of(dockerfile, 2))
    env["CONDURE_HEALTHCHECK_PORT"] = str(port)
    return env


@pytest.mark.deadline(600)
def test_image_install_runs_the_default_command(dockerfile: list[Instruction], image_venv: Path,
                                                tmp_path: Path) -> None:
    fresh = image_venv
    workdir = tmp_path / "workdir"  # not the checkout: the installed package must do
    workdir.mkdir()
    version = re.search(r'__version__\s*=\s*"([^"]+)"',
                        (REPO_ROOT / "condure" / "__init__.py").read_text()).group(1)
    out = run_checked([str(fresh / "bin" / "condure"), "--version"], cwd=workdir, timeout=30)
    assert out.strip() == f"condure 1.10.1 (python {version})"
    where = run_checked([str(fresh / "bin" / "python"), "-c", "import condure; print(condure.__file__)"],
                        cwd=workdir, timeout=30)
    assert Path(where.strip()).is_relative_to(fresh), where

    port, zport = get_free_port(), free_port_run()
    env = image_env(dockerfile, port)
    log_path = tmp_path / "condure.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(image_argv(dockerfile, fresh, port, zport), cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT)
    handler = None
    try:
        wait_for_port(port, proc, log_path)
        handler = TcpHandler("127.0.0.1", zport)
        handler.wait_ready({b"condure "})
        req = request_through(port, handler)
        assert req[b"from"] == b"condure" and req[b"uri"].startswith(b"http://localhost")

        check = healthcheck_command(dockerfile)
        python = str(fresh / "bin" / check[0])
        healthy = subprocess.run([python, *check[1:]], env=env, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log_path.read_text()
        assert "stopped" in log_path.read_text()
        unhealthy = subprocess.run([python, *check[1:]], env=env, capture_output=True, timeout=30)
        assert unhealthy.returncode != 0
    finally:
        if handler is not None:
            handler.close()
        stop_process(proc)


# --------------------------------------------------------------------------
# the README's compose file and scale-out recipe, with this checkout's condure


def test_compose_handler_with_a_tcp_base(condure, processes, tmp_path: Path) -> None:
    zport = free_port_run()
    c = condure(base=f"tcp://127.0.0.1:{zport}")
    zbase = re.search(r"CONDURE_ZBASE: (\S+)", COMPOSE.read_text()).group(1)
    assert zbase == "tcp://condure:5560"  # the image's default --zclient-stream
    env = dict(os.environ, PYTHONUNBUFFERED="1", CONDURE_ZBASE=f"tcp://127.0.0.1:{zport}")
    with open(tmp_path / "handler.out", "wb") as out:
        processes([sys.executable, "examples/basichandler.py"], env=env, stdout=out,
                  stderr=subprocess.STDOUT)
    time.sleep(1.0)  # the example does not wait for condure's subscription
    try:
        with Client(c.port, timeout=3.0) as client:
            client.send(get("/", host=b"localhost"))
            resp = client.read_response()
    except TimeoutError:
        raise AssertionError((tmp_path / "handler.out").read_text() + c.log_text()) from None
    assert resp.status == 200 and resp.body == HELLO


def answer_any(handlers: list[TcpHandler], timeout: float = 5.0) -> tuple[int, dict]:
    """Answer the request whichever handler got it; (its index, the request)."""
    poller = zmq.Poller()
    for h in handlers:
        poller.register(h.pull, zmq.POLLIN)
    ready = dict(poller.poll(int(timeout * 1000)))
    assert ready, "no request reached any handler"
    index = next(i for i, h in enumerate(handlers) if h.pull in ready)
    return index, handlers[index].answer()


def test_scale_out_instances_connect_to_bound_handlers(condure) -> None:
    """The README's scale-out recipe: handlers bind, each instance (own --id) connects to all."""
    zports = [free_port_run()]
    while len(zports) < 2:  # nothing is bound yet: keep the two runs of three apart
        p = free_port_run()
        if abs(p - zports[0]) >= 3:
            zports.append(p)
    handlers = [TcpHandler("127.0.0.1", p, bind=True, identity=b"handler%d" % n)
                for n, p in enumerate(zports)]
    try:
        specs = [f"tcp://127.0.0.1:{p}" for p in zports]
        instances = [condure("--id", f"condure{n}", "--zclient-connect",
                             "--zclient-stream", specs[1], base=specs[0]) for n in (1, 2)]
        for h in handlers:
            h.wait_ready({b"condure1 ", b"condure2 "}, routers=2)
        served: dict[tuple[bytes, int], int] = {}
        for _ in range(3):
            for n, c in enumerate(instances, 1):
                with Client(c.port) as client:
                    client.send(get("/", host=b"localhost"))
                    index, req = answer_any(handlers)
                    resp = client.read_response()
                assert resp.status == 200 and resp.body == HELLO, resp.raw
                assert req[b"from"] == b"condure%d" % n
                served[req[b"from"], index] = served.get((req[b"from"], index), 0) + 1
        # each instance hands its requests to both handlers in turn (PUSH round robin)
        assert set(served) == {(b"condure1", 0), (b"condure1", 1),
                               (b"condure2", 0), (b"condure2", 1)}, served
    finally:
        for h in handlers:
            h.close()
