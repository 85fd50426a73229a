"""Stage: give every new post its story (bot.stories): the story of an earlier near-duplicate within
the window, or a new one whose id is the post's own row id.

The index lives in memory, built from the store the first time a batch runs (the window's posts,
with the story ids they were stored with), and follows the store: a batch's posts are seen by one
another at once but enter the index only once their transaction commits, so a batch that rolls back
leaves nothing behind. An edit keeps the story it had.

Several processes on one PostgreSQL agree on story ids because the store decides the order: batch
transactions take turns (`bot.store.db.one_writer`), so row ids grow in commit order, and each batch
first reads the posts other processes committed since its last (ids past the highest it has seen).
A copy written at the same moment by another worker is therefore either committed and read here, or
waits for this batch and reads it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from bot.pipeline.batch import Batch
from bot.store.db import chunks
from bot.store.models import Message
from bot.stories import Draft, Stories, StoryConfig, StoryPost

log = logging.getLogger(__name__)

_REBUILD_BATCH = 5_000


class AssignStories:
    def __init__(self, config: StoryConfig = StoryConfig()) -> None:
        self.config = config
        self.stories: Stories | None = None
        self.seen = 0  # the highest row id the index has been given (or found nothing to give)

    def run(self, session: Session, batch: Batch) -> None:
        if self.stories is None:
            self.stories = Stories(self.config)
            self._catch_up(session, batch.stamp, rebuild=True)
        else:
            self._catch_up(session, batch.stamp)
        draft = self.stories.draft()
        new = [post for post in batch.posts if not post.is_edit]
        stories = draft.assign_all(
            [
                StoryPost(
                    post_id=post.message_id,
                    channel=str(post.channel.id),
                    time=post.item.date or batch.stamp,
                    text=post.content.text,
                    fingerprint=post.content.fingerprint,
                    media_key=post.item.media_key,
                )
                for post in new
            ]
        )
        own, joined = [], []  # a new story's id is its first post's row id
        for post, story in zip(new, stories, strict=True):
            post.story_id = story
            if story == post.message_id:
                own.append(story)
            else:
                joined.append({"row": post.message_id, "story": story})
        connection = session.connection()
        for ids in chunks(own):
            connection.execute(update(Message).where(Message.id.in_(ids)).values(story_id=Message.id))
        if joined:
            connection.execute(
                update(Message).where(Message.id == bindparam("row")).values(story_id=bindparam("story")),
                joined,
            )
        batch.after_commit.append(lambda: self._committed(draft, batch))

    def _committed(self, draft: Draft, batch: Batch) -> None:
        draft.commit(batch.stamp)
        self.seen = max([self.seen, *(p.message_id for p in batch.posts if not p.is_edit)])

    def _catch_up(self, session: Session, now: datetime, *, rebuild: bool = False) -> None:
        """Index the window's posts stored past `seen`: all of them at start, then other processes'."""
        assert self.stories is not None
        started = time.perf_counter()
        before = len(self.stories.index)
        since = now - timedelta(seconds=self.config.window)
        last = self.seen

        def tracked() -> Iterator[StoryPost]:  # streamed: a whole window's texts never in memory at once
            nonlocal last
            for post in stored_posts(session, since, self.seen):
                last = post.post_id  # oldest first
                yield post

        self.stories.add_stored(tracked())
        self.seen = max(self.seen, last)
        added = len(self.stories.index) - before
        if added:
            self.stories.expire(now)
        if rebuild:
            # Past the history too, so the next batches' look for other processes' posts starts here.
            self.seen = max(self.seen, session.scalar(select(func.max(Message.id))) or 0)
        if rebuild and added:
            log.info(
                "stories: %d post(s) of the last %s indexed in %.1f s",
                added,
                timedelta(seconds=self.config.window),
                time.perf_counter() - started,
            )


def stored_posts(session: Session, since: datetime, after: int = 0) -> Iterator[StoryPost]:
    """The posts committed since `since` with a row id past `after`, oldest first, with their stories."""
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
        .where(
            Message.created_at >= since,
            Message.id > after,
            Message.deleted.is_(False),
            Message.story_id.is_not(None),  # not this batch's own new rows, which are being assigned
        )
        .order_by(Message.id)
        .execution_options(yield_per=_REBUILD_BATCH)
    )
    return (
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
