"""The health port under a flood of idle connections, seen from outside a real `tgsentinel run`
with 256 descriptors (`ulimit -n 256`): delivery goes on, and the log does not fill the disk."""

from __future__ import annotations

import socket
from pathlib import Path

from pytest_httpserver import HTTPServer

from tests.test_health_run import Running, alert_hook, serve_channel, write_rules

ALERT_HOOK = "/alerts"


def test_300_idle_connections_do_not_stop_delivery_under_a_256_descriptor_limit(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    alerts = alert_hook(httpserver, ALERT_HOOK)
    posts = [(1, "Ordinary news")]
    serve_channel(httpserver, "testchan", posts)
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rules(rules / "watch.yaml", ["testchan"], httpserver, alert_hook=ALERT_HOOK)
    with Running(
        tmp_path, rules, httpserver.url_for("/").rstrip("/"), nofile=256, TGSENTINEL_WEB_INTERVAL="0.3"
    ) as monitor:
        monitor.wait_health(lambda s, b: s == 200, "healthy")
        idle = []
        try:
            for _ in range(300):
                # Connected and then silent: a client trickling nothing, or a port scanner.
                idle.append(socket.create_connection(("127.0.0.1", monitor.port), timeout=5))
            posts.append((2, "Blackout in the east"))
            [alert] = alerts.wait(
                lambda items: items, "the alert, with 300 idle connections open", timeout=20
            )
            assert alert["message"]["id"] == 2
            status, _ = monitor.wait_health(lambda s, b: True, "a probe still answered", timeout=20)
            assert status == 200
        finally:
            for conn in idle:
                conn.close()
        log = monitor.stop()
    assert len(log.encode()) < 100_000, f"{len(log)} characters of log"
    assert log.count("Too many open files") <= 5
