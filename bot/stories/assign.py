"""Which story a new post belongs to: the one entry point a pipeline stage calls.

    stories = Stories(StoryConfig())              # or Stories.rebuild(rows) at start
    found = stories.assign(post)                  # read only: no state changes
    story_id = found.story_id or <a new story>    # the store decides, in the stage's transaction
    stories.add(found, story_id)                  # after the commit: index it, learn its lines

Tests in order, cheapest first: the exact fingerprint; the same media (Telegram's file_unique_id,
or a photo URL's hash) with no text on one side or text at least `media_threshold` alike; then
MinHash-LSH candidates whose estimated Jaccard similarity of shingles is at least `threshold`.
Candidates are limited to posts within `window` seconds of the new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

import numpy as np
import xxhash

from bot.parse.media import media_key
from bot.stories.boilerplate import Boilerplate
from bot.stories.index import Hit, StoryIndex
from bot.stories.minhash import Hasher, band_keys
from bot.stories.shingles import SIZE, canonical, post_lines, shingles, shingles_many, short_lines

FINGERPRINT, MEDIA, TEXT = "fingerprint", "media", "text"
# A signature (None: no text), its LSH band keys, and the post's short lines.
Sketch = tuple[np.ndarray | None, list[int] | None, tuple[bytes, ...]]
_SKETCH_CHUNK = 256
__all__ = ["media_key"]  # defined with the media vocabulary, where the sources reach it


@dataclass(frozen=True, slots=True)
class StoryConfig:
    window: float = 72 * 3600.0  # seconds
    threshold: float = 0.7  # estimated Jaccard similarity of shingles for the same story
    media_threshold: float = 0.5  # the same when both posts carry the same file
    num_perm: int = 64
    bands: int = 10
    rows: int = 3
    shingle: int = SIZE
    # A post is known by its first `max_words` words (after boilerplate), read from at most 12 times
    # as many characters: what a copy keeps of a long post, and the bound on the work per post.
    max_words: int = 64
    max_segment: int = 131_072  # posts per frozen index segment: bounds the copy a merge makes
    seed: int = 1
    bucket_cap: int = 16  # newest posts looked at per LSH bucket / fingerprint / media key
    active_size: int = 4096


@dataclass(frozen=True, slots=True)
class StoryPost:
    """What the index needs of a post. `time` is the post's date (a datetime, or epoch seconds)."""

    post_id: int
    channel: str
    time: datetime | float
    text: str
    fingerprint: str | None = None  # Content.fingerprint (hex); taken from `text` when None
    media_key: str | None = None  # see `media_key`
    story_id: int | None = None  # set on rows read back from the store, for `rebuild`


@dataclass(frozen=True, slots=True)
class Candidate:
    """The earlier post a new one matched, and why."""

    story_id: int
    post_id: int
    similarity: float
    reason: str  # FINGERPRINT, MEDIA or TEXT


@dataclass(frozen=True, slots=True)
class Assignment:
    """`assign`'s answer: the candidate (None: a new story) and what `add` indexes, computed once."""

    post: StoryPost
    candidate: Candidate | None
    time: float
    sig: np.ndarray | None = field(repr=False)
    fp: int = 0
    media: int = 0
    lines: tuple[bytes, ...] = field(default=(), repr=False)  # its short cleaned lines, to learn
    keys: list[int] | None = field(default=None, repr=False)  # the signature's LSH band keys

    @property
    def story_id(self) -> int | None:
        return self.candidate.story_id if self.candidate else None


def _index(c: StoryConfig, active_size: int) -> StoryIndex:
    return StoryIndex(
        num_perm=c.num_perm,
        bands=c.bands,
        rows=c.rows,
        window=c.window,
        bucket_cap=c.bucket_cap,
        active_size=active_size,
        max_segment=c.max_segment,
    )


def _key(value: str | None) -> int:
    return (xxhash.xxh3_64_intdigest(value.encode("utf-8")) or 1) if value else 0


def _seconds(t: datetime | float) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


