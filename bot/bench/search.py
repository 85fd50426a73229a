"""`tgsentinel bench search`: the archive at scale, built through the product's own ingest path.

`--posts` posts (1,000,000 by default) the size of the sample's (about 2,250 bytes of text, English,
Russian and Ukrainian, with hashtags and inflected words) go through the real pipeline in batches,
as a replay sends them: normalise, store, index, match, the filters, fan-out. Then:

- searches of each kind (a common word, a rare one, an inflected Cyrillic word, a phrase, a prefix, a
  hashtag, an exclusion, filters, relevance order) run their first page repeatedly: p50 and p95;
- post pages are fetched from the archive app in process, signed in by token: p50 and p95;
- the store's size on disk per stored post, index included;
- ingest with the index stage and without it, on the first `--compare` posts of two fresh stores.

The searches and pages are measured pinned to one core (the floors are for one core), where the
system lets it; the store is built, and the ingest rates compared, on all of them, as a replay runs.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from bot.bench.seed import CHANNELS, Bench, log, open_bench, scratch_url
from bot.search import Filters, search
from bot.sources.model import Incoming
from bot.store.db import shown_url
from bot.store.models import Message

BATCH = 500  # posts per ingest batch: a replay's
TOKEN = "bench-token-" + "x" * 20

# Common words of each language, and lemmas in several forms: the stemmer's work.
_WORDS = {
    "en": (
        "the of and to in a for on with by is that as at from this be are it an was their has its "
        "minister ministry foreign cooperation security council meeting agenda regional development "
        "partners integration economy trade energy infrastructure statement delegation summit talks "
        "agreement sanction sanctions sanctioned negotiation negotiations negotiated election elections "
        "border borders refugees humanitarian ceasefire attack attacks attacked drone drones"
    ),
    "ru": (
        "и в на с по для о не что это как из к от за его их был были также будет министр министра "
        "министру министром переговоры переговоров переговорам сотрудничество безопасность развитие "
        "торговля делегация саммит заявление санкции санкций санкциям санкциями санкционный выборы "
        "выборов граница границы беженцы беженцев перемирие атака атаки атаку дрон дроны дронов"
    ),
    "uk": (
        "і в на з по для про не що це як із до від за його їх був були також буде міністр міністра "
        "переговори переговорів співпраця безпека розвиток торгівля делегація саміт заява санкції "
        "санкцій санкціям війна війни війною вибори кордон кордону біженці перемир'я атака дрони"
    ),
}
_SYLLABLES = {
    "en": "ka lo mi ter sun vel dor pan rix tal mor len sta bri cor ven",
    "ru": "ка ло ми тер сун вел дор пан рик тал мор лен ста бри кор вен",
    "uk": "ка ло мі тер сун вел дор пан рік тал мор лен ста брі кор вен",
}
_TAGS = ("Breaking", "CIS", "BRICS", "Announcement", "СНГ", "Україна", "Sanctions", "Санкции")
_EMOJI = ("🗓", "🎙", "💬", "❗️", "🔹", "👉", "📄", "🇷🇺", "✅", "⚠️")
TARGET_BYTES = 2_250  # the sample's posts: 24,855 bytes of text (UTF-8) in 11 posts


def _rare(language: str, rng: random.Random, n: int) -> list[str]:
    """Words that appear rarely (names, places): they, not the common words, grow an index."""
    syllables = _SYLLABLES[language].split()
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(n)]


class Corpus:
    """Post texts about the sample's size, each unique: lines drawn from a pool of 60,000 per
    language, whose words are drawn Zipf-like from a large vocabulary (a post a line at a time keeps
    building a million of them to minutes)."""

    POOL = 60_000

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.pools = {lang: self._lines(lang) for lang in _WORDS}

    def _lines(self, language: str) -> list[tuple[str, int]]:
        rng = self.rng
        vocab = _WORDS[language].split() + _rare(language, rng, 20_000)
        cum = list(_accumulate([1 / (k + 1) for k in range(len(vocab))]))
        lines = []
        for _ in range(self.POOL):
            words = rng.choices(vocab, cum_weights=cum, k=rng.randint(14, 30))
            line = f"{rng.choice(_EMOJI)} {' '.join(words).capitalize()}."
            lines.append((line, len(line.encode()) + 1))
        return lines

    def text(self, n: int) -> str:
        rng = self.rng
        pool = self.pools[("en", "ru", "uk")[n % 3]]
        lines, size = [], 0
        while size < TARGET_BYTES - 60:
            line, length = pool[rng.randrange(self.POOL)]
            lines.append(line)
            size += length
        lines.append(f"#{rng.choice(_TAGS)} #{rng.choice(_TAGS)} (item {n})")
        return "\n".join(lines)


def _accumulate(weights: list[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _batches(corpus: Corpus, start: int, count: int, next_id: dict[int, int]) -> Iterator[list[Incoming]]:
    """Posts spread over the bench's channels, dated over the last year, oldest first."""
    now = datetime.now(UTC)
    for first in range(start, start + count, BATCH):
        items = []
        for n in range(first, min(first + BATCH, start + count)):
            channel = CHANNELS[n % len(CHANNELS)]
            msg_id = next_id[channel.tg_id or 0]
            next_id[channel.tg_id or 0] = msg_id + 1
            when = now - timedelta(seconds=(start + count - n) * 30)
            items.append(Incoming(channel=channel, message_id=msg_id, text=corpus.text(n), date=when))
        yield items


