"""Stores for the store benchmarks: a scratch database, filled fast with bulk inserts.

Seeding through the ingest path would take longer than the measurement it prepares (a million
posts at a few thousand a second), so the rows are written as the ingest path writes them, in bulk:
one channel row per channel made by the real ingest path, then plain `INSERT`s of messages (and,
for retention, of the matches, alerts and deliveries a real archive has).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bot.app import Pipeline
from bot.config.ruleset import RuleSet
from bot.database_url import parse
from bot.errors import InputError
from bot.search import index as search_index
from bot.settings import Settings
from bot.sources.model import ChannelRef, Incoming
from bot.store.db import release, shown_url
from bot.store.maintenance import analyze
from bot.store.migrate import open_store
from bot.store.models import Alert, Channel, Delivery, Match, Message

CHANNELS = tuple(
    ChannelRef(tg_id=9_000_000 + i, username=f"benchnews{i}", title=f"Bench {i}") for i in range(20)
)
RULES = (
    "rules:\n"
    "  - id: alarm\n    severity: high\n    match: {any: [alarm, '#Breaking']}\n    notify: [console]\n"
    "  - id: never\n    match: {any: [zzqxv-never-there]}\n    notify: [console]\n"
)
_BODY = (
    "Ministry statement on regional cooperation and the agenda of the upcoming meeting, item {i}. "
    "The delegation discussed trade, energy and infrastructure with partners; further details will "
    "be published separately on the website. Comments from the partners follow later today. "
    "#Cooperation #Agenda{tag}"
)


def text_of(i: int) -> str:
    """A post about the size of a real one (~400 characters); one in ten matches the `alarm` rule."""
    body = _BODY.format(i=i, tag=i % 97)
    return f"🚨 #Breaking {body}" if i % 10 == 0 else body


def log(line: str) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def scratch_url(url: str | None) -> Iterator[str]:
    """A database of the benchmark's own: a SQLite file in a temporary directory by default, or on
    the PostgreSQL server at `url` a schema created for the run and dropped after it (never the
    schema anyone else uses). A SQLite `url` must name a file that is not there yet."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix="tgsentinel-bench-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    try:
        parsed = parse(url)
    except ValueError as exc:
        raise InputError(f"--db is invalid: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and Path(parsed.database).exists():
            raise InputError(f"a benchmark needs a database of its own: {parsed.database} exists")
        yield parsed.render_as_string(hide_password=False)
        return
    schema = f"tgsentinel_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(parsed)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        raise InputError(f"cannot open database {shown_url(parsed)}: {str(exc).splitlines()[0]}") from None
    log(f"bench: PostgreSQL schema {schema} on {shown_url(parsed)} (dropped afterwards)")
    try:
        yield (
            make_url(parsed)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Bench:
    """A store with the real pipeline over it (rules `RULES`, the console destination, no worker)."""

    engine: Engine
    pipeline: Pipeline
    next_id: dict[int, int]  # per channel: the message id the next new post gets

    def post(self, n: int) -> list[Incoming]:
        """`n` new posts, spread over the channels as a live feed is."""
        items = []
        for k in range(n):
            index = k % len(CHANNELS)
            channel = CHANNELS[index]
            msg_id = self.next_id[channel.tg_id or 0]
            self.next_id[channel.tg_id or 0] = msg_id + 1
            # Unique across channels too: the same text in two channels would be a duplicate.
            body = text_of(msg_id * len(CHANNELS) + index)
            items.append(Incoming(channel=channel, message_id=msg_id, text=body, date=datetime.now(UTC)))
        return items

    async def aclose(self) -> None:
        await self.pipeline.aclose()
        release(self.engine)


async def open_bench(url: str, tmp: Path) -> Bench:
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "rules.yaml").write_text(RULES, encoding="utf-8")
    settings = Settings(_env_file=None, database_url=url, rules_dir=rules, data_dir=tmp)
    engine = open_store(url)
    pipeline = Pipeline(settings, engine, RuleSet.load(rules, env={}), console=io.StringIO())
    # The channel rows, made the way a source makes them: by a first post through the ingest path.
    await pipeline.ingest.ingest([Incoming(channel=c, message_id=1, text="hello") for c in CHANNELS])
    return Bench(engine, pipeline, {c.tg_id or 0: 2 for c in CHANNELS})


def seed(bench: Bench, count: int, *, created_at: datetime | None = None, alerts_every: int = 0) -> float:
    """Add `count` stored posts in bulk, `created_at` old (now by default); with `alerts_every`, one
    post in that many also has a match, an alert and a sent delivery, as matched posts have.
    Returns the seconds it took."""
    started = time.perf_counter()
    with Session(bench.engine) as session:
        ids = dict(session.execute(select(Channel.tg_id, Channel.id)).all())
    written = 0
    while written < count:
        n = min(20_000, count - written)
        when = created_at or datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        for k in range(n):
            index = (written + k) % len(CHANNELS)
            channel = CHANNELS[index]
            msg_id = bench.next_id[channel.tg_id or 0]
            bench.next_id[channel.tg_id or 0] = msg_id + 1
            body = text_of(msg_id * len(CHANNELS) + index)
            rows.append(
                {
                    "channel_id": ids[channel.tg_id],
                    "msg_id": msg_id,
                    "date": when,
                    "raw_text": "",  # the same as its text
                    "entities": [],
                    "text": body,
                    "title": body[:80],
                    "hashtags": ["#Cooperation", f"#Agenda{msg_id % 97}"],
                    "mentions": [],
                    "urls": [],
                    "media": [],
                    "fingerprint": hashlib.blake2b(
                        f"{channel.tg_id}:{msg_id}".encode(), digest_size=16
                    ).hexdigest(),
                    "deleted": False,
                    "created_at": when,
                    "updated_at": when,
                }
            )
        with Session(bench.engine) as session, session.begin():
            last = session.scalar(select(func.max(Message.id))) or 0
            session.execute(insert(Message), rows)
            # Indexed as the ingest path would have: a prune must take them out of the index too.
            conn = session.connection()
            search_index.add(
                conn,
                conn.execute(
                    select(Message.id, Message.text, Message.hashtags).where(Message.id > last)
                ).all(),
            )
            if alerts_every:
                _alerts(session, n // alerts_every, when)
        written += n
        if written % 200_000 == 0:
            log(f"bench: seeded {written:,} of {count:,} posts")
    with Session(bench.engine) as session, session.begin():
        for tg_id, channel_id in ids.items():
            session.execute(
                update(Channel).where(Channel.id == channel_id).values(last_seen_id=bench.next_id[tg_id] - 1)
            )
    analyze(bench.engine)  # as autovacuum would have, in an archive that grew to this size
    return time.perf_counter() - started


def _alerts(session: Session, n: int, when: datetime) -> None:
    """A match, an alert and a sent delivery for the latest `n` posts just inserted."""
    latest = list(
        session.execute(select(Message.id, Message.channel_id).order_by(Message.id.desc()).limit(n))
    )
    if not latest:
        return
    session.execute(
        insert(Match),
        [
            {
                "rule_id": "alarm",
                "message_id": m,
                "channel_id": c,
                "terms": ["alarm"],
                "hits": [],
                "created_at": when,
            }
            for m, c in latest
        ],
    )
    matches = dict(
        session.execute(select(Match.message_id, Match.id).where(Match.message_id >= latest[-1][0])).all()
    )
    session.execute(
        insert(Alert),
        [
            {
                "key": f"msg_{uuid.uuid4().hex}",
                "kind": "match",
                "rule_id": "alarm",
                "severity": "high",
                "match_id": matches[m],
                "channel_id": c,
                "message_id": m,
                "also_seen_in": [],
                "items": [],
                "created_at": when,
            }
            for m, c in latest
        ],
    )
    alerts = session.execute(select(Alert.id).where(Alert.message_id >= latest[-1][0])).scalars().all()
    session.execute(
        insert(Delivery),
        [
            {
                "alert_id": a,
                "destination": "console",
                "status": "sent",
                "attempts": 1,
                "next_attempt_at": when,
                "created_at": when,
                "sent_at": when + timedelta(seconds=1),
            }
            for a in alerts
        ],
    )


def stored(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Message)) or 0)
