"""Generic JSON webhooks, signed with Standard Webhooks headers when a secret is configured.

`webhook-id` is the alert's idempotency key, the same on every retry, so a receiver can drop
duplicates; `webhook-timestamp` is the time of this attempt; `webhook-signature` is
`v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")) with key = base64-decoded part of
the `whsec_...` secret. The body is sent as exactly the bytes that were signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from bot.alerts.config import WebhookDestination
from bot.alerts.http import Shared, check, detail, paced, post
from bot.alerts.model import AlertView, RetryAfter, Sent


def payload(view: AlertView, max_text: int) -> dict[str, Any]:
    """The JSON body. A post's text is cut at `max_text` characters (a 100k-character post would
    make a body no receiver wants), with `truncated` saying so and hits past the cut left out."""
    text = view.text[:max_text]
    out: dict[str, Any] = {
        "type": "ops" if view.kind == "ops" else "alert",
        "id": view.id,
        "kind": view.kind,
        "rule": {"id": view.rule_id, "severity": view.severity},
        "channel": {"id": view.channel_id, "username": view.channel_username, "title": view.channel_title},
        "message": {
            "id": view.message_id,
            "date": view.date.isoformat() if view.date else None,
            "url": view.url,
            "title": view.title,
            "text": text,
            "truncated": len(view.text) > max_text,
            "hashtags": list(view.hashtags),
            "forwarded_from": view.forwarded_from,
            "fingerprint": view.fingerprint,
        },
        # Offsets are code points into message.text (Python str indices).
        "hits": [{"term": h.term, "start": h.start, "end": h.end} for h in view.hits if h.end <= len(text)],
        "also_seen_in": list(view.also_seen_in),
        "story_id": view.story_id,
    }
    if view.kind == "update":
        out["revises"] = view.revises  # the id of the alert whose story spread
    if view.kind != "match":
        out["summary"] = view.summary
        out["items"] = [payload(item, max_text) for item in view.items]
    return out


def encode(view: AlertView, max_text: int) -> bytes:
    return json.dumps(payload(view, max_text), ensure_ascii=False, separators=(",", ":")).encode()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookSender:
    def __init__(self, dest: WebhookDestination, shared: Shared) -> None:
        client, limits = shared.client, shared.limits
        self.destination = dest.name
        self._url = dest.url.get_secret_value()
        self._secret = dest.secret.get_secret_value() if dest.secret else None
        self._key = dest.hmac_key()  # the model checked the secret: `rules check` says so too
        self._headers = dict(dest.headers)
        self._client = client
        self._timeout = dest.timeout
        self._max_text = dest.max_text
        self._limiter = limits.webhook(self._url)
        self._max_wait = limits.policy.max_wait

    def headers(self, alert: AlertView, body: bytes, now: float | None = None) -> httpx.Headers:
        headers = httpx.Headers(self._headers)
        # Set after the custom headers so that no configured header can replace them.
        headers["content-type"] = "application/json"
        # The id and timestamp go out unsigned too: receivers dedup by webhook-id either way.
        timestamp = int(time.time() if now is None else now)
        headers["webhook-id"] = alert.id
        headers["webhook-timestamp"] = str(timestamp)
        if self._key is not None:
            headers["webhook-signature"] = signature(self._key, alert.id, timestamp, body)
        return headers

    async def send(self, alert: AlertView) -> Sent:
        body = encode(alert, self._max_text)
        await paced(self._limiter, self._max_wait)
        resp = await post(
            self._client,
            self._url,
            destination=self.destination,
            secrets=tuple(filter(None, (self._secret,))),
            timeout=self._timeout,
            content=body,
            headers=self.headers(alert, body),
        )
        reason = detail(resp, self._url, *filter(None, (self._secret,)))
        try:
            check(resp, self.destination, self._url, reason=reason)
        except RetryAfter as exc:
            self._limiter.hold(exc.seconds)
            raise
        return Sent(None)
