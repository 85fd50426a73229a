"""A store outage seen from outside a real `tgsentinel run` on a PostgreSQL server of the test's own:
/healthz turns 503 and says why, the log says so in a few lines rather than a traceback every 2 s,
and after the server returns the monitor is healthy again and nothing posted meanwhile is lost."""

from __future__ import annotations

from pathlib import Path

from pytest_httpserver import HTTPServer

from tests.pg_server import PgServer
from tests.test_health_run import Running, alert_hook, ops_hook, serve_channel, write_rules

ALERT_HOOK = "/alerts"


def test_healthz_is_503_through_a_store_outage_and_200_after_it_with_nothing_lost(
    httpserver: HTTPServer, tmp_path: Path, pg: PgServer
) -> None:
    notices = ops_hook(httpserver)
    alerts = alert_hook(httpserver, ALERT_HOOK)
    posts = [(1, "Ordinary news")]
    serve_channel(httpserver, "testchan", posts)
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rules(rules / "watch.yaml", ["testchan"], httpserver, alert_hook=ALERT_HOOK)
    with Running(
        tmp_path,
        rules,
        httpserver.url_for("/").rstrip("/"),
        DATABASE_URL=pg.url,
        TGSENTINEL_WEB_INTERVAL="0.3",
        TGSENTINEL_OUTAGE_NOTICE="1s",
        TGSENTINEL_STORE_FAILURES="3",
    ) as monitor:
        _, body = monitor.wait_health(lambda s, b: s == 200, "healthy on a running store")
        assert body["store"] == {
            "available": True,
            "consecutive_failures": 0,
            "failing_since": None,
            "last_error": None,
        }
        before = len(monitor.log.items)

        pg.stop()
        posts.append((2, "Blackout in the east"))  # posted while the store is down
        _, body = monitor.wait_health(
            lambda s, b: s == 503 and b["store"]["consecutive_failures"] >= 3, "503"
        )
        assert body["status"] == "unhealthy" and body["store"]["available"] is False
        assert "Connection refused" in body["store"]["last_error"]
        # A store outage is not the channel's failure: t.me answers.
        channel = body["channels"]["testchan"]
        assert channel["state"] == "ok" and channel["last_error"] is None, channel
        # Give every 1-2 s job time to fail a few times over.
        monitor.line(r"release-held: store unavailable", "the scheduled job's one line")
        monitor.wait_health(
            lambda s, b: b["store"]["failing_since"] is not None and s == 503, "still down", timeout=10
        )
        during = monitor.log.items[before:]

        pg.start()
        _, body = monitor.wait_health(lambda s, b: s == 200, "healthy once the store is back", timeout=60)
        assert body["store"]["available"] is True
        [alert] = alerts.wait(lambda items: items, "the post from the outage, alerted", timeout=60)
        assert alert["message"]["id"] == 2
        [recovered] = notices.wait(lambda _: notices.of("store.recovered"), "the recovery notice", timeout=30)
        assert recovered["summary"].startswith("store was unavailable for ")
        log = monitor.stop()
    assert "Traceback" not in log
    assert "poll failed" not in log and notices.of("web.outage") == []
    # Lines, not tracebacks: every job says it once and then backs off.
    assert len(during) < 60, "\n".join(during)
