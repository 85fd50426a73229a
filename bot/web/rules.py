"""Rules: the page (/rules) with each rule's stored hits per day, its JSON twin (/api/rules), and
"try a rule" (/rules/try, /api/rules/try).

Trying a rule runs the pasted YAML through `bot.config.load_config`, the code path of `tgsentinel
rules check`, over a scratch directory that also declares the loaded rules' destinations and channels
(so `notify: [slack]` is not "unknown"); then through `bot.rules.engine.Engine` over the newest stored
posts (`bot.web.backtest.stored_posts`), as `tgsentinel rules test --db` does. Nothing is saved.
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.alerts.senders import secrets
from bot.config import Config, ConfigError, load_config
from bot.config.load import stamp
from bot.errors import InputError
from bot.redact import SECRETS
from bot.rules.engine import Engine as RuleEngine
from bot.store.models import Match, Message
from bot.web.backtest import stored_posts
from bot.web.page import blocking, check_csrf, form, iso, json_error, render, store
from bot.web.text import pieces

DAYS = 30  # the chart's window, ending today (UTC)
LEVELS = 8  # bar heights the stylesheet knows (.l0 ... .l8): the CSP allows no inline style
TRY_MAX_BYTES = 64 * 1024  # a rules file is a few KB; more is not a rule to try
TRY_POSTS = 20_000  # newest stored posts a try reads at most...
TRY_SECONDS = 5.0  # ...and for at most this long: an answer in seconds over any archive
TRY_SHOWN = 50
HIT_CONTEXT = 120
PASTED = "pasted.yaml"
KNOWN = "loaded.yaml"  # sorts before PASTED: a conflict is reported on the pasted line
_TOP = ("channels", "rules", "destinations", "ops")


# --- the rules in force ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The rules directory as loaded now: its config, or the problems that keep it from loading."""

    where: Path
    config: Config | None
    problems: list[str]


def load_rules(rules_dir: Path) -> Loaded:
    """The rules directory, loaded as the CLI loads it (blocking). The destinations' secrets are
    learnt by the redactor, as the CLI does before it shows stored errors."""
    try:
        config = load_config(rules_dir)
    except ConfigError as exc:
        return Loaded(rules_dir, None, exc.problems)
    except InputError as exc:
        return Loaded(rules_dir, None, [str(exc)])
    for dest in config.destinations.values():
        SECRETS.learn(*secrets(dest))
    return Loaded(rules_dir, config, [])


_last: dict[Path, tuple[tuple[object, ...], Loaded]] = {}


def current_rules(rules_dir: Path) -> Loaded:
    """`load_rules`, parsed again only when a file it reads changed: every alerts, channels and rules
    page needs it, and parsing the YAML is the slowest part of some of them."""
    now = stamp(rules_dir)
    last = _last.get(rules_dir)
    if last is not None and last[0] == now and now != ("unreadable",):
        return last[1]
    rules = load_rules(rules_dir)
    _last[rules_dir] = (now, rules)
    return rules


async def loaded(request: Request) -> Loaded:
    return await blocking(current_rules, request.app.state.rules_dir)


# --- hits per day ----------------------------------------------------------------------------------


@dataclass
class RuleHits:
    total: int = 0
    last_hit: datetime | None = None  # the date of the post of the newest stored hit
    per_day: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD" -> hits, in the window


def _when() -> Any:
    # A hit counts on the day of its post, as the channel said it; a post without a date on the day
    # the match was stored.
    return func.coalesce(Message.date, Match.created_at)


def _day(dialect: str) -> Any:
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", _when()))
    return func.date(_when())  # SQLite keeps UTC text: its date() is the UTC day


def hit_stats(engine: Engine, today: date) -> dict[str, RuleHits]:
    """Every stored rule id's hits: in all, the last one, and per day over the DAYS up to `today`
    (blocking)."""
    since = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=DAYS - 1)
    out: dict[str, RuleHits] = defaultdict(RuleHits)
    with Session(engine) as session:
        # Counts and the newest match from the rule_id index alone: no join over every match.
        newest: dict[int, str] = {}
        for rule_id, total, last_id in session.execute(
            select(Match.rule_id, func.count(Match.id), func.max(Match.id)).group_by(Match.rule_id)
        ):
            out[rule_id].total = total
            newest[last_id] = rule_id
        if newest:
            for match_id, last in session.execute(
                select(Match.id, _when())
                .join(Message, Message.id == Match.message_id)
                .where(Match.id.in_(list(newest)))
            ):
                out[newest[match_id]].last_hit = last
        day = _day(session.get_bind().dialect.name)
        daily = session.execute(
            select(Match.rule_id, day, func.count(Match.id))
            .join(Message, Message.id == Match.message_id)
            # A post is stored after it is posted: the indexed arrival time bounds the scan to the
            # window's posts, however large the archive.
            .where(
                Match.message_id.in_(select(Message.id).where(Message.created_at >= since)),
                _when() >= since,
            )
            .group_by(Match.rule_id, day)
        )
        for rule_id, on, hits in daily:
            out[rule_id].per_day[str(on)[:10]] = hits
    return dict(out)


