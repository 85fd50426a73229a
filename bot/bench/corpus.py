"""A generated dump shaped like the sample: headers, titles, doubled bodies, hashtags, placeholders.

Every line carries its post and line number, so no line repeats across posts and no cache keyed on
lines can make the parser look faster than it is.
"""

from __future__ import annotations

import random

_ENGLISH = (
    "minister foreign cooperation security council meeting agenda regional development partners "
    "integration economy trade energy infrastructure statement delegation summit talks agreement "
    "the of and in to with on for a an its their our Commonwealth Eurasia Moscow Valletta Geneva"
)
_RUSSIAN = (
    "министр переговоры сотрудничество безопасность развитие торговля делегация саммит заявление "
    "в и на с по для о их наш партнёры интеграция экономика энергетика инфраструктура совет встреча"
)
_EMOJI = ("🗓", "🎙", "💬", "❗️", "🔹", "👉", "☝️", "📄", "🇷🇺", "✅", "🤝", "⚠️")
_TAGS = ("CIS", "EAEU", "BRICS", "SCO", "CSTO", "RussiaUN", "Announcement", "СНГ", "ЕАЭС", "Moldova")
_CHANNELS = ("Russian MFA 🇷🇺", "World News Daily", "МИД России 🇷🇺")
_UNSUPPORTED = "Please open Telegram to view this post"
_TOO_BIG = "Media is too big"
_VIEW = "VIEW IN TELEGRAM"


def _line(rng: random.Random, vocabulary: list[str], post: int, number: int, words: int) -> str:
    body = " ".join(rng.choice(vocabulary) for _ in range(words))
    tag = f" #{rng.choice(_TAGS)}" if rng.random() < 0.25 else ""
    return f"{rng.choice(_EMOJI)} {body.capitalize()} (item {post}.{number}){tag}."


def generate_dump(n_posts: int = 10_000, seed: int = 0) -> str:
    """A dump of exactly `n_posts` posts, about the sample's size (20 lines, 3 KB each)."""
    rng = random.Random(seed)
    languages = [_ENGLISH.split(), _ENGLISH.split(), _RUSSIAN.split()]
    out: list[str] = []
    for post in range(n_posts):
        kind = post % 10
        vocabulary = languages[post % 3]
        title = _line(rng, vocabulary, post, 0, rng.randint(8, 16))
        if kind == 6 and post > 0:
            # A header-less media post after a doubled one, as in the sample: text once, album twice.
            out += [title, f"#{rng.choice(_TAGS)}{post}", _UNSUPPORTED, _VIEW, _UNSUPPORTED, _VIEW]
            continue
        out.append(f"Forwarded from {rng.choice(_CHANNELS)}")
        if kind == 9:
            out += [_TOO_BIG, _VIEW]
        block = [
            _line(rng, vocabulary, post, k, rng.randint(18, 40)) for k in range(1, rng.randint(6, 10) + 1)
        ]
        if rng.random() < 0.3:
            block.append(f"#{rng.choice(_TAGS)} #{rng.choice(_TAGS)}{post}")
        if kind == 3:
            # Sometimes the second copy includes the title.
            block.insert(0, title)
            out += block + block
        else:
            out += [title, *block, *block]
    return "\n".join(out) + "\n"
