"""deploy/kubernetes/, checked offline: no cluster here or in CI.

Every manifest is validated against the OpenAPI schemas of fixed Kubernetes
versions in strict mode (kubernetes-validate bundles them: no network), then
read for what the README promises: non-root, read-only root filesystem,
probes on ports condure really serves, a grace period that covers preStop
and the drain of D12, memory sized from the measured figures, and condure
arguments that our own parser accepts. Last, the containers' commands are run
as the manifests give them (addresses moved to loopback), as the image's
uid under a read-only root with a writable /tmp only, where the machine
allows a private mount namespace.
"""
from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO_ROOT, get_free_port, stop_process, wait_for_port
from rawhttp import Client, get

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

from condure.options import parse_args  # noqa: E402  after the skips

MANIFEST_DIR = REPO_ROOT / "deploy" / "kubernetes"
# the oldest release the manifests are meant for, and the newest schemas bundled
K8S_VERSIONS = ("1.30.0", "1.37.0")
# D12: after --shutdown-timeout, App.shutdown gives the cancels 0.5 s, the
# writers 0.1 s and ctx.term() 1 s (zhttp/sockets.py TERM_TIMEOUT): 1.6 s, rounded up
DRAIN_TAIL = 2
IMAGE_UID = 10001
HELLO = b"hello world\n"


# --------------------------------------------------------------------------
# reading the manifests


def manifest_files() -> list[Path]:
    return sorted(MANIFEST_DIR.glob("*.yaml"))


def load_all() -> list[dict[str, Any]]:
    docs = []
    for path in manifest_files():
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in load_all() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return [d for d in load_all() if d["kind"] in ("Deployment", "StatefulSet")]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def condure_container() -> dict[str, Any]:
    return container(find("Deployment", "condure"), "condure")


def handler_set() -> dict[str, Any]:
    return find("StatefulSet", "zhttp-handler")


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in args, from the given values."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def condure_args(pod_name: str = "condure-5d8f7c9b4-x7k2p") -> list[str]:
    c = condure_container()
    env_names = {e["name"] for e in c.get("env", [])}
    assert "POD_NAME" in env_names
    return expand(c["args"], {"POD_NAME": pod_name})


def port_of(c: dict[str, Any], name: str) -> int:
    (p,) = [p["containerPort"] for p in c["ports"] if p["name"] == name]
    return p


def quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(q[:-len(suffix)]) * factor
    return int(q)


# --------------------------------------------------------------------------
# the schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_in_strict_mode(path: Path, version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: strict mode refuses an unknown field."""
    deployment = copy.deepcopy(find("Deployment", "condure"))
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_the_set_of_objects() -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in load_all())
    assert kinds == [("Deployment", "condure"), ("PodDisruptionBudget", "condure"),
                     ("Service", "condure"), ("Service", "zhttp-handler"),
                     ("StatefulSet", "zhttp-handler")]
    for d in load_all():
        assert "namespace" not in d["metadata"], "leave the namespace to kubectl -n"


def test_services_select_their_pods() -> None:
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pairs = [(find("Service", "condure"), find("Deployment", "condure")),
             (find("Service", "zhttp-handler"), handler_set())]
    for service, workload in pairs:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        names = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"]
                 for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port.get("targetPort", port["name"]) in names, port


# --------------------------------------------------------------------------
# the topology: every condure pod connects to every handler pod


def test_condure_args_are_accepted_by_our_parser() -> None:
    cfg = parse_args(condure_args("condure-abc"))
    assert cfg.id == "condure-abc"  # from the pod name: unique per instance
    assert cfg.zclient_connect
    c = condure_container()
    (listen,) = cfg.listen
    assert listen.stream and listen.port == port_of(c, "http")
    assert cfg.prometheus and cfg.prometheus.rsplit(":", 1)[-1].split(",")[0] == \
        str(port_of(c, "metrics"))


def test_a_misspelt_condure_option_is_refused() -> None:
    """The parser check can fail: an unknown option is an error, not ignored."""
    from condure.config import ConfigError
    with pytest.raises(ConfigError):
        parse_args([*condure_args(), "--shutdown-timout", "10"])


def test_condure_connects_to_each_handler_pod_by_name() -> None:
    """One --zclient-stream per StatefulSet pod, by its stable DNS name under the
    headless Service, on the port its PULL binds."""
    sts, service = handler_set(), find("Service", "zhttp-handler")
    assert service["spec"]["clusterIP"] == "None"  # headless: no proxying
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    handler = container(sts, "handler")
    zport = port_of(handler, "zhttp-out")
    assert [port_of(handler, n) for n in ("zhttp-stream", "zhttp-in")] == [zport + 1, zport + 2]
    env = {e["name"]: e["value"] for e in handler["env"]}
    assert env["CONDURE_ZBASE"] == f"tcp://0.0.0.0:{zport}" and env["CONDURE_ZBIND"] == "1"
    name, svc = sts["metadata"]["name"], service["metadata"]["name"]
    expected = tuple(f"tcp://{name}-{i}.{svc}:{zport}" for i in range(sts["spec"]["replicas"]))
    assert parse_args(condure_args()).zclient_stream == expected


