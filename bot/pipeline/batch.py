"""What the stages pass along: one batch of posts, the rule set it is judged by, and what each stage
found. A stage reads what the stages before it left here and adds its own part."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.orm import Session

from bot.config.ruleset import RuleSet
from bot.parse.model import Content
from bot.rules.engine import Ahead
from bot.rules.model import RuleMatch
from bot.sources.model import Incoming, Rejected
from bot.store.models import Channel, Match


@dataclass(slots=True)
class Post:
    """A post that is new or whose text changed: what the match and alert stages look at."""

    item: Incoming
    content: Content
    channel: Channel
    message_id: int  # the store's row id
    is_edit: bool
    story_id: int | None = None  # set by the story stage (an edit keeps the story it had)


@dataclass(slots=True)
class Candidate:
    """A recorded match on its way to becoming an alert; each filter lets it through or drops it."""

    post: Post
    rule: RuleMatch
    match: Match
    also_seen_in: list[str] = field(default_factory=list)  # filled by the duplicate filter
    hold_key: str | None = None  # set by the hold stage: throttled or gathered into a digest
    hold_until: datetime | None = None

    @property
    def channel_id(self) -> int:
        return self.post.channel.id


# A stage's `prepare` results for one batch: stage -> id(content) -> what it returned. Keyed by the
# content object the batch carries (its item holds it), so a post edited since is never mistaken.
Ready = dict[object, dict[int, Any]]


@dataclass(slots=True)
class Batch:
    items: Sequence[Incoming]
    rules: RuleSet | None  # one snapshot for the whole batch; None: store only, match nothing
    stamp: datetime  # the batch's "now", the same in every row it writes
    ahead: Ahead | None = None  # the matches worked out before the transaction, off the store's thread
    ready: Ready = field(default_factory=dict)  # what the stages' `prepare` worked out, off it too
    prepared: list[tuple[Incoming, Content]] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    matched: list[Candidate] = field(default_factory=list)  # every match recorded
    candidates: list[Candidate] = field(default_factory=list)  # those the filters have let through
    deliveries: list[int] = field(default_factory=list)  # pending ids: the worker is woken for them
    revised: set[int] = field(default_factory=set)  # sent alerts whose `also_seen_in` grew
    counts: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)
    # Counted here and published by the ingest path once the batch is committed: a batch that fails
    # and is stored again post by post must not count its posts twice.
    ingested: Counter[str] = field(default_factory=Counter)  # channel key -> new posts stored
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> inputs passed over
    rejected: list[Rejected] = field(default_factory=list)  # posts that could not be stored
    # Run once the batch's transaction has committed (in-memory state that must follow the store).
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def keep(self, reason: str, wanted: Callable[[Candidate], bool]) -> None:
        """Drop the candidates `wanted` refuses, counted under `reason`."""
        kept = [c for c in self.candidates if wanted(c)]
        self.suppress(reason, len(self.candidates) - len(kept))
        self.candidates = kept

    def made(self, stage: object, content: Content) -> Any | None:
        """What `stage.prepare(content)` returned ahead of the transaction, or None (not run)."""
        return self.ready.get(stage, {}).get(id(content))

    def suppress(self, reason: str, n: int = 1) -> None:
        if n:
            self.suppressed[reason] += n

    def absorb(self, other: Batch) -> None:
        """Take in what a smaller batch of the same posts found (the ingest path's post-by-post retry)."""
        self.prepared.extend(other.prepared)
        self.posts.extend(other.posts)
        self.matched.extend(other.matched)
        self.candidates.extend(other.candidates)
        self.deliveries.extend(other.deliveries)
        self.revised.update(other.revised)
        self.counts.update(other.counts)
        self.suppressed.update(other.suppressed)
        self.ingested.update(other.ingested)
        self.dropped.update(other.dropped)
        self.rejected.extend(other.rejected)


class Stage(Protocol):
    """One step from post to delivery. It runs inside the batch's one transaction.

    A stage with CPU work per post that needs no store (tokenizing, say) also has `prepare(content)`:
    the ingest runs it ahead, in the match thread, over the whole batch, so the store's one thread
    spends no time on it; `run` finds each result with `batch.made(self, content)` and works out
    whatever is missing itself (a post that failed to normalise or prepare there, a batch stored
    through `Ingest.ingest_sync` directly).
    """

    def run(self, session: Session, batch: Batch) -> None: ...


@runtime_checkable
class Preparing(Stage, Protocol):
    """A stage with work to do ahead of the transaction (see `Stage`)."""

    def prepare(self, content: Content) -> Any: ...
