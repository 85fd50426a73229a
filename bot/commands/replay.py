"""`tgsentinel replay`: a dump, a page or an export through the whole pipeline, then delivery, and
what happened."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TextIO, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot.app import Pipeline
from bot.config.ruleset import RuleSet
from bot.settings import Settings
from bot.sources.dump import dump_items
from bot.sources.files import FilePost, InputFile
from bot.store.db import release
from bot.store.migrate import open_store
from bot.store.models import Channel, Message

T = TypeVar("T")


async def prefetched(batches: Iterator[list[T]]) -> AsyncIterator[list[T]]:
    """Batches made in a worker thread (reading and parsing a file is blocking work), the next one
    while the caller stores the last: only one thread advances the iterator at a time."""
    upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    while (batch := await upcoming) is not None:
        upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
        yield batch


def batched(items: Iterable[T], size: int = 500) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def replay(
    settings: Settings,
    text: str,
    channel: str,
    *,
    drain_timeout: float = 60.0,
    show: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> dict[str, int]:
    """`tgsentinel replay` of a dump's text: through the whole pipeline, then deliver and report."""
    items = dump_items(text, channel)
    posts = (FilePost(item.message_id - 1, item, item.content) for item in items if item.content)
    return await replay_posts(
        settings, posts, channel, progress=(len(items), None), drain_timeout=drain_timeout, show=show,
        out=out, err=err,
    )


async def replay_file(settings: Settings, path: str, channel: str, **kwargs: Any) -> dict[str, int]:
    """`tgsentinel replay FILE`: a dump, a saved t.me/s page or a Desktop export, as channel dump:NAME."""
    with InputFile(path) as source:
        progress = (source.size, source.position) if source.format == "export" else (None, None)
        return await replay_posts(settings, source.posts(dump=channel), channel, progress=progress, **kwargs)


async def replay_posts(
    settings: Settings,
    posts: Iterable[FilePost],
    channel: str,
    *,
    progress: tuple[int | None, Callable[[], int] | None] = (None, None),
    drain_timeout: float = 60.0,
    show: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> dict[str, int]:
    """Posts through the whole pipeline in batches, then delivery; one JSON line per new match."""
    out = out or sys.stdout
    err = err or sys.stderr
    rules = RuleSet.load(settings.rules_dir)
    store = open_store(settings.database_url)
    # stdout carries the JSON lines of new matches; console alerts go to stderr beside the summary.
    pipeline = Pipeline(settings, store, rules, console=err)
    started = datetime.now().astimezone()
    totals = dict.fromkeys(("read", "new", "unchanged", "duplicates", "matches"), 0)
    total, position = progress
    try:
        with progress_bar(total, err) as advance:
            async for batch in prefetched(batched(posts, 1000)):
                result = await pipeline.ingest.ingest([p.item for p in batch])
                for key in totals:
                    totals[key] += getattr(result, key)
                by_id = {p.item.message_id: p for p in batch}
                for msg_id, rule, terms in result.new_matches:
                    post = by_id.get(msg_id)
                    line = {"index": post.index if post else msg_id - 1, "rule": rule, "terms": list(terms)}
                    line["title"] = post.content.title if post else ""
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                advance(position() if position else len(batch), absolute=position is not None)
        out.flush()
        delivered = await pipeline.drain(started, drain_timeout)
        if show:
            _show(store, channel, err)
    finally:
        await pipeline.aclose()
        release(store)
    print(
        f"replay {channel}: {totals['read']} post{'s' * (totals['read'] != 1)} read, {totals['new']} new, "
        f"{totals['unchanged']} unchanged, "
        f"{totals['duplicates']} duplicates by fingerprint, {totals['matches']} matches; deliveries: "
        + ", ".join(f"{delivered.get(s, 0)} {s}" for s in ("sent", "pending", "held", "dead")),
        file=err,
    )
    return {**totals, **{f"deliveries_{k}": v for k, v in delivered.items()}}


class progress_bar:
    """A progress bar on a terminal (stderr); nothing when piped. `total` is posts, or bytes of a
    streamed export (then each step gives the bytes read so far, `absolute`); None: unknown."""

    def __init__(self, total: int | None, stream: TextIO, label: str = "replaying") -> None:
        self.total = total
        self.stream = stream
        self.label = label
        self._bar: Any = None

    def __enter__(self) -> Callable[..., None]:
        if not self.stream.isatty():
            return lambda n, absolute=False: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(file=self.stream), transient=True)
        self._bar.start()
        task = self._bar.add_task(self.label, total=self.total)

        def advance(n: int, absolute: bool = False) -> None:
            if absolute:
                self._bar.update(task, completed=n)
            else:
                self._bar.advance(task, n)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _show(store: Engine, channel: str, stream: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    with Session(store) as session:
        rows = session.execute(
            select(Message.msg_id, Message.title, Message.hashtags, Message.media, Message.forwarded_from)
            .join(Channel, Channel.id == Message.channel_id)
            .where(Channel.dump == f"dump:{channel}")
            .order_by(Message.msg_id)
        ).all()
    table = Table(title=f"dump:{channel}: {len(rows)} posts stored")
    table.add_column("id", justify="right", min_width=2)
    for name, width in (("title", 60), ("hashtags", 30), ("media", 11), ("forwarded from", 16)):
        table.add_column(name, no_wrap=True, max_width=width, min_width=min(width, 11), overflow="ellipsis")
    for msg_id, title, hashtags, media, fwd in rows:
        table.add_row(str(msg_id), title, " ".join(f"#{h}" for h in hashtags), ",".join(media), fwd or "")
    Console(file=stream, width=None if stream.isatty() else 130).print(table)
