"""`tgsentinel bench replay`: generated dumps through the whole replay path into a fresh SQLite file.

With `--index-cost`, the runs alternate between the pipeline as it is and the pipeline without its
search index stage, and the best of each is compared: what indexing adds to a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bot.bench.corpus import generate_dump
from bot.commands.replay import replay
from bot.pipeline import compose
from bot.pipeline.index import IndexPosts
from bot.settings import Settings


def _once(text: str, n_posts: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules"
        rules.mkdir()
        (rules / "rules.yaml").write_text(
            "rules:\n  - id: never\n    match: {any: [zzqxv-never-there]}\n", encoding="utf-8"
        )
        settings = Settings(
            _env_file=None, database_url=f"sqlite:///{tmp}/bench.db", rules_dir=rules, data_dir=Path(tmp)
        )
        started = time.perf_counter()
        totals = asyncio.run(
            replay(settings, text, "bench", drain_timeout=0, out=io.StringIO(), err=io.StringIO())
        )
        seconds = time.perf_counter() - started
    if totals["new"] != n_posts:
        raise AssertionError(f"stored {totals['new']} posts, expected {n_posts}")
    return seconds


@contextlib.contextmanager
def _without_index() -> Iterator[None]:
    """The pipeline as `compose` builds it, less the index stage, for the runs this bench compares."""
    built = compose.stages
    compose.stages = lambda *args, **kwargs: tuple(
        s for s in built(*args, **kwargs) if not isinstance(s, IndexPosts)
    )
    try:
        yield
    finally:
        compose.stages = built


def run(n_posts: int = 10_000, repeat: int = 3, index_cost: bool = False) -> dict:
    text = generate_dump(n_posts)
    best = without = float("inf")
    for _ in range(repeat):
        best = min(best, _once(text, n_posts))
        if index_cost:
            with _without_index():
                without = min(without, _once(text, n_posts))
    row: dict = {
        "bench": "replay",
        "posts": n_posts,
        "best_seconds": round(best, 3),
        "posts_per_s": round(n_posts / best),
    }
    if index_cost:
        row["without_index_seconds"] = round(without, 3)
        row["index_overhead_pct"] = round(100 * (best / without - 1), 1)
    return row
