"""Text dumps as a source: a flattened channel's posts, for `replay`, benchmarks and tests."""

from __future__ import annotations

from bot.parse import parse_dump
from bot.sources.model import ChannelRef, Forward, Incoming


def dump_items(text: str, channel: str) -> list[Incoming]:
    """A dump's posts as incoming posts of channel dump:NAME, with their 1-based position as id."""
    ref = ChannelRef(dump=channel, title=f"dump:{channel}")
    return [
        Incoming(
            channel=ref,
            message_id=post.index + 1,
            text=post.content.text,
            media=list(post.content.media),
            content=post.content,
            forward=Forward(name=post.forwarded_from) if post.forwarded_from else None,
        )
        for post in parse_dump(text)
    ]
