"""`python -m bot.bench.web`: t.me/s pages per second through the page parser, best of several runs.

The pages are generated in the preview's markup, 20 posts each as t.me serves them: emoji images,
hashtag links, line breaks, text links, forwards, reply quotes, albums with their placeholders.
Every post's words carry its page and post number, so no two pages are alike.
"""

from __future__ import annotations

import base64
import random
import time

from bot.sources.webpage import parse_page

_WORDS = tuple(
    " ".join(
        [
            "minister foreign cooperation security council meeting agenda regional development partners",
            "министр переговоры сотрудничество безопасность развитие торговля делегация саммит заявление",
        ]
    ).split()
)
_TAGS = ("CIS", "BRICS", "SCO", "СНГ", "ЕАЭС")
_EMOJI = (
    '<i class="emoji" style="background-image:url(\'//telegram.org/img/emoji/40/F09F8E99.png\')"><b>🎙</b></i>'
)
_UNSUPPORTED = (
    '<div class="media_not_supported_cont"><div class="message_media_not_supported">'
    '<div class="message_media_not_supported_label">Please open Telegram to view this post</div>'
    '<a href="https://t.me/bench/1?single" class="message_media_view_in_telegram">VIEW IN TELEGRAM</a>'
    "</div></div>"
)


def _post(rng: random.Random, page: int, mid: int) -> str:
    view = base64.urlsafe_b64encode(f'{{"c":-1115678342,"p":{mid}}}'.encode()).decode().rstrip("=")
    lines = []
    for n in range(rng.randint(3, 8)):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(10, 30)))
        tag = rng.choice(_TAGS)
        lines.append(f'{_EMOJI} {words} ({page}.{mid}.{n}) <a href="?q=%23{tag}">#{tag}</a>')
    text = "<br/><br/>".join(lines) + '<br/><a href="https://mid.ru/news/1">Read in full</a>'
    extra = ""
    if mid % 4 == 0:
        extra += (
            '<div class="tgme_widget_message_forwarded_from accent_color">Forwarded from '
            '<a class="tgme_widget_message_forwarded_from_name" href="https://t.me/mfarussia/20285">'
            "<span>Russian MFA</span></a></div>"
        )
    if mid % 5 == 0:
        extra += (
            '<a class="tgme_widget_message_reply" href="https://t.me/bench/1">'
            '<div class="tgme_widget_message_text js-message_reply_text">quoted words</div></a>'
        )
    if mid % 6 == 0:
        extra += _UNSUPPORTED * 2
    return (
        '<div class="tgme_widget_message_wrap js-widget_message_wrap"><div class="tgme_widget_message '
        f'text_not_supported_wrap js-widget_message" data-post="bench/{mid}" data-view="{view}">'
        '<div class="tgme_widget_message_bubble"><div class="tgme_widget_message_author accent_color">'
        '<a class="tgme_widget_message_owner_name" href="https://t.me/bench"><span>Bench</span></a></div>'
        f'{extra}<div class="tgme_widget_message_text js-message_text" dir="auto">{text}</div>'
        '<div class="tgme_widget_message_footer compact js-message_footer">'
        '<div class="tgme_widget_message_info">'
        '<span class="tgme_widget_message_views">4.2K</span><span class="tgme_widget_message_meta">'
        f'<a class="tgme_widget_message_date" href="https://t.me/bench/{mid}">'
        '<time datetime="2024-08-18T12:04:05+00:00" class="time">15:04</time></a></span></div></div>'
        "</div></div></div>"
    )


def generate_pages(n_pages: int, per_page: int = 20, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pages = []
    for page in range(n_pages):
        first = 1 + page * per_page
        posts = "".join(_post(rng, page, mid) for mid in range(first, first + per_page))
        pages.append(
            '<html><body><div class="tgme_channel_info"><div class="tgme_channel_info_header_title">'
            '<span>Bench</span></div></div><section class="tgme_channel_history">'
            f'<a class="tme_messages_more" data-before="{first}" href="/s/bench?before={first}"></a>'
            f"{posts}</section></body></html>"
        )
    return pages


def run(n_pages: int = 500, repeat: int = 3) -> dict:
    pages = generate_pages(n_pages)
    size = sum(len(p.encode()) for p in pages)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        posts = sum(len(parse_page(p).posts) for p in pages)
        best = min(best, time.perf_counter() - started)
    return {
        "pages": n_pages,
        "posts": posts,
        "kb_per_page": round(size / n_pages / 1024, 1),
        "best_seconds": round(best, 4),
        "pages_per_s": round(n_pages / best),
        "posts_per_s": round(posts / best),
    }


if __name__ == "__main__":
    print(run())
