"""`tgsentinel bench parse`: posts per second through the dump parser, best of several runs."""

from __future__ import annotations

import time

from bot.bench.corpus import generate_dump
from bot.parse import parse_dump


def run(n_posts: int = 10_000, repeat: int = 3) -> dict:
    """Parse a generated dump of `n_posts` posts `repeat` times; the best run's figures."""
    text = generate_dump(n_posts)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        posts = parse_dump(text)
        best = min(best, time.perf_counter() - started)
        if len(posts) != n_posts:
            raise RuntimeError(f"bench parse: expected {n_posts} posts, parsed {len(posts)}")
    return {"posts": n_posts, "best_seconds": round(best, 4), "posts_per_s": round(n_posts / best)}


if __name__ == "__main__":
    print(run())
