"""Stories: near-duplicate posts across channels, found so that one story alerts once.

`Stories.assign(post)` answers which earlier post (and so which story) a new post continues, by exact
fingerprint, media identity or MinHash-LSH over word shingles; `Stories.add` indexes it once the store
has committed its story id. See `bot.stories.assign`.
"""

from bot.stories.assign import (
    FINGERPRINT,
    MEDIA,
    TEXT,
    Assignment,
    Candidate,
    Draft,
    Stories,
    StoryConfig,
    StoryPost,
    media_key,
)

__all__ = [
    "FINGERPRINT",
    "MEDIA",
    "TEXT",
    "Assignment",
    "Candidate",
    "Draft",
    "Stories",
    "StoryConfig",
    "StoryPost",
    "media_key",
]
