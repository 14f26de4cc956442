"""Counters and gauges, and their Prometheus text exposition (pure but for /proc).

Counting on the hot path is one addition to a plain attribute or dict entry
of `Metrics`; the families are built only when scraped.

Names (deviation D23). Every family of ours is namespaced `condure_`
(`condure_requests_total`); the standard process figures keep the names of
Prometheus' process collector (`process_cpu_seconds_total`, ...), so generic
dashboards find them. `prefix=P` of `--prometheus` is prepended verbatim to
every family name, as pushpin-connmgr does to its one family (`prefix=pp_`:
`pp_condure_requests_total`, `pp_process_open_fds`). `connmgr_requests_total`
is exported too, the same figure as `condure_requests_total` under the name
dashboards written for pushpin-connmgr query. `condure_build_info` (always 1)
carries the versions as labels. Every label set we know of is present from
the first scrape, at 0, so that `rate()` and `increase()` see a series start
at 0 instead of appearing at its first increment.

With `--workers N` one scrape of the configured port covers the whole
process: the parent asks every worker for its figures (`snapshot`) at scrape
time and adds them up (`Aggregate`), with its own process figures. A worker
that restarts starts again from 0; `Aggregate` keeps what its previous run
had counted (as of the last scrape that reached it), so every counter stays
monotonic. Gauges are the sum over the workers that answered.
"""
from __future__ import annotations

import json
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from . import CONDURE_VERSION, __version__
from .zhttp.packet import KNOWN_TYPES

NAMESPACE = "condure_"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

Labels = tuple[tuple[str, str], ...]  # (name, value) pairs in the family's label order

# the label sets present from the first scrape
_TYPES_IN = sorted({t.decode() or "data" for t in KNOWN_TYPES} | {"unknown"})
_TYPES_OUT = sorted({t.decode() or "data" for t in KNOWN_TYPES} | {"request"})
_DIRECTIONS = ("in", "out")
_CONNECTION_KINDS = (("stream", "http"), ("stream", "websocket"), ("stream", "h2"), ("req", "http"))

REQUESTS_HELP = ("Request heads received from clients in server mode and parsed (stream and req "
                 "listeners, WebSocket handshakes included, also those then refused or answered "
                 "400/500; not unparsable heads, not client-mode requests)")


@dataclass
class Family:
    """One metric family: its full name (without the operator's prefix) and samples."""
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    samples: dict[Labels, float] = field(default_factory=dict)


