"""`/healthz` and `/metrics`, the monitor's probes, as routes beside the archive's pages.

Both stay open to probes: `/healthz` answers 200 or 503 to anyone. With the HTTP token set, the
detail of `/healthz` and all of `/metrics` need `Authorization: Bearer TOKEN`; the archive's own
sign-in is a different token, for people.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bot.health import Health
from bot.web.auth import bearer, same_token


def routes(health: Health, token: str | None) -> list[BaseRoute]:
    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = bearer(request.scope)
        return given is not None and same_token(given, token)

    async def healthz(request: Request) -> Response:
        snapshot = health.snapshot()
        shown = snapshot if authorised(request) else {"healthy": snapshot["healthy"]}
        return JSONResponse(shown, status_code=200 if snapshot["healthy"] else 503)

    async def metrics(request: Request) -> Response:
        if not authorised(request):
            return PlainTextResponse("a bearer token is required\n", status_code=401)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, include_in_schema=False),
        Route("/metrics", metrics, include_in_schema=False),
    ]
