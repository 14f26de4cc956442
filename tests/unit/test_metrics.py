"""metrics.py: families, the exposition, and the sum over workers (pure)."""
from __future__ import annotations

import pytest

from condure import CONDURE_VERSION, __version__
from condure.metrics import (Aggregate, Family, Metrics, SnapshotError, exposition, merge,
                             parse_snapshot, process_families, process_start_time, render,
                             snapshot)
from exposition import FormatError, parse


def scrape_text(m: Metrics, prefix: str = "") -> str:
    return render(exposition([*m.families(), *process_families()], process_start_time()), prefix)


def test_every_known_label_set_is_there_at_zero() -> None:
    fams = parse(scrape_text(Metrics()))
    types_in = {dict(k)["type"] for k in fams["condure_zhttp_packets_in_total"]["samples"]}
    assert {"data", "credit", "keep-alive", "cancel", "close", "error", "handoff-start",
            "handoff-proceed", "ping", "pong", "unknown"} <= types_in
    types_out = {dict(k)["type"] for k in fams["condure_zhttp_packets_out_total"]["samples"]}
    assert {"request", "data", "credit", "keep-alive", "cancel", "close"} <= types_out
    for name in ("condure_websocket_messages_total", "condure_bytes_total"):
        assert fams[name]["samples"] == {(("direction", "in"),): 0, (("direction", "out"),): 0}
    assert set(fams["condure_connections"]["samples"]) == {
        (("mode", "req"), ("protocol", "http")), (("mode", "stream"), ("protocol", "http")),
        (("mode", "stream"), ("protocol", "websocket")), (("mode", "stream"), ("protocol", "h2"))}
    assert all(v == 0 for v in fams["condure_connections"]["samples"].values())
    assert fams["condure_requests_by_protocol_total"]["samples"] == {
        (("protocol", "h2"),): 0, (("protocol", "http1"),): 0}
    for name in ("condure_http2_streams", "condure_http2_resets_received_total",
                 "condure_http2_goaways_sent_total"):
        assert fams[name]["samples"] == {(): 0}


def test_http1_requests_are_derived_from_the_total() -> None:
    m = Metrics()
    m.requests, m.h2_requests = 7, 3
    fams = parse(scrape_text(m))
    assert fams["condure_requests_by_protocol_total"]["samples"] == {
        (("protocol", "h2"),): 3, (("protocol", "http1"),): 4}
    assert fams["condure_requests_total"]["samples"] == {(): 7}


def test_names_are_namespaced_and_prefix_is_prepended_verbatim() -> None:
    m = Metrics()
    m.requests = 7
    fams = parse(scrape_text(m, "pp_"))
    assert fams["pp_condure_requests_total"]["samples"] == {(): 7}
    assert fams["pp_connmgr_requests_total"]["samples"] == {(): 7}
    assert fams["pp_connmgr_requests_total"]["type"] == "counter"
    assert "pp_process_open_fds" in fams and "pp_process_start_time_seconds" in fams
    ours = [n for n in fams if not n.startswith(("pp_condure_", "pp_process_"))]
    assert ours == ["pp_connmgr_requests_total"]


def test_build_info() -> None:
    fams = parse(scrape_text(Metrics()))
    [(labels, value)] = fams["condure_build_info"]["samples"].items()
    labels = dict(labels)
    assert value == 1 and fams["condure_build_info"]["type"] == "gauge"
    assert labels["version"] == CONDURE_VERSION and labels["package_version"] == __version__
    assert labels["implementation"] == "python" and labels["python_version"].count(".") == 2


def test_new_label_values_keep_the_family_together() -> None:
    m = Metrics()
    m.packets_in["zz-new"] += 2  # a label value we did not know of: still one family
    m.connections[("stream", "http")] += 3
    fams = parse(scrape_text(m))
    assert fams["condure_zhttp_packets_in_total"]["samples"][(("type", "zz-new"),)] == 2
    assert fams["condure_connections"]["samples"][(("mode", "stream"), ("protocol", "http"))] == 3


