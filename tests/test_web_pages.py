"""The archive's rules, alerts and channels pages and their JSON API, over real HTTP: a real
`tgsentinel web` process on 127.0.0.1 over a store filled by `tgsentinel replay`, whose alerts went
to a loopback receiver that refused them (dead letters). The harness is test_web_http's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.store.db import make_engine
from bot.store.models import Alert, Delivery, Match, Message, Silence
from tests.cli import tgs
from tests.test_web_http import TOKEN, Web, bearer, client, csrf_of, inert, signed_in

HOSTILE = '<script>alert(1)</script> "><img src=x onerror=alert(1)> \u202egnp.exe'
HOSTILE_ID = HOSTILE.split(" \u202e")[0]
ALERT_ALL = {"TGSENTINEL_MAX_ALERT_AGE": "100d"}
HOOK_PATH = "/hooks/s3cr3t-0123456789abcdef"  # a webhook's path is a secret: never shown

RULES = """
channels:
  - {name: durov, via: web}
destinations:
  - {name: hook, type: webhook, url: "%(hook)s"}
rules:
  - id: moldova
    description: %(hostile)s
    match: {any: [Moldova]}
    notify: [hook]
  - id: sanctions
    match: {any: ["sanction*"]}
"""


def noon(days_ago: int) -> datetime:
    """Noon UTC some days back: the day stays the same under any local offset the export is read in."""
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


# (message id, days ago, text): the moldova rule hits 2 posts two days ago, 1 five days ago, and one
# 40 days ago (outside the chart, inside the total); sanctions hits one, five days ago.
POSTS = [
    (1, 40, "Moldova, long ago"),
    (2, 5, "Moldova and new sanctions"),
    (3, 2, "Moldova talks"),
    (4, 2, "Moldova again"),
    (5, 1, "Nothing to see"),
]


def export(path: Path, name: str, channel_id: int, posts: list[tuple[int, int, str]]) -> None:
    """A Telegram Desktop export of one channel."""
    messages = []
    for msg_id, days_ago, text in posts:
        when = noon(days_ago)
        messages.append(
            {
                "id": msg_id,
                "type": "message",
                "date": when.strftime("%Y-%m-%dT%H:%M:%S"),
                "date_unixtime": str(int(when.timestamp())),
                "from": name,
                "from_id": f"channel{channel_id}",
                "text": text,
                "text_entities": [{"type": "plain", "text": text}],
            }
        )
    body = {"name": name, "type": "public_channel", "id": channel_id, "messages": messages}
    path.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")


@dataclass
class World:
    web: Web
    db: str
    rules: Path

    def cli(self, *args: str) -> list[dict[str, Any]]:
        ran = tgs(*args, "--db", self.db)
        assert ran.returncode == 0, ran.stderr
        return [json.loads(line) for line in ran.stdout.decode().splitlines()]

    def counts(self) -> dict[str, int]:
        engine = make_engine(self.db, create=False)
        try:
            with Session(engine) as s:
                return {
                    t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0
                    for t in (Message, Match, Alert, Delivery, Silence)
                }
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, make_httpserver: HTTPServer) -> Iterator[World]:
    where = tmp_path_factory.mktemp("pages")
    db = f"sqlite:///{where / 'archive.db'}"
    rules = where / "rules"
    rules.mkdir()
    hook = make_httpserver.url_for(HOOK_PATH)
    (rules / "r.yaml").write_text(RULES % {"hook": hook, "hostile": json.dumps(HOSTILE)}, encoding="utf-8")
    # The receiver refuses every alert outright, with a hostile body the error quotes: dead letters.
    make_httpserver.expect_request(HOOK_PATH).respond_with_data(HOSTILE, status=400)
    export(where / "dated.json", "Dated", 1001, POSTS)
    export(where / "quiet.json", HOSTILE, 1002, [(1, 3, "A quiet post")])
    # Posts of last month alert too: these are the test's news, however old.
    ran = tgs(
        "replay",
        str(where / "dated.json"),
        "--channel",
        "dated",
        "--db",
        db,
        "--rules",
        str(rules),
        env=ALERT_ALL,
    )
    assert ran.returncode == 0, ran.stderr.decode()
    # An import keys the channel to its own id and keeps its (hostile) title.
    ran = tgs("import", str(where / "quiet.json"), "--db", db, "--rules", str(rules))
    assert ran.returncode == 0, ran.stderr.decode()
    make_httpserver.clear()
    server = Web(db, where, TGSENTINEL_RULES_DIR=str(rules))
    try:
        yield World(server, db, rules)
    finally:
        log = server.stop()
        assert server.proc.returncode == 0, log
        assert TOKEN not in log and "Traceback" not in log, log


def _row(page: str, row_id: str) -> str:
    found = re.search(rf'<tr id="{re.escape(row_id)}".*?</tr>', page, re.S)
    assert found, (row_id, page[:3000])
    return found.group(0)


def _bars(row: str) -> dict[str, int]:
    return {d: int(n) for d, n in re.findall(r'data-day="([\d-]+)" data-hits="(\d+)"', row)}


# --- rules -------------------------------------------------------------------------------------------


def test_the_rules_page_counts_each_rules_hits_per_day_of_the_post(world: World) -> None:
    day = {n: noon(n).date().isoformat() for n in (1, 2, 5, 40)}
    with signed_in(world.web) as (http, _):
        page = http.get("/rules")
        assert page.status_code == 200, page.text
        inert(page.text)  # the rule's hostile description is shown as text
        moldova = _row(page.text, "rule-moldova")
        bars = _bars(moldova)
        assert len(bars) == 30 and max(bars) == noon(0).date().isoformat()
        assert {d: n for d, n in bars.items() if n} == {day[2]: 2, day[5]: 1}
        assert re.search(r'class="total">4<', moldova)  # the post of 40 days ago counts in the total
        assert noon(2).strftime("%Y-%m-%d 12:00 UTC") in moldova  # its last hit
        assert 'href="/search?rule=moldova"' in moldova
        # The tallest bar is the busiest day; a day without hits has the flat bar.
        assert f'class="l8" data-day="{day[2]}"' in moldova and f'class="l4" data-day="{day[5]}"' in moldova
        sanctions = _bars(_row(page.text, "rule-sanctions"))
        assert {d: n for d, n in sanctions.items() if n} == {day[5]: 1}

    with client(world.web) as http:
        api = http.get("/api/rules", headers=bearer()).json()
    rules = {r["id"]: r for r in api["rules"]}
    assert set(rules) == {"moldova", "sanctions"} and api["problems"] == []
    assert rules["moldova"]["total"] == 4 and rules["moldova"]["notify"] == ["hook"]
    assert {b["day"]: b["hits"] for b in rules["moldova"]["per_day"] if b["hits"]} == {day[2]: 2, day[5]: 1}
    assert rules["moldova"]["last_hit"].startswith(day[2])


def test_the_rules_page_follows_an_edit_of_the_rules_directory(world: World) -> None:
    extra = world.rules / "extra.yaml"

    def shown() -> set[str]:
        with client(world.web) as http:
            return {r["id"] for r in http.get("/api/rules", headers=bearer()).json()["rules"]}

    assert shown() == {"moldova", "sanctions"}
    try:
        extra.write_text("rules:\n  - id: added\n    match: {any: [added]}\n", encoding="utf-8")
        assert shown() == {"moldova", "sanctions", "added"}
        extra.write_text("rules:\n  - id: renamed\n    match: {any: [added]}\n", encoding="utf-8")
        assert shown() == {"moldova", "sanctions", "renamed"}
    finally:
        extra.unlink(missing_ok=True)
    assert shown() == {"moldova", "sanctions"}


BROKEN = """\
id: Not An Id
match:
  any: [Moldova]
