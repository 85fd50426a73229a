"""`tgsentinel bench replay`: generated dumps through the whole replay path into a fresh SQLite file."""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from pathlib import Path

from bot.bench.corpus import generate_dump
from bot.commands.replay import replay
from bot.settings import Settings


def run(n_posts: int = 10_000, repeat: int = 3) -> dict:
    text = generate_dump(n_posts)
    best = float("inf")
    for _ in range(repeat):
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
            best = min(best, time.perf_counter() - started)
            if totals["new"] != n_posts:
                raise AssertionError(f"stored {totals['new']} posts, expected {n_posts}")
    return {
        "bench": "replay",
        "posts": n_posts,
        "best_seconds": round(best, 3),
        "posts_per_s": round(n_posts / best),
    }
