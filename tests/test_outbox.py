"""The durable outbox end to end: replay -> match -> outbox -> worker -> a real HTTP receiver."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from standardwebhooks import Webhook
from werkzeug import Request, Response

from bot.alerts.outbox import release_held
from bot.alerts.worker import retry_dead
from bot.commands.replay import replay
from bot.parse import read_dump
from bot.sources.dump import dump_items
from bot.sources.model import ChannelRef, Incoming
from bot.store.models import Alert, Channel, Delivery, DestinationState, Silence
from tests.conftest import SAMPLE

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers from a script and dedups by `webhook-id`."""

    def __init__(self, httpserver, script: list[int] | None = None) -> None:
        self.script = list(script or [])
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        self.url = httpserver.url_for("/hook")
        httpserver.expect_request("/hook", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            status = self.script.pop(0) if self.script else 200
            if status == 200:
                self.bodies.append(json.loads(request.get_data()))
                self.headers.append(dict(request.headers))
        headers = {"Retry-After": "1"} if status == 429 else {}
        return Response("ok" if status == 200 else "no", status=status, headers=headers)

    @property
    def unique_ids(self) -> set[str]:
        return {h["Webhook-Id"] for h in self.headers}


RULES = """
destinations:
  - {name: hook, type: webhook, url: "%s", secret: "%s"}
rules:
  - id: brics
    match: {any: ["BRICS", "#BRICS"]}
    notify: [hook, console]
  - id: moldova
    match: {any: ["Moldova"]}
    notify: [hook]
"""


def brics_posts() -> set[int]:
    """Posts of the sample that mention BRICS, found by reading the text, not by our engine."""
    posts = dump_items(read_dump(SAMPLE), "x")
    return {p.message_id for p in posts if "brics" in p.text.lower()}


async def test_replay_delivers_every_alert_once_per_destination_through_failures(
    httpserver, rules_dir, settings, db_url, tmp_path
):
    receiver = Receiver(httpserver, script=[500, 500, 429])
    rules = rules_dir(RULES % (receiver.url, SECRET))
    s = settings.model_copy(update={"database_url": db_url, "rules_dir": rules})
    out, err = io.StringIO(), io.StringIO()
    totals = await replay(s, read_dump(SAMPLE), "mfa", drain_timeout=30, out=out, err=err)

    expected_brics = brics_posts()
    assert len(expected_brics) >= 5
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {line["index"] + 1 for line in lines if line["rule"] == "brics"} == expected_brics
    # brics goes to hook and console, moldova to hook only.
    n_moldova = sum(1 for line in lines if line["rule"] == "moldova")
    assert n_moldova == 1
    assert totals["deliveries_sent"] == 2 * len(expected_brics) + n_moldova
    assert totals.get("deliveries_dead", 0) == 0
    assert len(receiver.bodies) == len(expected_brics) + n_moldova == len(receiver.unique_ids)
    assert f"deliveries: {totals['deliveries_sent']} sent, 0 pending, 0 held, 0 dead" in err.getvalue()

    # Signatures verify with the reference library; the body says what the issue promises.
    for body, headers in zip(receiver.bodies, receiver.headers, strict=True):
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        Webhook(SECRET).verify(raw, {k.lower(): v for k, v in headers.items()})
        assert body["type"] == "alert" and body["rule"]["id"] in ("brics", "moldova")
        assert body["message"]["forwarded_from"] in ("Russian MFA 🇷🇺", None)
        assert body["message"]["url"] is None  # a dump has no t.me link
        for hit in body["hits"]:
            assert body["message"]["text"][hit["start"] : hit["end"]].lower() == hit["term"].lower()

    # A second replay of the same file sends nothing.
    again = await replay(s, read_dump(SAMPLE), "mfa", drain_timeout=5, out=io.StringIO(), err=io.StringIO())
    assert again["new"] == 0 and again["matches"] == 0
    assert len(receiver.bodies) == len(expected_brics) + n_moldova


async def test_a_worker_killed_mid_send_loses_nothing(httpserver, make_pipeline, store):
    release = threading.Event()
    arrived = threading.Event()
    seen: list[str] = []

    def slow(request: Request) -> Response:
        seen.append(request.headers["webhook-id"])
        arrived.set()
        release.wait(5)
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(slow)
    yaml = RULES % (httpserver.url_for("/hook"), SECRET)
    pipeline = make_pipeline(yaml)
    await pipeline.ingest.ingest(
        [Incoming(channel=ChannelRef(tg_id=5, username="news"), message_id=1, text="BRICS summit")]
    )
    pipeline.worker.lease = 0.5
    first = asyncio.create_task(pipeline.worker.run_once())
    await asyncio.to_thread(arrived.wait, 5)
    first.cancel()  # the process dies between sending and marking
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    with Session(store) as session:
        d = session.scalar(select(Delivery).where(Delivery.destination == "hook"))
        assert d.status == "pending" and d.lease_until is not None

    # A new process: nothing is claimable while the lease lives; after it expires, it resumes.
    restarted = make_pipeline(yaml)
    restarted.worker.lease = 0.5
    handled = 0
    for _ in range(50):
        handled += await restarted.worker.run_once()
        with Session(store) as session:
            if session.scalar(select(Delivery.status).where(Delivery.destination == "hook")) == "sent":
                break
        await asyncio.sleep(0.1)  # waiting out the lease is the behaviour under test
    with Session(store) as session:
        assert session.scalar(select(Delivery.status).where(Delivery.destination == "hook")) == "sent"
    # Resent under the same idempotency key, so a receiver that dedups sees it once.
    assert len(seen) == 2 and len(set(seen)) == 1


async def test_a_400_is_dead_at_once_and_retry_sends_it_again(httpserver, make_pipeline, store):
    receiver = Receiver(httpserver, script=[400])
    pipeline = make_pipeline(RULES % (receiver.url, SECRET))
    await pipeline.ingest.ingest(
        [Incoming(channel=ChannelRef(tg_id=5, username="n"), message_id=1, text="Moldova")]
    )
    await pipeline.worker.run_once()
    with Session(store) as session:
        d = session.scalar(select(Delivery).join(Alert).where(Alert.kind == "match"))
        assert (d.status, d.attempts) == ("dead", 0)
        assert "400" in d.last_error
        # A dead letter is told to ops (console).
        ops = session.scalars(select(Alert).where(Alert.kind == "ops")).all()
        assert any("dead letter" in a.summary for a in ops)
    with Session(store) as session, session.begin():
        assert retry_dead(session) == 1
    await pipeline.worker.run_once()
    with Session(store) as session:
        assert session.scalar(select(Delivery.status).where(Delivery.id == d.id)) == "sent"
    assert len(receiver.bodies) == 1


async def test_a_410_disables_the_destination_and_tells_ops(httpserver, make_pipeline, store):
    receiver = Receiver(httpserver, script=[410])
    console = io.StringIO()
    pipeline = make_pipeline(RULES % (receiver.url, SECRET), console=console)
    ch = ChannelRef(tg_id=5, username="n")
    await pipeline.ingest.ingest([Incoming(channel=ch, message_id=1, text="Moldova one")])
    await pipeline.worker.run_once()
    await pipeline.ingest.ingest([Incoming(channel=ch, message_id=2, text="Moldova two")])
    while await pipeline.worker.run_once():
        pass
    with Session(store) as session:
        assert session.get(DestinationState, "hook").disabled_at is not None
        statuses = Counter(session.scalars(select(Delivery.status).where(Delivery.destination == "hook")))
    assert statuses == {"dead": 2}
    assert receiver.bodies == []
    assert "destination hook disabled" in console.getvalue()
    assert receiver.url not in console.getvalue()  # the webhook URL is a secret


async def test_transient_failures_back_off_and_die_after_max_attempts(
    httpserver, make_pipeline, store, caplog
):
    caplog.set_level(logging.INFO, logger="bot.alerts.worker")
    receiver = Receiver(httpserver, script=[503] * 20)
    pipeline = make_pipeline(RULES % (receiver.url, SECRET), max_attempts=3)
    await pipeline.ingest.ingest(
        [Incoming(channel=ChannelRef(tg_id=5, username="n"), message_id=1, text="Moldova")]
    )
    for _ in range(200):
        await pipeline.worker.run_once()
        with Session(store) as session:
            d = session.scalar(select(Delivery).where(Delivery.destination == "hook"))
        if d.status == "dead":
            break
        assert d.next_attempt_at > datetime.now(UTC) - timedelta(seconds=1)
        await asyncio.sleep(0.05)  # the backoff (retry_base 0.05 s in tests) is what we wait out
    assert (d.status, d.attempts) == ("dead", 3)
    # Each failed attempt before the last says so, once, with its count.
    failed = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert [line.split("(attempt ")[1].split(")")[0] for line in failed] == ["1 of 3", "2 of 3"]
    assert all("to hook" in line and "503" in line for line in failed)


async def test_the_same_post_in_two_channels_alerts_once_and_lists_where_else(
    httpserver, make_pipeline, store
):
    receiver = Receiver(httpserver)
    pipeline = make_pipeline(RULES % (receiver.url, SECRET))
    text = "🚨 Moldova: the same story"
    await pipeline.ingest.ingest(
        [Incoming(channel=ChannelRef(tg_id=1, username="first"), message_id=10, text=text)]
    )
    await pipeline.ingest.ingest(
        [
            Incoming(
                channel=ChannelRef(tg_id=2, username="second"), message_id=99, text="Moldova: the  same story"
            )
        ]
    )
    while await pipeline.worker.run_once():
        pass
    assert len(receiver.bodies) == 1
    with Session(store) as session:
        alert = session.scalar(select(Alert).where(Alert.kind == "match"))
        assert alert.also_seen_in == ["@second"]


@pytest.mark.parametrize(
    "how",
    [
        {"date": datetime.now(UTC) - timedelta(days=3)},  # older than max_alert_age: the stale guard
        {"alert": False},  # a baseline: a new channel's history, a backfill
    ],
    ids=["old", "baseline"],
)
async def test_posts_that_must_not_alert_are_still_matched(make_pipeline, store, httpserver, how):
    receiver = Receiver(httpserver)
    pipeline = make_pipeline(RULES % (receiver.url, SECRET))
    result = await pipeline.ingest.ingest(
        [Incoming(channel=ChannelRef(tg_id=1, username="a"), message_id=1, text="Moldova", **how)]
    )
    assert result.matches == 1
    with Session(store) as session:
        assert session.scalar(select(Alert)) is None


async def test_a_silenced_rule_does_not_alert(make_pipeline, store, httpserver):
    receiver = Receiver(httpserver)
    pipeline = make_pipeline(RULES % (receiver.url, SECRET))
    now = datetime.now(UTC)
    with Session(store) as session, session.begin():
        session.add(
            Silence(
                rule_id="moldova", channel="a", until=now + timedelta(hours=1), reason="x", created_at=now
            )
        )
    await pipeline.ingest.ingest(
        [Incoming(channel=ChannelRef(tg_id=1, username="a"), message_id=1, text="Moldova")]
    )
    await pipeline.ingest.ingest(
        [Incoming(channel=ChannelRef(tg_id=2, username="b"), message_id=1, text="Moldova b")]
    )
    with Session(store) as session:
        alerted = session.scalars(
            select(Channel.username).join(Alert, Alert.channel_id == Channel.id).where(Alert.kind == "match")
        ).all()
    assert alerted == ["b"]  # the silence holds in channel a only


THROTTLED = """
destinations:
  - {name: hook, type: webhook, url: "%s"}
rules:
  - id: moldova
    match: {any: ["Moldova"]}
    notify: [hook]
    %s
"""


async def test_throttle_holds_repeats_and_sends_one_follow_up(httpserver, make_pipeline, store):
    receiver = Receiver(httpserver)
    pipeline = make_pipeline(THROTTLED % (receiver.url, "throttle: 10m"))
    ch = ChannelRef(tg_id=1, username="a")
    for i in range(1, 5):
        await pipeline.ingest.ingest([Incoming(channel=ch, message_id=i, text=f"Moldova update {i}")])
    while await pipeline.worker.run_once():
        pass
    assert len(receiver.bodies) == 1
    with Session(store) as session:
        assert Counter(session.scalars(select(Delivery.status))) == {"sent": 1, "held": 3}
    # Nothing is released before the window ends...
    with Session(store) as session, session.begin():
        assert release_held(session) == []
    # ...and one "+3 more" follow-up when it does (as a restart would find it: state is in the database).
    with Session(store) as session, session.begin():
        assert len(release_held(session, datetime.now(UTC) + timedelta(minutes=11))) == 1
    while await pipeline.worker.run_once():
        pass
    assert len(receiver.bodies) == 2
    follow = receiver.bodies[1]
    assert follow["kind"] == "followup" and "+3 more" in follow["summary"]
    assert len(follow["items"]) == 3


async def test_digest_collects_matches_into_one_summary(httpserver, make_pipeline, store):
    receiver = Receiver(httpserver)
    pipeline = make_pipeline(THROTTLED % (receiver.url, "digest: 1h"))
    for i in range(1, 4):
        await pipeline.ingest.ingest(
            [Incoming(channel=ChannelRef(tg_id=i, username=f"c{i}"), message_id=1, text=f"Moldova {i}")]
        )
    while await pipeline.worker.run_once():
        pass
    assert receiver.bodies == []
    with Session(store) as session, session.begin():
        release_held(session, datetime.now(UTC) + timedelta(hours=1, seconds=1))
    while await pipeline.worker.run_once():
        pass
    assert len(receiver.bodies) == 1
    assert receiver.bodies[0]["kind"] == "digest" and len(receiver.bodies[0]["items"]) == 3


async def test_worker_is_woken_by_a_commit_not_by_polling(httpserver, make_pipeline):
    got = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handler(request: Request) -> Response:
        loop.call_soon_threadsafe(got.set)
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(handler)
    pipeline = make_pipeline(THROTTLED % (httpserver.url_for("/hook"), ""), poll_interval=3600)
    task = asyncio.create_task(pipeline.worker.run())
    try:
        await pipeline.ingest.ingest(
            [Incoming(channel=ChannelRef(tg_id=1, username="a"), message_id=1, text="Moldova")]
        )
        await asyncio.wait_for(got.wait(), timeout=5)  # with hourly polling, only the wake-up can do this
    finally:
        task.cancel()
