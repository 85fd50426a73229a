"""Telegram Bot API `sendMessage` in HTML parse mode, link previews off.

The visible text is cut to 4,096 UTF-16 code units *before* escaping (the limit counts text after
entity parsing), at grapheme boundaries and between tags; then every piece of it is escaped, so a
post containing `<b>` or `&` arrives literally.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from bot.alerts.config import TelegramDestination
from bot.alerts.http import DETAIL_WIDTH, Shared, check, json_body, paced, post
from bot.alerts.model import AlertView, RetryAfter, Sent
from bot.alerts.render import Span, card, layout, plain, utf16_len
from bot.redact import SECRETS

log = logging.getLogger(__name__)

LIMIT = 4096  # UTF-16 code units of visible text
PARSE_ERROR = "can't parse entities"
NOT_MODIFIED = "message is not modified"


def render_html(spans: Iterable[Span]) -> str:
    out: list[str] = []
    for span in spans:
        text = html.escape(span.text, quote=False)
        if span.style == "bold":
            out.append(f"<b>{text}</b>")
        elif span.style == "italic":
            out.append(f"<i>{text}</i>")
        elif span.style == "link" and span.href:
            out.append(f'<a href="{html.escape(span.href, quote=True)}">{text}</a>')
        else:
            out.append(text)
    return "".join(out)


def visible(view: AlertView) -> tuple[Span, ...]:
    return layout(card(view), LIMIT, utf16_len)


def _chat(chat: int | str) -> int | str:
    return int(chat) if isinstance(chat, str) and re.fullmatch(r"-?\d+", chat) else chat


class TelegramSender:
    def __init__(self, dest: TelegramDestination, shared: Shared) -> None:
        client, limits = shared.client, shared.limits
        self.destination = dest.name
        self._token = dest.bot_token.get_secret_value()
        self._api = dest.api_url.rstrip("/")
        self._url = f"{self._api}/bot{self._token}/sendMessage"
        self._edit_url = f"{self._api}/bot{self._token}/editMessageText"
        self._chat = _chat(dest.chat_id)
        self._thread = dest.thread_id
        self._client = client
        self._timeout = dest.timeout
        self._limits = limits

    @property
    def chat_id(self) -> int | str:
        """The chat sent to: the configured one, or where it migrated to."""
        return self._chat

    async def send(self, alert: AlertView) -> Sent:
        edit = alert.edit_of if alert.kind == "update" else None
        # An edit is the revised alert as it is now, in place of the message it became.
        spans = visible(replace(alert, kind="match") if edit else alert)
        body: dict[str, Any] = {
            "text": render_html(spans),
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
        url = self._url
        if edit:
            url = self._edit_url
            body["message_id"] = int(edit)
        elif self._thread is not None:
            body["message_thread_id"] = self._thread
        migrated = as_plain = False
        wait = True
        while True:
            limiter = self._limits.telegram(self._api, self._token, self._chat)
            if wait:
                await paced(limiter, self._limits.policy.max_wait)
            body["chat_id"] = self._chat
            resp = await post(
                self._client,
                url,
                destination=self.destination,
                secrets=(self._token,),
                timeout=self._timeout,
                json=body,
            )
            data = json_body(resp)
            if resp.is_success:
                result = data.get("result")
                message_id = result.get("message_id") if isinstance(result, dict) else None
                return Sent(None if message_id is None else str(message_id))
            params = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
            description = str(data.get("description") or resp.reason_phrase)
            reason = SECRETS.excerpt(description, DETAIL_WIDTH, self._token)
            if edit and resp.status_code == 400 and NOT_MODIFIED in reason.lower():
                return Sent(edit)  # it already says this (an edit retried after a lost answer)
            new_chat = params.get("migrate_to_chat_id")
            if new_chat is not None and not migrated:
                # The group became a supergroup: its old id is dead for good.
                log.warning(
                    "telegram destination %s: chat %s migrated to %s; sending there from now on "
                    "(update chat_id in the destination's config)",
                    self.destination,
                    self._chat,
                    new_chat,
                )
                self._chat = _chat(str(new_chat))
                migrated = wait = True
                continue
            if resp.status_code == 400 and PARSE_ERROR in reason.lower() and not as_plain:
                log.warning(
                    "telegram destination %s: HTML rejected (%s); resending as plain text",
                    self.destination,
                    reason,
                )
                body["text"] = plain(spans)
                body.pop("parse_mode", None)
                as_plain = True
                wait = False  # the rejected message was never posted: no slot was used
                continue
            retry = params.get("retry_after")
            try:
                check(
                    resp,
                    self.destination,
                    url,
                    retry_after=retry,
                    reason=reason,
                )
            except RetryAfter as exc:
                limiter.hold(exc.seconds)
                raise
            return Sent(None)  # unreachable: check() raises on every non-2xx