def _bars(per_day: dict[str, int], today: date) -> list[dict[str, Any]]:
    """The window's days, oldest first, each with its hits and its bar's height level."""
    days = [(today - timedelta(days=n)).isoformat() for n in range(DAYS - 1, -1, -1)]
    top = max((per_day.get(d, 0) for d in days), default=0)
    out = []
    for d in days:
        hits = per_day.get(d, 0)
        level = 0 if not hits else max(1, round(hits / top * LEVELS))
        out.append({"day": d, "hits": hits, "level": level})
    return out


def rules_overview(engine: Engine, rules: Loaded, today: date) -> dict[str, Any]:
    """The rules page's and /api/rules' content (blocking)."""
    stats = hit_stats(engine, today)
    listed: list[dict[str, Any]] = []
    config = rules.config
    for rule in config.rules if config else ():
        hits = stats.pop(rule.id, RuleHits())
        listed.append(
            {
                "id": rule.id,
                "loaded": True,
                "description": rule.description,
                "severity": str(rule.severity),
                "enabled": rule.enabled,
                "notify": list(rule.notify),
                "channels": list(rule.channels),
                "at": config.rules_at.get(rule.id) if config else None,
                "total": hits.total,
                "last_hit": iso(hits.last_hit),
                "per_day": _bars(hits.per_day, today),
            }
        )
    # Rules with stored hits that the directory no longer has (removed, renamed, or it fails to load).
    for rule_id, hits in sorted(stats.items()):
        listed.append(
            {
                "id": rule_id,
                "loaded": False,
                "description": "",
                "severity": None,
                "enabled": None,
                "notify": [],
                "channels": [],
                "at": None,
                "total": hits.total,
                "last_hit": iso(hits.last_hit),
                "per_day": _bars(hits.per_day, today),
            }
        )
    return {
        "rules_dir": str(rules.where),
        "problems": rules.problems,
        "days": DAYS,
        "rules": listed,
    }


def _today() -> date:
    return datetime.now(UTC).date()


async def rules_page(request: Request) -> Response:
    overview = await blocking(rules_overview, store(request), await loaded(request), _today())
    return render(request, "rules.html", {"overview": overview})


async def api_rules(request: Request) -> Response:
    """The loaded rules with their stored hits.
    ---
    summary: Rules and their hits per day
    responses:
      "200":
        description: >-
          The rules directory, the problems that keep it from loading (FILE:LINE: message; then no
          rule is loaded), and each rule: id, loaded (false for a rule id with stored hits that the
          directory no longer has), description, severity, enabled, notify, channels, at (FILE:LINE),
          total (stored hits), last_hit (the newest hit post's date), per_day (the last `days` days,
          oldest first, UTC: day, hits, level 0-8 of the day's bar).
        content:
          application/json: {schema: {type: object}}
      "401": {description: Not signed in}
    """
    overview = await blocking(rules_overview, store(request), await loaded(request), _today())
    return JSONResponse(overview, headers={"Cache-Control": "no-store"})


# --- try a rule ------------------------------------------------------------------------------------


@dataclass
class Tried:
    """What trying a pasted rule gave: problems (then nothing was run), or its matches."""

    problems: list[tuple[int | None, str]] = field(default_factory=list)  # (line in the paste, message)
    warnings: list[tuple[int | None, str]] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    shown: list[dict[str, Any]] = field(default_factory=list)  # newest first, TRY_SHOWN at most
    matched: int = 0
    read: int = 0
    stopped: str = ""  # why not every stored post was read: "" when all were

    def record(self) -> dict[str, Any]:
        return {
            "problems": [{"line": line, "message": msg} for line, msg in self.problems],
            "warnings": [{"line": line, "message": msg} for line, msg in self.warnings],
            "rules": self.rules,
            "matched": self.matched,
            "read": self.read,
            "stopped": self.stopped or None,
            "posts": [
                {
                    "row_id": p["row_id"],
                    "channel": p["channel"],
                    "message_id": p["message_id"],
                    "date": p["date"],
                    "url": p["url"],
                    "title": p["title"],
                    "post": f"/posts/{p['row_id']}",
                    "matches": [{"rule": m["rule"], "terms": m["terms"]} for m in p["matches"]],
                }
                for p in self.shown
            ],
        }