@pytest.mark.parametrize("text, problem", [
    ("a_total 1\n", "outside its family"),
    ("# HELP a_total x\n# TYPE a_total counter\na_total 1\na_total 2\n", "duplicate"),
    ("# HELP a_total x\n# TYPE a_total counter\na_total 1\n"
     "# HELP a_total x\n# TYPE a_total counter\n", "twice"),
    ("# HELP a x\n# TYPE a counter\na 1\n", "_total"),
    ("# HELP a x\na 1\n", "outside its family"),
    ('# HELP a x\n# TYPE a gauge\na{b="1",b="2"} 1\n', "a label twice"),
    ('# HELP a x\n# TYPE a gauge\na{b="\\x"} 1\n', "bad labels"),
    ("# HELP a x\n# TYPE a gauge\na one\n", "bad value"),
])
def test_the_strict_reader_catches(text: str, problem: str) -> None:
    """The reader the exposition tests rely on must itself refuse bad text."""
    with pytest.raises(FormatError, match=problem):
        parse(text)


def test_escaping_of_label_values_and_help() -> None:
    fam = Family("condure_x", "gauge", "a \\ and\nnewline", {(("v", 'q"\\\n'),): 1})
    text = render([fam])
    assert text == ('# HELP condure_x a \\\\ and\\nnewline\n# TYPE condure_x gauge\n'
                    'condure_x{v="q\\"\\\\\\n"} 1\n')
    parse(text)


def _worker(pid: int, requests: int, open_conns: int) -> tuple[int, list[Family]]:
    m = Metrics()
    m.requests = requests
    m.connections[("stream", "http")] = open_conns
    return pid, m.families()


def test_snapshot_round_trip() -> None:
    m = Metrics()
    m.requests = 4
    m.packets_out["request"] = 4
    pid, fams = parse_snapshot(snapshot(m))
    assert pid > 0
    assert _value(fams, "condure_requests_total") == 4
    assert _value(fams, "condure_zhttp_packets_out_total", (("type", "request"),)) == 4
    assert _value(fams, "process_cpu_seconds_total") >= 0
    assert [f.name for f in fams if f.name.startswith("condure_")] == \
        [f.name for f in m.families()]


def _value(fams: list[Family], name: str, labels: tuple = ()) -> float:
    return next(f for f in fams if f.name == name).samples[labels]


HTTP = (("mode", "stream"), ("protocol", "http"))


def test_aggregate_sums_workers_and_keeps_counters_monotonic() -> None:
    agg = Aggregate()
    fams = agg.update({0: _worker(100, 5, 1), 1: _worker(101, 3, 2)})
    assert _value(fams, "condure_requests_total") == 8
    assert _value(fams, "condure_connections", HTTP) == 3
    # worker 1 does not answer: its counters stay, its gauges go
    fams = agg.update({0: _worker(100, 6, 1), 1: None})
    assert _value(fams, "condure_requests_total") == 9
    assert _value(fams, "condure_connections", HTTP) == 1
    # worker 1 was restarted (new pid) and starts from 0: what it had counted is kept
    fams = agg.update({0: _worker(100, 6, 1), 1: _worker(102, 1, 0)})
    assert _value(fams, "condure_requests_total") == 6 + 3 + 1
    fams = agg.update({0: _worker(100, 7, 0), 1: _worker(102, 2, 0)})
    assert _value(fams, "condure_requests_total") == 7 + 3 + 2
    assert _value(fams, "condure_connections", HTTP) == 0


def test_merge_adds_families_of_the_same_name() -> None:
    a = Family("process_open_fds", "gauge", "h", {(): 3})
    b = Family("process_open_fds", "gauge", "h", {(): 4})
    [m] = merge([a], [b])
    assert m.samples == {(): 7} and a.samples == {(): 3}


@pytest.mark.parametrize("data", [b"", b"{}", b"[1]", b'{"pid": 1, "families": [[1]]}',
                                  b'{"pid": "x", "families": []}', b"\xff"])
def test_bad_snapshot(data: bytes) -> None:
    with pytest.raises(SnapshotError):
        parse_snapshot(data)
