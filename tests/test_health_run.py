"""Honest health and signs of life, seen from outside a real `tgsentinel run` process: /healthz,
the ops notices at a loopback webhook, the log lines, and `tgsentinel status`."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.cli import tgs
from tests.conftest import SAMPLE
from tests.test_cli_alerts import RULES
from tests.test_run import free_port, get, wait_for
from tests.test_web_source import page_html

ROOT = Path(__file__).resolve().parents[1]
HOOK = "/ops-hook-s3cr3t"  # a webhook path is a secret: it must never reach the log


class Collected:
    """Things another thread hands over (log lines, webhook bodies), and a way to await them."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait(self, pick: Callable[[list[Any]], Any], what: str, timeout: float = 30.0) -> Any:
        """Until `pick(items)` is truthy; returns it."""
        with self._cond:
            got = self._cond.wait_for(lambda: pick(list(self.items)), timeout)
        if not got:
            raise AssertionError(f"timed out waiting for {what}; had: {self.items[-20:]}")
        return got

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [n for n in self.items if n["rule"]["id"] == kind]


def ops_hook(httpserver: HTTPServer) -> Collected:
    notices = Collected()

    def hook(request: Request) -> Response:
        body = json.loads(request.get_data())
        if body.get("type") == "ops":
            notices.add(body)
        return Response("ok")

    httpserver.expect_request(HOOK).respond_with_handler(hook)
    return notices


def alert_hook(httpserver: HTTPServer, path: str) -> Collected:
    """The alerts a loopback webhook at `path` receives, as JSON bodies."""
    alerts = Collected()

    def hook(request: Request) -> Response:
        alerts.add(json.loads(request.get_data()))
        return Response("ok")

    httpserver.expect_request(path).respond_with_handler(hook)
    return alerts


def serve_channel(httpserver: HTTPServer, name: str, posts: list[tuple[int, str]]) -> None:
    """A loopback t.me page for channel `name` showing `posts` as they are at each request
    (append to the list and the next poll sees the new post)."""
    httpserver.expect_request(f"/s/{name}").respond_with_handler(
        lambda request: Response(page_html(posts, channel=name), content_type="text/html")
    )


def write_rules(
    path: Path, channels: list[str], httpserver: HTTPServer, extra: str = "", alert_hook: str | None = None
) -> None:
    """`channels`, the ops webhook and `extra`; with `alert_hook`, a webhook `alerts` there and a rule
    `grid` (any of "blackout") sending to it."""
    listed = "".join(f"  - {c}\n" for c in channels)
    alerts = ""
    if alert_hook is not None:
        alerts = f"  - {{name: alerts, type: webhook, url: '{httpserver.url_for(alert_hook)}'}}\n"
        extra = "rules:\n  - {id: grid, match: {any: [blackout]}, notify: [alerts]}\n" + extra
    path.write_text(
        f"channels:\n{listed}"
        f"destinations:\n  - {{name: opshook, type: webhook, url: '{httpserver.url_for(HOOK)}'}}\n{alerts}"
        f"ops: opshook\n{extra}",
        encoding="utf-8",
    )