def _as_file(text: str) -> tuple[str, int, dict[str, Any]]:
    """The paste as a rules file: (its text, how many lines were put before the paste, the parsed
    paste when it is a mapping). One rule (a mapping with `id` or `match`) or a list of rules is put
    under `rules:`; anything else is taken as a rules file, for the loader to judge."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text, 0, {}  # the loader says where
    if isinstance(data, list):
        return "rules:\n" + textwrap.indent(text, "  "), 1, {}
    if isinstance(data, dict) and not set(map(str, data)) & set(_TOP) and ({"id", "match"} & set(data)):
        return "rules:\n  -\n" + textwrap.indent(text, "    "), 2, {}
    return text, 0, data if isinstance(data, dict) else {}


def _known(config: Config | None, pasted: dict[str, Any]) -> str:
    """The loaded rules' destinations (as console stand-ins: nothing is sent) and, unless the paste
    lists its own, channels: what a rule of the paste may refer to, as it could in the directory."""
    if config is None:
        return ""
    own = {d.get("name") for d in pasted.get("destinations") or () if isinstance(d, dict)}
    known: dict[str, Any] = {
        "destinations": [
            {"name": name, "type": "console"}
            for name in sorted(config.destinations)
            if name != "console" and name not in own
        ]
    }
    if "channels" not in pasted:
        known["channels"] = [
            c.model_dump(exclude_none=True, exclude_defaults=True) or c.key for c in config.channels
        ]
    return yaml.safe_dump(known, allow_unicode=True)


def _placed(problem: str, scratch: Path, offset: int, last: int) -> tuple[int | None, str] | None:
    """A loader line about the paste as (line in the paste, message); None for a line about the
    scratch directory itself (its lack of channels, say)."""
    prefix = f"{scratch / PASTED}:"
    if problem.startswith(prefix):
        head, _, message = problem[len(prefix) :].partition(": ")
        if head.isdigit():
            return min(max(int(head) - offset, 1), max(last, 1)), message
        return None, problem[len(prefix) :]
    if problem.startswith(f"{scratch / KNOWN}:"):
        _, _, message = problem[len(f"{scratch / KNOWN}:") :].partition(": ")
        return None, f"(the loaded rules) {message}"
    if problem.startswith(str(scratch)):
        return None
    return None, problem


def check_paste(text: str, config: Config | None) -> tuple[Tried, Config | None]:
    """The paste checked as `rules check` checks a directory (blocking)."""
    tried = Tried()
    if not text.strip():
        tried.problems.append((None, "nothing pasted: paste a rule (id, match) or a rules file"))
        return tried, None
    body, offset, pasted = _as_file(text)
    last = text.count("\n") + 1
    with tempfile.TemporaryDirectory(prefix="tgsentinel-try-") as where:
        scratch = Path(where)
        (scratch / PASTED).write_text(body, encoding="utf-8")
        known = _known(config, pasted)
        if known:
            (scratch / KNOWN).write_text(known, encoding="utf-8")
        try:
            # No environment: ${VAR} in a paste must not pull the server's secrets into a rule.
            checked = load_config(scratch, env={})
        except ConfigError as exc:
            for line in exc.problems:
                placed = _placed(line, scratch, offset, last)
                if placed is None:
                    continue
                is_warning = placed[1].startswith("warning: ")
                (tried.warnings if is_warning else tried.problems).append(placed)
            if not tried.problems:  # only warnings about the scratch directory: keep the report honest
                tried.problems.append((None, "the paste does not load"))
            return tried, None
        for line in checked.warnings:
            placed = _placed(line, scratch, offset, last)
            if placed is not None:
                tried.warnings.append(placed)
    if not checked.rules:
        tried.problems.append((None, "no rule in the paste: a rule has an id and a match"))
        return tried, None
    tried.rules = [r.id for r in checked.rules]
    return tried, checked


def try_rule(engine: Engine, text: str, config: Config | None) -> Tried:
    """Check the paste and, when it is valid, run its rules over the newest stored posts (blocking,
    CPU-bound: call it off the event loop). Nothing is written."""
    tried, checked = check_paste(text, config)
    if checked is None:
        return tried
    # A disabled rule is tried all the same: trying is how one decides to enable it.
    rules = RuleEngine([r.model_copy(update={"enabled": True}) for r in checked.rules])
    deadline = time.monotonic() + TRY_SECONDS
    with Session(engine) as session:
        for fields, post in stored_posts(session, newest_first=True, row_ids=True):
            if tried.read >= TRY_POSTS:
                tried.stopped = f"the newest {TRY_POSTS} posts were read"
                break
            if time.monotonic() > deadline:
                tried.stopped = f"stopped after {TRY_SECONDS:.0f} seconds"
                break
            tried.read += 1
            found = rules.match(post)
            if not found:
                continue
            tried.matched += 1
            if len(tried.shown) < TRY_SHOWN:
                text_ = fields["text"] or ""
                matches = [
                    {
                        "rule": m.rule_id,
                        "terms": list(m.terms),
                        "pieces": pieces(text_, [(h.start, h.end) for h in m.hits], HIT_CONTEXT),
                    }
                    for m in found
                ]
                tried.shown.append({**fields, "matches": matches})
    return tried


EXAMPLE = """\
id: my-rule
description: What it is for
severity: medium
match:
  any: ["sanction*", "санкци*"]
  none: ["#Announcement"]
