"""Counters and gauges, and their Prometheus text exposition (pure).

Kept as plain attributes and dicts so that counting on the hot path is one
addition; `render` turns them into the text format when scraped. Process
figures (CPU, memory, fds, start time) are read from /proc at scrape time,
like the standard process collector.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterable

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Metrics:
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

    def render(self, prefix: str = "") -> str:
        """The Prometheus text format (version 0.0.4)."""
        out: list[str] = []
        for name, kind, help_text, samples in self._families():
            full = prefix + name
            out.append(f"# HELP {full} {help_text}")
            out.append(f"# TYPE {full} {kind}")
            for labels, value in samples:
                out.append(f"{full}{_labels(labels)} {_num(value)}")
        return "\n".join(out) + "\n"

    def _families(self) -> Iterable[tuple[str, str, str, list]]:
        conns = dict(self.connections)
        for key in (("stream", "http"), ("stream", "websocket"), ("req", "http")):
            conns.setdefault(key, 0)
        yield ("requests_total", "counter", "Requests received from clients",
               [({}, self.requests)])
        yield ("connections", "gauge", "Client connections open now",
               [({"mode": m, "protocol": p}, n) for (m, p), n in sorted(conns.items())])
        yield ("connections_accepted_total", "counter", "Client connections accepted",
               [({}, self.accepted)])
        yield ("connections_rejected_total", "counter",
               "Client connections refused (TLS handshake failures)", [({}, self.rejected)])
        yield ("zhttp_packets_in_total", "counter", "ZHTTP packets received from handlers",
               _by(self.packets_in, "type"))
        yield ("zhttp_packets_out_total", "counter", "ZHTTP packets sent to handlers",
               _by(self.packets_out, "type"))
        yield ("zhttp_packets_dropped_total", "counter",
               "Handler packets dropped (unparsable or for no live session)",
               [({}, self.packets_dropped)])
        yield ("handler_timeouts_total", "counter",
               "Sessions ended because the handler was silent for 60 s", [({}, self.handler_timeouts)])
        yield ("http_parse_errors_total", "counter", "Malformed client requests",
               [({}, self.parse_errors)])
        yield ("websocket_messages_total", "counter", "WebSocket messages",
               _by(self.ws_messages, "direction"))
        yield ("bytes_total", "counter", "Bytes to and from clients", _by(self.bytes, "direction"))
        yield from _process()


def _by(counter: Counter, label: str) -> list:
    return [({label: k}, v) for k, v in sorted(counter.items())]


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _process() -> Iterable[tuple[str, str, str, list]]:
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        fds = len(os.listdir("/proc/self/fd"))
    except (OSError, StopIteration, IndexError, ValueError):
        return
    utime, stime = int(fields[11]), int(fields[12])
    start = btime + int(fields[19]) / _CLK_TCK
    yield ("process_cpu_seconds_total", "counter", "User and system CPU time",
           [({}, (utime + stime) / _CLK_TCK)])
    yield ("process_resident_memory_bytes", "gauge", "Resident memory",
           [({}, int(fields[21]) * _PAGE)])
    yield ("process_virtual_memory_bytes", "gauge", "Virtual memory", [({}, int(fields[20]))])
    yield ("process_open_fds", "gauge", "Open file descriptors", [({}, fds)])
    yield ("process_start_time_seconds", "gauge", "Start time since the epoch", [({}, start)])
