"""What every page and endpoint of the archive shares: templates, forms with their CSRF check, the
store, and running database work off the event loop.

Post text is hostile input. Templates autoescape everything; nothing derived from a post is ever
marked safe in a template. The one place that builds markup from a post (`bot.web.posts.rendered`)
escapes every piece itself.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import Engine
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from bot.alerts.render import is_web_url, visible

T = TypeVar("T")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

# (path, label): the navigation bar of every page.
NAV: tuple[tuple[str, str], ...] = (
    ("/search", "Search"),
    ("/rules", "Rules"),
    ("/alerts", "Alerts"),
    ("/channels", "Channels"),
)


def iso(value: datetime | None) -> str | None:
    """A stored time as the JSON API gives it."""
    return value.isoformat() if value is not None else None


def _when(value: datetime | str | None) -> str:
    """A stored time (or its ISO form, as the JSON records carry it) as people read it, in UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value is None:
        return ""
    if value.tzinfo is None:
        return value.strftime("%Y-%m-%d %H:%M")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name: post text reaches most of them
        undefined=StrictUndefined,  # a misspelt variable is an error in the tests, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    # Bidi overrides and other invisible controls out of post-derived text: U+202E would turn what
    # follows it around on screen. Escaping still happens after, as for every value.
    env.filters["visible"] = lambda text: visible(text) if isinstance(text, str) else text
    # A link out only to an http(s) URL: anything else ("javascript:...") is no link at all.
    env.filters["web_url"] = lambda url: url if is_web_url(url) else ""
    return env


templates = _environment()


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made at its first use. Bearer clients have no session and need none."""
    session = request.scope.get("session")
    if session is None:
        return ""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """`name` rendered with `context`, plus what base.html needs (`csrf_token`, `nav`, `path`)."""
    full = {
        "request": request,
        "csrf_token": csrf_token(request),
        "nav": NAV,
        "path": request.url.path,
        "signed_in": authenticated_by(request) is not None,
        **context,
    }
    html = templates.get_template(name).render(full)
    # Every page shows stored posts or who may sign in: nothing of it belongs in a shared cache.
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def authenticated_by(request: Request) -> str | None:
    """ "session", "bearer", or None (set by the auth middleware)."""
    return request.scope.get("state", {}).get("auth")


def _same(given: str | None, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given).encode(), expected.encode())


def check_csrf(request: Request, given: str | None = None) -> None:
    """403 unless a request signed in by its session cookie carries the session's CSRF token (in the
    `X-CSRF-Token` header, or `given` from a form field). A bearer token cannot be sent by a browser
    on its own, so a request authenticated by one needs no CSRF token."""
    if authenticated_by(request) == "bearer":
        return
    session = request.scope.get("session") or {}
    expected = session.get("csrf") if isinstance(session.get("csrf"), str) else ""
    if not (_same(request.headers.get(CSRF_HEADER), expected) or _same(given, expected)):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


async def form(request: Request) -> FormData:
    """The POSTed form, after its CSRF check (the `csrf_token` field, or htmx's `X-CSRF-Token`)."""
    data = await request.form()
    field = data.get(CSRF_FIELD)
    check_csrf(request, field if isinstance(field, str) else None)
    return data


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread: SQLAlchemy is blocking, the event loop must not be."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))


def store(request: Request) -> Engine:
    return request.app.state.store


def json_error(message: str, status: int) -> JSONResponse:
    """The API's one error shape."""
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def wants_partial(request: Request) -> bool:
    """An htmx request for a fragment, not a history restore (which needs the whole page)."""
    return (
        request.headers.get("hx-request") == "true"
        and request.headers.get("hx-history-restore-request") != "true"
    )
