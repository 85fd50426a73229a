"""Stage: give every new post its story (bot.stories): the story of an earlier near-duplicate within
the window, or a new one whose id is the post's own row id.

The index lives in memory, built from the store the first time a batch runs (the window's posts,
with the story ids they were stored with), and follows the store: a batch's posts are seen by one
another at once but enter the index only once their transaction commits, so a batch that rolls back
leaves nothing behind. An edit keeps the story it had.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch
from bot.store.models import Message
from bot.stories import Stories, StoryConfig, StoryPost

log = logging.getLogger(__name__)

_REBUILD_BATCH = 5_000


class AssignStories:
    def __init__(self, config: StoryConfig = StoryConfig()) -> None:
        self.config = config
        self.stories: Stories | None = None

    def run(self, session: Session, batch: Batch) -> None:
        if self.stories is None:
            self.stories = rebuild(session, self.config, batch.stamp)
        draft = self.stories.draft()
        assigned = []
        for post in batch.posts:
            if post.is_edit:
                continue
            post.story_id = draft.assign(
                StoryPost(
                    post_id=post.message_id,
                    channel=str(post.channel.id),
                    time=post.item.date or batch.stamp,
                    text=post.content.text,
                    fingerprint=post.content.fingerprint,
                    media_key=post.item.media_key,
                )
            )
            assigned.append({"row": post.message_id, "story": post.story_id})
        if assigned:
            session.connection().execute(
                update(Message).where(Message.id == bindparam("row")).values(story_id=bindparam("story")),
                assigned,
            )
        batch.after_commit.append(lambda: draft.commit(batch.stamp))


def rebuild(session: Session, config: StoryConfig, now: datetime) -> Stories:
    """The index of the window's stored posts, oldest first, each under the story it was stored with."""
    started = time.perf_counter()
    since = now - timedelta(seconds=config.window)
    query = (
        select(
            Message.id,
            Message.story_id,
            Message.channel_id,
            Message.date,
            Message.created_at,
            Message.text,
            Message.fingerprint,
            Message.media_key,
        )
        .where(Message.created_at >= since, Message.deleted.is_(False))
        .order_by(Message.id)
        .execution_options(yield_per=_REBUILD_BATCH)
    )
    rows = (
        StoryPost(
            post_id=row_id,
            channel=str(channel_id),
            time=date or created,
            text=text,
            fingerprint=fingerprint,
            media_key=media_key,
            story_id=story_id,
        )
        for row_id, story_id, channel_id, date, created, text, fingerprint, media_key in session.execute(
            query
        )
    )
    stories = Stories.rebuild(rows, config)
    stories.expire(now)
    if len(stories.index):
        log.info(
            "stories: %d post(s) of the last %s indexed in %.1f s",
            len(stories.index),
            timedelta(seconds=config.window),
            time.perf_counter() - started,
        )
    return stories