class Running:
    """`tgsentinel run` as a process, its stderr read line by line as it comes."""

    def __init__(
        self, tmp_path: Path, rules: Path, web_base: str, *, nofile: int | None = None, **settings: str
    ) -> None:
        self.port = free_port()
        self.db = f"sqlite:///{tmp_path / 'run.db'}"
        self.settings = {
            "DATABASE_URL": self.db,
            "TGSENTINEL_RULES_DIR": str(rules),
            "TGSENTINEL_DATA_DIR": str(tmp_path / "data"),
            "TGSENTINEL_WEB_BASE": web_base,
            "TGSENTINEL_WEB_RPM": "600",
            "TGSENTINEL_HTTP_HOST": "127.0.0.1",
            "TGSENTINEL_HTTP_PORT": str(self.port),
            **settings,
        }
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TGSENTINEL_", "TELEGRAM_", "DATABASE_URL"))
        }
        self.cwd = tmp_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run"],
            cwd=tmp_path,
            env={**env, **self.settings, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # A descriptor limit of its own (`ulimit -n`), to show what exhausting it does.
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
            if nofile
            else None,
        )
        self.log = Collected()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.log.add(raw.decode(errors="replace").rstrip("\n"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthz(self) -> tuple[int, dict[str, Any]] | None:
        try:
            status, body = get(f"{self.url}/healthz")
        except OSError:
            return None  # not serving yet
        return status, json.loads(body)

    def wait_health(
        self, ok: Callable[[int, dict[str, Any]], bool], what: str, timeout: float = 30.0
    ) -> tuple[int, dict[str, Any]]:
        def check():  # type: ignore[no-untyped-def]
            got = self.healthz()
            return got if got is not None and ok(*got) else None

        return wait_for(check, timeout=timeout, what=what)

    def line(self, pattern: str, what: str) -> str:
        found = self.log.wait(lambda lines: [ln for ln in lines if re.search(pattern, ln)], what)
        return found[0]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        self._reader.join(timeout=5)
        text = "\n".join(self.log.items)
        assert self.proc.returncode == 0, text[-3000:]
        assert "Traceback" not in text
        assert "s3cr3t" not in text
        return text

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_unreachable_t_me_is_503_from_the_first_round_one_outage_notice_then_one_recovery_notice(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    notices = ops_hook(httpserver)
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rules(rules / "watch.yaml", ["testchan"], httpserver)
    tme_port = free_port()  # nothing listens here until t.me "comes back"
    with Running(
        tmp_path,
        rules,
        f"http://127.0.0.1:{tme_port}",
        TGSENTINEL_WEB_INTERVAL="0.5",
        TGSENTINEL_OUTAGE_NOTICE="1s",
        TGSENTINEL_HEARTBEAT="1s",
    ) as monitor:
        answers: list[int] = []

        def first_round_done():  # type: ignore[no-untyped-def]
            got = monitor.healthz()
            if got is None:
                return None
            answers.append(got[0])
            return got if got[1]["channels"]["testchan"]["last_attempt"] else None

        _, body = wait_for(first_round_done, what="the first poll")
        # Never healthy: "starting" before the first poll, unhealthy as soon as it failed.
        assert set(answers) == {503}
        assert body["status"] == "unhealthy" and body["healthy"] is False
        channel = body["channels"]["testchan"]
        assert channel["state"] == "failing" and channel["last_sweep"] is None
        assert "ConnectError" in channel["last_error"]
        assert body["connected"] is False and body["sources"]["web"]["connected"] is False

        [outage] = notices.wait(lambda _: notices.of("web.outage"), "the outage notice")
        assert re.search(r"web source failing for [1-9]\d*s", outage["summary"]), outage["summary"]
        assert "testchan: ConnectError" in outage["summary"]
        beat = monitor.line(r"heartbeat: 0/1 channels up to date", "a heartbeat during the outage")
        assert "problems: testchan (failing: ConnectError" in beat

        # t.me comes back on the same address.
        posts = [(1, "Ordinary news"), (2, "More news")]
        tme = HTTPServer(host="127.0.0.1", port=tme_port, threaded=True)
        tme.expect_request("/s/testchan").respond_with_handler(
            lambda request: Response(page_html(posts, channel="testchan"), content_type="text/html")
        )
        tme.start()
        try:
            [recovered] = notices.wait(lambda _: notices.of("web.recovered"), "the recovery notice")
            assert "web source recovered after" in recovered["summary"]
            _, body = monitor.wait_health(lambda s, b: s == 200, "healthy again")
            assert body["status"] == "ok" and body["sources"]["web"]["connected"] is True
            assert body["channels"]["testchan"]["state"] == "ok"
            monitor.line(
                r"testchan: web preview every 0\.5s; 2 posts stored as the starting point, not alerted",
                "the channel's first-poll line",
            )
            beat = monitor.line(r"heartbeat: 1/1 channels up to date", "a heartbeat after recovery")
            assert "no problems" in beat
            # Two more polls later, still exactly one notice of each.
            served = len(tme.log)
            wait_for(lambda: len(tme.log) >= served + 2, what="two more polls")
        finally:
            tme.clear()
            tme.stop()
        log = monitor.stop()
    assert [n["rule"]["id"] for n in notices.items] == ["web.outage", "web.recovered"]
    assert log.count("ops: web source failing for") == 1 and log.count("ops: web source recovered") == 1


def test_a_channel_t_me_redirects_is_one_problem_naming_its_rules_line_and_is_not_polled_until_a_reload(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    notices = ops_hook(httpserver)
    polled: Counter[str] = Counter()
    posts = [(1, "Ordinary news"), (2, "More news")]

    def tme(request: Request) -> Response:
        name = request.path.rsplit("/", 1)[1]
        polled[name] += 1
        if name == "nobody_here":
            return Response("", status=302, headers={"Location": "https://t.me/nobody_here"})
        return Response(page_html(posts, channel=name), content_type="text/html")

    httpserver.expect_request("/s/testchan").respond_with_handler(tme)
    httpserver.expect_request("/s/nobody_here").respond_with_handler(tme)
    rules = tmp_path / "rules"
    rules.mkdir()
    watch = rules / "watch.yaml"
    write_rules(watch, ["testchan", "nobody_here"], httpserver)
    with Running(
        tmp_path,
        rules,
        httpserver.url_for("/").rstrip("/"),
        TGSENTINEL_WEB_INTERVAL="0.3",
        TGSENTINEL_HEARTBEAT="1s",
    ) as monitor:
        status, body = monitor.wait_health(
            lambda s, b: (
                b["channels"]["nobody_here"]["state"] == "problem"
                and b["channels"]["testchan"]["state"] == "ok"
            ),
            "the redirect reported and the other channel polled",
        )
        assert status == 503 and body["status"] == "unhealthy"
        problem = body["channels"]["nobody_here"]["problem"]
        assert problem.startswith(f"{watch}:3: not a public channel: ")  # the line that lists it
        assert "/s/nobody_here redirects (HTTP 302)" in problem
        [notice] = notices.wait(lambda _: notices.of("web.not_public"), "the ops notice")
        assert notice["summary"] == problem
        metrics = get(f"{monitor.url}/metrics")[1].decode()
        assert 'tgsentinel_channel_problems{channel="nobody_here",kind="not_public"} 1.0' in metrics

        # Not polled again while the rules stay as they are: five more rounds of the other channel.
        seen = polled["testchan"]
        wait_for(lambda: polled["testchan"] >= seen + 5, what="five more polls of testchan")
        assert polled["nobody_here"] == 1
        beat = monitor.line(r"heartbeat: 1/2 .*nobody_here \(problem: ", "a heartbeat naming the problem")
        assert f"problems: nobody_here (problem: {watch}:3: not a public channel" in beat

        # `status` while the monitor runs: the store's facts and the monitor's.
        cli_env = {"TGSENTINEL_HTTP_PORT": str(monitor.port)}
        shown = tgs("status", "--db", monitor.db, "--json", env=cli_env, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        facts = json.loads(shown.stdout)
        assert facts["monitor"]["running"] is True and facts["monitor"]["http_status"] == 503
        assert facts["monitor"]["health"]["channels"]["nobody_here"]["problem"] == problem
        assert [(c["channel"], c["posts"]) for c in facts["store"]["channels"]] == [("testchan", 2)]
        table = tgs("status", "--db", monitor.db, env=cli_env, cwd=tmp_path)
        text = table.stdout.decode()
        assert f"monitor: running at {monitor.url}/healthz, not healthy (unhealthy); web connected" in text
        assert re.search(r"nobody_here .*problem", text) and re.search(r"testchan .* 2 .*ok", text)

        # The rules change (a rule added) and still list it: one more try, and no second notice.
        write_rules(
            watch, ["testchan", "nobody_here"], httpserver, "rules:\n  - {id: r, match: {any: [x]}}\n"
        )
        wait_for(lambda: polled["nobody_here"] == 2, what="the retry after the reload")
        seen = polled["testchan"]
        wait_for(lambda: polled["testchan"] >= seen + 3, what="three more polls of testchan")
        assert polled["nobody_here"] == 2

        # Taken out of the rules: healthy.
        write_rules(watch, ["testchan"], httpserver)
        status, body = monitor.wait_health(lambda s, b: s == 200, "healthy once the name is gone")
        assert list(body["channels"]) == ["testchan"]
        metrics = get(f"{monitor.url}/metrics")[1].decode()
        assert 'tgsentinel_channel_problems{channel="nobody_here"' not in metrics
        monitor.stop()
    assert len(notices.of("web.not_public")) == 1 and notices.of("web.outage") == []


# The CLI tests' webhook rules, plus one rule that goes to the console.
RULES_FOR_REPLAY = RULES + '  - id: brics\n    match: {any: ["#BRICS"]}\n'


def test_status_shows_what_a_replay_stored_and_says_no_monitor_is_running(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES_FOR_REPLAY % httpserver.url_for("/hook"), encoding="utf-8")
    httpserver.expect_request("/hook").respond_with_data("bad", status=400)  # dead at once
    replayed = tgs("replay", str(SAMPLE), "--channel", "mfa", "--db", db, "--rules", str(rules))
    assert replayed.returncode == 0, replayed.stderr
    no_monitor = {"TGSENTINEL_HTTP_PORT": str(free_port())}

    shown = tgs("status", "--db", db, "--json", env=no_monitor, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    facts = json.loads(shown.stdout)
    store = facts["store"]
    assert store["posts"] == 11
    [mfa] = store["channels"]
    assert (mfa["channel"], mfa["posts"], mfa["last_post"]["id"]) == ("dump:mfa", 11, 11)
    assert store["alerts"] == {"sent": 6, "dead": 1}  # brics to the console, moldova's hook said 400
    assert store["ops_notices"] == {"sent": 1}  # "a dead letter", on the console
    assert store["dead_letters"]["count"] == 1
    [dead] = store["dead_letters"]["latest"]
    assert (dead["destination"], dead["rule"]) == ("hook", "moldova") and "400" in dead["error"]
    assert "/hook" not in shown.stdout.decode()  # a webhook URL's path is a secret
    assert facts["monitor"]["running"] is False
    assert facts["monitor"]["reason"].startswith("nothing answers at http://127.0.0.1:")

    table = tgs("status", "--db", db, env=no_monitor, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    text = table.stdout.decode()
    assert "posts stored: 11; alerts: 6 sent, 1 dead; ops notices: 1 sent; dead letters: 1" in text
    assert re.search(r"dump:mfa .* 11 .* #11", text)
    assert re.search(r"dead letter \d+: hook, match moldova: hook \(http://localhost:\d+\): HTTP 400", text)
    assert [ln for ln in text.splitlines() if ln.startswith("monitor:")] == [
        f"monitor: not running: {facts['monitor']['reason']}"
    ]


def test_status_refuses_a_database_that_is_not_there_and_creates_none(tmp_path: Path) -> None:
    missing = tmp_path / "dta" / "x.db"
    shown = tgs("status", "--db", f"sqlite:///{missing}", cwd=tmp_path)
    assert shown.returncode == 2
    assert shown.stderr.decode().strip().splitlines() == [f"tgsentinel: no database at {missing}"]
    assert not missing.exists() and not missing.parent.exists()
