"""Slack, by incoming webhook or by bot token (which can edit): Block Kit sections in mrkdwn, with a
plain `text` fallback.

Slack's only markup escapes are `&`, `<` and `>`; escaping them in all channel text means a post
containing `<!channel>` or `<@U123>` shows literally and pings nobody. Limits: 3,000 characters
per section text (counted as sent, i.e. escaped), 50 blocks per message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from bot.alerts.config import SlackDestination
from bot.alerts.http import Shared, check, detail, json_body, paced, post, where
from bot.alerts.model import AlertView, Permanent, RetryAfter, Sent, Transient
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
from bot.redact import SECRETS

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


# Web API errors (HTTP 200, "ok": false) that a later try may not meet; the rest are final.
_TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
# Final for every message, not only this one: the destination is disabled, as by a 410.
_GONE_ERRORS = frozenset({"token_revoked", "account_inactive", "invalid_auth", "not_authed", "team_disabled"})


class SlackSender:
    """An incoming webhook (`url`), or a bot token posting by chat.postMessage, which answers the
    message's channel and ts: its provider id, "CHANNEL/TS", which chat.update edits."""

    def __init__(self, dest: SlackDestination, shared: Shared) -> None:
        client, limits = shared.client, shared.limits
        self.destination = dest.name
        self._token = dest.token.get_secret_value() if dest.token is not None else None
        self._channel = dest.channel
        self._api = dest.api_url.rstrip("/")
        self._url = dest.url.get_secret_value() if dest.url is not None else f"{self._api}/chat.postMessage"
        self._client = client
        self._timeout = dest.timeout
        self._limiter = limits.slack(self._url)
        self._max_wait = limits.policy.max_wait

    async def send(self, alert: AlertView) -> Sent:
        edit = alert.edit_of if alert.kind == "update" and self._token is not None else None
        # An edit is the revised alert as it is now, in place of the message it became.
        body = payload(replace(alert, kind="match") if edit else alert)
        url, headers, secrets = self._url, {}, ()
        if self._token is not None:
            headers = {"Authorization": f"Bearer {self._token}"}
            secrets = (self._token,)
            if edit:
                channel, _, ts = edit.partition("/")
                url = f"{self._api}/chat.update"
                body |= {"channel": channel, "ts": ts}
            else:
                body["channel"] = self._channel
        await paced(self._limiter, self._max_wait)
        resp = await post(
            self._client,
            url,
            destination=self.destination,
            secrets=secrets,
            timeout=self._timeout,
            headers=headers,
            json=body,
        )
        try:
            check(resp, self.destination, url, reason=detail(resp, url, *secrets))
        except RetryAfter as exc:
            self._limiter.hold(exc.seconds)
            raise
        if self._token is None:
            return Sent(None)  # an incoming webhook answers "ok": no message id
        data = json_body(resp)
        if data.get("ok") is not True:
            error = str(data.get("error") or "no ok in the answer")[:100]
            reason = f"{where(self.destination, url)}: {SECRETS.excerpt(error, 100, *secrets)}"
            if error in _TRANSIENT_ERRORS:
                raise Transient(reason)
            raise Permanent(reason, gone=error in _GONE_ERRORS)
        return Sent(f"{data.get('channel') or self._channel}/{data.get('ts')}")
