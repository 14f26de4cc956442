"""--sizes: measured memory per connection and the bounds the options set."""
from __future__ import annotations

import re

from conftest import run_cli


def _figures(out: str) -> tuple[float, float, float]:
    idle = re.search(r"^idle stream connection .*: (\d+) bytes of Python heap", out, re.M)
    head = re.search(r"^stream connection holding a 1000-byte .*: (\d+) bytes of Python heap",
                     out, re.M)
    rss = re.search(r"^resident memory growth per connection.*: ([\d.]+) KiB", out, re.M)
    assert idle and head and rss, out
    return float(idle.group(1)), float(head.group(1)), float(rss.group(1))


def test_sizes_are_measured_and_plausible() -> None:
    r = run_cli("--sizes", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("condure 1.10.1 (python "), r.stdout
    assert "[INFO]" not in r.stdout and "Traceback" not in r.stderr
    idle, head, rss = _figures(r.stdout)
    # a connection costs something, but not a megabyte
    assert 300 < idle < 64_000, r.stdout
    # holding 1000 bytes of a head costs at least those bytes more
    assert head > idle + 900, r.stdout
    assert 0 < rss < 1024, r.stdout
    assert "at most 8192 bytes (--buffer-size)" in r.stdout


def test_sizes_follow_the_options() -> None:
    r = run_cli("--sizes", "--buffer-size", "65536", "--messages-max", "7",
                "--stream-maxconn", "50", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "at most 65536 bytes (--buffer-size)" in r.stdout
    assert "at most 7 (--messages-max)" in r.stdout and "50 stream" in r.stdout
    _figures(r.stdout)


def test_sizes_show_the_buffer_blocks() -> None:
    r = run_cli("--sizes", timeout=30)
    assert "request head at most 8192 bytes" in r.stdout, r.stdout
    assert "spare buffer blocks for growing heads: 0 of 8192 bytes" in r.stdout
    r = run_cli("--sizes", "--stream-maxconn", "10", "--blocks-max", "40",
                "--connection-blocks-max", "4", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "request head at most 24576 bytes" in r.stdout, r.stdout
    assert "spare buffer blocks for growing heads: 20 of 8192 bytes" in r.stdout


def test_sizes_do_not_touch_the_configured_endpoints(tmp_path) -> None:
    """It measures on its own loopback port and ipc directory: the configured
    ones may belong to a running condure."""
    r = run_cli("--sizes", "--listen", "127.0.0.1:1", "--zclient-stream",
                f"ipc://{tmp_path}/no/such/dir", "--prometheus", "127.0.0.1:1", timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "no").exists()
