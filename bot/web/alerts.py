"""Alerts: the page (/alerts) with the deliveries by status, the dead letters and their retry, and
the silences; the JSON API of the same (/api/alerts, /api/deliveries/{id}/retry, /api/silences).

Retry and silences are the CLI's operations (`bot.alerts.worker.retry_dead`, `bot.alerts.silences`),
so the page, the API and `tgsentinel alerts retry` / `tgsentinel silence ...` store the same rows.
Stored errors were redacted when written; they are redacted again with the loaded destinations'
secrets before they are shown, as the CLI does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot.alerts import silences
from bot.alerts.listing import deliveries
from bot.alerts.worker import retry_dead
from bot.store.models import MAX_ROW_ID, Delivery
from bot.web.page import blocking, check_csrf, form, json_error, render, store
from bot.web.rules import loaded

STATUSES = ("pending", "held", "sent", "dead", "folded")
SHOWN = 100
MAX_LIMIT = 500

_NO_STORE = {"Cache-Control": "no-store"}


def delivery_counts(engine: Engine) -> list[dict[str, Any]]:
    """How many deliveries each destination has in each status (blocking)."""
    with Session(engine) as session:
        rows = session.execute(
            select(Delivery.destination, Delivery.status, func.count(Delivery.id))
            .group_by(Delivery.destination, Delivery.status)
            .order_by(Delivery.destination, Delivery.status)
        )
        return [{"destination": d, "status": s, "count": n} for d, s, n in rows]


def _summary(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """The counts as a table: a row per destination, a column per status, and the totals."""
    table: dict[str, dict[str, int]] = defaultdict(dict)
    totals = dict.fromkeys(STATUSES, 0)
    for c in counts:
        table[c["destination"]][c["status"]] = c["count"]
        totals[c["status"]] = totals.get(c["status"], 0) + c["count"]
    return {"rows": sorted(table.items()), "totals": totals}


# --- the operations --------------------------------------------------------------------------------


class NotFound(LookupError):
    pass


def retry(engine: Engine, delivery_id: int) -> None:
    """Queue a dead delivery again, as `tgsentinel alerts retry ID` does (blocking). NotFound when
    there is no such delivery, ValueError when it is not dead."""
    with Session(engine) as session, session.begin():
        if delivery_id > MAX_ROW_ID or session.get(Delivery, delivery_id) is None:
            raise NotFound(f"no delivery {delivery_id}")
        if retry_dead(session, delivery_id) == 0:
            raise ValueError(f"delivery {delivery_id} is not dead: only a dead delivery is sent again")


def add_silence(engine: Engine, new: silences.NewSilence) -> dict[str, Any]:
    with Session(engine) as session, session.begin():
        return silences.add(session, new).record()


def list_silences(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        return [s.record() for s in silences.active(session)]


def remove_silence(engine: Engine, silence_id: int) -> bool:
    if silence_id > MAX_ROW_ID:
        return False
    with Session(engine) as session, session.begin():
        return silences.remove(session, silence_id)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


async def prepare_silence(request: Request, given: dict[str, Any] | FormData) -> silences.NewSilence:
    """The silence asked for, checked as the CLI checks it; SilenceError for what is wrong."""
    rules = await loaded(request)

    def known() -> tuple[str, set[str]]:
        if rules.config is None:
            problem = rules.problems[0] if rules.problems else "it does not load"
            raise silences.SilenceError("rule", f"the rules in {rules.where} do not load ({problem})")
        return str(rules.where), {r.id for r in rules.config.rules}

    return silences.prepare(
        _text(given.get("rule")),
        _text(given.get("for")),
        rules=known,
        channel=_text(given.get("channel")) or None,
        reason=_text(given.get("reason")),
    )


# --- the page --------------------------------------------------------------------------------------

_DONE = {
    "retried": "Delivery {id} is queued again: the running monitor (or the next replay) sends it.",
    "silenced": "Silence {id} added.",
    "unsilenced": "Silence {id} removed.",
}


def _page_data(engine: Engine, status: str | None) -> dict[str, Any]:
    return {
        "summary": _summary(delivery_counts(engine)),
        "dead": deliveries(engine, "dead", SHOWN),
        "recent": deliveries(engine, status, SHOWN),
        "silences": list_silences(engine),
    }


async def _alerts_page(
    request: Request, *, error: str = "", silence_form: dict[str, str] | None = None, status_code: int = 200
) -> Response:
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        error = error or f"status: {status!r} is not one of {', '.join(STATUSES)}"
        status, status_code = None, 400
    notice = ""
    done, done_id = request.query_params.get("done"), request.query_params.get("id", "")
    if done in _DONE and done_id.isdigit():
        notice = _DONE[done].format(id=int(done_id))
    rules = await loaded(request)  # first: the destinations' secrets, for the redactor
    data = await blocking(_page_data, store(request), status)
    context = {
        **data,
        "statuses": STATUSES,
        "status": status or "",
        "error": error,
        "notice": notice,
        "silence_form": silence_form or {},
        "rule_ids": sorted(r.id for r in rules.config.rules) if rules.config else [],
    }
    return render(request, "alerts.html", context, status=status_code)


async def alerts_page(request: Request) -> Response:
    return await _alerts_page(request)


async def retry_post(request: Request) -> Response:
    await form(request)
    delivery_id: int = request.path_params["delivery_id"]
    try:
        await blocking(retry, store(request), delivery_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except ValueError as exc:
        return await _alerts_page(request, error=str(exc), status_code=400)
    return RedirectResponse(f"/alerts?done=retried&id={delivery_id}", status_code=303)


async def silence_post(request: Request) -> Response:
    data = await form(request)
    try:
        new = await prepare_silence(request, data)
    except silences.SilenceError as exc:
        given = {k: _text(data.get(k)) for k in ("rule", "channel", "for", "reason")}
        return await _alerts_page(request, error=str(exc), silence_form=given, status_code=400)
    row = await blocking(add_silence, store(request), new)
    return RedirectResponse(f"/alerts?done=silenced&id={row['id']}#silences", status_code=303)


async def unsilence_post(request: Request) -> Response:
    await form(request)
    silence_id: int = request.path_params["silence_id"]
    if not await blocking(remove_silence, store(request), silence_id):
        raise HTTPException(404, f"no silence {silence_id}")
    return RedirectResponse(f"/alerts?done=unsilenced&id={silence_id}#silences", status_code=303)


# --- the API ---------------------------------------------------------------------------------------


async def api_alerts(request: Request) -> Response:
    """Deliveries: the counts per destination and status, and the newest deliveries.
    ---
    summary: Deliveries by status
    parameters:
      - name: status
        in: query
        description: Only deliveries in this status.
        schema: {type: string, enum: [pending, held, sent, dead, folded]}
      - name: limit
        in: query
        description: How many of the newest deliveries.
        schema: {type: integer, minimum: 1, maximum: 500, default: 100}
    responses:
      "200":
        description: >-
          counts: [{destination, status, count}]; deliveries, newest first: id, status, destination,
          kind, rule, attempts, error (redacted), created_at, sent_at, next_attempt_at (pending
          only), summary, post (the post's row id, or null).
        content:
          application/json: {schema: {type: object}}
      "400": {description: "A status or limit that cannot be read: {error: ...}"}
      "401": {description: Not signed in}
    """
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        return json_error(f"status: {status!r} is not one of {', '.join(STATUSES)}", 400)
    raw = request.query_params.get("limit") or str(SHOWN)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        return json_error(f"limit: a number 1-{MAX_LIMIT}", 400)
    engine = store(request)
    await loaded(request)  # the destinations' secrets, for the redactor
    counts = await blocking(delivery_counts, engine)
    listed = await blocking(deliveries, engine, status, int(raw))
    return JSONResponse({"counts": counts, "deliveries": listed}, headers=_NO_STORE)


async def api_retry(request: Request) -> Response:
    """Send a dead delivery again, as `tgsentinel alerts retry ID` does.
    ---
    summary: Retry a dead delivery
    parameters:
      - name: delivery_id
        in: path
        required: true
        schema: {type: integer}
    responses:
      "200":
        description: "Queued again: {id, status: pending}. The running monitor (or the next replay) sends it."
        content:
          application/json: {schema: {type: object}}
      "400": {description: "The delivery is not dead: {error: ...}"}
      "404": {description: "No such delivery: {error: ...}"}
      "401": {description: Not signed in}
      "403": {description: "Signed in by session without the X-CSRF-Token header"}
    """
    check_csrf(request)
    delivery_id: int = request.path_params["delivery_id"]
    try:
        await blocking(retry, store(request), delivery_id)
    except NotFound as exc:
        return json_error(str(exc), 404)
    except ValueError as exc:
        return json_error(str(exc), 400)
    return JSONResponse({"id": delivery_id, "status": "pending"}, headers=_NO_STORE)


async def api_silences(request: Request) -> Response:
    """The silences in force, as `tgsentinel silence list` prints them.
    ---
    summary: Active silences
    responses:
      "200":
        description: "silences, oldest first: [{id, rule, channel (null: every channel), until, reason}]"
        content:
          application/json: {schema: {type: object}}
      "401": {description: Not signed in}
    """
    return JSONResponse({"silences": await blocking(list_silences, store(request))}, headers=_NO_STORE)


async def api_add_silence(request: Request) -> Response:
    """Mute a rule (in one channel, or everywhere) for a while, as `tgsentinel silence add` does.
    ---
    summary: Add a silence
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [rule, for]
            properties:
              rule: {type: string, description: "A rule id of the loaded rules"}
              for: {type: string, description: "How long: 30m, 2h, 1d"}
              channel: {type: string, description: "Only in this channel (username, -100... id, dump:NAME)"}
              reason: {type: string, description: "Why, for the team"}
    responses:
      "201":
        description: "The silence: {id, rule, channel, until, reason}"
        content:
          application/json: {schema: {type: object}}
      "400": {description: "What is wrong, as 'FIELD: why': {error: ...}"}
      "401": {description: Not signed in}
      "403": {description: "Signed in by session without the X-CSRF-Token header"}
    """
    check_csrf(request)
    try:
        body = await request.json()
    except ValueError:
        return json_error('the body is not JSON: send {"rule": "...", "for": "2h"}', 400)
    if not isinstance(body, dict):
        return json_error('the body is a JSON object: {"rule": "...", "for": "2h"}', 400)
    for name in ("rule", "for", "channel", "reason"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return json_error(f"{name}: a string", 400)
    try:
        new = await prepare_silence(request, body)
    except silences.SilenceError as exc:
        return json_error(str(exc), 400)
    row = await blocking(add_silence, store(request), new)
    return JSONResponse(row, status_code=201, headers=_NO_STORE)


async def api_remove_silence(request: Request) -> Response:
    """End a silence now, as `tgsentinel silence remove ID` does.
    ---
    summary: Remove a silence
    parameters:
      - name: silence_id
        in: path
        required: true
        schema: {type: integer}
    responses:
      "200":
        description: "{id, removed: true}"
        content:
          application/json: {schema: {type: object}}
      "404": {description: "No such silence: {error: ...}"}
      "401": {description: Not signed in}
      "403": {description: "Signed in by session without the X-CSRF-Token header"}
    """
    check_csrf(request)
    silence_id: int = request.path_params["silence_id"]
    if not await blocking(remove_silence, store(request), silence_id):
        return json_error(f"no silence {silence_id}", 404)
    return JSONResponse({"id": silence_id, "removed": True}, headers=_NO_STORE)


routes: list[BaseRoute] = [
    Route("/alerts", alerts_page, methods=["GET"], include_in_schema=False),
    Route(
        "/alerts/deliveries/{delivery_id:int}/retry", retry_post, methods=["POST"], include_in_schema=False
    ),
    Route("/alerts/silences", silence_post, methods=["POST"], include_in_schema=False),
    Route(
        "/alerts/silences/{silence_id:int}/remove", unsilence_post, methods=["POST"], include_in_schema=False
    ),
    Route("/api/alerts", api_alerts, methods=["GET"]),
    Route("/api/deliveries/{delivery_id:int}/retry", api_retry, methods=["POST"]),
    Route("/api/silences", api_silences, methods=["GET"]),
    Route("/api/silences", api_add_silence, methods=["POST"]),
    Route("/api/silences/{silence_id:int}", api_remove_silence, methods=["DELETE"]),
]
