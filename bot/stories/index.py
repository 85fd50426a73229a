"""The window's posts, searchable three ways: exact fingerprint, media identity, and MinHash-LSH.

Memory is the constraint (300 MB for a million posts), so nothing is kept per post as a Python object
once the post leaves the small mutable `_Active` part. Posts are kept column-wise in numpy: id,
story, time (whole seconds), an 8-bit-per-value signature, and, per LSH band, one 32-bit key in a
sorted array searched with `searchsorted`. Frozen segments merge as a binary counter does (two of
about the same size become one), so a query looks at a handful of sorted arrays; merging and `expire`
drop posts older than the window, so memory follows the window and not the history.

datasketch's `MinHashLSH` keeps a Python set per bucket and a bytes object per band per key, several
kilobytes a post at these sizes; the banding here is the same (b bands of r rows, a candidate shares
a whole band). With the default 10 bands of 3 rows a pair whose similarity is 0.7 becomes a candidate
with probability 1 - (1 - 0.7**3)**10 = 0.985 (0.74 at 0.5, 0.24 at 0.3); candidates are then checked
against the threshold on the whole signature.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from bot.stories.minhash import band_keys, post_band_keys, similarity


@dataclass(frozen=True, slots=True)
class Hit:
    post_id: int
    story_id: int
    time: float
    similarity: float
    sig: np.ndarray | None = None  # set by `by_fingerprint`: an exact copy reuses it


class _Segment:
    """Frozen posts, oldest first."""

    __slots__ = (
        "bkeys",
        "brows",
        "fkeys",
        "frows",
        "ids",
        "mkeys",
        "mrows",
        "sigs",
        "stories",
        "texts",
        "times",
    )

    def __init__(
        self,
        ids: np.ndarray,
        stories: np.ndarray,
        times: np.ndarray,
        sigs: np.ndarray,
        texts: np.ndarray,
        fps: np.ndarray,
        media: np.ndarray,
        bands: int,
        rows: int,
    ) -> None:
        self.ids, self.stories, self.times, self.sigs, self.texts = ids, stories, times, sigs, texts
        flat = band_keys(sigs, bands, rows).ravel()
        order = np.argsort(flat, kind="stable")  # stable: within a key, rows stay oldest first
        brows = (order // bands).astype(np.int32)
        keep = texts[brows]  # a post without text is in no band
        self.bkeys, self.brows = flat[order][keep], brows[keep]
        self.fkeys, self.frows = _sorted(fps)
        self.mkeys, self.mrows = _sorted(media)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fps(self) -> np.ndarray:
        out = np.zeros(len(self), dtype=np.uint64)
        out[self.frows] = self.fkeys
        return out

    @property
    def media(self) -> np.ndarray:
        out = np.zeros(len(self), dtype=np.uint64)
        out[self.mrows] = self.mkeys
        return out

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self.__slots__)


def _sorted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(keys).astype(np.int32)  # 0: none
    order = np.argsort(keys[rows], kind="stable")
    return keys[rows][order], rows[order]


def _lookup(keys: np.ndarray, rows: np.ndarray, key: int, cap: int) -> np.ndarray:
    """The rows holding `key`, the newest `cap` of them."""
    k = np.uint64(key)
    lo, hi = int(np.searchsorted(keys, k, "left")), int(np.searchsorted(keys, k, "right"))
    return rows[max(lo, hi - cap) : hi]


class _Active:
    """The newest posts, until there are enough to freeze: columns in `array`s, and each key's rows as
    a chain (the key's newest row in a dict, each row's previous one with the same key in an array).

    Nothing here is a container per post or per key: the garbage collector, which walks every list
    on every full collection, has a handful of objects to look at however many posts there are.
    """

    def __init__(self, bands: int) -> None:
        self.bands = bands
        self.ids = array("q")
        self.stories = array("q")
        self.times = array("q")
        self.sigs: list[np.ndarray] = []
        self.texts = array("b")
        self.fps = array("Q")
        self.media = array("Q")
        # band key -> its newest slot (row * bands + band); band_prev[slot]: the slot before, or -1
        self.band_head: dict[int, int] = {}
        self.band_prev = array("q")
        self.fp_head: dict[int, int] = {}  # fingerprint -> its newest row; fp_prev[row]: the one before
        self.fp_prev = array("q")
        self.media_head: dict[int, int] = {}
        self.media_prev = array("q")

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self,
        post_id: int,
        story_id: int,
        time: int,
        sig: np.ndarray,
        has: bool,
        fp: int,
        media: int,
        keys: list[int] | None,
    ) -> None:
        row = len(self.ids)
        self.ids.append(post_id)
        self.stories.append(story_id)
        self.times.append(time)
        self.sigs.append(sig)
        self.texts.append(has)
        self.fps.append(fp)
        self.media.append(media)
        if keys is None:
            self.band_prev.extend(_NONE * self.bands)
        else:
            head, prev = self.band_head, self.band_prev
            slot = row * self.bands
            for key in keys:
                prev.append(head.get(key, -1))
                head[key] = slot
                slot += 1
        _link(self.fp_head, self.fp_prev, fp, row)
        _link(self.media_head, self.media_prev, media, row)

    def rows(self, head: dict[int, int], prev: array, key: int, cap: int, per: int = 1) -> list[int]:
        """The rows holding `key`, newest first, at most `cap` of them (`per`: slots per row)."""
        out = []
        slot = head.get(key, -1)
        while slot >= 0 and len(out) < cap:
            out.append(slot // per)
            slot = prev[slot]
        return out


_NONE = array("q", [-1])


def _link(head: dict[int, int], prev: array, key: int, row: int) -> None:
    prev.append(head.get(key, -1) if key else -1)
    if key:
        head[key] = row


class StoryIndex:
    """Posts of the last `window` seconds, by fingerprint, media and text signature.

    `fp` and `media` are 64-bit keys (0: none); `sig` is a `Hasher.signature`, or None for a post with
    no text left after cleaning.
    """

    def __init__(
        self,
        *,
        num_perm: int,
        bands: int,
        rows: int,
        window: float,
        bucket_cap: int = 16,
        active_size: int = 4096,
        max_segment: int = 131_072,
    ) -> None:
        if bands * rows > num_perm:
            raise ValueError(f"{bands} bands of {rows} rows need {bands * rows} permutations, not {num_perm}")
        self.num_perm, self.bands, self.rows, self.window = num_perm, bands, rows, window
        self.bucket_cap, self.active_size, self.max_segment = bucket_cap, active_size, max_segment
        self._segments: list[_Segment] = []
        self._active = _Active(bands)
        self._empty_sig = np.zeros(num_perm, dtype=np.uint8)
        self._cutoff = -np.inf  # posts older than this are gone, whether or not yet dropped

    # --- writing --------------------------------------------------------------------------------

    def keys(self, sig: np.ndarray) -> list[int]:
        """The signature's band keys, to pass to `by_text` and `insert` (computed once per post)."""
        return post_band_keys(sig, self.bands, self.rows)

    def insert(
        self,
        post_id: int,
        story_id: int,
        time: float,
        sig: np.ndarray | None,
        fp: int = 0,
        media: int = 0,
        keys: list[int] | None = None,
    ) -> None:
        a = self._active
        if sig is not None and keys is None:
            keys = self.keys(sig)
        # whole seconds, as the frozen segments keep them
        a.add(
            post_id,
            story_id,
            int(time),
            self._empty_sig if sig is None else sig,
            sig is not None,
            fp,
            media,
            keys if sig is not None else None,
        )
        if len(a) >= self.active_size:
            self._freeze()

    def _freeze(self) -> None:
        a = self._active
        seg = _Segment(
            np.array(a.ids, dtype=np.int64),
            np.array(a.stories, dtype=np.int64),
            np.array(a.times, dtype=np.uint32),
            np.stack(a.sigs),
            np.array(a.texts, dtype=bool),
            np.array(a.fps, dtype=np.uint64),
            np.array(a.media, dtype=np.uint64),
            self.bands,
            self.rows,
        )
        self._active = _Active(self.bands)
        seg = self._filtered(seg) or seg
        if len(seg):
            self._segments.append(seg)
        while (
            len(self._segments) >= 2
            and len(self._segments[-2]) <= 2 * len(self._segments[-1])
            and len(self._segments[-2]) + len(self._segments[-1]) <= self.max_segment
        ):
            newer = self._segments.pop()
            older = self._segments.pop()
            merged = self._build(*(np.concatenate([getattr(older, c), getattr(newer, c)]) for c in _COLUMNS))
            if len(merged):
                self._segments.append(merged)

    def _build(self, ids, stories, times, sigs, texts, fps, media) -> _Segment:
        alive = times >= self._cutoff
        if not alive.all():
            ids, stories, times, sigs, texts, fps, media = (
                c[alive] for c in (ids, stories, times, sigs, texts, fps, media)
            )
        return _Segment(ids, stories, times, sigs, texts, fps, media, self.bands, self.rows)

    def _filtered(self, seg: _Segment) -> _Segment | None:
        """The segment without its expired posts, or None when it has none."""
        if not len(seg) or float(seg.times.min()) >= self._cutoff:
            return None
        return self._build(*(getattr(seg, c) for c in _COLUMNS))

    def expire(self, now: float) -> int:
        """Forget posts older than `now - window`. Returns how many posts are left."""
        self._cutoff = max(self._cutoff, now - self.window)
        kept = []
        for seg in self._segments:
            if not len(seg) or float(seg.times.max()) < self._cutoff:
                continue
            # Rewriting costs the segment's size: worth it once a quarter of it is dead.
            dead = int((seg.times < self._cutoff).sum())
            if dead * 4 >= len(seg):
                seg = self._filtered(seg) or seg
            kept.append(seg)
        self._segments = kept
        if self._active.times and min(self._active.times) < self._cutoff and len(self._active):
            self._freeze()
        return len(self)

    # --- reading --------------------------------------------------------------------------------

    def _near(self, t: float, time: float) -> bool:
        return t >= self._cutoff and abs(t - time) <= self.window

    def by_fingerprint(self, fp: int, time: float) -> list[Hit]:
        return self._exact(fp, time, "fp")

    def by_media(self, media: int, time: float, sig: np.ndarray | None) -> list[Hit]:
        """Posts with the same media; similarity 1.0 where either side has no text."""
        return self._exact(media, time, "media", sig)

    def _exact(self, key: int, time: float, kind: str, sig: np.ndarray | None = None) -> list[Hit]:
        if not key:
            return []
        hits: list[Hit] = []
        for seg in self._segments:
            keys, rows = (seg.fkeys, seg.frows) if kind == "fp" else (seg.mkeys, seg.mrows)
            for r in _lookup(keys, rows, key, self.bucket_cap).tolist():
                t = float(seg.times[r])
                if self._near(t, time):
                    has = bool(seg.texts[r])
                    sim = 1.0 if sig is None or not has else float(similarity(sig, seg.sigs[r][None])[0])
                    own = seg.sigs[r].copy() if kind == "fp" and has else None
                    hits.append(Hit(int(seg.ids[r]), int(seg.stories[r]), t, sim, own))
        a = self._active
        head, prev = (a.fp_head, a.fp_prev) if kind == "fp" else (a.media_head, a.media_prev)
        for r in reversed(a.rows(head, prev, key, self.bucket_cap)):
            t = a.times[r]
            if self._near(t, time):
                has = a.texts[r]
                sim = 1.0 if sig is None or not has else float(similarity(sig, a.sigs[r][None])[0])
                hits.append(Hit(a.ids[r], a.stories[r], t, sim, a.sigs[r] if kind == "fp" and has else None))
        return hits

    def by_text(self, sig: np.ndarray, time: float, keys: list[int] | None = None) -> list[Hit]:
        """LSH candidates (posts sharing a whole band), with their estimated Jaccard similarity."""
        keys = keys if keys is not None else self.keys(sig)
        query = np.array(keys, dtype=np.uint32)
        hits: list[Hit] = []
        cap = self.bucket_cap
        for seg in self._segments:
            lo = np.searchsorted(seg.bkeys, query, "left")
            hi = np.searchsorted(seg.bkeys, query, "right")
            found = np.flatnonzero(hi > lo)
            if not len(found):
                continue
            rows = np.unique(np.concatenate([seg.brows[max(lo[i], hi[i] - cap) : hi[i]] for i in found]))
            times = seg.times[rows]
            ok = (times >= self._cutoff) & (np.abs(times - time) <= self.window)
            rows = rows[ok]
            if not len(rows):
                continue
            sims = similarity(sig, seg.sigs[rows])
            hits += map(
                Hit,
                seg.ids[rows].tolist(),
                seg.stories[rows].tolist(),
                seg.times[rows].tolist(),
                sims.tolist(),
            )
        a = self._active
        if a.band_head:
            rows_a: set[int] = set()
            head = a.band_head
            for key in keys:
                if key in head:  # most keys are in no bucket
                    rows_a.update(a.rows(head, a.band_prev, key, cap, self.bands))
            for r in sorted(rows_a):
                t = a.times[r]
                if self._near(t, time):
                    hits.append(Hit(a.ids[r], a.stories[r], t, float(similarity(sig, a.sigs[r][None])[0])))
        return hits

    # --- size -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(s) for s in self._segments) + len(self._active)

    @property
    def segments(self) -> int:
        return len(self._segments)

    def nbytes(self) -> int:
        """The numpy arrays' bytes (the frozen posts); the active part is at most `active_size` posts."""
        return sum(s.nbytes() for s in self._segments)


_COLUMNS = ("ids", "stories", "times", "sigs", "texts", "fps", "media")
