"""The order of the stages, from a source's post to its deliveries. Read this file to see the flow.

    normalise -> store -> story -> index -> match -> baseline -> stale -> silenced -> duplicate -> hold
        -> fan-out -> revise

Each stage is a small value with one `run(session, batch)`; each lives in a module named after it.
They all run inside one transaction, so a batch is stored, matched and queued whole or not at all,
and every stage reads the one rule-set snapshot the batch was started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from bot.pipeline.baseline import Baseline
from bot.pipeline.batch import Batch, Preparing, Stage
from bot.pipeline.duplicate import Duplicate
from bot.pipeline.fanout import FanOut
from bot.pipeline.hold import Hold
from bot.pipeline.index import IndexPosts
from bot.pipeline.match import MatchRules
from bot.pipeline.normalise import Normalise
from bot.pipeline.revise import Revise
from bot.pipeline.silenced import Silenced
from bot.pipeline.stale import Stale
from bot.pipeline.store import StorePosts
from bot.pipeline.story import AssignStories
from bot.search import index as search_index
from bot.store.maintenance import Forget
from bot.stories import StoryConfig

if TYPE_CHECKING:
    from bot.settings import Settings


@dataclass(frozen=True, slots=True)
class Windows:
    """The stages' time windows (seconds) and thresholds, from the settings."""

    dedup_window: float = 86400.0
    max_alert_age: float = 86400.0
    story_window: float = 72 * 3600.0
    story_threshold: float = 0.7
    story_line_delay: float = 300.0

    @classmethod
    def of(cls, settings: Settings) -> Windows:
        return cls(
            dedup_window=settings.dedup_window,
            max_alert_age=settings.max_alert_age,
            story_window=settings.story_window,
            story_threshold=settings.story_threshold,
            story_line_delay=settings.story_line_delay,
        )

    @property
    def stories(self) -> StoryConfig:
        return StoryConfig(window=self.story_window, threshold=self.story_threshold)


def stages(windows: Windows = Windows()) -> tuple[Stage, ...]:
    return (
        Normalise(),  # text and entities -> Content: hashtags, title, fingerprint
        StorePosts(),  # upsert by (channel, message id); edits keep their history; the cursor moves
        AssignStories(windows.stories),  # near-duplicates across channels: one story, one id
        IndexPosts(),  # the search index: new posts in, edited ones' old words out and new ones in
        MatchRules(),  # the batch's rule set over new and edited posts; one match per rule and post
        # The alert filters: each drops what must not page anyone, and counts it.
        Baseline(),  # a new channel's history, a backfill, an import
        Stale(windows.max_alert_age),  # posts too old to be news
        Silenced(),  # rules muted with `tgsentinel silence`
        # The same post again, or its story (by the rule's `stories`): noted in the first alert instead.
        Duplicate(windows.dedup_window, windows.story_window),
        Hold(),  # throttle and digest: held, to be folded into one follow-up later
        FanOut(),  # an alert, and one delivery per destination
        Revise(windows.story_line_delay),  # alerts sent before their story spread: edited, or a line
    )


# What keeps its own record of posts beside `messages` and forgets pruned ones in the retention
# prune's own transactions (`bot.store.maintenance.Pruner`): the search index.
PRUNED: tuple[Forget, ...] = (search_index.catch_up,)


def preparing(pipeline: Sequence[Stage]) -> tuple[Preparing, ...]:
    """The stages with work to run ahead of the transaction, per post (see `Stage`)."""
    return tuple(stage for stage in pipeline if isinstance(stage, Preparing))


def run(session: Session, batch: Batch, pipeline: Sequence[Stage]) -> Batch:
    for stage in pipeline:
        stage.run(session, batch)
    return batch
