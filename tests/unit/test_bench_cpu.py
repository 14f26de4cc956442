"""loadtest/bench.py's measurement (issue 17): the CPU of a process tree, a
descendant that exits during the window included, and the table's rows from
runs (ratios, per-round pairs, spread, verdicts). No speed is asserted."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "loadtest" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_under_test"] = mod
    spec.loader.exec_module(mod)
    return mod


bench = load_bench()

# a parent that starts a child burning CPU, reaps it, then waits for stdin
TREE = textwrap.dedent("""
    import subprocess, sys, time
    sys.stdout.write("up\\n"); sys.stdout.flush()
    sys.stdin.readline()
    child = subprocess.Popen([sys.executable, "-c",
        "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.4: pass"])
    child.wait()
    sys.stdout.write("reaped\\n"); sys.stdout.flush()
    sys.stdin.readline()
""")


def test_tree_cpu_keeps_a_descendant_that_exited() -> None:
    p = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"
        before = bench.tree_ticks(p.pid)
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline() == "reaped\n"
        spent = (bench.tree_ticks(p.pid) - before) / bench.CLK_TCK
        # the child burnt 0.4 s and is gone; its time is in the parent's cutime
        assert spent >= 0.35, spent
    finally:
        p.stdin.close()
        p.wait(10)


def test_tree_ticks_of_a_gone_process_is_zero() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(10)
    time.sleep(0.05)
    assert bench.tree_ticks(p.pid) == 0


def run(rnd: int, cpu: float, rps: float) -> dict:
    return {"round": rnd, "cpu_us": cpu, "rps": rps, "handler_cpu_us": 10.0,
            "loadgen_cpu_us": 5.0, "cpu_busy_pct": 90.0, "other_cpu_pct": 3.0}


def test_rows_ratio_pairs_spread_and_verdict(capsys) -> None:
    sc = next(s for s in bench.SCENARIOS if s.name == "ka50")
    out = bench.Outcome()
    # round 2 of condure failed: the pairs are rounds 1 and 3 only
    out.runs = {"ours": [run(1, 50.0, 100), run(2, 60.0, 90), run(3, 55.0, 95)],
                "condure": [run(1, 50.0, 120), run(3, 44.0, 130)]}
    rows = bench.build_rows([(sc, out)], have_rust=True)
    cpu = next(r for r in rows if r["key"] == "cpu_us")
    assert cpu["unit"] == "us" and cpu["target"] == "<= 1.1x"
    assert cpu["ours"] == 55.0 and cpu["reference"] == 47.0
    assert abs(cpu["ratio"] - 55.0 / 47.0) < 1e-9
    assert cpu["verdict"] == "FAIL"  # 1.17 > 1.1 (lower is better)
    assert [round(x, 3) for x in cpu["round_ratios"]] == [1.0, 1.25]
    assert abs(cpu["spread"]["ours"] - 10.0 / 55.0) < 1e-9
    assert cpu["context"]["ours"]["handler_cpu_us"] == 10.0
    rps = next(r for r in rows if r["key"] == "rps")
    assert rps["verdict"] == "-"  # req/s is beside the CPU figure, no target
    bench.print_table(rows)
    text = capsys.readouterr().out
    assert "ka50             server CPU/req" in text or "server CPU/req" in text
    assert "ratios 1.00 1.25" in text
    assert "1.00-1.25" in text


def test_big_idle_columns_follow_the_fd_limit() -> None:
    ours, ref = bench.big_idle_impls(20000, 50000)
    assert ours[1] == ref[1] == bench.OURS and ours[2] == ref[2] == 3
    assert ours[3]["conns"] == 50000 and ref[3]["conns"] == 10000
    ours, ref = bench.big_idle_impls(65536, 50000)
    assert (ours[1], ref[1]) == (bench.OURS, bench.RUST) and ours[2] == ref[2] == 1
