"""One stored post: the page (/posts/{row_id}) and its JSON (/api/posts/{row_id}).

Both come from `post_record`: the post, its edits, the story's other posts (bot.stories: copies,
trimmed or with their own header, in any channel), the rules it matched with their hits, and the
alerts sent about it with their deliveries. The page adds the text rendered with its entities,
the edits as diffs, and each rule's hits marked in the text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import channel as channels
from bot.alerts.render import post_url
from bot.redact import redact
from bot.search import QueryError, highlight
from bot.store.models import MAX_ROW_ID, Alert, Channel, Delivery, Match, Message, MessageEdit
from bot.web.page import blocking, iso, json_error, render, store
from bot.web.text import diff, pieces, rendered

SAME_STORY_SHOWN = 50
HIT_CONTEXT = 120  # characters of text shown either side of a rule's hits


def _channel(row: Channel) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": channels.key(username=row.username, tg_id=row.tg_id, dump=row.dump),
        "label": channels.label(username=row.username, title=row.title, tg_id=row.tg_id, dump=row.dump),
        "username": row.username if not row.dump else None,
    }


def post_record(engine: Engine, row_id: int) -> dict[str, Any] | None:
    """Everything the store knows about post `row_id`, as plain JSON values; None if there is none."""
    with Session(engine) as session:
        found = session.execute(
            select(Message, Channel)
            .join(Channel, Channel.id == Message.channel_id)
            .where(Message.id == row_id)
        ).first()
        if found is None:
            return None
        msg, chan = found
        where = _channel(chan)
        edits = session.scalars(
            select(MessageEdit).where(MessageEdit.message_id == row_id).order_by(MessageEdit.id)
        ).all()
        same: list[dict[str, Any]] = []
        if msg.story_id is not None:
            rows = session.execute(
                select(Message.id, Message.msg_id, Message.date, Channel)
                .join(Channel, Channel.id == Message.channel_id)
                .where(Message.story_id == msg.story_id, Message.id != row_id)
                .order_by(Message.date, Message.id)
                .limit(SAME_STORY_SHOWN)
            ).all()
            for other_id, other_msg, other_date, other_chan in rows:
                c = _channel(other_chan)
                same.append(
                    {
                        "row_id": other_id,
                        "channel": c["label"],
                        "date": iso(other_date),
                        "url": post_url(c["username"], other_msg),
                    }
                )
        matches = session.scalars(
            select(Match).where(Match.message_id == row_id).order_by(Match.rule_id)
        ).all()
        alerts = session.scalars(
            select(Alert).where(Alert.message_id == row_id).order_by(Alert.created_at, Alert.id)
        ).all()
        deliveries: dict[int, list[Delivery]] = {}
        if alerts:
            for d in session.scalars(
                select(Delivery).where(Delivery.alert_id.in_([a.id for a in alerts])).order_by(Delivery.id)
            ):
                deliveries.setdefault(d.alert_id, []).append(d)
        return {
            "row_id": msg.id,
            "channel": where,
            "msg_id": msg.msg_id,
            "url": post_url(where["username"], msg.msg_id),
            "date": iso(msg.date),
            "edit_date": iso(msg.edit_date),
            "stored_at": iso(msg.created_at),
            "title": msg.title,
            "text": msg.text,
            "raw_text": msg.source_text,
            "entities": msg.entities or [],
            "hashtags": msg.hashtags or [],
            "media": msg.media or [],
            "forwarded_from": msg.forwarded_from,
            "fwd_post_id": msg.fwd_post_id,
            "signature": msg.signature,
            "views": msg.views,
            "deleted": bool(msg.deleted),
            "deleted_at": iso(msg.deleted_at),
            "fingerprint": msg.fingerprint,
            "story_id": msg.story_id,
            "edits": [
                {"edit_date": iso(e.edit_date), "recorded_at": iso(e.recorded_at), "text": e.text}
                for e in edits
            ],
            "same_story": same,
            "matches": [
                {"rule_id": m.rule_id, "terms": m.terms, "hits": m.hits, "created_at": iso(m.created_at)}
                for m in matches
            ],
            "alerts": [
                {
                    "id": a.id,
                    "kind": a.kind,
                    "rule_id": a.rule_id,
                    "severity": a.severity,
                    "created_at": iso(a.created_at),
                    "deliveries": [
                        {
                            "id": d.id,
                            "destination": d.destination,
                            "status": d.status,
                            "attempts": d.attempts,
                            "sent_at": iso(d.sent_at),
                            "next_attempt_at": iso(d.next_attempt_at),
                            # Stored errors are redacted already; once more costs nothing.
                            "last_error": redact(d.last_error) if d.last_error else None,
                        }
                        for d in deliveries.get(a.id, [])
                    ],
                }
                for a in alerts
            ],
        }


def _hit_spans(match: dict[str, Any]) -> list[tuple[int, int]]:
    spans = []
    for hit in match["hits"] or ():
        if isinstance(hit, list | tuple) and len(hit) == 3 and all(isinstance(x, int) for x in hit[1:]):
            spans.append((hit[1], hit[2]))
    return spans


def _versions(post: dict[str, Any]) -> list[dict[str, Any]]:
    """Each earlier version, with the diff from it to the one that replaced it."""
    texts = [e["text"] for e in post["edits"]] + [post["text"]]
    return [{**edit, "diff": diff(texts[i], texts[i + 1])} for i, edit in enumerate(post["edits"])]


def _query_marks(text: str, query: str) -> list[tuple[int, int]]:
    """Where the search that led here hits the text (the same stemming as the search)."""
    if not query:
        return []
    try:
        found = highlight(text, query)
    except QueryError:
        return []
    spans, pos = [], 0
    for piece, is_hit in found:
        if is_hit:
            spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return spans if pos == len(text) else []  # pieces of another text: mark nothing rather than wrongly


def _post_context(engine: Engine, row_id: int, query: str) -> dict[str, Any] | None:
    """The post page's context (blocking): the diffs of a long edit history and the rendering of a
    long post are CPU work that must not stall the monitor's event loop."""
    post = post_record(engine, row_id)
    if post is None:
        return None
    return {
        "post": post,
        "query": query,
        "body": rendered(post["raw_text"], post["entities"], _query_marks(post["raw_text"], query)),
        "versions": _versions(post),
        "matches": [
            {**m, "pieces": pieces(post["text"], _hit_spans(m), HIT_CONTEXT)} for m in post["matches"]
        ],
    }


