"""One alert per story, through the real pipeline and real senders on 127.0.0.1: a story copied into
four channels alerts once; each destination that can edit has the alert edited to list the other
channels (Slack chat.update, Telegram editMessageText, Discord's webhook edit), and a plain webhook
gets one line about it. A restarted pipeline rebuilds the same stories from the store."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from werkzeug import Request, Response

from bot.config.ruleset import RuleSet
from bot.pipeline.ingest import Ingest
from bot.sources.model import ChannelRef, Incoming
from bot.store.migrate import open_store
from bot.store.models import Alert, Message
from bot.web.app import create_app
from tests.cli import tgs

STORY = (
    "The foreign ministers of Moldova and Romania met in Chisinau on Tuesday to discuss energy "
    "security, the interconnection of their power grids and a new gas pipeline that should carry "
    "supplies from the Black Sea coast before the winter. They also signed a protocol on customs "
    "cooperation at the river crossings and agreed to meet again in Bucharest next month."
)
OTHER = (
    "Moldova's parliament voted on Thursday to extend the energy state of emergency for sixty days, "
    "after the operator of the power grid warned of shortages during the cold spell and asked "
    "households in Chisinau and Balti to cut their consumption in the evening hours."
)
COPIES = {
    "b": "⚡️ BREAKING\n\n" + STORY + "\n\nSubscribe: @b",
    "c": STORY.replace("Tuesday", "Tuesday morning") + " 🇲🇩",
    "d": "Repost from our partners:\n" + STORY + "\nhttps://example.org/more",
}

RULES = """
destinations:
  - {name: slack, type: slack, token: "xoxb-1-test", channel: C1, api_url: "%(base)s/slack"}
  - name: tg
    type: telegram
    bot_token: "123456:TELEGRAMSECRETTOKEN"
    chat_id: -100777
    api_url: "%(base)s/tg"
  - {name: discord, type: discord, url: "%(base)s/api/webhooks/42/hooktoken"}
  - {name: hook, type: webhook, url: "%(base)s/hook"}
rules:
  - id: moldova
    match: {any: ["Moldova"]}
    notify: [slack, tg, discord, hook]
"""


def receivers(http: HTTPServer) -> list[tuple[str, str, dict]]:
    """Every service's answer, recording what came: (method, path, JSON body)."""
    seen: list[tuple[str, str, dict]] = []
    counter = iter(range(1, 1000))
    slack_posts = iter(range(1, 1000))  # the destinations' lanes run at once: Slack's own count

    def handle(request: Request) -> Response:
        body = json.loads(request.data or b"{}")
        seen.append((request.method, request.path, body))
        n = next(counter)
        if request.path.startswith("/slack/"):
            ts = body.get("ts") or f"1700000000.{next(slack_posts):06d}"
            answer = {"ok": True, "channel": "C1", "ts": ts}
        elif request.path.startswith("/tg/"):
            answer = {"ok": True, "result": {"message_id": body.get("message_id") or 100 + n}}
        elif request.path.startswith("/api/webhooks/"):
            answer = {"id": request.path.rpartition("/")[2] if request.method == "PATCH" else str(900 + n)}
        else:
            answer = {}
        return Response(json.dumps(answer), status=200, content_type="application/json")

    http.expect_request(re.compile(".*")).respond_with_handler(handle)
    return seen


def post(channel: str, message_id: int, text: str) -> Incoming:
    return Incoming(
        channel=ChannelRef(tg_id=ord(channel), username=channel, title=channel.upper()),
        message_id=message_id,
        text=text,
        date=datetime.now(UTC),
    )


