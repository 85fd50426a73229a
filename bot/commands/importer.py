"""`tgsentinel import EXPORT`: a Telegram Desktop export (`result.json`) into the store, as history.

Each message goes through the one ingest path (`Ingest`, as every source's posts do), keyed to its
channel by the export's bare channel id, the id Telethon and the web preview key it by, with its own
message id: importing twice adds nothing, and a channel the monitor watches gets its history under
the same row. Every post is marked as baseline (`Incoming.alert = False`): stored and matched, so
`rules test --db` sees it, and never alerted, whatever its age.

The export is streamed (`bot.parse.export`) in batches, so memory does not grow with the file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TextIO

from bot.commands.replay import batched, prefetched, progress_bar
from bot.config.ruleset import RuleSet
from bot.errors import InputError
from bot.pipeline.compose import Windows
from bot.pipeline.ingest import Ingest
from bot.settings import Settings
from bot.sources.files import FilePost, InputFile
from bot.store.db import release, run_sync
from bot.store.maintenance import analyze
from bot.store.migrate import open_store

BATCH = 1000


def _history(posts: Iterator[FilePost]) -> Iterator[FilePost]:
    for post in posts:
        post.item.alert = False  # the baseline filter: history is stored and matched, never alerted
        yield post


async def import_export(
    settings: Settings, path: str, *, err: TextIO | None = None, batch_size: int = BATCH
) -> dict[str, int]:
    """Import an export; prints a summary on `err` (and a progress bar there when it is a terminal)."""
    err = err or sys.stderr
    with InputFile(path) as source:
        if source.format != "export":
            kind = "a text dump" if source.format == "dump" else "a saved t.me/s page"
            raise InputError(
                f"{source.name}: {kind}, not a Telegram Desktop export (result.json); "
                "`tgsentinel replay` reads it"
            )
        rules = RuleSet.load(settings.rules_dir)
        store = open_store(settings.database_url)
        ingest = Ingest(
            store,
            rules=lambda: rules,
            windows=Windows.of(settings),
        )
        totals = dict.fromkeys(("read", "new", "updated", "unchanged", "duplicates", "matches"), 0)
        try:
            with progress_bar(source.size, err, "importing") as advance:
                posts = _history(source.posts(channels_only=True))
                async for batch in prefetched(batched(posts, batch_size)):
                    result = await ingest.ingest([p.item for p in batch])
                    for key in totals:
                        totals[key] += getattr(result, key)
                    advance(source.position(), absolute=True)
            await run_sync(store, analyze, store)
        finally:
            release(store)
        stats = source.stats
    skipped_chats = [c for c in stats.chats if not c.is_channel]
    channels = [c for c in stats.chats if c.is_channel]
    names = ", ".join(f"{c.name or '?'} (-100{c.id})" for c in channels[:5])
    names += " ..." if len(channels) > 5 else ""
    posts_read = f"{totals['read']} post{'s' * (totals['read'] != 1)} read"
    service = f"{stats.service} service message{'s' * (stats.service != 1)}"
    print(
        f"import {source.name}: {len(channels)} channel{'s' * (len(channels) != 1)}"
        f"{': ' + names if channels else ''}; {posts_read}, {totals['new']} new, "
        f"{totals['updated']} updated, {totals['unchanged']} unchanged, {totals['matches']} matches "
        f"(history: not alerted); skipped {service}, {stats.unsupported} unsupported"
        + (
            f", {len(skipped_chats)} chats that are not channels ("
            + ", ".join(f"{c.name or c.id}: {c.type}" for c in skipped_chats[:5])
            + (" ..." if len(skipped_chats) > 5 else "")
            + ")"
            if skipped_chats
            else ""
        ),
        file=err,
    )
    return {
        **totals,
        "channels": len(channels),
        "service": stats.service,
        "unsupported": stats.unsupported,
        "skipped_chats": len(skipped_chats),
    }
