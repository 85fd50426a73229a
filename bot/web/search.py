"""Search: the page (/search), its JSON twin (/api/search) and the exports of a whole result set.

The page and the API take the same query parameters, read by `parse_request`:

- `q`: the query (words, "phrases", -exclude, #tag, prefix*); empty lists the filtered posts;
- `channel`, `rule`, `media`, `forwarded_from`: as `bot.search.Filters` has them;
- `since`, `until`: dates (YYYY-MM-DD) or ISO 8601 times; a date alone as `until` means through the
  end of that day (UTC), as a person picking it in a date field means;
- `edited`, `deleted`: yes or no (true/false, 1/0);
- `order`: newest (default) or relevance; `cursor`: the previous page's `next_cursor`;
- `limit` (API only): hits per page, 1-100.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot import channel as channels
from bot.parse.media import VOCABULARY
from bot.search import Filters, Hit, QueryError, Results, search
from bot.store.models import Channel, Match
from bot.web.page import blocking, json_error, render, store, wants_partial

PAGE_SIZE = 20
MAX_LIMIT = 100
EXPORT_PAGE = 500  # hits fetched per round trip while an export streams
OPTIONS_TTL = 30.0  # seconds the filter drop-downs are kept: building them scans two tables
_YES = {"yes", "true", "1", "on"}
_NO = {"no", "false", "0", "off"}
_FILTER_PARAMS = ("channel", "since", "until", "rule", "media", "forwarded_from", "edited", "deleted")


class BadParameter(ValueError):
    """A query parameter that cannot be read, said in one line."""


@dataclass(frozen=True)
class SearchRequest:
    query: str
    filters: Filters
    order: Literal["newest", "relevance"]
    cursor: str | None
    limit: int
    given: dict[str, str]  # the parameters as the user wrote them, to fill the form and build links

    @property
    def asked(self) -> bool:
        """Whether there is anything to search for: an empty form shows no results, only the form."""
        return bool(self.query) or any(getattr(self.filters, f.name) is not None for f in fields(Filters))


def _time(name: str, value: str, *, end: bool) -> datetime:
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        when.astimezone(UTC)  # the store compares in UTC: year 1 at +05:00 has no UTC time
    except (ValueError, OverflowError):
        raise BadParameter(f"{name}: {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return when


def _flag(name: str, value: str) -> bool:
    if value.lower() in _YES:
        return True
    if value.lower() in _NO:
        return False
    raise BadParameter(f"{name}: {value!r} is not yes or no")


def parse_request(params: Any, *, api: bool = False) -> SearchRequest:
    """The search a request's query parameters ask for; BadParameter for one that cannot be read."""
    given = {k: str(params.get(k, "")).strip() for k in ("q", *_FILTER_PARAMS, "order")}
    given = {k: v for k, v in given.items() if v}
    media = given.get("media")
    if media is not None and media != "any" and media not in VOCABULARY:
        raise BadParameter(f"media: {media!r} is not 'any' nor one of {', '.join(VOCABULARY)}")
    order = given.get("order", "newest")
    if order not in ("newest", "relevance"):
        raise BadParameter(f"order: {order!r} is not newest or relevance")
    limit = PAGE_SIZE
    if api and params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            raise BadParameter(f"limit: {params['limit']!r} is not a number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadParameter(f"limit must be 1-{MAX_LIMIT}")
    filters = Filters(
        channel=given.get("channel"),
        since=_time("since", given["since"], end=False) if "since" in given else None,
        until=_time("until", given["until"], end=True) if "until" in given else None,
        rule=given.get("rule"),
        media=media,
        forwarded_from=given.get("forwarded_from"),
        edited=_flag("edited", given["edited"]) if "edited" in given else None,
        deleted=_flag("deleted", given["deleted"]) if "deleted" in given else None,
    )
    cursor = str(params.get("cursor", "")).strip() or None
    return SearchRequest(given.get("q", ""), filters, order, cursor, limit, given)  # type: ignore[arg-type]


def run_search(
    engine: Engine, asked: SearchRequest, cursor: str | None = None, limit: int | None = None
) -> Results:
    """One page of hits (blocking)."""
    with Session(engine) as session:
        return search(
            session,
            asked.query,
            asked.filters,
            order=asked.order,
            cursor=cursor if cursor is not None else asked.cursor,
            limit=limit or asked.limit,
        )


def hit_record(hit: Hit) -> dict[str, Any]:
    """A hit as the API and the JSON lines export give it."""
    return {
        "row_id": hit.row_id,
        "channel_id": hit.channel_id,
        "channel": hit.channel,
        "msg_id": hit.msg_id,
        "date": hit.date.isoformat() if hit.date else None,
        "url": hit.url,
        "title": hit.title,
        "snippet": [[piece, is_hit] for piece, is_hit in hit.snippet],
        "media": list(hit.media),
        "forwarded_from": hit.forwarded_from,
        "edited": hit.edited,
        "deleted": hit.deleted,
        "score": hit.score,
        "post": f"/posts/{hit.row_id}",
    }


# --- the drop-downs -------------------------------------------------------------------------------


def _options(engine: Engine) -> dict[str, list[tuple[str, str]]]:
    """The channels (key, label) and the rules with stored matches (id, id)."""
    with Session(engine) as session:
        rows = session.execute(select(Channel.username, Channel.tg_id, Channel.dump, Channel.title)).all()
        listed = sorted(
            (
                channels.key(username=u, tg_id=t, dump=d),
                channels.label(username=u, title=title, tg_id=t, dump=d),
            )
            for u, t, d, title in rows
        )
        rules = sorted(session.scalars(select(Match.rule_id).distinct()))
    return {"channels": listed, "rules": [(r, r) for r in rules]}


async def options(request: Request) -> dict[str, list[tuple[str, str]]]:
    """The drop-downs, kept OPTIONS_TTL seconds: a new channel or rule shows up within that."""
    kept = getattr(request.app.state, "search_options", None)
    now = time.monotonic()
    if kept is None or now - kept[0] > OPTIONS_TTL:
        kept = (now, await blocking(_options, store(request)))
        request.app.state.search_options = kept
    return kept[1]


# --- the page --------------------------------------------------------------------------------------


def _link(path: str, given: dict[str, str], **more: str) -> str:
    return f"{path}?{urlencode({**given, **more})}"


async def search_page(request: Request) -> Response:
    """The search form and, when something is asked, a page of results (htmx: the results only)."""
    context: dict[str, Any] = {
        "given": dict(request.query_params),
        "error": "",
        "hits": [],
        "asked": False,
        "next_url": "",
        "exports": {},
        "media_choices": VOCABULARY,
    }
    status = 200
    try:
        asked = parse_request(request.query_params)
        context["given"] = asked.given
        if asked.asked:
            results = await blocking(run_search, store(request), asked)
            context.update(
                asked=True,
                hits=results.hits,
                next_url=_link("/search", asked.given, cursor=results.next_cursor)
                if results.next_cursor
                else "",
                exports={
                    "CSV": _link("/api/search/export", asked.given, format="csv"),
                    "JSON lines": _link("/api/search/export", asked.given, format="jsonl"),
                },
            )
    except (BadParameter, QueryError) as exc:
        context["error"] = str(exc)
        status = 400
    if wants_partial(request):
        # htmx swaps no 4xx answer: the fragment carries the error as a 200, or the old results
        # would stay on screen with no word of why.
        response = render(request, "search_results.html", context)
    else:
        context["options"] = await options(request)
        response = render(request, "search.html", context, status=status)
    response.headers["Vary"] = "HX-Request"  # the same URL answers a fragment or a page
    return response


# --- the API ---------------------------------------------------------------------------------------


def _param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": "string", **schema}}


# The query parameters of /api/search and its export, as OpenAPI components (`bot.web.app` adds them).
PARAMETERS: dict[str, dict[str, Any]] = {
    "q": _param("q", 'The query: words, "phrases", -exclude, #tag, prefix*. Empty: every post filtered.'),
    "channel": _param("channel", "A channel: username, @username, -100... id, or dump:NAME."),
    "since": _param("since", "From this date (YYYY-MM-DD) or ISO 8601 time, inclusive."),
    "until": _param("until", "Up to this ISO 8601 time (exclusive), or through this date (YYYY-MM-DD)."),
    "rule": _param("rule", "Only posts with a stored match of this rule id."),
    "media": _param("media", "any (has media), or one media flag.", enum=["any", *VOCABULARY]),
    "forwarded_from": _param("forwarded_from", "A part of the forward source's name, any case."),
    "edited": _param("edited", "Only edited (yes) or unedited (no) posts.", enum=["yes", "no"]),
    "deleted": _param("deleted", "Only deleted (yes) or kept (no) posts.", enum=["yes", "no"]),
    "order": _param("order", "newest (default) or relevance.", enum=["newest", "relevance"]),
}


async def api_search(request: Request) -> Response:
    """Search stored posts: one page of hits, newest first or by relevance.
    ---
    summary: Search stored posts
    parameters:
      - $ref: "#/components/parameters/q"
      - $ref: "#/components/parameters/channel"
      - $ref: "#/components/parameters/since"
      - $ref: "#/components/parameters/until"
      - $ref: "#/components/parameters/rule"
      - $ref: "#/components/parameters/media"
      - $ref: "#/components/parameters/forwarded_from"
      - $ref: "#/components/parameters/edited"
      - $ref: "#/components/parameters/deleted"
      - $ref: "#/components/parameters/order"
      - name: cursor
        in: query
        description: The previous page's next_cursor.
        schema: {type: string}
      - name: limit
        in: query
        description: Hits per page.
        schema: {type: integer, minimum: 1, maximum: 100, default: 20}
    responses:
      "200":
        description: A page of hits, and the cursor of the next page (null on the last).
        content:
          application/json:
            schema:
              type: object
              properties:
                hits:
                  type: array
                  items:
                    type: object
                    properties:
                      row_id: {type: integer, description: "the post: /api/posts/{row_id}"}
                      channel: {type: string}
                      msg_id: {type: integer}
                      date: {type: string, format: date-time, nullable: true}
                      url: {type: string, nullable: true, description: the t.me link}
                      title: {type: string}
                      snippet:
                        type: array
                        description: "[piece, is_hit] pairs around the first hit, plain text"
                        items: {type: array, items: {}}
                      media: {type: array, items: {type: string}}
                      forwarded_from: {type: string, nullable: true}
                      edited: {type: boolean}
                      deleted: {type: boolean}
                      score: {type: number, nullable: true}
                next_cursor: {type: string, nullable: true}
      "400": {description: "A query or parameter that cannot be run: {error: ...}"}
      "401": {description: Not signed in}
    """
    try:
        asked = parse_request(request.query_params, api=True)
        results = await blocking(run_search, store(request), asked)
    except (BadParameter, QueryError) as exc:
        return json_error(str(exc), 400)
    body = {"hits": [hit_record(h) for h in results.hits], "next_cursor": results.next_cursor}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


# --- exports ---------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "row_id",
    "channel",
    "msg_id",
    "date",
    "url",
    "title",
    "text",
    "media",
    "forwarded_from",
    "edited",
    "deleted",
)


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: a post starting with = + - @ would run as a formula
    (OWASP's CSV injection), so it gets a leading quote, as spreadsheets themselves write one."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _csv_row(hit: Hit) -> list[str]:
    return [_cell(cell) for cell in _csv_cells(hit)]


def _csv_cells(hit: Hit) -> list[str]:
    return [
        str(hit.row_id),
        hit.channel,
        str(hit.msg_id),
        hit.date.isoformat() if hit.date else "",
        hit.url or "",
        hit.title,
        hit.text,  # the whole post: an export is for reading elsewhere, not a page of snippets
        " ".join(hit.media),
        hit.forwarded_from or "",
        "yes" if hit.edited else "no",
        "yes" if hit.deleted else "no",
    ]


def _formatter(kind: str) -> tuple[str, str, Callable[[list[Hit], bool], str]]:
    """(media type, file suffix, page of hits -> text)."""
    if kind == "csv":

        def as_csv(hits: list[Hit], first: bool) -> str:
            out = io.StringIO()
            writer = csv.writer(out)
            if first:
                writer.writerow(CSV_COLUMNS)
            writer.writerows(_csv_row(h) for h in hits)
            return out.getvalue()

        return "text/csv; charset=utf-8", "csv", as_csv

    def as_jsonl(hits: list[Hit], first: bool) -> str:
        return "".join(json.dumps({**hit_record(h), "text": h.text}, ensure_ascii=False) + "\n" for h in hits)

    return "application/x-ndjson; charset=utf-8", "jsonl", as_jsonl


async def api_export(request: Request) -> Response:
    """The whole result set of a search, streamed as CSV or JSON lines.
    ---
    summary: Export a search's whole result set
    parameters:
      - $ref: "#/components/parameters/q"
      - $ref: "#/components/parameters/channel"
      - $ref: "#/components/parameters/since"
      - $ref: "#/components/parameters/until"
      - $ref: "#/components/parameters/rule"
      - $ref: "#/components/parameters/media"
      - $ref: "#/components/parameters/forwarded_from"
      - $ref: "#/components/parameters/edited"
      - $ref: "#/components/parameters/deleted"
      - $ref: "#/components/parameters/order"
      - name: format
        in: query
        schema: {type: string, enum: [csv, jsonl], default: jsonl}
    responses:
      "200":
        description: Every hit, as CSV with a header row or as one JSON object per line.
        content:
          text/csv: {schema: {type: string}}
          application/x-ndjson: {schema: {type: string}}
      "400": {description: "A query or parameter that cannot be run: {error: ...}"}
      "401": {description: Not signed in}
    """
    kind = request.query_params.get("format", "jsonl")
    if kind not in ("csv", "jsonl"):
        return json_error(f"format: {kind!r} is not csv or jsonl", 400)
    try:
        asked = parse_request(request.query_params)
        first = await blocking(run_search, store(request), asked, asked.cursor, EXPORT_PAGE)
    except (BadParameter, QueryError) as exc:
        return json_error(str(exc), 400)
    media_type, suffix, format_page = _formatter(kind)
    engine = store(request)

    async def pages() -> AsyncIterator[str]:
        # Page by page through the keyset cursor: memory stays one page, whatever the result set.
        results, head = first, True
        while True:
            yield format_page(results.hits, head)
            head = False
            if not results.next_cursor:
                return
            results = await blocking(run_search, engine, asked, results.next_cursor, EXPORT_PAGE)

    disposition = f'attachment; filename="tgsentinel-search.{suffix}"'
    headers = {"Content-Disposition": disposition, "Cache-Control": "no-store"}
    return StreamingResponse(pages(), media_type=media_type, headers=headers)


routes: list[BaseRoute] = [
    Route("/search", search_page, methods=["GET"], include_in_schema=False),
    Route("/api/search", api_search, methods=["GET"]),
    Route("/api/search/export", api_export, methods=["GET"]),
]