class Metrics:
    """One process's figures (a single condure, or one worker of --workers N)."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections: Counter[tuple[str, str]] = Counter()  # (mode, protocol) -> open now
        self.accepted = 0
        self.rejected = 0
        self.packets_in: Counter[str] = Counter()
        self.packets_out: Counter[str] = Counter()
        self.packets_dropped = 0
        self.handler_timeouts = 0
        self.parse_errors = 0
        self.ws_messages: Counter[str] = Counter()  # direction -> count
        self.bytes: Counter[str] = Counter()  # direction -> count
        # HTTP/2 (server/http2.py); the HTTP/1 figures are derived at scrape time
        # (requests - h2_requests), so an HTTP/1 request costs no extra count
        self.h2_requests = 0  # included in `requests`
        self.h2_streams = 0  # request streams open now
        self.h2_resets_received = 0
        self.h2_goaways_sent = 0

    def families(self) -> list[Family]:
        """This process's condure_* families: every one of them adds up across workers."""
        n = NAMESPACE
        return [
            Family(n + "requests_total", "counter", REQUESTS_HELP, {(): self.requests}),
            Family(n + "requests_by_protocol_total", "counter",
                   "The requests of condure_requests_total by the protocol they came in: "
                   "http1 (HTTP/1.0 and 1.1, WebSocket handshakes and Upgrade: h2c included) "
                   "or h2 (HTTP/2 streams)",
                   {(("protocol", "h2"),): self.h2_requests,
                    (("protocol", "http1"),): self.requests - self.h2_requests}),
            Family(n + "connections", "gauge",
                   "Client connections open now (protocol h2: served as HTTP/2)",
                   _by2(self.connections, ("mode", "protocol"), _CONNECTION_KINDS)),
            Family(n + "connections_accepted_total", "counter", "Client connections accepted",
                   {(): self.accepted}),
            Family(n + "connections_rejected_total", "counter",
                   "Client connections refused (TLS handshake failures)", {(): self.rejected}),
            Family(n + "zhttp_packets_in_total", "counter",
                   "ZHTTP packets received from handlers, by type",
                   _by(self.packets_in, "type", _TYPES_IN)),
            Family(n + "zhttp_packets_out_total", "counter",
                   "ZHTTP packets sent to handlers, by type",
                   _by(self.packets_out, "type", _TYPES_OUT)),
            Family(n + "zhttp_packets_dropped_total", "counter",
                   "Handler packets dropped (unparsable or for no live session)",
                   {(): self.packets_dropped}),
            Family(n + "handler_timeouts_total", "counter",
                   "Sessions ended because the handler was silent for 60 s",
                   {(): self.handler_timeouts}),
            Family(n + "http_parse_errors_total", "counter",
                   "Client request heads refused as malformed", {(): self.parse_errors}),
            Family(n + "websocket_messages_total", "counter",
                   "WebSocket messages from (in) and to (out) clients",
                   _by(self.ws_messages, "direction", _DIRECTIONS)),
            Family(n + "bytes_total", "counter",
                   "Bytes received from (in) and sent to (out) clients",
                   _by(self.bytes, "direction", _DIRECTIONS)),
            Family(n + "http2_streams", "gauge",
                   "HTTP/2 request streams open now (each a ZHTTP session)",
                   {(): self.h2_streams}),
            Family(n + "http2_resets_received_total", "counter",
                   "HTTP/2 streams reset by clients (RST_STREAM received)",
                   {(): self.h2_resets_received}),
            Family(n + "http2_goaways_sent_total", "counter",
                   "GOAWAY frames sent to HTTP/2 clients (shutdown, protocol errors, "
                   "too many resets)", {(): self.h2_goaways_sent}),
        ]


def _by(counter: Counter[str], label: str, known: Iterable[str]) -> dict[Labels, float]:
    keys = sorted(set(known) | set(counter))
    return {((label, k),): counter.get(k, 0) for k in keys}


def _by2(counter: Counter[tuple[str, str]], labels: tuple[str, str], known: Iterable[tuple[str, str]]) \
        -> dict[Labels, float]:
    keys = sorted(set(known) | set(counter))
    return {tuple(zip(labels, k)): counter.get(k, 0) for k in keys}


# --- what a scrape shows -----------------------------------------------------


def build_info() -> Family:
    labels = (("version", CONDURE_VERSION), ("implementation", "python"),
              ("package_version", __version__), ("python_version", platform.python_version()))
    return Family(NAMESPACE + "build_info", "gauge",
                  "Always 1: the condure release implemented, this package's and Python's versions",
                  {labels: 1})


def connmgr_alias(figures: Iterable[Family]) -> Family:
    """pushpin-connmgr's one family, for dashboards written for it."""
    requests = next(f for f in figures if f.name == NAMESPACE + "requests_total")
    return Family("connmgr_requests_total", "counter",
                  "Total number of requests processed (the same figure as "
                  "condure_requests_total, named as pushpin-connmgr names it)",
                  dict(requests.samples))


def exposition(figures: list[Family], start_time: float | None) -> list[Family]:
    """Everything one scrape shows, given the additive figures (one process's
    or the sum over workers) and the start time of the process serving it."""
    out = [build_info(), *figures, connmgr_alias(figures)]
    if start_time is not None:
        out.append(Family("process_start_time_seconds", "gauge",
                          "Start time of the process since unix epoch in seconds",
                          {(): start_time}))
    return out


def render(families: Iterable[Family], prefix: str = "") -> str:
    """The Prometheus text format (version 0.0.4): HELP and TYPE, then the samples."""
    out: list[str] = []
    for fam in families:
        name = prefix + fam.name
        out.append(f"# HELP {name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {name} {fam.kind}")
        for labels, value in fam.samples.items():
            out.append(f"{name}{_labels(labels)} {_num(value)}")
    return "\n".join(out) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


# --- process figures (the standard process collector's names) ----------------