async def post_page(request: Request) -> Response:
    row_id: int = request.path_params["row_id"]
    query = request.query_params.get("q", "").strip()
    context = await blocking(_post_context, store(request), row_id, query) if row_id <= MAX_ROW_ID else None
    if context is None:
        raise HTTPException(404, f"no post {row_id} in the store")
    return render(request, "post.html", context)


async def api_post(request: Request) -> Response:
    """One stored post with its edits, same-story posts, rule matches and alerts.
    ---
    summary: One stored post
    parameters:
      - name: row_id
        in: path
        required: true
        description: The post's row id (a search hit's row_id).
        schema: {type: integer}
    responses:
      "200":
        description: >-
          The post: text (as stored, with entities as Telegram's, offsets in UTF-16 units), title,
          media, forwarded_from, signature, deleted; edits (earlier texts); story_id, and same_story
          (the story's other posts, oldest first); matches (rule_id, terms, hits as [term, start, end]
          in `text`); alerts with their deliveries (destination, status, attempts, last_error).
        content:
          application/json: {schema: {type: object}}
      "404": {description: "No such post: {error: ...}"}
      "401": {description: Not signed in}
    """
    row_id: int = request.path_params["row_id"]
    post = await blocking(post_record, store(request), row_id) if row_id <= MAX_ROW_ID else None
    if post is None:
        return json_error(f"no post {row_id} in the store", 404)
    return JSONResponse(post, headers={"Cache-Control": "no-store"})


routes: list[BaseRoute] = [
    Route("/posts/{row_id:int}", post_page, methods=["GET"], include_in_schema=False),
    Route("/api/posts/{row_id:int}", api_post, methods=["GET"]),
]
