"""Channels: the page (/channels) and its JSON twin (/api/channels).

Each channel as the store knows it (posts stored, the last post's date, when the last one arrived)
and, served by `tgsentinel run`, as `/healthz` knows it (app.state.health): its source, state, lag,
last sweep, last error and FloodWait. Served by `tgsentinel web` alone there is no monitor, so no
health: the store's view, and the rules' channels with the source they ask for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import channel as channels
from bot.health import span
from bot.redact import SECRETS
from bot.store.models import Channel, Message
from bot.web.page import blocking, iso, render, store
from bot.web.rules import loaded


def _aware(value: Any) -> datetime | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def stored_channels(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every channel of the store by key: label, posts stored, last post date, last stored (blocking)."""
    with Session(engine) as session:
        per = {
            channel_id: (n, last_date, last_stored)
            for channel_id, n, last_date, last_stored in session.execute(
                select(
                    Message.channel_id,
                    func.count(Message.id),
                    func.max(Message.date),
                    func.max(Message.created_at),
                ).group_by(Message.channel_id)
            )
        }
        out: dict[str, dict[str, Any]] = {}
        for row in session.scalars(select(Channel)):
            n, last_date, last_stored = per.get(row.id, (0, None, None))
            key = channels.key(username=row.username, tg_id=row.tg_id, dump=row.dump)
            out[key] = {
                "label": channels.label(
                    username=row.username, title=row.title, tg_id=row.tg_id, dump=row.dump
                ),
                "title": row.title,
                "posts": n,
                "last_post": _aware(last_date),
                "last_stored": _aware(last_stored),
                "dump": bool(row.dump),
            }
        return out


def overview(
    stored: dict[str, dict[str, Any]], health: dict[str, Any] | None, watched: dict[str, str]
) -> dict[str, Any]:
    """One row per channel, from the store, the monitor's health and the rules (`watched`: key ->
    the source the rules ask for). Times as ISO strings, as /healthz gives them."""
    live = (health or {}).get("channels", {})
    rows = []
    for key in sorted({*stored, *live, *watched}):
        s, h = stored.get(key), live.get(key)
        source = h["source"] if h else ("dump" if s and s["dump"] else watched.get(key))
        flood = h["flood_wait_remaining"] if h else 0.0
        rows.append(
            {
                "key": key,
                "label": s["label"] if s else key,
                "title": s["title"] if s else None,
                "watched": key in watched,
                "source": source,
                "state": h["state"] if h else None,
                "posts": s["posts"] if s else 0,
                # The monitor's last post is the newest it saw this run; the store's, the newest kept.
                "last_post": (h and h["last_post"]) or (iso(s["last_post"]) if s else None),
                "last_stored": iso(s["last_stored"]) if s else None,
                "lag_seconds": h["lag_seconds"] if h else None,
                "lag": span(h["lag_seconds"]) if h else None,
                "last_sweep": h["last_sweep"] if h else None,
                "last_attempt": h["last_attempt"] if h else None,
                "last_error": SECRETS(h["problem"] or h["last_error"] or "") or None if h else None,
                "gap": h["gap"] if h else 0,
                "flood_wait_seconds": flood,
                "flood_wait": span(flood) if flood > 0 else None,
            }
        )
    out: dict[str, Any] = {"monitor": health is not None, "channels": rows}
    if health is not None:
        out["status"] = health["status"]
        out["sources"] = health["sources"]
        out["flood_wait_seconds"] = health["flood_wait_remaining"]
        out["flood_wait"] = (
            span(health["flood_wait_remaining"]) if health["flood_wait_remaining"] > 0 else None
        )
    return out


async def _overview(request: Request) -> dict[str, Any]:
    rules = await loaded(request)
    watched = {c.key: c.via for c in rules.config.channels} if rules.config else {}
    stored = await blocking(stored_channels, store(request))
    health = request.app.state.health
    # The monitor's health lives on the event loop: read here, not from a worker thread.
    snapshot = health.snapshot() if health is not None else None
    return overview(stored, snapshot, watched)


async def channels_page(request: Request) -> Response:
    return render(request, "channels.html", {"overview": await _overview(request)})


async def api_channels(request: Request) -> Response:
    """Each channel: the store's view and, under the monitor, its health.
    ---
    summary: Channels
    responses:
      "200":
        description: >-
          monitor (whether the monitor serves this, with its health); channels, by key: label,
          title, watched (listed in the rules), source (the monitor's; without it the rules' `via`,
          or dump), state (as /healthz: ok, retrying, failing, lagging, gap, problem, starting; null
          without the monitor), posts (stored), last_post, last_stored, lag_seconds, last_sweep,
          last_attempt, last_error, gap, flood_wait_seconds. Under the monitor also status, sources
          and the process's flood_wait_seconds.
        content:
          application/json: {schema: {type: object}}
      "401": {description: Not signed in}
    """
    body = await _overview(request)
    for row in body["channels"]:
        row.pop("lag", None)
        row.pop("flood_wait", None)
    body.pop("flood_wait", None)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


routes: list[BaseRoute] = [
    Route("/channels", channels_page, methods=["GET"], include_in_schema=False),
    Route("/api/channels", api_channels, methods=["GET"]),
]
