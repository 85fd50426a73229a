"""The archive as one ASGI app: every page module's routes, the static files, sign-in, and the
OpenAPI description of the JSON API.

`tgsentinel web` serves it alone over a store; `tgsentinel run` serves it beside /healthz and
/metrics (its `extra_routes`, which stay open to probes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles

from bot.errors import first_line
from bot.web import alerts, auth, channels, posts, rules, search
from bot.web.page import STATIC, json_error, render

if TYPE_CHECKING:
    from bot.health import Health

log = logging.getLogger(__name__)

# Each module exposes `routes`: its pages and its /api/... JSON endpoints together.
PAGES = (search, posts, rules, alerts, channels)


class _ApiSchema(SchemaGenerator):
    """The endpoints' YAML docstrings, /api routes only: a page's prose docstring may parse as YAML."""

    def get_schema(self, routes: list[BaseRoute]) -> dict[str, Any]:
        schema = super().get_schema(routes)
        schema["paths"] = {p: v for p, v in sorted(schema["paths"].items()) if p.startswith("/api/")}
        return schema


SCHEMA = _ApiSchema(
    {
        "openapi": "3.0.3",
        "info": {
            "title": "tgsentinel archive",
            "version": "1",
            "description": "The archive's JSON API. Authenticate with `Authorization: Bearer "
            "TGSENTINEL_WEB_TOKEN` (no CSRF token needed), or with the session cookie of a signed-in "
            'browser plus an `X-CSRF-Token` header on writes. Errors are `{"error": "..."}`.',
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": search.PARAMETERS,
        },
        "security": [{"bearer": []}],
    }
)


async def openapi(request: Request) -> Response:
    """The OpenAPI description of every /api route.
    ---
    summary: This document
    responses:
      "200": {description: "The OpenAPI 3 description of the JSON API, as JSON"}
    """
    schema = SCHEMA.get_schema(request.app.routes)
    return JSONResponse(schema, headers={"Cache-Control": "no-store"})


def _is_api(request: Request) -> bool:
    return request.url.path == "/api" or request.url.path.startswith("/api/")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if _is_api(request):
        response = json_error(str(exc.detail), exc.status_code)
        response.headers.update(headers)
        return response
    context = {"status": exc.status_code, "message": str(exc.detail)}
    response = render(request, "error.html", context, status=exc.status_code)
    response.headers.update(headers)
    return response


async def _store_down(request: Request, exc: Exception) -> Response:
    log.warning("archive: the store is unavailable: %s", first_line(exc))
    message = "the store is unavailable; try again shortly"
    if _is_api(request):
        return json_error(message, 503)
    return render(request, "error.html", {"status": 503, "message": message}, status=503)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback (through the process's redacting handler); the client gets one line.
    if _is_api(request):
        return json_error("internal error", 500)
    return render(request, "error.html", {"status": 500, "message": "internal error"}, status=500)


def create_app(
    store: Engine,
    *,
    token: str,
    rules_dir: Path,
    health: Health | None = None,
    https: bool = False,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The archive over `store`, signed in with `token`; `https` marks the session cookie Secure."""
    if not token:
        raise ValueError("the archive needs a sign-in token (TGSENTINEL_WEB_TOKEN)")
    throttle = auth.Throttle()
    routes: list[BaseRoute] = [
        *extra_routes,
        *auth.routes,
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    for module in PAGES:
        routes.extend(module.routes)
    middleware = [
        Middleware(auth.SecurityHeaders),  # outermost: redirects, 401s and errors get the CSP too
        Middleware(
            SessionMiddleware,
            secret_key=auth.session_secret(token),
            session_cookie=auth.COOKIE,
            max_age=auth.SESSION_AGE,
            same_site="strict",
            https_only=https,
        ),
        Middleware(auth.Guard, token=token, throttle=throttle),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HTTPException: _http_error,
            OperationalError: _store_down,
            Exception: _server_error,
        },
    )
    app.state.store = store
    app.state.rules_dir = rules_dir
    app.state.health = health
    app.state.web_token = token
    app.state.throttle = throttle
    return app
