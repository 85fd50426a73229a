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
from collections.abc import Callable, Iterator
from pathlib import Path

from bot.bench.corpus import generate_dump
from bot.commands.replay import replay
from bot.pipeline import compose
from bot.pipeline.index import IndexPosts
from bot.settings import Settings


def once(text: str, n_posts: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """One replay of a dump's `text` (`n_posts` posts) into a fresh store; its seconds by `clock`."""
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules"
        rules.mkdir()
        (rules / "rules.yaml").write_text(
            "rules:\n  - id: never\n    match: {any: [zzqxv-never-there]}\n", encoding="utf-8"
        )
        settings = Settings(
            _env_file=None, database_url=f"sqlite:///{tmp}/bench.db", rules_dir=rules, data_dir=Path(tmp)
        )
        started = clock()
        totals = asyncio.run(
            replay(settings, text, "bench", drain_timeout=0, out=io.StringIO(), err=io.StringIO())
        )
        seconds = clock() - started
    if totals["new"] != n_posts:
        raise AssertionError(f"stored {totals['new']} posts, expected {n_posts}")
    return seconds


@contextlib.contextmanager
def without(stage: type) -> Iterator[None]:
    """The pipeline as `compose` builds it, less one stage: the control arm of a stage's cost."""
    built = compose.stages
    compose.stages = lambda *args, **kwargs: tuple(
        s for s in built(*args, **kwargs) if not isinstance(s, stage)
    )
    try:
        yield
    finally:
        compose.stages = built


def cost(
    text: str, n_posts: int, stage: type, repeat: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, float]:
    """The best replay of `repeat` with the pipeline as it is, and without `stage`; the runs
    alternate, so a busy moment of the machine hits both arms, after one untimed run that warms
    what the first would pay alone (imports, the stem cache)."""
    once(text, n_posts, clock)
    best = control = float("inf")
    for _ in range(repeat):
        best = min(best, once(text, n_posts, clock))
        with without(stage):
            control = min(control, once(text, n_posts, clock))
    return best, control


def run(n_posts: int = 10_000, repeat: int = 3, index_cost: bool = False) -> dict:
    text = generate_dump(n_posts)
    if index_cost:
        best, control = cost(text, n_posts, IndexPosts, repeat)
    else:
        best = min(once(text, n_posts) for _ in range(repeat))
    row: dict = {
        "bench": "replay",
        "posts": n_posts,
        "best_seconds": round(best, 3),
        "posts_per_s": round(n_posts / best),
    }
    if index_cost:
        row["without_index_seconds"] = round(control, 3)
        row["index_overhead_pct"] = round(100 * (best / control - 1), 1)
    return row