async def test_a_story_in_four_channels_alerts_once_and_its_alert_lists_the_others(
    http: HTTPServer, make_pipeline, store
) -> None:
    seen = receivers(http)
    base = http.url_for("").rstrip("/")
    pipeline = make_pipeline(RULES % {"base": base}, story_line_delay=0.3)
    start = datetime.now(UTC)
    await pipeline.ingest.ingest([post("a", 1, STORY)])
    await pipeline.drain(start, timeout=10)
    first = [(m, p) for m, p, _ in seen]
    assert sorted(first) == sorted(
        [
            ("POST", "/slack/chat.postMessage"),
            ("POST", "/tg/bot123456:TELEGRAMSECRETTOKEN/sendMessage"),
            ("POST", "/api/webhooks/42/hooktoken"),
            ("POST", "/hook"),
        ]
    )
    seen.clear()

    # Three copies within the hour, one batch each (three polls), and another story on the topic.
    for n, (channel, body) in enumerate(COPIES.items(), 2):
        await pipeline.ingest.ingest([post(channel, n, body)])
    await pipeline.ingest.ingest([post("e", 9, OTHER)])
    await pipeline.drain(start, timeout=10)

    with Session(store) as s:
        stories = {m: st for m, st in s.execute(select(Message.msg_id, Message.story_id))}
        alerts = list(s.scalars(select(Alert).where(Alert.kind == "match").order_by(Alert.id)))
    assert stories[2] == stories[3] == stories[4] == stories[1]
    assert stories[9] != stories[1]
    assert [a.message_id is not None for a in alerts] == [True, True]  # the story, and the other one
    assert alerts[0].also_seen_in == ["@b", "@c", "@d"]

    edits = {(m, p): b for m, p, b in seen if m == "PATCH" or p.endswith(("chat.update", "editMessageText"))}
    slack = edits[("POST", "/slack/chat.update")]
    assert slack["ts"] == "1700000000.000001" and slack["channel"] == "C1"
    assert "also seen in @b, @c, @d (first in @a at" in json.dumps(slack["blocks"], ensure_ascii=False)
    tg = edits[("POST", "/tg/bot123456:TELEGRAMSECRETTOKEN/editMessageText")]
    assert tg["chat_id"] == -100777 and "also seen in @b, @c, @d" in tg["text"]
    discord = next(b for (m, p), b in edits.items() if m == "PATCH")
    assert next(p for (m, p) in edits if m == "PATCH").startswith("/api/webhooks/42/hooktoken/messages/")
    field = {f["name"]: f["value"] for f in discord["embeds"][0]["fields"]}["Also seen in"]
    assert field.replace("\\", "") == "@b, @c, @d"  # mentions are escaped: they must ping nobody
    # The webhook cannot edit: one line, after the delay, saying it all.
    lines = [b for m, p, b in seen if p == "/hook" and b["kind"] == "update"]
    assert len(lines) == 1
    assert lines[0]["also_seen_in"] == ["@b", "@c", "@d"] and lines[0]["story_id"] == stories[1]
    assert lines[0]["revises"] == alerts[0].key
    # The other story alerted as news of its own, to every destination.
    assert sum(1 for m, p, b in seen if p == "/hook" and b["kind"] == "match") == 1
    assert sum(1 for m, p, _ in seen if p == "/slack/chat.postMessage") == 1

    # The archive's post page links the story's other posts, and only those.
    with Session(store) as s:
        rows = {m: r for m, r in s.execute(select(Message.msg_id, Message.id))}
    app = create_app(store, token="storyTESTtoken-0123456789abcdef", rules_dir=Path("."))
    auth = {"authorization": "Bearer storyTESTtoken-0123456789abcdef"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as web:
        page = await web.get(f"/posts/{rows[1]}", headers=auth)
        record = (await web.get(f"/api/posts/{rows[3]}", headers=auth)).json()
    assert page.status_code == 200
    story = page.text[page.text.index('class="story"') :]
    linked = set(re.findall(r'href="/posts/(\d+)"', story))
    assert linked == {str(rows[n]) for n in (2, 3, 4)}
    assert record["story_id"] == stories[1]
    assert [o["row_id"] for o in record["same_story"]] == [rows[1], rows[2], rows[4]]


async def test_a_restarted_pipeline_rebuilds_the_same_stories(make_pipeline, store) -> None:
    first = make_pipeline()
    await first.ingest.ingest([post("a", 1, STORY), post("e", 2, OTHER)])
    # A new process: its index is built from the store, so a copy joins the story stored before.
    again = make_pipeline()
    await again.ingest.ingest([post("b", 3, COPIES["b"]), post("f", 4, OTHER + " Updated.")])
    with Session(store) as s:
        stories = {m: st for m, st in s.execute(select(Message.msg_id, Message.story_id))}
    assert stories[3] == stories[1] and stories[4] == stories[2] and stories[1] != stories[2]


async def test_stories_list_prints_each_story_with_its_channels_and_first_post(
    make_pipeline, store, tmp_path
) -> None:
    pipeline = make_pipeline()
    await pipeline.ingest.ingest([post("a", 1, STORY), post("e", 2, OTHER)])
    await pipeline.ingest.ingest([post("b", 3, COPIES["b"]), post("c", 4, COPIES["c"])])
    url = store.url.render_as_string(hide_password=False)
    ran = tgs("stories", "list", "--db", url, "--json", "--since", "1h", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    found = [json.loads(line) for line in ran.stdout.decode().splitlines()]
    assert [(s["posts"], s["channels"], s["first"]["channel"]) for s in found] == [
        (3, ["@a", "@b", "@c"], "@a"),  # newest first: its last post came last
        (1, ["@e"], "@e"),
    ]
    bad = tgs("stories", "list", "--db", url, "--since", "soon", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.decode().startswith("tgsentinel: --since 'soon'")


class Pause:
    """A stage that, once armed, holds its batch's transaction open until told to go on."""

    def __init__(self) -> None:
        self.armed, self.reached, self.go = False, threading.Event(), threading.Event()

    def run(self, session: Session, batch) -> None:  # type: ignore[no-untyped-def]
        if not self.armed:
            return
        self.reached.set()
        assert self.go.wait(30), "the test never let the batch go on"


def waiting_for_a_lock(engine) -> bool:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'"
                )
            )
        )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_two_workers_writing_copies_of_one_story_at_once_agree_on_its_story_and_alert_once(
    db_url: str, rules_dir
) -> None:
    # Two processes' worth of state: an engine, a story index and a pipeline each, one database.
    engines = [open_store(db_url) for _ in range(2)]
    rules = RuleSet.load(rules_dir(RULES % {"base": "http://127.0.0.1:9"}), env={})
    first, second = (Ingest(e, rules=lambda: rules) for e in engines)
    pause = Pause()
    first.stages = (*first.stages[:3], pause, *first.stages[3:])  # after its story is chosen
    try:
        await first.ingest([post("e", 1, OTHER)])  # both indexes built, neither knowing the story
        await second.ingest([post("f", 2, OTHER.replace("sixty", "ninety"))])

        pause.armed = True
        writing = asyncio.create_task(first.ingest([post("b", 3, COPIES["b"])]))
        await asyncio.to_thread(pause.reached.wait, 10)
        # The second worker's copy arrives while the first's is written but not committed. Told to
        # go on once that worker waits on the store, or has finished without waiting (two stories).
        racing = asyncio.create_task(second.ingest([post("c", 4, COPIES["c"])]))
        deadline = asyncio.get_running_loop().time() + 10
        while not racing.done() and not await asyncio.to_thread(waiting_for_a_lock, engines[0]):
            assert asyncio.get_running_loop().time() < deadline, "the second worker neither waited nor ended"
            await asyncio.sleep(0.02)
        pause.go.set()
        await asyncio.gather(writing, racing)

        with Session(engines[0]) as s:
            stories = {m: st for m, st in s.execute(select(Message.msg_id, Message.story_id))}
            alerts = list(s.scalars(select(Alert).where(Alert.kind == "match").order_by(Alert.id)))
        assert stories[3] == stories[4] != stories[1] == stories[2]
        assert [a.also_seen_in for a in alerts] == [["@f"], ["@c"]]  # the other story, and this one
    finally:
        pause.go.set()
        for e in engines:
            e.dispose()