def process_families(pid: str = "self") -> list[Family]:
    """CPU, memory and descriptors of one process, read from /proc (the
    additive ones: a parent adds its workers' to its own). Empty if /proc
    cannot be read."""
    stat = _stat(pid)
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return []
    if stat is None:
        return []
    cpu = (int(stat[11]) + int(stat[12])) / _CLK_TCK
    return [
        Family("process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds", {(): cpu}),
        Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes",
               {(): int(stat[21]) * _PAGE}),
        Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes",
               {(): int(stat[20])}),
        Family("process_open_fds", "gauge", "Number of open file descriptors", {(): fds}),
    ]


def process_start_time(pid: str = "self") -> float | None:
    stat = _stat(pid)
    try:
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return None if stat is None else btime + int(stat[19]) / _CLK_TCK


def _stat(pid: str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 is index 0)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        int(fields[21])
        return fields
    except (OSError, IndexError, ValueError):
        return None


# --- --workers N: a worker's snapshot, summed in the parent ------------------


def snapshot(metrics: Metrics) -> bytes:
    """A worker's answer to its parent: its pid and its additive families, as JSON."""
    fams = [*metrics.families(), *process_families()]
    return json.dumps({"pid": os.getpid(), "families": [
        [f.name, f.kind, f.help, [[list(map(list, k)), v] for k, v in f.samples.items()]]
        for f in fams]}).encode()


class SnapshotError(ValueError):
    """A worker's answer that is not a snapshot."""


def parse_snapshot(data: bytes) -> tuple[int, list[Family]]:
    try:
        d = json.loads(data)
        fams = [Family(str(name), str(kind), str(help_),
                       {tuple((str(a), str(b)) for a, b in labels): float(v)
                        for labels, v in samples})
                for name, kind, help_, samples in d["families"]]
        return int(d["pid"]), fams
    except (ValueError, TypeError, KeyError) as e:
        raise SnapshotError(f"bad metrics snapshot: {e}") from None


class Aggregate:
    """The whole process's figures from its workers' snapshots (the parent's side).

    Counters: the sum of each worker's latest snapshot (the last one seen
    if it did not answer this time) plus what earlier runs of restarted
    workers had counted, so a restart never makes a counter go down.
    Gauges: the sum over the workers that answered this scrape.
    """

    def __init__(self) -> None:
        self.last: dict[int, tuple[int, list[Family]]] = {}  # worker index -> (pid, families)
        self.retired: dict[tuple[str, Labels], float] = {}  # counted by workers' earlier runs

    def update(self, answers: dict[int, tuple[int, list[Family]] | None]) -> list[Family]:
        """One scrape: each worker's (pid, families), or None if it did not
        answer. Returns the summed families (the caller serialises scrapes)."""
        live: list[list[Family]] = []
        for index, answer in answers.items():
            if answer is None:
                continue
            before = self.last.get(index)
            if before is not None and before[0] != answer[0]:  # a new run of that worker
                for fam in before[1]:
                    if fam.kind == "counter":
                        for labels, v in fam.samples.items():
                            key = (fam.name, labels)
                            self.retired[key] = self.retired.get(key, 0) + v
            self.last[index] = answer
            live.append(answer[1])
        totals: dict[str, Family] = {}
        for fams in (f for _, f in self.last.values()):
            for fam in fams:
                if fam.kind == "counter":
                    _add(totals, fam)
        for fams in live:
            for fam in fams:
                if fam.kind != "counter":
                    _add(totals, fam)
        for (name, labels), v in self.retired.items():
            total = totals.get(name)
            if total is not None:
                total.samples[labels] = total.samples.get(labels, 0) + v
        return list(totals.values())


def merge(*groups: Iterable[Family]) -> list[Family]:
    """Families of the same name added up, sample by sample, in first-seen order."""
    totals: dict[str, Family] = {}
    for group in groups:
        for fam in group:
            _add(totals, fam)
    return list(totals.values())


def _add(totals: dict[str, Family], fam: Family) -> None:
    into = totals.get(fam.name)
    if into is None:
        totals[fam.name] = Family(fam.name, fam.kind, fam.help, dict(fam.samples))
        return
    for labels, v in fam.samples.items():
        into.samples[labels] = into.samples.get(labels, 0) + v