# --------------------------------------------------------------------------
# security, probes, drain, resources


@pytest.mark.parametrize("kind,name", [("Deployment", "condure"), ("StatefulSet", "zhttp-handler")])
def test_pods_run_unprivileged_on_a_read_only_root(kind: str, name: str) -> None:
    pod = find(kind, name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID  # the Dockerfile's USER
    assert pod["automountServiceAccountToken"] is False
    dockerfile_user = re.search(r"^USER (\d+)", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert int(dockerfile_user.group(1)) == IMAGE_UID
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
        assert c["resources"]["limits"]["memory"]
        assert c["readinessProbe"] and c["livenessProbe"], c["name"]


def test_images_are_the_readme_build() -> None:
    tag = re.search(r"^docker build -t (\S+) \.$", (REPO_ROOT / "README.md").read_text(), re.M)
    for workload in workloads():
        for c in workload["spec"]["template"]["spec"]["containers"]:
            assert c["image"] in (tag.group(1), tag.group(1) + ":latest"), c["image"]
            assert c["imagePullPolicy"] == "IfNotPresent"


def test_probes_use_ports_condure_serves() -> None:
    c = condure_container()
    assert c["readinessProbe"]["tcpSocket"]["port"] == "http"  # closed on SIGTERM
    live = c["livenessProbe"]["httpGet"]
    assert live["port"] == "metrics" and live["path"].startswith("/")


def test_grace_period_covers_pre_stop_and_drain() -> None:
    pod = find("Deployment", "condure")["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    pre_stop = int(command[1])
    assert pre_stop >= 1  # time for the endpoint removal to reach the proxies
    drain = parse_args(condure_args()).shutdown_timeout
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + DRAIN_TAIL


def readme_rss_per_connection(row: str) -> float:
    """Our KB per idle connection from the README's bench table."""
    m = re.search(rf"^{row}\s+RSS/conn\s+KB\s+([\d.]+)\s", (REPO_ROOT / "README.md").read_text(),
                  re.M)
    assert m, f"no {row} row in the README's bench table"
    return float(m.group(1))


def memory_budget(baseline: int) -> tuple[int, int]:
    """(least request, least limit) in bytes for the manifest's --stream-maxconn:
    every connection an idle WebSocket, then every one with both buffers full."""
    cfg = parse_args(condure_args())
    per_ws = readme_rss_per_connection("rss_ws10k") * 1000
    assert per_ws >= readme_rss_per_connection("rss_http10k") * 1000
    request = baseline + cfg.stream_maxconn * per_ws
    return int(request), int(request + cfg.stream_maxconn * 2 * cfg.buffer_size)


def check_memory(baseline: int) -> None:
    resources = condure_container()["resources"]
    least_request, least_limit = memory_budget(baseline)
    assert quantity_bytes(resources["requests"]["memory"]) >= least_request
    assert quantity_bytes(resources["limits"]["memory"]) >= least_limit


def test_memory_is_sized_for_the_connection_limit() -> None:
    check_memory(32 * 2**20)  # the comment's baseline; the run below measures it


# --------------------------------------------------------------------------
# the commands, run: as the image's user, on a read-only root


def isolation_prefix() -> list[str] | None:
    """A command prefix giving what the pod gives (a private mount namespace
    with / read-only and an empty /tmp, the image's uid, no capabilities, no
    new privileges); None where this machine does not allow it."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        return None
    kept = kept_under_tmp()
    # a checkout or venv under /tmp would vanish under the pod's empty /tmp: park
    # it on a private tmpfs first, then bind it back (read-only) at its own path
    park = "".join(f" && mkdir /mnt/{i} && mount --bind {shlex.quote(str(p))} /mnt/{i}"
                   for i, p in enumerate(kept))
    unpark = "".join(f" && mkdir -p {shlex.quote(str(p))} && mount --bind /mnt/{i} "
                     f"{shlex.quote(str(p))} && mount -o remount,bind,ro {shlex.quote(str(p))}"
                     for i, p in enumerate(kept))
    script = (("mount -t tmpfs tmpfs /mnt" + park + " && " if kept else "")
              + 'mount -o remount,bind,ro / && mount -t tmpfs -o size=16m tmpfs /tmp'
              + unpark + " && "
              f'exec setpriv --reuid {IMAGE_UID} --regid {IMAGE_UID} --clear-groups '
              '--inh-caps=-all --bounding-set=-all --no-new-privs "$@"')
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
    probe = subprocess.run([*prefix, "sh", "-c", "! touch /probe 2>/dev/null && touch /tmp/x"],
                           capture_output=True, timeout=10)
    return prefix if probe.returncode == 0 else None


def kept_under_tmp() -> list[Path]:
    """The checkout and the venv, where they lie under /tmp (a CI clone may), outermost only."""
    paths = sorted({Path(p).resolve() for p in (REPO_ROOT, sys.prefix)})
    under = [p for p in paths if Path("/tmp") in p.parents]
    return [p for p in under if not any(q in p.parents for q in under)]


def image_env() -> dict[str, str]:
    """The image's ENV (the Dockerfile's), and the venv's interpreter on PATH."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update(re.findall(r"\b(PYTHON\w+)=(\S+)", text))
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    return env


def three_free_ports() -> int:
    for _ in range(50):
        p = get_free_port()
        if p + 2 <= 65535 and all(_free(p + i) for i in (1, 2)):
            return p
    raise AssertionError("no run of three free ports")


def _free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024


def hello_until_ready(port: int, tries: int = 40) -> None:
    """Retry until two requests in a row are answered: each condure instance
    hands requests to the handlers in turn, so both have then answered, and a
    handler answers only once condure's subscription has reached its PUB."""
    streak = 0
    for _ in range(tries):
        try:
            with Client(port, timeout=0.5) as client:
                client.send(get("/", host=b"localhost"))
                resp = client.read_response()
            assert resp.status == 200 and resp.body == HELLO, resp.raw
            streak += 1
            if streak == 2:
                return
        except (TimeoutError, OSError):
            streak = 0
    raise AssertionError("condure and the handlers never answered two requests in a row")


def moved_condure_args(port: int, metrics: int, handler_ports: list[int]) -> list[str]:
    """The manifest's args with the pod's addresses moved to loopback ports."""
    args = condure_args("condure-test")
    sts = handler_set()
    name, zport = sts["metadata"]["name"], port_of(container(sts, "handler"), "zhttp-out")
    moves = {f"0.0.0.0:{port_of(condure_container(), 'http')}": f"127.0.0.1:{port}",
             f"0.0.0.0:{port_of(condure_container(), 'metrics')}": f"127.0.0.1:{metrics}"}
    for i, p in enumerate(handler_ports):
        moves[f"tcp://{name}-{i}.zhttp-handler:{zport}"] = f"tcp://127.0.0.1:{p}"
    moved = [moves.get(a, a) for a in args]
    assert not [a for a in moved if "0.0.0.0" in a or "zhttp-handler" in a], moved
    return moved


@pytest.mark.deadline(90)
def test_the_manifests_commands_serve_as_the_image_user_on_a_read_only_root(
        processes, tmp_path: Path) -> None:
    prefix = isolation_prefix()
    if prefix is None:
        pytest.skip("needs root, unshare and setpriv for a read-only root and another uid")
    env = image_env()
    sts = handler_set()
    handler = container(sts, "handler")
    handler_env = {e["name"]: e["value"] for e in handler["env"]}
    handler_ports, logs = [], []
    for i in range(sts["spec"]["replicas"]):
        p = three_free_ports()
        handler_ports.append(p)
        henv = {**env, **handler_env, "CONDURE_ZBASE": f"tcp://127.0.0.1:{p}"}
        # the image's command without tini, which only forwards signals
        argv = [handler["command"][-1], *handler["args"]]
        logs.append(tmp_path / f"handler{i}.out")
        with open(logs[-1], "wb") as out:
            processes([*prefix, *argv], env=henv, stdout=out, stderr=subprocess.STDOUT)

    port, metrics = get_free_port(), get_free_port()
    argv = [*prefix, "python", "-m", "condure",
            *moved_condure_args(port, metrics, handler_ports)]
    log_path = tmp_path / "condure.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log_path)
        wait_for_port(metrics, proc, log_path)
        check_memory(rss_bytes(proc.pid))  # the baseline, measured
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{IMAGE_UID}\s+{IMAGE_UID}\s", status, re.M), status
        hello_until_ready(port)
        for _ in range(6):
            with Client(port) as client:
                client.send(get("/", host=b"localhost"))
                resp = client.read_response()
            assert resp.status == 200 and resp.body == HELLO, resp.raw
        for log in logs:  # both handler pods served
            assert "IN {" in log.read_text(), log.read_text()
        # the liveness probe's request
        with Client(metrics) as client:
            client.send(get(condure_container()["livenessProbe"]["httpGet"]["path"],
                            host=b"localhost"))
            assert client.read_response().status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log_path.read_text()
        text = log_path.read_text()
        assert "stopped" in text and "Read-only" not in text and "Traceback" not in text, text
    finally:
        stop_process(proc)
