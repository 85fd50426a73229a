"""`tgsentinel bench dispatch`: posts per second through Telethon's real update dispatch and the live source.

Each post is a real `UpdateNewChannelMessage` in its own `Updates`, fed through the client's update
preprocessing and dispatch (the offline seams in tests/tg_harness.py), the source's handlers and the
sink. Memory is sampled after the first 10,000 posts and at the end: it must stay flat.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import resource
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bot.health import Health
from bot.settings import Settings
from bot.sources.model import Sink
from bot.sources.telegram import TelegramSource

CHANNEL_ID = 1_234_567
WARMUP = 10_000
_TEXT = (
    "🚨 #Breaking Ministry statement on regional cooperation, post {i}. "
    "Read the full text on the website; comments from partners follow later today. "
    "Further details on the agenda of the upcoming meeting will be published separately."
)


def _harness() -> ModuleType:
    # The offline Telethon seams live with the tests; a source checkout (make bench) has them.
    try:
        return importlib.import_module("tests.tg_harness")
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        return importlib.import_module("tests.tg_harness")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def arun(n: int = 100_000, sink: Sink | None = None) -> dict[str, Any]:
    h = _harness()
    from telethon import types

    counting = sink is None
    target: Any = h.RecordingSink(keep=False) if sink is None else sink
    fake = h.FakeTelegram()
    fake.add_channel(CHANNEL_ID, "benchchannel")
    fake.fill(CHANNEL_ID, [1])
    client = h.make_client(fake)
    source = TelegramSource(
        client,
        target,
        Health(lag_threshold=900),
        Settings(_env_file=None),
        channels=[h.Entry("benchchannel")],
        pace=0,
    )
    await source.start()
    chats = [fake.channels[CHANNEL_ID].chat]
    hashtag = types.MessageEntityHashtag(offset=3, length=9)

    async def feed(first: int, last: int) -> None:
        for i in range(first, last):
            text = _TEXT.format(i=i)
            msg = h.message(CHANNEL_ID, i, text, entities=[hashtag], views=i)
            await h.push(client, h.new_post(msg), chats=chats)

    warm = min(WARMUP, n)
    gc.collect()
    started = time.perf_counter()
    await feed(2, warm + 2)
    rss_first = _rss()
    await feed(warm + 2, n + 2)
    elapsed = time.perf_counter() - started
    rss_last = _rss()
    stored = await target.cursor(source.channels[0])
    await client.disconnect()
    if stored != n + 1:
        raise RuntimeError(f"bench dispatch: expected the last post {n + 1} stored, the sink has {stored}")
    return {
        "posts": n,
        "sink": "counting stopgap (no store)" if counting else type(target).__name__,
        "seconds": round(elapsed, 2),
        "posts_per_s": round(n / elapsed),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_first_10k_mb": round(rss_first / 2**20, 1),
        "rss_at_end_mb": round(rss_last / 2**20, 1),
        "rss_growth_pct": round(100 * (rss_last - rss_first) / rss_first, 2),
    }


def run(n: int = 100_000, sink: Sink | None = None) -> dict[str, Any]:
    """Feed `n` posts through the dispatch path into `sink` (a counting stand-in when None)."""
    result = asyncio.run(arun(n, sink))
    print(
        f"{result['posts']} posts in {result['seconds']} s: {result['posts_per_s']} posts/s "
        f"(sink: {result['sink']}); peak RSS {result['peak_rss_mb']} MB; RSS after the first "
        f"{WARMUP:,} posts {result['rss_after_first_10k_mb']} MB, at the end {result['rss_at_end_mb']} MB "
        f"({result['rss_growth_pct']:+.2f} %)"
    )
    return result


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
