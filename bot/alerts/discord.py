"""Discord webhooks: one embed, `allowed_mentions: {"parse": []}`, sent with `?wait=true`.

Channel text is markdown-escaped (a backslash before every markdown or mention character), so
`@everyone`, `<@123>`, `**` or a masked link in a post show literally; `allowed_mentions` makes
sure nothing pings even if escaping missed something. Limits: title 256, description 4,096,
field name 256 and value 1,024, 6,000 for the whole embed, content 2,000.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC
from typing import Any

import httpx

from bot.alerts.config import DiscordDestination
from bot.alerts.http import Shared, check, detail, json_body, paced, post
from bot.alerts.model import AlertView, Permanent, RetryAfter, Sent
from bot.alerts.render import (
    Span,
    card,
    channel_line,
    clip,
    date_label,
    fit,
    headline,
    is_web_url,
    utf16_len,
)

TITLE, DESCRIPTION, FIELD_NAME, FIELD_VALUE, EMBED_TOTAL, CONTENT = 256, 4096, 256, 1024, 6000, 2000
FOOTER = "tgsentinel"
COLOURS = {"critical": 0x992D22, "high": 0xE74C3C, "medium": 0xE67E22, "low": 0x3498DB, "info": 0x95A5A6}

# Inline markup, mentions (`<@1>`, `@everyone`) and masked links (`[a](b)`) anywhere; block markup
# (headings, quotes, lists) only where it starts a line, so URLs keep their hyphens unescaped.
_INLINE = re.compile(r"([\\*_~`|<\[\]@])")
_LINE_START = re.compile(r"^([ \t]*)([-#>+])", re.MULTILINE)
_NUMBERED = re.compile(r"^([ \t]*\d+)\.", re.MULTILINE)

UNKNOWN_WEBHOOK = 10015  # Discord's JSON error code for a webhook that was deleted


def escape(text: str) -> str:
    text = _INLINE.sub(r"\\\1", text)
    return _NUMBERED.sub(r"\1\\.", _LINE_START.sub(r"\1\\\2", text))


def cost(text: str) -> int:
    # Discord measures in JavaScript string length: UTF-16 units, escapes included.
    return utf16_len(escape(text))


def _href(url: str) -> str:
    return url.replace("(", "%28").replace(")", "%29")


def overhead(span: Span) -> int:
    if span.style == "link":
        return len(_href(span.href or "")) + 4  # "[" label "](" url ")"
    return {"bold": 4, "italic": 2}.get(span.style, 0) if span.text.strip() else 0


def markdown(spans: Iterable[Span]) -> str:
    out: list[str] = []
    for span in spans:
        text = escape(span.text)
        if span.style == "link" and span.href:
            out.append(f"[{text}]({_href(span.href)})")
        elif span.style in ("bold", "italic") and text.strip():
            mark = "**" if span.style == "bold" else "_"
            lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
            out.append(f"{lead}{mark}{text.strip()}{mark}{trail}")
        else:
            out.append(text)
    return "".join(out)


def _text(value: str, budget: int) -> str:
    return markdown(fit((Span(value),), budget, cost))


def embed(view: AlertView) -> dict[str, Any]:
    if view.kind == "match":
        title = view.title or f"{view.rule_id} matched"
    elif view.kind == "ops":
        title = "tgsentinel"
    else:
        title = f"{view.rule_id}: {view.kind}"
    out: dict[str, Any] = {"title": _text(title, TITLE), "footer": {"text": FOOTER}}
    if is_web_url(view.url):
        out["url"] = view.url
    colour = COLOURS.get(view.severity.lower())
    if colour is not None:
        out["color"] = colour
    if view.date is not None:
        date = view.date if view.date.tzinfo else view.date.replace(tzinfo=UTC)
        out["timestamp"] = date.astimezone(UTC).isoformat()
    fields: list[tuple[str, str]] = []
    if view.kind != "ops":
        fields.append(("Rule", f"{view.rule_id} · {view.severity}"))
    if view.kind != "ops" and (view.channel_title or view.channel_username or view.channel_id):
        fields.append(("Channel", channel_line(view)))
    if view.kind == "match" and view.date is not None:
        fields.append(("Posted", date_label(view.date) or ""))
    if view.forwarded_from:
        fields.append(("Forwarded from", view.forwarded_from))
    if view.also_seen_in:
        fields.append(("Also seen in", ", ".join(view.also_seen_in)))
    out["fields"] = [
        {"name": _text(name, FIELD_NAME), "value": _text(value, FIELD_VALUE), "inline": len(value) < 40}
        for name, value in fields
        if value
    ]
    fixed = (
        utf16_len(out["title"])
        + len(FOOTER)
        + sum(utf16_len(f["name"]) + utf16_len(f["value"]) for f in out["fields"])
    )
    c = card(view)
    # The head's facts are in the title and fields already; the description is the post.
    body: list[Span] = list(c.body)
    if view.kind == "followup" and view.url and is_web_url(view.url):
        body.extend((Span("\n"), Span(view.url, "link", view.url)))
    for line in c.tail:
        if line and line[0].text.startswith("also seen in"):
            continue  # a field of its own
        body.extend((Span("\n\n"), *line))
    description = markdown(fit(tuple(body), min(DESCRIPTION, EMBED_TOTAL - fixed), cost, overhead))
    if description:
        out["description"] = description
    return out


def payload(view: AlertView) -> dict[str, Any]:
    return {
        "content": _text(clip(headline(view), CONTENT), CONTENT),
        "embeds": [embed(view)],
        "allowed_mentions": {"parse": []},
    }


class DiscordSender:
    def __init__(self, dest: DiscordDestination, shared: Shared) -> None:
        client, limits = shared.client, shared.limits
        self.destination = dest.name
        self._url = dest.url.get_secret_value()
        self._client = client
        self._timeout = dest.timeout
        self._limiter = limits.discord(self._url)
        self._max_wait = limits.policy.max_wait

    async def send(self, alert: AlertView) -> Sent:
        edit = alert.edit_of if alert.kind == "update" else None
        # An edit is the revised alert as it is now, in place of the message it became.
        body = payload(replace(alert, kind="match") if edit else alert)
        await paced(self._limiter, self._max_wait)
        if edit:
            url = httpx.URL(self._url.rstrip("/") + f"/messages/{edit}")
        else:
            url = httpx.URL(self._url).copy_merge_params({"wait": "true"})  # errors and the id come back
        resp = await post(
            self._client,
            str(url),
            destination=self.destination,
            timeout=self._timeout,
            method="PATCH" if edit else "POST",
            json=body,
        )
        self._note_bucket(resp)
        data = json_body(resp)
        retry = data.get("retry_after")
        try:
            check(
                resp,
                self.destination,
                self._url,
                retry_after=retry,
                reason=detail(resp, self._url),
            )
        except RetryAfter as exc:
            self._limiter.hold(exc.seconds)
            raise
        except Permanent as exc:
            # A deleted webhook answers 404 "Unknown Webhook": as final as a 410, so disable it too.
            if resp.status_code == 404 and data.get("code") == UNKNOWN_WEBHOOK:
                raise Permanent(exc.reason, gone=True) from None
            raise
        message_id = data.get("id")
        return Sent(None if message_id is None else str(message_id))

    def _note_bucket(self, resp: httpx.Response) -> None:
        """Wait before the next send when the bucket is empty, as the headers say."""
        if resp.headers.get("x-ratelimit-remaining") != "0":
            return
        try:
            reset_after = float(resp.headers.get("x-ratelimit-reset-after", ""))
        except ValueError:
            return
        self._limiter.hold(reset_after)