async def _fill(bench: Bench, corpus: Corpus, count: int, *, progress: bool = True) -> float:
    """Ingest `count` posts; the seconds it took."""
    started = time.perf_counter()
    done = 0
    for items in _batches(corpus, 0, count, bench.next_id):
        result = await bench.pipeline.ingest.ingest(items)
        done += result.new
        if progress and done % 100_000 < BATCH:
            rate = done / (time.perf_counter() - started)
            log(f"bench: {done:,} of {count:,} posts ingested ({rate:.0f}/s)")
    return time.perf_counter() - started


# (label, query, filters, order): one of each kind a user types.
def _queries(channel: str) -> list[tuple[str, str, Filters, str]]:
    week_ago = datetime.now(UTC) - timedelta(days=7)
    return [
        ("common word", "security", Filters(), "newest"),
        ("inflected ru", "санкции", Filters(), "newest"),
        ("inflected uk", "війна", Filters(), "newest"),
        ("two words", "sanctions negotiations", Filters(), "newest"),
        ("phrase", '"foreign ministry"', Filters(), "newest"),
        ("prefix", "переговор*", Filters(), "newest"),
        ("hashtag", "#Sanctions", Filters(), "newest"),
        ("exclusion", "drone -attack", Filters(), "newest"),
        ("rare word", "kalomiter", Filters(), "newest"),
        ("channel filter", "summit", Filters(channel=channel), "newest"),
        ("last week", "ceasefire", Filters(since=week_ago), "newest"),
        ("relevance", "санкции переговоры", Filters(), "relevance"),
        ("filters only", "", Filters(channel=channel, media=None), "newest"),
    ]


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[max(0, int(len(ms) * 0.95) - 1)], 1),
        "max_ms": round(ms[-1], 1),
    }


def _searches(engine: Engine, repeat: int) -> dict[str, Any]:
    channel = CHANNELS[0].username or ""
    queries = _queries(channel)
    every: list[float] = []
    per: dict[str, float] = {}
    with Session(engine) as session:
        for label, query, filters, order in queries:
            search(session, query, filters, order=order, limit=20)  # warm: a running archive has been
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                results = search(session, query, filters, order=order, limit=20)
                times.append(time.perf_counter() - started)
            per[f"{label} ({len(results.hits)} hits)"] = round(statistics.median(times) * 1000, 1)
            every += times
    return {**_percentiles(every), "median_ms_by_query": per}