class Stories:
    def __init__(self, config: StoryConfig | None = None, boilerplate: Boilerplate | None = None) -> None:
        self.config = c = config or StoryConfig()
        self.hasher = Hasher(c.num_perm, c.seed)
        self.boilerplate = boilerplate if boilerplate is not None else Boilerplate()
        self.index = _index(c, c.active_size)

    def words(self, channel: str, text: str) -> tuple[list[bytes], tuple[bytes, ...]]:
        """The words a post is known by (its first `max_words`, its channel's boilerplate left out),
        and its short lines, to learn."""
        most = self.config.max_words
        rows = post_lines(text[: 12 * most])
        short = tuple(short_lines(rows, self.boilerplate.max_words))
        known = self.boilerplate.lines(channel)
        if known and not known.isdisjoint(short):
            rows = [r for r in rows if canonical(r) not in known]
        return b" ".join(rows).split(None, most)[:most], short

    def sketch(self, channel: str, text: str) -> Sketch:
        """The post's signature (None: no text left once cleaned), its band keys, and its short lines,
        to learn."""
        words, short = self.words(channel, text)
        if not words:
            return None, None, short
        sig = self.hasher.signature(shingles(words, self.config.shingle))
        return sig, self.index.keys(sig), short

    def sketches(self, posts: Sequence[StoryPost]) -> list[Sketch]:
        """`sketch` of many posts, the hashing done for all of them at once (the same values)."""
        c = self.config
        out: list[Sketch] = []
        for start in range(0, len(posts), _SKETCH_CHUNK):  # bounds the (permutations x shingles) array
            chunk = [self.words(p.channel, p.text) for p in posts[start : start + _SKETCH_CHUNK]]
            hashes, counts = shingles_many([words for words, _ in chunk], c.shingle)
            sigs = self.hasher.signatures(hashes, counts[counts > 0]) if hashes.size else None
            keyed = (
                iter(())
                if sigs is None
                else zip(sigs, band_keys(sigs, c.bands, c.rows).tolist(), strict=True)
            )
            for (_, short), n in zip(chunk, counts, strict=True):
                out.append((*next(keyed), short) if n else (None, None, short))
        return out

    def assign(
        self, post: StoryPost, also: StoryIndex | None = None, sketched: Sketch | None = None
    ) -> Assignment:
        """The story `post` joins (its candidate), or None for a new one. Changes nothing.

        `also`: a second index searched with this one (a `Draft`'s posts, not committed yet);
        `sketched`: the post's `sketch`, when worked out already."""
        c = self.config
        time = _seconds(post.time)
        fp_hex = post.fingerprint
        if fp_hex is None and post.text.strip():
            from bot.parse.fingerprint import fingerprint

            fp_hex = fingerprint(post.text)
        fp = int(fp_hex[:16], 16) or 1 if fp_hex else 0
        media = _key(post.media_key)
        indexes = (self.index,) if also is None else (self.index, also)
        exact = [h for index in indexes for h in index.by_fingerprint(fp, time)]
        if exact:
            # The same words: the same story, and the same signature as the earliest copy's, so the
            # shingling is skipped. Its lines are not learned: a repost must not make a story boilerplate.
            best = min(exact, key=lambda h: (h.time, h.post_id))
            sig = best.sig
            return Assignment(
                post, Candidate(best.story_id, best.post_id, 1.0, FINGERPRINT), time, sig, fp, media
            )
        sig, keys, keyed = sketched if sketched is not None else self.sketch(post.channel, post.text)
        found: list[tuple[Hit, str]] = []
        if media:
            found += [
                (h, MEDIA)
                for index in indexes
                for h in index.by_media(media, time, sig)
                if h.similarity >= c.media_threshold
            ]
        if sig is not None:
            found += [
                (h, TEXT)
                for index in indexes
                for h in index.by_text(sig, time, keys)
                if h.similarity >= c.threshold
            ]
        candidate = None
        if found:
            # Most alike first; among equals the earliest post, so the answer does not depend on order.
            hit, reason = min(found, key=lambda hr: (-hr[0].similarity, hr[0].time, hr[0].post_id))
            candidate = Candidate(hit.story_id, hit.post_id, hit.similarity, reason)
        return Assignment(post, candidate, time, sig, fp, media, keyed, keys)

    def add(self, found: Assignment, story_id: int, *, learn: bool = True) -> None:
        """Index the post under `story_id` (what the store committed), and learn its lines."""
        self.index.insert(
            found.post.post_id, story_id, found.time, found.sig, found.fp, found.media, found.keys
        )
        if learn and found.lines:
            self.boilerplate.learn(found.post.channel, found.lines)

    def learn(self, channel: str, text: str) -> None:
        """Learn a channel's boilerplate from a post older than the window (not indexed)."""
        rows = post_lines(text[: 12 * self.config.max_words])
        self.boilerplate.learn(channel, short_lines(rows, self.boilerplate.max_words))

    def draft(self) -> Draft:
        """A batch's assignments, seen by one another at once and by the index only once committed."""
        return Draft(self)

    def expire(self, now: datetime | float) -> int:
        return self.index.expire(_seconds(now))

    @classmethod
    def rebuild(cls, rows: Iterable[StoryPost], config: StoryConfig | None = None) -> Stories:
        """An index from stored posts, oldest first: each row keeps its stored `story_id`; a row without
        one is assigned as a live post would be (its own id starting a new story)."""
        stories = cls(config)
        last = stories.add_stored(rows)
        if last is not None:
            stories.expire(last)
        return stories

    def add_stored(self, rows: Iterable[StoryPost]) -> float | None:
        """Index posts the store already holds, oldest first, under their stored `story_id` (or,
        without one, the story a live post would get). Returns the last one's time, in epoch seconds.

        Sketched a chunk at a time, each chunk with the boilerplate learned before it."""
        last = None
        rows = iter(rows)
        while chunk := list(islice(rows, _SKETCH_CHUNK)):
            for row, sketched in zip(chunk, self.sketches(chunk), strict=True):
                found = self.assign(row, sketched=sketched)
                self.add(found, row.story_id if row.story_id is not None else (found.story_id or row.post_id))
                last = found.time
        return last


class Draft:
    """The posts of one transaction: assigned against the index and each other, added to the index by
    `commit` once the store has committed their story ids. A batch that rolls back leaves no trace."""

    def __init__(self, stories: Stories) -> None:
        self.stories = stories
        self.index = _index(stories.config, active_size=1 << 62)  # never frozen: a batch is small
        self.assigned: list[tuple[Assignment, int]] = []

    def assign(self, post: StoryPost, sketched: Sketch | None = None) -> int:
        """The post's story id: its candidate's, or its own id for a new story."""
        found = self.stories.assign(post, self.index, sketched)
        story = found.story_id if found.story_id is not None else post.post_id
        self.index.insert(post.post_id, story, found.time, found.sig, found.fp, found.media, found.keys)
        self.assigned.append((found, story))
        return story

    def assign_all(self, posts: Sequence[StoryPost]) -> list[int]:
        """`assign` of each post in turn, their sketches worked out together."""
        return [self.assign(p, s) for p, s in zip(posts, self.stories.sketches(posts), strict=True)]

    def commit(self, now: datetime | float) -> None:
        """Into the index, and what is older than the window (by the clock, `now`: a post's own date
        may lie) out of it."""
        for found, story in self.assigned:
            self.stories.add(found, story)
        self.stories.expire(now)
        self.assigned = []
