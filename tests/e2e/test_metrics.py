"""--prometheus: metrics served from the same hub, in the text exposition format."""
from __future__ import annotations

import re
import socket
import time

from conftest import get_free_port
from zhttp_handler import Handler


def scrape(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"Content-Type: text/plain" in head
    return body.decode()


def value(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in:\n{text}"
    return float(m.group(1))


def test_metrics_count_requests_packets_and_bytes(condure):
    mport = get_free_port()
    cd = condure("--prometheus", f"127.0.0.1:{mport},prefix=cd_")
    before = scrape(mport)
    assert value(before, "cd_condure_requests_total") == 0
    assert value(before, 'cd_condure_connections{mode="stream",protocol="http"}') == 0
    assert value(before, "cd_process_resident_memory_bytes") > 1_000_000
    assert value(before, "cd_process_open_fds") > 3
    h = Handler(cd.base)
    c = socket.create_connection(("127.0.0.1", cd.port), timeout=5)
    for i in range(3):
        c.sendall(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        h.respond(h.recv_request(), 200, "OK", [], "hello")
        assert c.recv(4096).endswith(b"hello")
    after = scrape(mport)
    assert value(after, "cd_condure_requests_total") == 3
    assert value(after, 'cd_condure_connections{mode="stream",protocol="http"}') == 1
    assert value(after, "cd_condure_connections_accepted_total") >= 1
    assert value(after, 'cd_condure_zhttp_packets_out_total{type="request"}') == 3
    assert value(after, 'cd_condure_zhttp_packets_in_total{type="data"}') == 3
    assert value(after, 'cd_condure_bytes_total{direction="in"}') > 0
    c.sendall(b"NOT HTTP\r\n\r\n")
    c.recv(4096)
    c.close()
    h.send_raw(b"condure Tgarbage")
    time.sleep(0.3)
    final = scrape(mport)
    assert value(final, "cd_condure_http_parse_errors_total") == 1
    assert value(final, "cd_condure_zhttp_packets_dropped_total") >= 1
    assert value(final, 'cd_condure_connections{mode="stream",protocol="http"}') == 0
    h.close()


def test_metrics_are_off_by_default(condure):
    cd = condure()
    assert "prometheus" not in cd.log_text()
