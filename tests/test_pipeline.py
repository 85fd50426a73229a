"""The pipeline's composition: one rule-set snapshot per batch, filters that count what they drop,
stages that work alone, and one definition of an edit shared with the test fake."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config.ruleset import RuleSet
from bot.pipeline.batch import Batch, Candidate, Post
from bot.pipeline.stale import Stale
from bot.rules.model import RuleMatch
from bot.sources.model import ChannelRef, Incoming
from bot.store.models import Alert, Delivery, Silence
from tests.tg_harness import RecordingSink

HOOK_RULES = """
destinations:
  - {name: hook, type: webhook, url: "http://127.0.0.1:9/hook"}
rules:
  - id: moldova
    match: {any: ["Moldova"]}
    notify: [hook]
    %s
"""


class ReloadsWhileMatching:
    """An engine that, halfway through a batch's matching, has the rules reloaded under it."""

    def __init__(self, engine, reload) -> None:  # type: ignore[no-untyped-def]
        self.engine, self.reload, self.calls = engine, reload, 0

    def match(self, post, budget=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            self.reload()
        return self.engine.match(post, budget)

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.engine, name)


async def test_a_reload_during_a_batch_does_not_reach_that_batch(make_pipeline, store, rules_dir):
    pipeline = make_pipeline(HOOK_RULES % "")
    digest = RuleSet.load(rules_dir(HOOK_RULES % "digest: 1h"), env={})
    first = pipeline.rules
    pipeline.rules = RuleSet(
        config=first.config,
        engine=ReloadsWhileMatching(first.engine, lambda: pipeline.reload(digest)),  # type: ignore[arg-type]
        by_id=first.by_id,
    )
    ch = ChannelRef(tg_id=1, username="a")
    await pipeline.ingest.ingest([Incoming(channel=ch, message_id=i, text=f"Moldova {i}") for i in (1, 2, 3)])
    assert pipeline.rules is digest  # the reload happened, during the batch
    with Session(store) as session:
        statuses = Counter(session.scalars(select(Delivery.status)))
    # The whole batch judged by the rules it started with (no digest): sent now, none held.
    assert statuses == {"pending": 3}
    # The next batch is judged by the new rules.
    await pipeline.ingest.ingest([Incoming(channel=ch, message_id=4, text="Moldova 4")])
    with Session(store) as session:
        assert Counter(session.scalars(select(Delivery.status))) == {"pending": 3, "held": 1}


def suppressed(reason: str) -> float:
    return REGISTRY.get_sample_value("tgsentinel_alerts_suppressed_total", {"reason": reason}) or 0.0


async def test_every_filter_counts_what_it_drops(make_pipeline, store):
    pipeline = make_pipeline(HOOK_RULES % "throttle: 1h")
    before = {r: suppressed(r) for r in ("baseline", "stale", "silenced", "duplicate", "throttled")}
    now = datetime.now(UTC)
    with Session(store) as session, session.begin():
        session.add(
            Silence(rule_id="moldova", channel="muted", until=now + timedelta(hours=1), created_at=now)
        )
    a, b = ChannelRef(tg_id=1, username="a"), ChannelRef(tg_id=2, username="b")
    await pipeline.ingest.ingest([Incoming(channel=a, message_id=1, text="Moldova history", alert=False)])
    await pipeline.ingest.ingest(
        [Incoming(channel=a, message_id=2, text="Moldova old", date=now - timedelta(days=3))]
    )
    await pipeline.ingest.ingest(
        [Incoming(channel=ChannelRef(tg_id=3, username="muted"), message_id=1, text="Moldova")]
    )
    await pipeline.ingest.ingest([Incoming(channel=a, message_id=3, text="Moldova news")])  # alerts
    await pipeline.ingest.ingest([Incoming(channel=b, message_id=1, text="Moldova news")])  # same post
    await pipeline.ingest.ingest([Incoming(channel=a, message_id=4, text="Moldova again")])  # throttled
    after = {r: suppressed(r) - n for r, n in before.items()}
    assert after == {"baseline": 1, "stale": 1, "silenced": 1, "duplicate": 1, "throttled": 1}
    with Session(store) as session:
        alerts = session.scalars(select(Alert).where(Alert.kind == "match")).all()
    assert len(alerts) == 2  # the news (also seen in @b) and the throttled one, held
    assert alerts[0].also_seen_in == ["@b"]


def _candidate(date: datetime | None) -> Candidate:
    item = Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="x", date=date)
    post = Post(item, SimpleNamespace(fingerprint=None), SimpleNamespace(id=1), 1, False)  # type: ignore[arg-type]
    return Candidate(post, RuleMatch("r", "info", (), (), ()), SimpleNamespace(id=1))  # type: ignore[arg-type]


def test_a_filter_works_alone_on_a_batch() -> None:
    stamp = datetime(2026, 1, 10, tzinfo=UTC)
    batch = Batch(items=[], rules=None, stamp=stamp)
    fresh, old, undated = (
        _candidate(stamp - timedelta(hours=1)),
        _candidate(stamp - timedelta(days=2)),
        _candidate(None),
    )
    batch.candidates = [fresh, old, undated]
    Stale(max_age=86400).run(None, batch)  # type: ignore[arg-type]
    assert batch.candidates == [fresh, undated]
    assert batch.suppressed == {"stale": 1}


STEPS = [
    ("new", Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="first", media=["photo"])),
    ("same again", Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="first", media=["photo"])),
    (
        "views only",
        Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="first", media=["photo"], views=9),
    ),
    (
        "a repeated flag",
        Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="first", media=["photo", "photo"]),
    ),
    (
        "edit date only",
        Incoming(
            channel=ChannelRef(tg_id=1),
            message_id=1,
            text="first",
            media=["photo"],
            edit_date=datetime(2026, 1, 1, tzinfo=UTC),
        ),
    ),
    ("text", Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="second", media=["photo"])),
    # Routes name media differently (t.me: too big, withheld); media alone is no edit.
    ("media alone", Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="second", media=["video"])),
    ("a NUL the store replaces", Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="a\x00b")),
    ("the same NUL again", Incoming(channel=ChannelRef(tg_id=1), message_id=1, text="a\x00b")),
]


@pytest.mark.parametrize("sink_kind", ["real", "fake"])
async def test_the_fake_sink_and_the_real_ingest_agree_on_what_an_edit_is(sink_kind, sink):
    target = sink if sink_kind == "real" else RecordingSink()
    outcomes = []
    for _, item in STEPS:
        r = await target.ingest([item])
        outcomes.append("new" if r.new else "edit" if r.updated else "unchanged")
    assert outcomes == [
        "new",
        "unchanged",
        "unchanged",
        "unchanged",
        "unchanged",
        "edit",
        "unchanged",
        "edit",
        "unchanged",
    ]