severity: urgent
"""


def test_try_a_rule_shows_problems_at_their_lines_or_matches_and_saves_nothing(world: World) -> None:
    before = world.counts()
    with signed_in(world.web) as (http, _):
        form = http.get("/rules/try")
        assert form.status_code == 200 and 'name="yaml"' in form.text
        token = csrf_of(form)
        # Without the CSRF token: refused.
        assert http.post("/rules/try", data={"yaml": "id: x\nmatch: {any: [x]}"}).status_code == 403

        broken = http.post("/rules/try", data={"yaml": BROKEN, "csrf_token": token})
        assert broken.status_code == 400
        lines = re.findall(r'<li class="problem" data-line="(\d+)">.*?</li>', broken.text, re.S)
        assert lines == ["1", "4"], broken.text
        assert "severity" in _problem(broken.text, 4) and "Not An Id" in broken.text  # kept in the form
        assert "/tmp" not in broken.text.split('id="tried"')[1]  # lines of the paste, not of a scratch file

        syntax = http.post(
            "/rules/try", data={"yaml": "id: x\nmatch:\n  any: [Moldova\n", "csrf_token": token}
        )
        assert syntax.status_code == 400 and "YAML syntax error" in syntax.text
        assert re.search(r'data-line="[34]"', syntax.text)

        # The loader quotes a bad id back (without its bidi override): as text.
        hostile = f"id: {json.dumps(HOSTILE_ID)}\nmatch: {{any: [x]}}\n"
        shown = http.post("/rules/try", data={"yaml": hostile, "csrf_token": token})
        assert shown.status_code == 400
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in _problem(shown.text, 1)
        inert(shown.text)

        # A good rule, naming a destination of the loaded rules: the stored posts it matches, newest first.
        good = "id: try-moldova\nnotify: [hook]\nmatch: {any: [moldova]}\n"
        tried = http.post("/rules/try", data={"yaml": good, "csrf_token": token})
        assert tried.status_code == 200, tried.text
        assert re.search(r'<span id="matched">4</span> of <span id="read">6</span>', tried.text), tried.text
        titles = re.findall(r'class="title" dir="auto" href="/posts/\d+">([^<]*)<', tried.text)
        assert titles == ["Moldova again", "Moldova talks", "Moldova and new sanctions", "Moldova, long ago"]
        assert tried.text.count("<mark>Moldova</mark>") == 4

    with client(world.web) as http:
        api = http.post(
            "/api/rules/try", json={"yaml": "- id: a\n  match: {any: [sanctions]}\n"}, headers=bearer()
        )
        assert api.status_code == 200, api.text
        assert api.json()["matched"] == 1 and api.json()["posts"][0]["title"] == "Moldova and new sanctions"
        bad = http.post("/api/rules/try", json={"yaml": BROKEN}, headers=bearer())
        assert bad.status_code == 400 and [p["line"] for p in bad.json()["problems"]] == [1, 4]
        assert bad.json()["error"].startswith("line 1: ")
        assert "try-moldova" not in {
            r["id"] for r in http.get("/api/rules", headers=bearer()).json()["rules"]
        }
    assert world.counts() == before  # nothing stored


def _problem(page: str, line: int) -> str:
    found = re.search(rf'<li class="problem" data-line="{line}">(.*?)</li>', page, re.S)
    assert found, page
    return found.group(1)


# --- alerts ------------------------------------------------------------------------------------------


def test_a_dead_delivery_is_retried_from_the_page_and_the_api_and_not_without_csrf(world: World) -> None:
    dead = [d["id"] for d in world.cli("alerts", "list", "--status", "dead")]
    assert len(dead) >= 2, dead
    first, second = dead[0], dead[1]
    with signed_in(world.web) as (http, _):
        page = http.get("/alerts")
        assert page.status_code == 200
        row = _row(page.text, f"dead-{first}")
        assert "HTTP 400" in row and f'id="retry-{first}"' in row
        inert(page.text)  # the receiver's hostile answer, quoted in the error, is text
        assert HOOK_PATH not in page.text and "s3cr3t" not in page.text
        assert http.post(f"/alerts/deliveries/{first}/retry").status_code == 403
        assert (
            http.post(f"/alerts/deliveries/{first}/retry", data={"csrf_token": "forged"}).status_code == 403
        )
        assert first in [d["id"] for d in world.cli("alerts", "list", "--status", "dead")]

        done = http.post(f"/alerts/deliveries/{first}/retry", data={"csrf_token": csrf_of(page)})
        assert done.status_code == 303 and done.headers["location"] == f"/alerts?done=retried&id={first}"
        after = http.get(done.headers["location"])
        assert f"Delivery {first} is queued again" in after.text and f'id="dead-{first}"' not in after.text
        assert 'data-status="pending"' in _row(after.text, f"delivery-{first}")
        again = http.post(f"/alerts/deliveries/{first}/retry", data={"csrf_token": csrf_of(page)})
        assert again.status_code == 400 and "is not dead" in again.text
        # The API, signed in by the session: the header or nothing.
        assert http.post(f"/api/deliveries/{second}/retry").status_code == 403
    statuses = {d["id"]: d["status"] for d in world.cli("alerts", "list")}
    assert statuses[first] == "pending" and statuses[second] == "dead"

    with client(world.web) as http:
        ok = http.post(f"/api/deliveries/{second}/retry", headers=bearer())
        assert ok.status_code == 200 and ok.json() == {"id": second, "status": "pending"}
        assert http.post(f"/api/deliveries/{second}/retry", headers=bearer()).status_code == 400
        missing = http.post("/api/deliveries/999999/retry", headers=bearer())
        assert missing.status_code == 404 and missing.json() == {"error": "no delivery 999999"}
        listed = http.get("/api/alerts", params={"status": "pending"}, headers=bearer()).json()
        assert {first, second} <= {d["id"] for d in listed["deliveries"]}
        assert all(d["status"] == "pending" for d in listed["deliveries"])
        assert all(HOOK_PATH not in (d["error"] or "") for d in listed["deliveries"])
        assert http.get("/api/alerts", params={"status": "lost"}, headers=bearer()).status_code == 400
    assert {d["id"]: d["status"] for d in world.cli("alerts", "list")}[second] == "pending"


def test_silences_added_and_removed_by_page_and_api_are_the_clis(world: World) -> None:
    with signed_in(world.web) as (http, _):
        page = http.get("/alerts")
        token = csrf_of(page)
        asked = {"rule": "moldova", "channel": "dump:dated", "for": "2h", "reason": HOSTILE}
        assert http.post("/alerts/silences", data=asked).status_code == 403
        typo = http.post("/alerts/silences", data={**asked, "rule": "moldva", "csrf_token": token})
        assert typo.status_code == 400 and "did you mean &#39;moldova&#39;?" in typo.text
        soon = http.post("/alerts/silences", data={**asked, "for": "soon", "csrf_token": token})
        assert soon.status_code == 400 and "for: " in soon.text and 'value="soon"' in soon.text
        assert world.cli("silence", "list") == []

        added = http.post("/alerts/silences", data={**asked, "csrf_token": token})
        assert added.status_code == 303, added.text
        by_page = int(added.headers["location"].split("id=")[1].split("#")[0])
        shown = http.get("/alerts")
        inert(shown.text)  # the reason is text
        assert "dump:dated" in _row(shown.text, f"silence-{by_page}")
        assert http.post("/api/silences", json={"rule": "sanctions", "for": "30m"}).status_code == 403

    with client(world.web) as http:
        made = http.post("/api/silences", json={"rule": "sanctions", "for": "30m"}, headers=bearer())
        assert made.status_code == 201, made.text
        by_api = made.json()["id"]
        bad = http.post("/api/silences", json={"rule": "sanctions", "for": "ever"}, headers=bearer())
        assert bad.status_code == 400 and bad.json()["error"].startswith("for: ")
        api = http.get("/api/silences", headers=bearer()).json()["silences"]
    cli = world.cli("silence", "list")
    assert api == cli
    assert [(s["id"], s["rule"], s["channel"]) for s in cli] == [
        (by_page, "moldova", "dump:dated"),
        (by_api, "sanctions", None),
    ]
    assert cli[0]["reason"] == HOSTILE

    with signed_in(world.web) as (http, _):
        page = http.get("/alerts")
        assert f'id="silence-{by_api}"' in page.text
        assert http.post(f"/alerts/silences/{by_page}/remove").status_code == 403
        gone = http.post(f"/alerts/silences/{by_page}/remove", data={"csrf_token": csrf_of(page)})
        assert gone.status_code == 303
        assert f'id="silence-{by_page}"' not in http.get("/alerts").text
    with client(world.web) as http:
        assert http.delete(f"/api/silences/{by_api}", headers=bearer()).json() == {
            "id": by_api,
            "removed": True,
        }
        assert http.delete(f"/api/silences/{by_api}", headers=bearer()).status_code == 404
    assert world.cli("silence", "list") == []


# --- channels ----------------------------------------------------------------------------------------


def test_the_channels_page_shows_the_stores_channels_and_the_rules(world: World) -> None:
    with signed_in(world.web) as (http, _):
        page = http.get("/channels")
        assert page.status_code == 200
        inert(page.text)  # the channel's hostile title is text
        dated = _row(page.text, "channel-dump:dated")
        assert re.search(r'class="posts">5<', dated)
        assert noon(1).strftime("%Y-%m-%d 12:00 UTC") in dated and ">dump<" in dated
        assert re.search(r'class="posts">1<', _row(page.text, "channel--1001002"))
        durov = _row(page.text, "channel-durov")  # listed in the rules, nothing stored yet
        assert ">web<" in durov and re.search(r'class="posts">0<', durov)
        assert "without the monitor" in page.text
    with client(world.web) as http:
        api = http.get("/api/channels", headers=bearer()).json()
    assert api["monitor"] is False
    rows = {c["key"]: c for c in api["channels"]}
    assert set(rows) == {"dump:dated", "-1001002", "durov"}
    assert rows["dump:dated"]["posts"] == 5 and rows["dump:dated"]["last_post"].startswith(
        noon(1).date().isoformat()
    )
    assert rows["durov"]["watched"] and not rows["-1001002"]["watched"]


def test_under_the_monitor_channels_show_their_health(world: World) -> None:
    """What `tgsentinel run` hands the archive: its Health, read as /healthz reads it."""
    import asyncio

    from bot.health import Health
    from bot.web.app import create_app

    health = Health(lag_threshold=600)
    health.watch("durov", "web")
    health.swept("durov", ok=True)
    health.swept("durov", ok=False, error=f"t.me answered 502 {HOSTILE}")
    health.flood_wait(125, "durov")

    async def get() -> tuple[str, dict[str, Any]]:
        engine = make_engine(world.db, create=False)
        app = create_app(engine, token=TOKEN, rules_dir=world.rules, health=health)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://a.test"
            ) as http:
                page = await http.get("/channels", headers=bearer())
                api = await http.get("/api/channels", headers=bearer())
                return page.text, api.json()
        finally:
            engine.dispose()

    page, api = asyncio.run(get())
    inert(page)
    durov = _row(page, "channel-durov")
    assert ">retrying<" in durov and "t.me answered 502" in durov
    assert re.search(r'class="flood-wait">2m( 5s|)<', durov), durov
    assert re.search(r'class="lag">\d+s<', durov)
    assert api["monitor"] is True and api["status"] == "ok"
    row = next(c for c in api["channels"] if c["key"] == "durov")
    assert row["state"] == "retrying" and 120 <= row["flood_wait_seconds"] <= 125


def test_the_new_api_routes_are_in_the_openapi_document(world: World) -> None:
    with client(world.web) as http:
        paths = http.get("/api/openapi.json", headers=bearer()).json()["paths"]
    for path, method in (
        ("/api/rules", "get"),
        ("/api/rules/try", "post"),
        ("/api/alerts", "get"),
        ("/api/channels", "get"),
        ("/api/deliveries/{delivery_id}/retry", "post"),
        ("/api/silences", "get"),
        ("/api/silences", "post"),
        ("/api/silences/{silence_id}", "delete"),
    ):
        assert "responses" in paths[path][method], (path, method)
