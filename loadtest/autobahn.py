#!/usr/bin/env python3
"""Run the Autobahn TestSuite server cases against condure + the echo handler.

Starts ``python -m condure --listen 127.0.0.1:PORT,stream --zclient-stream
ipc://TMP/client`` (plus ``--compression`` with --compression) and
``loadtest/ws_echo_handler.py``, drives them with kosoku (the Autobahn case
files, fuzzingclient mode: ``kosoku -p N -o DIR [-i CASE]... [-x CASE]...
127.0.0.1:PORT``), then reads the report index and prints a summary per
case group and every case that did not pass.

Examples::

    python loadtest/autobahn.py                     # all groups but 12 and 13
    python loadtest/autobahn.py --groups 1-10       # groups 1 to 10
    python loadtest/autobahn.py --compression       # only 12.* and 13.*, with --compression
    python loadtest/autobahn.py -i 5.19 -i '6.4.*'  # single cases / globs

kosoku writes its reports only when its whole run ends, and a case whose
peer stops reading can block it forever (it then sends nothing and reads
nothing). So by default the selected cases are run in batches, one kosoku
run per sub-group (``9.1``, ``9.2``, ...), each watched for progress: a run
whose I/O counters stay still for --stall seconds (or that exceeds
--batch-timeout) is killed, and its cases are run again one by one; a case
that hangs on its own is reported with behavior ``HUNG``. Every batch keeps
its kosoku HTML report in DIR/<batch>/; DIR/index.json is the merged index
(kosoku's format, plus the HUNG entries). --one-run runs a single kosoku
invocation instead (no per-case isolation of a hang).

Exit status: 0 if every case's behavior is OK, NON-STRICT or INFORMATIONAL
(UNIMPLEMENTED is tolerated, and reported, in the compression groups 12
and 13 unless --strict-compression); 1 if any case is worse (HUNG
included), or, with --strict-close, if any closing behaviour is worse than
OK/INFORMATIONAL, or if condure or the echo handler died during the run;
2 if the run could not be done (kosoku missing, condure or the handler did
not start).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ECHO_HANDLER = REPO_ROOT / "loadtest" / "ws_echo_handler.py"

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
ACCEPTABLE = {"OK", "NON-STRICT", "INFORMATIONAL"}
ACCEPTABLE_CLOSE = {"OK", "INFORMATIONAL"}
COMPRESSION_GROUPS = {"12", "13"}
HUNG = "HUNG"
# kosoku does not read while it writes a frame, so a streaming echo whose
# buffering is bounded (condure forwards under credits) deadlocks with it on
# 8 and 16 MB messages: kosoku's send and receive queues both fill up. Seen
# with an independent bounded asyncio echo server too; 9.1.5 passes or hangs
# depending on timing. --skip-large leaves them out.
KOSOKU_LARGE = ["9.1.5", "9.1.6", "9.2.5", "9.2.6"]
START_TIMEOUT = 15.0

# Lists kosoku's cases with their descriptions (run in a child interpreter:
# importing the case files puts kosoku's shims on sys.path).
ENUMERATE = r"""
import importlib, json, os, sys
from kosoku._caseindex import initialize_shims
import kosoku.cases
initialize_shims()
out = {}
folder = os.path.dirname(kosoku.cases.__file__)
for f in sorted(os.listdir(folder)):
    if not (f.startswith("case") and f.endswith(".py")) or f == "case.py":
        continue
    module = importlib.import_module(f[:-3])
    for name, obj in vars(module).items():
        if not (name.startswith("Case") and name[4:5].isdigit()):
            continue
        classes = obj if isinstance(obj, list) else [obj] if isinstance(obj, type) else []
        for cls in classes:
            desc = getattr(cls, "DESCRIPTION", "")
            out[cls.__name__[4:].replace("_", ".")] = " ".join(str(desc).split())
json.dump(out, sys.stdout)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kosoku_command() -> list[str] | None:
    """kosoku from this interpreter's environment, else from PATH."""
    exe = Path(sys.executable).parent / "kosoku"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("kosoku")
    if found:
        return [found]
    try:
        import kosoku._cli  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-c", "import sys; from kosoku._cli import main; sys.exit(main())"]


