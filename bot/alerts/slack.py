"""Slack incoming webhooks: Block Kit sections in mrkdwn, with a plain `text` fallback.

Slack's only markup escapes are `&`, `<` and `>`; escaping them in all channel text means a post
containing `<!channel>` or `<@U123>` shows literally and pings nobody. Limits: 3,000 characters
per section text (counted as sent, i.e. escaped), 50 blocks per message.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.alerts.config import SlackDestination
from bot.alerts.http import Shared, check, detail, paced, post
from bot.alerts.model import AlertView, RetryAfter, Sent
from bot.alerts.render import (
    Line,
    Span,
    card,
    clip,
    digest_item,
    fit,
    hashtags,
    headline,
    plain,
)

SECTION = 3000
MAX_BLOCKS = 50
ITEM_BLOCKS = 45  # a digest's items, leaving room for the header, summary and "and N more"


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cost(text: str) -> int:
    return len(escape(text))


def overhead(span: Span) -> int:
    if span.style == "link":
        return len(escape(span.href or "")) + 3  # "<" url "|" ... ">"
    return 2 if span.style in ("bold", "italic") and span.text.strip() else 0


def mrkdwn(spans: Iterable[Span]) -> str:
    out: list[str] = []
    for span in spans:
        text = escape(span.text)
        if span.style == "link" and span.href:
            out.append(f"<{escape(span.href)}|{text}>")
        elif span.style in ("bold", "italic") and text.strip():
            mark = "*" if span.style == "bold" else "_"
            # Slack only honours markers that touch the word: keep surrounding spaces outside.
            core = text.strip()
            lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
            out.append(f"{lead}{mark}{core}{mark}{trail}")
        else:
            out.append(text)
    return "".join(out)


def section(spans: Iterable[Span]) -> dict | None:
    text = mrkdwn(fit(tuple(spans), SECTION, cost, overhead)).strip()
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}} if text else None


def _lines(lines: Iterable[Line]) -> list[Span]:
    spans: list[Span] = []
    for line in lines:
        if spans:
            spans.append(Span("\n"))
        spans.extend(line)
    return spans


def payload(view: AlertView) -> dict:
    c = card(view)
    blocks: list[dict | None] = [section(_lines(c.head))]
    if view.kind == "digest":
        blocks.append(section((Span(view.summary or f"{len(view.items)} matches"),)))
        for item in view.items[:ITEM_BLOCKS]:
            blocks.append(section(digest_item(item)))
        if len(view.items) > ITEM_BLOCKS:
            blocks.append(section((Span(f"… and {len(view.items) - ITEM_BLOCKS} more", "italic"),)))
    else:
        blocks.append(section(c.body))
    context = [mrkdwn(fit(line, SECTION, cost, overhead)) for line in c.tail]
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in context]})
    kept = [b for b in blocks if b][:MAX_BLOCKS]
    fallback = clip(headline(view), SECTION, cost)
    if view.kind == "match" and view.hashtags:
        fallback = clip(f"{fallback} {hashtags(view)}", SECTION, cost)
    return {"text": escape(fallback) or escape(plain(c.body))[:SECTION], "blocks": kept}


class SlackSender:
    def __init__(self, dest: SlackDestination, shared: Shared) -> None:
        client, limits = shared.client, shared.limits
        self.destination = dest.name
        self._url = dest.url.get_secret_value()
        self._client = client
        self._timeout = dest.timeout
        self._limiter = limits.slack(self._url)
        self._max_wait = limits.policy.max_wait

    async def send(self, alert: AlertView) -> Sent:
        body = payload(alert)
        await paced(self._limiter, self._max_wait)
        resp = await post(
            self._client, self._url, destination=self.destination, timeout=self._timeout, json=body
        )
        try:
            check(resp, self.destination, self._url, reason=detail(resp, self._url))
        except RetryAfter as exc:
            self._limiter.hold(exc.seconds)
            raise
        return Sent(None)  # Slack answers "ok": no message id
