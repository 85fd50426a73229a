"""`tgsentinel replay`: a dump through the whole pipeline, then delivery, and what happened."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot.app import Pipeline
from bot.config.ruleset import RuleSet
from bot.settings import Settings
from bot.sources.dump import dump_items
from bot.sources.model import Incoming
from bot.store.db import release
from bot.store.migrate import open_store
from bot.store.models import Channel, Message


def batched(items: Iterable[Incoming], size: int = 500) -> Iterator[list[Incoming]]:
    batch: list[Incoming] = []
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
    """`tgsentinel replay`: a dump through the whole pipeline, then deliver and report."""
    out = out or sys.stdout
    err = err or sys.stderr
    rules = RuleSet.load(settings.rules_dir)
    store = open_store(settings.database_url)
    # stdout carries the JSON lines of new matches; console alerts go to stderr beside the summary.
    pipeline = Pipeline(settings, store, rules, console=err)
    started = datetime.now().astimezone()
    items = dump_items(text, channel)
    totals = dict.fromkeys(("read", "new", "unchanged", "duplicates", "matches"), 0)
    try:
        with _progress(len(items), err) as advance:
            for batch in batched(items, 1000):
                result = await pipeline.ingest.ingest(batch)
                for key in totals:
                    totals[key] += getattr(result, key)
                for msg_id, rule, terms in result.new_matches:
                    content = items[msg_id - 1].content
                    title = content.title if content else ""
                    out.write(
                        json.dumps(
                            {"index": msg_id - 1, "rule": rule, "terms": list(terms), "title": title},
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
                advance(len(batch))
        out.flush()
        delivered = await pipeline.drain(started, drain_timeout)
        if show:
            _show(store, channel, err)
    finally:
        await pipeline.aclose()
        release(store)
    print(
        f"replay {channel}: {totals['read']} posts read, {totals['new']} new, "
        f"{totals['unchanged']} unchanged, "
        f"{totals['duplicates']} duplicates by fingerprint, {totals['matches']} matches; deliveries: "
        + ", ".join(f"{delivered.get(s, 0)} {s}" for s in ("sent", "pending", "held", "dead")),
        file=err,
    )
    return {**totals, **{f"deliveries_{k}": v for k, v in delivered.items()}}


class _progress:
    """A progress bar on a terminal; nothing when piped."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.stream.isatty():
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(file=self.stream), transient=True)
        self._bar.start()
        task = self._bar.add_task("replaying", total=self.total)
        return lambda n: self._bar.advance(task, n)

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
