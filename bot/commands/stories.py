"""`tgsentinel stories list`: the stories of a period, each with its channels and first post."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot import channel as channels
from bot.duration import parse_duration
from bot.errors import InputError
from bot.settings import load_settings
from bot.store.channels import now
from bot.store.migrate import open_store
from bot.store.models import Channel, Message

app = typer.Typer(help="Stories: one post and its near-duplicates across channels.", no_args_is_help=True)


def stories(session: Session, since_seconds: float, limit: int) -> list[dict[str, Any]]:
    """Stories with a post stored in the last `since_seconds`, newest first: the first post, its
    channel, how many posts, and which channels."""
    since = now() - timedelta(seconds=since_seconds)
    recent = (
        select(Message.story_id, func.count().label("posts"), func.max(Message.id).label("last"))
        .where(Message.created_at >= since, Message.story_id.is_not(None))
        .group_by(Message.story_id)
        .order_by(func.max(Message.id).desc())
        .limit(limit)
        .subquery()
    )
    rows = session.execute(select(recent.c.story_id, recent.c.posts).order_by(recent.c.last.desc())).all()
    ids = [r.story_id for r in rows]
    members: dict[int, list[tuple[Message, Channel]]] = {}
    for m, c in session.execute(
        select(Message, Channel)
        .join(Channel, Channel.id == Message.channel_id)
        .where(Message.story_id.in_(ids))
        .order_by(Message.id)
    ):
        members.setdefault(m.story_id or 0, []).append((m, c))
    out = []
    for story_id, count in rows:
        posts = members.get(story_id, [])
        first = posts[0][0]
        names = [
            channels.label(username=c.username, title=c.title, tg_id=c.tg_id, dump=c.dump) for _, c in posts
        ]
        out.append(
            {
                "story_id": story_id,
                "posts": count,
                "channels": list(dict.fromkeys(names)),
                "first": {
                    "channel": names[0],
                    "message_id": first.msg_id,
                    "date": (first.date or first.created_at).isoformat(),
                    "title": first.title,
                },
            }
        )
    return out


@app.command("list")
def list_stories(
    since: Annotated[
        str, typer.Option("--since", help="Stories with a post stored this recently (24h, 7d).")
    ] = "24h",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many stories.")] = 50,
    db: Annotated[str | None, typer.Option("--db", help="Database URL (default: the settings').")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of text.")] = False,
) -> None:
    """The stories of a period, newest first: each with its channels and its first post."""
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise InputError(f"--since {since!r}: {exc}") from None
    engine = open_store(load_settings(database_url=db).database_url)
    try:
        with Session(engine) as session:
            found = stories(session, seconds, limit)
    finally:
        engine.dispose()
    for s in found:
        if as_json:
            typer.echo(json.dumps(s, ensure_ascii=False))
            continue
        first = s["first"]
        where = ", ".join(s["channels"])
        typer.echo(f"story {s['story_id']}: {s['posts']} post(s) in {where}")
        title = (first["title"] or "")[:100]
        typer.echo(f"  first in {first['channel']} #{first['message_id']} at {first['date']}: {title}")
    if not found and not as_json:
        typer.echo(f"no stories in the last {since}", err=True)
