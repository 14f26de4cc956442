"""The Autobahn TestSuite (groups 1-10) against condure + the echo handler.

Runs loadtest/autobahn.py, which starts `python -m condure`,
loadtest/ws_echo_handler.py and kosoku (the Autobahn case files in
fuzzingclient mode), and exits 0 only if every case is OK, NON-STRICT or
INFORMATIONAL. Skipped when kosoku (requirements-dev.txt) is not installed.

Groups 1-10 are 301 cases; the four 8/16 MB cases (9.1.5, 9.1.6, 9.2.5,
9.2.6) are left out with --skip-large because kosoku does not read while it
writes a frame, so it deadlocks with any streaming echo whose buffers are
bounded (condure forwards under credits); see KOSOKU_LARGE in the script.
That leaves 297 cases, about 80 s on a 2-core machine. The whole suite:

    python loadtest/autobahn.py                 # groups 1-10 (all but 12, 13)
    python loadtest/autobahn.py --compression   # groups 12, 13 with --compression
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "loadtest" / "autobahn.py"


def _kosoku_available() -> bool:
    return ((Path(sys.executable).parent / "kosoku").exists() or shutil.which("kosoku") is not None
            or importlib.util.find_spec("kosoku") is not None)


pytestmark = pytest.mark.skipif(not _kosoku_available(),
                                reason="kosoku is not installed (pip install kosoku==0.1.0)")


@pytest.mark.deadline(420)
def test_autobahn_groups_1_to_10(processes, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    out_path = tmp_path / "autobahn.out"
    with open(out_path, "wb") as out:
        proc = processes([sys.executable, str(SCRIPT), "--groups", "1-10", "--skip-large",
                          "-p", "2", "-o", str(reports)],
                         stdout=out, stderr=out)
        rc = proc.wait(400)  # the deadline fires first if it hangs; teardown kills the group
    output = out_path.read_text(errors="replace")
    assert rc == 0, output[-8000:]
    m = re.search(r"^(\d+) cases in ", output, re.M)
    assert m and int(m.group(1)) == 297, output[-4000:]
    index = json.loads((reports / "index.json").read_text())
    behaviors = {cid: e["behavior"] for entries in index.values() for cid, e in entries.items()}
    assert len(behaviors) == 297
    assert set(behaviors.values()) <= {"OK", "NON-STRICT", "INFORMATIONAL"}, {
        cid: b for cid, b in behaviors.items() if b not in ("OK", "NON-STRICT", "INFORMATIONAL")}
