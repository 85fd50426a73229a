"""`tgsentinel bench ingest`: posts/s through the real ingest path as the archive grows.

The store is seeded in bulk to each size in turn (10k, 200k, 1M stored posts by default), and at
each size `--posts` new posts go through the real pipeline (normalise, store, match, the filters,
fan-out) in batches of `--batch` (100: a Telethon catch-up sweep's page). One in
ten matches a rule and is queued for the console. The floor: the rates within 20 % of each other.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.bench.seed import log, open_bench, scratch_url, seed, stored
from bot.store.db import shown_url

SIZES = (10_000, 200_000, 1_000_000)


async def _run(url: str, sizes: Sequence[int], posts: int, batch: int, tmp: Path) -> list[dict[str, Any]]:
    bench = await open_bench(url, tmp)
    rows: list[dict[str, Any]] = []
    try:
        for size in sorted(sizes):
            have = stored(bench.engine)
            if size > have:
                seconds = seed(bench, size - have)
                log(f"bench: seeded to {size:,} stored posts in {seconds:.1f} s")
            # A first batch warms the caches this size's indexes need, as a running monitor has them.
            await bench.pipeline.ingest.ingest(bench.post(batch))
            new = 0
            started = time.perf_counter()
            for _ in range(max(1, posts // batch)):
                new += (await bench.pipeline.ingest.ingest(bench.post(batch))).new
            elapsed = time.perf_counter() - started
            rows.append(
                {
                    "bench": "ingest",
                    "database": bench.engine.dialect.name,
                    "stored_posts": size,
                    "new_posts": new,
                    "batch": batch,
                    "seconds": round(elapsed, 2),
                    "posts_per_s": round(new / elapsed),
                }
            )
            log(f"bench: {rows[-1]}")
    finally:
        await bench.aclose()
    rates = [r["posts_per_s"] for r in rows]
    spread = (max(rates) - min(rates)) / max(rates)
    rows.append(
        {
            "bench": "ingest",
            "summary": True,
            "spread_pct": round(100 * spread, 1),
            "floor": "rates within 20 % of each other",
            "ok": spread <= 0.20,
        }
    )
    return rows


def run(
    sizes: Sequence[int] = SIZES, posts: int = 10_000, batch: int = 100, db: str | None = None
) -> list[dict[str, Any]]:
    with scratch_url(db) as url, tempfile.TemporaryDirectory() as tmp:
        log(f"bench ingest: {shown_url(url)}")
        return asyncio.run(_run(url, sizes, posts, batch, Path(tmp)))
