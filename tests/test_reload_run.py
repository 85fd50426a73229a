"""Hot reloads of a real `tgsentinel run` are all or nothing: a refused reload leaves the last good
rules polling and alerting, whole, and says so in the log and to ops."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.test_health_run import Running, alert_hook, ops_hook, write_rules
from tests.test_run import wait_for
from tests.test_web_source import page_html

ALERT_HOOK = "/alerts"


def test_a_reload_with_a_bad_secret_or_from_an_emptied_file_changes_nothing(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    notices = ops_hook(httpserver)
    alerts = alert_hook(httpserver, ALERT_HOOK)
    posts = {"testchan": [(1, "Ordinary news")], "newchan": [(1, "Ordinary news")]}
    polled: Counter[str] = Counter()

    def tme(request: Request) -> Response:
        name = request.path.rsplit("/", 1)[1]
        polled[name] += 1
        return Response(page_html(posts[name], channel=name), content_type="text/html")

    for name in posts:
        httpserver.expect_request(f"/s/{name}").respond_with_handler(tme)
    rules = tmp_path / "rules"
    rules.mkdir()
    watch = rules / "watch.yaml"
    write_rules(watch, ["testchan"], httpserver, alert_hook=ALERT_HOOK)
    with Running(
        tmp_path, rules, httpserver.url_for("/").rstrip("/"), TGSENTINEL_WEB_INTERVAL="0.3"
    ) as monitor:
        monitor.wait_health(lambda s, b: s == 200, "the first round")

        # A new channel and a destination whose signing secret is not a Standard Webhooks secret.
        bad = watch.read_text(encoding="utf-8").replace("  - testchan\n", "  - testchan\n  - newchan\n")
        bad = bad.replace(
            "ops: opshook\n",
            "  - {name: signed, type: webhook, url: 'http://127.0.0.1:9/x', secret: 'not-a-whsec!'}\n"
            "ops: opshook\n",
        )
        bad += "  - {id: other, match: {any: [flood]}, notify: [signed]}\n"
        watch.write_text(bad, encoding="utf-8")
        monitor.line(r"rules not reloaded: 1 problem", "the refusal")
        monitor.line(rf"{watch}:\d+: secret: must be 'whsec_'", "the problem's line")
        [refused] = notices.wait(lambda _: notices.of("rules.rejected"), "the ops notice")
        assert "the last good rules keep running" in refused["summary"]

        # The old rules still run whole: their channel is polled, their rule alerts through its sender.
        posts["testchan"].append((2, "Blackout in the east"))
        [alert] = alerts.wait(lambda items: items, "the old rule's alert")
        assert alert["rule"]["id"] == "grid" and alert["message"]["id"] == 2
        seen = polled["testchan"]
        wait_for(lambda: polled["testchan"] >= seen + 3, what="three more polls of testchan")
        assert polled["newchan"] == 0

        # An editor's non-atomic save: the file is empty for a moment.
        watch.write_text("", encoding="utf-8")
        monitor.line(r"rules not reloaded: watch\.yaml is empty now", "the empty file refused")
        seen = polled["testchan"]
        wait_for(lambda: polled["testchan"] >= seen + 3, what="polling goes on")
        assert monitor.healthz()[0] == 200  # type: ignore[index]

        # The save completes: the new set comes in, and only then is "reloaded" said.
        watch.write_text(bad.replace("not-a-whsec!", "whsec_c2VjcmV0LWtleQ=="), encoding="utf-8")
        monitor.line(r"rules reloaded: 2 rules, 2 channels", "the good reload")
        wait_for(lambda: polled["newchan"] >= 1, what="the new channel polled")
        log = monitor.stop()
    assert "rules reloaded" not in log.split("rules reloaded: 2 rules")[0]
    assert [n["rule"]["id"] for n in notices.items] == ["rules.rejected", "rules.rejected"]
