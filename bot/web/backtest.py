"""Rules run over the stored posts: `tgsentinel rules test --db` and the archive's "try a rule".

Both read the store through `stored_posts` and match through `bot.rules.backtest` (the engine the
monitor runs), so a rule tried in the browser finds what the command line finds.

It lives here, under the pages, because it needs the store and the alerts' link rule
(`bot.alerts.render.post_url`), which sit above `bot.rules` in the layers; the command line is above
both and imports it from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.alerts.render import post_url
from bot.channel import key
from bot.rules.engine import MatchInput
from bot.store.channels import names
from bot.store.db import release
from bot.store.migrate import open_store
from bot.store.models import Channel, Message

PAGE = 1000  # rows fetched per round trip: memory stays flat over a million posts


def stored_posts(
    session: Session, since: datetime | None = None, *, newest_first: bool = False, row_ids: bool = False
) -> Iterator[tuple[dict[str, Any], MatchInput]]:
    """Every stored post as `(fields, input)` for `bot.rules.backtest.backtest`, oldest first (by
    arrival) or newest first. `fields`: `message_id`, `channel` (its key), `date`, `url` (its t.me
    link, where the channel has a username), `title`; with `row_ids`, also `row_id` (messages.id, the
    archive's post page) and `text` (what the hits' offsets point into)."""
    # The channels are few: read once, not joined into every row.
    channels = {c.id: c for c in session.scalars(select(Channel))}
    query = select(
        Message.id,
        Message.channel_id,
        Message.msg_id,
        Message.date,
        Message.title,
        Message.text,
        Message.hashtags,
        Message.forwarded_from,
        Message.fwd_tg_id,
    ).order_by(Message.id.desc() if newest_first else Message.id)
    if since is not None:
        when = since if since.tzinfo else since.astimezone()
        query = query.where(func.coalesce(Message.date, Message.created_at) >= when)
    for row in session.execute(query.execution_options(yield_per=PAGE)):
        channel = channels.get(row.channel_id)
        if channel is None:  # stored after the channels were read; the next run sees it
            continue
        date = row.date
        if date is not None and date.tzinfo is None:
            date = date.replace(tzinfo=UTC)  # the store keeps UTC
        fields: dict[str, Any] = {
            "message_id": row.msg_id,
            "channel": key(username=channel.username, tg_id=channel.tg_id, dump=channel.dump),
            "date": date.isoformat() if date is not None else None,
            "url": post_url(channel.username, row.msg_id),
            "title": row.title,
        }
        if row_ids:
            fields = {"row_id": row.id, **fields, "text": row.text}
        yield (
            fields,
            MatchInput(
                text=row.text,
                hashtags=tuple(row.hashtags or ()),
                channel_names=names(channel),
                is_forward=row.forwarded_from is not None or row.fwd_tg_id is not None,
            ),
        )


def posts_at(url: str, since: datetime | None = None) -> Iterator[tuple[dict[str, Any], MatchInput]]:
    """`stored_posts` of the store at `url`, opened for the iteration and released after it."""
    store = open_store(url, create=False)
    try:
        with Session(store) as session:
            yield from stored_posts(session, since)
    finally:
        release(store)
