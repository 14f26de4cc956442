"""loadtest/locust_run.py end to end: condure, bench_handler and a short headless
Locust run with both user kinds, all as subprocesses (locust is never imported
here: it monkey-patches the whole process when imported).
"""
from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

RUN_SECONDS = 5

pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="locust is not installed (pip install -r requirements-dev.txt)")


@pytest.mark.deadline(150)
def test_locust_run_http_and_websocket_users(processes, tmp_path: Path) -> None:
    prefix = tmp_path / "run"
    out_path = tmp_path / "locust_run.out"
    with open(out_path, "wb") as out:
        proc = processes([sys.executable, "loadtest/locust_run.py", "--users", "4",
                          "--spawn-rate", "4", "--time", str(RUN_SECONDS), "--csv", str(prefix)],
                         stdout=out, stderr=subprocess.STDOUT)
    try:
        rc = proc.wait(RUN_SECONDS + 100)
    except subprocess.TimeoutExpired:
        pytest.fail(f"locust_run.py did not finish:\n{out_path.read_text(errors='replace')}")
    output = out_path.read_text(errors="replace")
    assert rc == 0, output
    assert "result: OK" in output

    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    for key in (("GET", "/"), ("WS", "echo")):
        assert key in rows, f"no {key} row in the stats:\n{output}"
        assert int(rows[key]["Request Count"]) > 0, rows[key]
        assert int(rows[key]["Failure Count"]) == 0, rows[key]
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