async def _post_pages(engine: Engine, rules_dir: Path, n: int) -> dict[str, Any]:
    import httpx

    from bot.web.app import create_app

    app = create_app(engine, token=TOKEN, rules_dir=rules_dir)
    with Session(engine) as session:
        top = int(session.scalar(select(func.max(Message.id))) or 0)
    rng = random.Random(1)
    times = []
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=headers) as client:
        for k in range(n + 5):
            row = rng.randint(1, top)
            started = time.perf_counter()
            response = await client.get(f"/posts/{row}")
            elapsed = time.perf_counter() - started
            if response.status_code not in (200, 404):
                raise AssertionError(f"/posts/{row} answered {response.status_code}")
            if k >= 5:  # the first few compile the templates
                times.append(elapsed)
    return _percentiles(times)


def _size(engine: Engine, url: str, posts: int) -> dict[str, Any]:
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            tables = {
                name: size
                for name, size in conn.execute(
                    text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8")
                )
            }
        path = Path(engine.url.database or "")
        total = path.stat().st_size
    else:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 2 DESC"
                )
            ).all()
        tables = dict(rows)
        total = sum(tables.values())
    return {
        "bytes_per_post": round(total / posts),
        "largest_bytes_per_post": {k: round(v / posts) for k, v in list(tables.items())[:8]},
    }


def _without_index(bench: Bench) -> None:
    from bot.pipeline.index import IndexPosts

    ingest = bench.pipeline.ingest
    ingest.stages = tuple(s for s in ingest.stages if not isinstance(s, IndexPosts))


async def _compare(url_factory: Any, compare: int, tmp: Path) -> dict[str, Any]:
    """Ingest rates of the same posts into two fresh stores, with and without the index stage."""
    rates = {}
    for label in ("without_index", "with_index"):
        with url_factory() as url:
            bench = await open_bench(url, tmp / label)
            try:
                if label == "without_index":
                    _without_index(bench)
                seconds = await _fill(bench, Corpus(seed=7), compare, progress=False)
            finally:
                await bench.aclose()
        rates[label] = round(compare / seconds)
    rates["index_overhead_pct"] = round(100 * (rates["without_index"] / rates["with_index"] - 1), 1)
    return rates


def _one_core() -> int | None:
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return core
    except (AttributeError, OSError):
        return None


async def _run(
    url: str, posts: int, repeat: int, pages: int, compare: int, db: str | None, tmp: Path
) -> dict:
    row: dict[str, Any] = {"bench": "search", "posts": posts}
    if compare:
        (tmp / "without_index").mkdir()
        (tmp / "with_index").mkdir()
        row["ingest_compare"] = await _compare(lambda: scratch_url(db), compare, tmp)
        log(f"bench: {row['ingest_compare']}")
    (tmp / "main").mkdir()
    bench = await open_bench(url, tmp / "main")
    try:
        row["database"] = bench.engine.dialect.name
        seconds = await _fill(bench, Corpus(), posts)
        row["ingest_posts_per_s"] = round(posts / seconds)
        if bench.engine.dialect.name == "postgresql":
            with bench.engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        row["store"] = _size(bench.engine, url, posts)
        # Measured on one core; the store was built on all of them, as a replay runs.
        row["pinned_core"] = _one_core()
        row["search"] = _searches(bench.engine, repeat)
        row["post_page"] = await _post_pages(bench.engine, tmp / "main" / "rules", pages)
    finally:
        await bench.aclose()
    row["floors"] = {
        "search_p95_ms": 150,
        "post_page_p95_ms": 100,
        "index_overhead_pct": 20,
        "sqlite_bytes_per_post": 4096,
    }
    return row


def run(
    posts: int = 1_000_000, repeat: int = 20, pages: int = 200, compare: int = 20_000, db: str | None = None
) -> dict[str, Any]:
    with scratch_url(db) as url, tempfile.TemporaryDirectory() as tmp:
        log(f"bench search: {posts:,} posts into {shown_url(url)}")
        return asyncio.run(_run(url, posts, repeat, pages, compare, db, Path(tmp)))