"""


async def try_page(request: Request) -> Response:
    return render(request, "rules_try.html", {"pasted": EXAMPLE, "tried": None, "error": ""})


async def _tried(request: Request, text: str) -> Tried:
    rules = await loaded(request)
    return await blocking(try_rule, store(request), text, rules.config)


async def try_post(request: Request) -> Response:
    data = await form(request)
    text = data.get("yaml")
    text = text if isinstance(text, str) else ""
    if len(text.encode()) > TRY_MAX_BYTES:
        context = {"pasted": text, "tried": None, "error": f"the paste is over {TRY_MAX_BYTES // 1024} KB"}
        return render(request, "rules_try.html", context, status=400)
    tried = await _tried(request, text)
    status = 400 if tried.problems else 200
    return render(request, "rules_try.html", {"pasted": text, "tried": tried, "error": ""}, status=status)


async def api_try(request: Request) -> Response:
    """Try a rule over the newest stored posts, without saving it.
    ---
    summary: Try a rule
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [yaml]
            properties:
              yaml: {type: string, description: "One rule, a list of rules, or a rules file's body"}
    responses:
      "200":
        description: >-
          The rules tried, how many posts were read (the newest, up to 20000 and 5 seconds; stopped
          says why it stopped short) and matched, and the newest 50 matching posts (row_id, channel,
          date, url, title, matches with rule and terms). Warnings as {line, message}.
        content:
          application/json: {schema: {type: object}}
      "400":
        description: >-
          The paste does not load: {error, problems: [{line, message}]}, the line counted in the paste
          (null when the problem has none), as `tgsentinel rules check` reports them.
      "401": {description: Not signed in}
      "403": {description: "Signed in by session without the X-CSRF-Token header"}
    """
    check_csrf(request)
    try:
        body = await request.json()
    except ValueError:
        return json_error('the body is not JSON: send {"yaml": "..."}', 400)
    text = body.get("yaml") if isinstance(body, dict) else None
    if not isinstance(text, str):
        return json_error("yaml: a string (the rule, as YAML)", 400)
    if len(text.encode()) > TRY_MAX_BYTES:
        return json_error(f"yaml: over {TRY_MAX_BYTES // 1024} KB", 400)
    tried = await _tried(request, text)
    record = tried.record()
    if tried.problems:
        first = tried.problems[0]
        message = f"line {first[0]}: {first[1]}" if first[0] else first[1]
        return JSONResponse(
            {"error": message, "problems": record["problems"]},
            status_code=400,
            headers={"Cache-Control": "no-store"},
        )
    return JSONResponse(record, headers={"Cache-Control": "no-store"})


routes: list[BaseRoute] = [
    Route("/rules", rules_page, methods=["GET"], include_in_schema=False),
    Route("/rules/try", try_page, methods=["GET"], include_in_schema=False),
    Route("/rules/try", try_post, methods=["POST"], include_in_schema=False),
    Route("/api/rules", api_rules, methods=["GET"]),
    Route("/api/rules/try", api_try, methods=["POST"]),
]