def enumerate_cases() -> dict[str, str] | None:
    """{case id: description} of every kosoku case, or None if unavailable."""
    try:
        out = subprocess.run([sys.executable, "-c", ENUMERATE], capture_output=True,
                             timeout=60, cwd=tempfile.gettempdir(), check=True).stdout
        cases = json.loads(out)
    except (subprocess.SubprocessError, ValueError, OSError):
        return None
    return cases or None


def stop(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL; only the process we started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_line(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def io_counters(pid: int) -> tuple[int, int] | None:
    """(rchar, wchar) of a process: bytes moved by its read/write calls."""
    try:
        fields = dict(line.split(":", 1) for line in
                      Path(f"/proc/{pid}/io").read_text().splitlines())
        return int(fields["rchar"]), int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None


def group_patterns(spec: str) -> list[str]:
    """'1-7' -> ['1.*', ..., '7.*']; '1,3,5-6' likewise."""
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        for g in range(int(lo), int(hi or lo) + 1):
            out.append(f"{g}.*")
    return out


def case_key(case_id: str) -> list[int]:
    return [int(p) if p.isdigit() else 0 for p in case_id.split(".")]


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Stack:
    """condure + echo handler, restartable if condure dies."""

    def __init__(self, tmp: Path, port: int, compression: bool, extra: list[str]) -> None:
        self.tmp = tmp
        self.port = port
        self.base = f"ipc://{tmp}/client"
        self.condure_argv = [sys.executable, "-m", "condure", "--listen",
                             f"127.0.0.1:{port},stream", "--zclient-stream", self.base]
        if compression:
            self.condure_argv.append("--compression")
        self.condure_argv += extra
        self.handler_argv = [sys.executable, str(ECHO_HANDLER), "--base", self.base]
        self.condure: subprocess.Popen | None = None
        self.handler: subprocess.Popen | None = None
        self.starts = 0
        self.deaths: list[str] = []

    @property
    def condure_log(self) -> Path:
        return self.tmp / f"condure{self.starts}.log"

    @property
    def handler_log(self) -> Path:
        return self.tmp / f"handler{self.starts}.log"

    def start(self) -> str | None:
        """Start both; an error text if that failed."""
        self.stop()
        self.starts += 1
        with open(self.condure_log, "wb") as f:
            self.condure = subprocess.Popen(self.condure_argv, cwd=REPO_ROOT,
                                            stdin=subprocess.DEVNULL, stdout=f,
                                            stderr=subprocess.STDOUT)
        if not wait_port(self.port, self.condure, START_TIMEOUT):
            return (f"condure did not start (exit {self.condure.poll()}):\n"
                    f"{tail(self.condure_log)}")
        with open(self.handler_log, "wb") as f:
            self.handler = subprocess.Popen(self.handler_argv, cwd=REPO_ROOT,
                                            stdin=subprocess.DEVNULL, stdout=f,
                                            stderr=subprocess.STDOUT)
        if not wait_line(self.handler_log, "subscribed", self.handler, START_TIMEOUT):
            return f"echo handler did not connect:\n{tail(self.handler_log)}"
        return None

    def check(self, after: str) -> bool:
        """True if both still run; otherwise note it and restart."""
        dead = []
        if self.condure is not None and self.condure.poll() is not None:
            dead.append(f"condure (exit {self.condure.returncode}):\n{tail(self.condure_log)}")
        if self.handler is not None and self.handler.poll() is not None:
            dead.append(f"echo handler (exit {self.handler.returncode}):\n"
                        f"{tail(self.handler_log)}")
        if not dead:
            return True
        self.deaths.append(f"after {after}: " + "\n".join(dead))
        error = self.start()
        if error:
            raise RuntimeError(error)
        return False

    def stop(self) -> None:
        stop(self.handler)
        stop(self.condure)

    def tracebacks(self) -> list[str]:
        out = []
        for n in range(1, self.starts + 1):
            text = (self.tmp / f"condure{n}.log").read_text(errors="replace")
            i = text.find("Traceback")
            while i >= 0 and len(out) < 50:
                out.append(text[max(0, text.rfind("\n", 0, i - 1)):][:1500])
                i = text.find("Traceback", i + 1)
        return out


def run_kosoku(argv: list[str], cwd: Path, log: Path, stall: float,
               timeout: float) -> str:
    """Run one kosoku; 'done', 'stalled' or 'timeout' (then it was killed)."""
    with open(log, "ab") as f:
        f.write(("$ " + " ".join(argv) + "\n").encode())
        f.flush()
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT)
    start = last_change = time.monotonic()
    last = None
    try:
        while True:
            try:
                proc.wait(0.5)
                return "done"
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            counters = io_counters(proc.pid)
            if counters != last:
                last, last_change = counters, now
            if now - last_change > stall:
                return "stalled"
            if now - start > timeout:
                return "timeout"
    finally:
        stop(proc)


def read_index(outdir: Path) -> dict[str, dict]:
    """{case id: entry + details} from one kosoku report directory."""
    path = outdir / "index.json"
    if not path.is_file():
        return {}
    out: dict[str, dict] = {}
    for agent, entries in json.loads(path.read_text()).items():
        for case_id, entry in entries.items():
            case = {"agent": agent, "id": case_id, **entry, "dir": outdir.name}
            report = outdir / entry.get("reportfile", "")
            if report.is_file():
                try:
                    detail = json.loads(report.read_text())
                except ValueError:
                    detail = {}
                for k in ("description", "expectation", "result", "resultClose",
                          "expected", "received", "wasClean", "wasNotCleanReason",
                          "localCloseCode", "remoteCloseCode", "remoteCloseReason",
                          "droppedByMe", "failedByMe", "httpResponse"):
                    case[k] = detail.get(k)
            out[case_id] = case
    return out


def summarize(cases: list[dict], strict_compression: bool, strict_close: bool,
              out=sys.stdout) -> tuple[list[dict], list[dict], list[dict]]:
    """Print the table; return (failing cases, tolerated cases, close problems)."""
    groups: dict[str, dict[str, int]] = {}
    others: set[str] = set()
    for c in cases:
        g = c["id"].split(".")[0]
        b = c.get("behavior", "?")
        if b not in BEHAVIORS:
            others.add(b)
        row = groups.setdefault(g, {})
        row[b] = row.get(b, 0) + 1
    columns = BEHAVIORS + sorted(others)
    width = max(len(x) for x in columns) + 1
    header = "group".ljust(7) + "".join(x.rjust(width) for x in columns) + "total".rjust(8)
    print(header, file=out)
    print("-" * len(header), file=out)
    totals: dict[str, int] = {}
    for g in sorted(groups, key=case_key):
        row = groups[g]
        print(g.ljust(7) + "".join(str(row.get(x, 0)).rjust(width) for x in columns)
              + str(sum(row.values())).rjust(8), file=out)
        for k, v in row.items():
            totals[k] = totals.get(k, 0) + v
    print("-" * len(header), file=out)
    print("all".ljust(7) + "".join(str(totals.get(x, 0)).rjust(width) for x in columns)
          + str(sum(totals.values())).rjust(8), file=out)

    failing, tolerated, close_problems = [], [], []
    for c in cases:
        b = c.get("behavior")
        g = c["id"].split(".")[0]
        if b in ACCEPTABLE:
            pass
        elif b == "UNIMPLEMENTED" and g in COMPRESSION_GROUPS and not strict_compression:
            tolerated.append(c)
        else:
            failing.append(c)
        if b in ACCEPTABLE and c.get("behaviorClose") not in ACCEPTABLE_CLOSE:
            close_problems.append(c)
            if strict_close:
                failing.append(c)
    return failing, tolerated, close_problems


def describe(c: dict, out=sys.stdout) -> None:
    print(f"\n== {c['id']}: behavior {c.get('behavior')}, close {c.get('behaviorClose')}"
          f" (remote close code {c.get('remoteCloseCode')}, {c.get('duration')} ms)", file=out)
    for k in ("description", "expectation", "result", "resultClose"):
        v = c.get(k)
        if v:
            print(f"   {k}: {' '.join(str(v).split())[:600]}", file=out)
    if c.get("behavior") not in ACCEPTABLE and c.get("behavior") != HUNG:
        for k in ("expected", "received"):
            print(f"   {k}: {json.dumps(c.get(k))[:400]}", file=out)
    if c.get("wasNotCleanReason"):
        print(f"   not clean: {c['wasNotCleanReason']}", file=out)
    if c.get("dir"):
        print(f"   report: {c['dir']}/{c.get('reportfile', '')}", file=out)
    if c.get("behavior") == HUNG and c["id"] in KOSOKU_LARGE:
        print("   note: known kosoku limitation (it does not read while writing a large "
              "frame; see KOSOKU_LARGE / --skip-large)", file=out)


def select(all_ids: list[str], includes: list[str], excludes: list[str]) -> list[str]:
    chosen = [i for i in all_ids
              if (not includes or any(fnmatch.fnmatchcase(i, p) for p in includes))
              and not any(fnmatch.fnmatchcase(i, p) for p in excludes)]
    return sorted(chosen, key=case_key)


def batches_of(ids: list[str]) -> list[list[str]]:
    """Consecutive ids of one sub-group (first two parts) per batch."""
    out: list[list[str]] = []
    last = None
    for i in ids:
        sub = ".".join(i.split(".")[:2])
        if sub != last:
            out.append([])
            last = sub
        out[-1].append(i)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compression", action="store_true",
                    help="run only groups 12 and 13, with condure --compression")
    ap.add_argument("--groups", help="case groups to run, e.g. 1-10 or 1,2,5-7")
    ap.add_argument("-i", "--include", action="append", default=[], metavar="CASE",
                    help="case id or glob to run (repeatable)")
    ap.add_argument("-x", "--exclude", action="append", default=None, metavar="CASE",
                    help="case id or glob to exclude (repeatable); default "
                         "'12.*' and '13.*' unless --compression")
    ap.add_argument("-p", "--parallelism", type=int, default=2)
    ap.add_argument("-o", "--outdir", help="report directory (default: a temporary one, "
                                          "removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory "
                                                       "(reports and logs)")
    ap.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    ap.add_argument("--condure-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for condure (repeatable), "
                         "e.g. --condure-arg=--log-level=3")
    ap.add_argument("--stall", type=float, default=20.0,
                    help="kill a kosoku run whose I/O stands still this long (default 20 s)")
    ap.add_argument("--batch-timeout", type=float, default=600.0,
                    help="upper bound for one kosoku run (default 600 s)")
    ap.add_argument("--one-run", action="store_true",
                    help="a single kosoku run for all cases instead of batches")
    ap.add_argument("--skip-large", action="store_true",
                    help="exclude " + ", ".join(KOSOKU_LARGE) + " (8/16 MB messages, which "
                         "deadlock kosoku against any streaming echo with bounded buffers)")
    ap.add_argument("--strict-compression", action="store_true",
                    help="UNIMPLEMENTED in groups 12/13 fails the run too")
    ap.add_argument("--strict-close", action="store_true",
                    help="a closing behaviour other than OK/INFORMATIONAL fails the run too")
    args = ap.parse_args(argv)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGTERM too ends the run through the cleanup below (children stopped by
    # PID); SIGINT may have been ignored by a non-interactive parent shell
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)

    kosoku = kosoku_command()
    if kosoku is None:
        print("kosoku is not installed (pip install kosoku==0.1.0)", file=sys.stderr)
        return 2

    includes = list(args.include)
    if args.groups:
        includes += group_patterns(args.groups)
    if args.compression and not includes:
        includes = ["12.*", "13.*"]
    excludes = args.exclude
    if excludes is None:
        excludes = [] if args.compression else ["12.*", "13.*"]
    if args.skip_large:
        excludes = excludes + KOSOKU_LARGE

    known = None if args.one_run else enumerate_cases()
    if known is None:
        plan: list[list[str]] = [[]]  # one run, patterns passed to kosoku as given
        if not args.one_run:
            print("could not list kosoku's cases: one kosoku run for everything")
    else:
        ids = select(list(known), includes, excludes)
        if not ids:
            print("no case matches the selection", file=sys.stderr)
            return 2
        plan = batches_of(ids)

    tmp = Path(tempfile.mkdtemp(prefix="cd", dir="/tmp"))  # short: ipc paths max 107 chars
    outdir = Path(args.outdir).resolve() if args.outdir else tmp / "reports"
    outdir.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    stack = Stack(tmp, port, args.compression, args.condure_arg)
    kosoku_log = tmp / "kosoku.log"
    base_argv = [*kosoku, "-p", str(args.parallelism)]
    address = f"127.0.0.1:{port}"
    results: dict[str, dict] = {}
    hung: list[str] = []
    counter = 0

    def run(case_ids: list[str], label: str) -> str:
        nonlocal counter
        counter += 1
        batch_dir = outdir / f"{counter:03d}-{label}"
        cmd = [*base_argv, "-o", str(batch_dir)]
        if case_ids:
            for c in case_ids:
                cmd += ["-i", c]
        else:
            for pat in includes:
                cmd += ["-i", pat]
            for pat in excludes:
                cmd += ["-x", pat]
        cmd.append(address)
        state = run_kosoku(cmd, tmp, kosoku_log, args.stall, args.batch_timeout)
        if state == "done":
            results.update(read_index(batch_dir))
        stack.check(label)
        return state

    started = time.monotonic()
    try:
        print("condure:", " ".join(stack.condure_argv), flush=True)
        error = stack.start()
        if error:
            print(error, file=sys.stderr)
            return 2
        print(f"kosoku: {' '.join(base_argv)} -o DIR ... {address} "
              f"({len(plan)} run{'s' if len(plan) != 1 else ''})", flush=True)
        interrupted = False
        try:
            for batch in plan:
                label = ".".join(batch[0].split(".")[:2]) if batch else "all"
                t0 = time.monotonic()
                state = run(batch, label)
                took = time.monotonic() - t0
                line = f"  {label:8} {len(batch) or '':>4} cases  {took:6.1f} s  {state}"
                if state != "done" and len(batch) > 1:
                    print(line + ": running its cases one by one", flush=True)
                    for case_id in batch:
                        t1 = time.monotonic()
                        s = run([case_id], case_id)
                        if s != "done" or case_id not in results:
                            hung.append(case_id)
                        print(f"    {case_id:10} {time.monotonic() - t1:6.1f} s  {s}",
                              flush=True)
                else:
                    if state != "done":
                        hung.extend(batch or ["all"])
                    print(line, flush=True)
        except KeyboardInterrupt:  # Ctrl-C: summarize what has run so far
            interrupted = True
            print("\ninterrupted: the summary covers the finished runs only", flush=True)
        elapsed = time.monotonic() - started

        for case_id in hung:
            results[case_id] = {
                "agent": "?", "id": case_id, "behavior": HUNG, "behaviorClose": HUNG,
                "description": (known or {}).get(case_id, ""),
                "result": f"kosoku made no progress for {args.stall:g} s (or ran past "
                          f"{args.batch_timeout:g} s) and was killed",
            }
        merged: dict[str, dict] = {}
        for case_id, c in results.items():
            entry = {k: c.get(k) for k in ("behavior", "behaviorClose", "remoteCloseCode",
                                           "duration", "reportfile")}
            if c.get("dir"):
                entry["reportfile"] = f"{c['dir']}/{c.get('reportfile')}"
            merged.setdefault(c.get("agent") or "?", {})[case_id] = entry
        (outdir / "index.json").write_text(json.dumps(merged, indent=2, sort_keys=True))

        cases = sorted(results.values(), key=lambda c: case_key(c["id"]))
        print(f"\n{len(cases)} cases in {elapsed:.1f} s (-p {args.parallelism})\n")
        failing, tolerated, close_problems = summarize(
            cases, args.strict_compression, args.strict_close)
        status = 1 if failing or interrupted else 0
        if tolerated:
            print(f"\n{len(tolerated)} UNIMPLEMENTED compression cases tolerated "
                  f"(condure did not negotiate permessage-deflate): "
                  + ", ".join(c["id"] for c in tolerated[:20])
                  + (" ..." if len(tolerated) > 20 else ""))
        if failing:
            print(f"\n{len(failing)} failing cases:")
            for c in failing:
                describe(c)
        extra_close = [c for c in close_problems if c not in failing]
        if extra_close:
            print(f"\n{len(extra_close)} cases with an acceptable behavior but closing "
                  f"behaviour other than OK/INFORMATIONAL:")
            for c in extra_close:
                describe(c)
        stack.check("the last run")
        if stack.deaths:
            print(f"\ncondure or the echo handler died {len(stack.deaths)} time(s):")
            for d in stack.deaths:
                print(d)
            status = 1
        tbs = stack.tracebacks()
        if tbs:
            print(f"\ncondure logged {len(tbs)} tracebacks; the first:\n{tbs[0]}")
        if args.outdir or args.keep:
            print(f"\nreports: {outdir}")
        print(f"total time {time.monotonic() - started:.1f} s; exit {status}")
        return status
    finally:
        stack.stop()
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
