"""`tgsentinel bench retention`: a prune of a million old posts while posts keep arriving.

The store is seeded in bulk with `--old` posts a year old (one in a hundred with a match, an alert
and a sent delivery, as matched posts have; a few of those deliveries still pending or dead, which
must keep their posts) and `--recent` posts of today. Then the monitor's retention job runs
(`prune_in_batches`, 90 days) while a writer stores one post every ~50 ms through the real ingest
path, each timed from the call to its commit. Then `db vacuum`'s VACUUM. Reported: the prune's
time, the writer's p50/p99/max latency during it, and the store's size before, after the prune and
after the vacuum. The floor: p99 under 1 s.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.bench.seed import log, open_bench, scratch_url, seed, stored
from bot.pipeline.compose import PRUNED
from bot.store.db import run_sync, shown_url
from bot.store.maintenance import BATCH, database_size, prune_in_batches, size, vacuum
from bot.store.models import Alert, Delivery

RETENTION = 90 * 86400
OWED = 10  # old deliveries left pending or dead: their alerts and posts must survive the prune


async def _run(url: str, old: int, recent: int, batch: int, interval: float, tmp: Path) -> dict[str, Any]:
    bench = await open_bench(url, tmp)
    engine = bench.engine
    try:
        seconds = seed(bench, old, created_at=datetime.now(UTC) - timedelta(days=365), alerts_every=100)
        log(f"bench: seeded {old:,} old posts in {seconds:.1f} s")
        seed(bench, recent)
        with Session(engine) as session, session.begin():
            owed = session.scalars(select(Delivery.id).order_by(Delivery.id).limit(OWED)).all()
            for i, delivery in enumerate(owed):
                status = "pending" if i % 2 else "dead"
                session.execute(update(Delivery).where(Delivery.id == delivery).values(status=status))
        before_posts = stored(engine)
        size_before = await run_sync(engine, database_size, engine)
        log(f"bench: {before_posts:,} posts stored, {size(size_before)}; pruning")

        latencies: list[float] = []
        started = time.perf_counter()
        prune = asyncio.create_task(prune_in_batches(engine, RETENTION, batch=batch, forget=PRUNED))
        while not prune.done():
            sent = time.perf_counter()
            result = await bench.pipeline.ingest.ingest(bench.post(1))
            latencies.append(time.perf_counter() - sent)
            if result.new != 1:
                raise AssertionError(f"the writer's post was not stored: {result}")
            await asyncio.wait({prune}, timeout=interval)
        removed = await prune
        prune_seconds = time.perf_counter() - started
        size_pruned = await run_sync(engine, database_size, engine)
        log(f"bench: pruned {removed} in {prune_seconds:.1f} s, {size(size_pruned)}; vacuuming")

        started = time.perf_counter()
        vacuumed = await run_sync(engine, vacuum, engine)
        vacuum_seconds = time.perf_counter() - started

        after_posts = stored(engine)
        with Session(engine) as session:
            owed_alive = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .join(Alert, Alert.id == Delivery.alert_id)
                .where(Delivery.id.in_(owed), Alert.message_id.is_not(None))
            )
        expected = before_posts - old + OWED + len(latencies)
        if after_posts != expected or owed_alive != OWED:
            raise AssertionError(f"{after_posts} posts left, expected {expected}; {owed_alive} owed alive")
    finally:
        await bench.aclose()
    ms = sorted(1000 * x for x in latencies)
    p99 = ms[int(0.99 * (len(ms) - 1))]
    return {
        "bench": "retention",
        "database": engine.dialect.name,
        "old_posts": old,
        "recent_posts": recent,
        "batch": batch,
        "removed": removed,
        "prune_seconds": round(prune_seconds, 1),
        "writes_during_prune": len(ms),
        "ingest_p50_ms": round(statistics.median(ms), 1),
        "ingest_p99_ms": round(p99, 1),
        "ingest_max_ms": round(ms[-1], 1),
        "size_before": size(size_before),
        "size_after_prune": size(size_pruned),
        "size_after_vacuum": size(vacuumed.after),
        "vacuum_seconds": round(vacuum_seconds, 1),
        "floor": "ingest p99 under 1 s during the prune",
        "ok": p99 < 1000,
    }


def run(
    old: int = 1_000_000,
    recent: int = 10_000,
    batch: int = BATCH,
    interval: float = 0.05,
    db: str | None = None,
) -> dict[str, Any]:
    with scratch_url(db) as url, tempfile.TemporaryDirectory() as tmp:
        log(f"bench retention: {shown_url(url)}")
        return asyncio.run(_run(url, old, recent, batch, interval, Path(tmp)))
