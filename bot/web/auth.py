"""Who may see the archive: sign-in with TGSENTINEL_WEB_TOKEN, the session cookie, the guard in front
of every route, and the security headers on every response.

- People sign in at /login with the token and get a session cookie (signed with itsdangerous by
  Starlette's SessionMiddleware): HttpOnly, SameSite=Strict, Secure behind https. Its key is derived
  from the token, so a restart keeps people signed in and a new token signs everyone out.
- Scripts send `Authorization: Bearer TOKEN` instead, and need no CSRF token.
- Everything but /login, /static/*, /healthz and /metrics needs one or the other: pages redirect to
  /login?next=..., /api/* answers 401 JSON.
- A wrong token costs its sender a second, one guess at a time: a few guesses a second at most,
  against a token of 256 random bits.

The token is never logged, echoed or stored in the cookie.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
from urllib.parse import quote, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.web.page import form, json_error, render

COOKIE = "tgsentinel_session"
SESSION_AGE = 7 * 24 * 3600  # seconds: a week of work without signing in again
FAILED_DELAY = 1.0  # seconds a wrong token waits, one at a time
OPEN_PREFIXES = ("/static/",)
OPEN_PATHS = frozenset({"/login", "/healthz", "/metrics"})

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)
HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
)


def session_secret(token: str) -> str:
    """The cookie-signing key: the token's HMAC, so it changes with the token and reveals nothing of it."""
    return hmac.new(token.encode(), b"tgsentinel web session v1", hashlib.sha256).hexdigest()


def same_token(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


class Throttle:
    """A wrong token waits FAILED_DELAY; while it waits, other tokens are not even compared (429):
    guessing in parallel is no faster, and guesses never queue up holding the port's connections."""

    def __init__(self, delay: float = FAILED_DELAY) -> None:
        self.delay = delay
        self._lock = asyncio.Lock()

    def busy(self) -> bool:
        return self._lock.locked()

    async def failed(self) -> None:
        async with self._lock:
            await asyncio.sleep(self.delay)


BUSY = "a wrong token was just given: try again in a second"


def bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return given.strip()
    return None


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class Guard:
    """Lets a request through when it carries the token or a signed-in session; records which in
    `scope["state"]["auth"]` (CSRF checks depend on it)."""

    def __init__(self, app: ASGIApp, token: str, throttle: Throttle) -> None:
        self.app, self.token, self.throttle = app, token, throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        given = bearer(scope)
        session = scope.get("session") or {}
        if given is not None and not is_open(scope["path"]) and self.throttle.busy():
            response = json_error(BUSY, 429)
            response.headers["retry-after"] = "1"
            await response(scope, receive, send)
            return
        if given is not None:
            if same_token(given, self.token):
                state["auth"] = "bearer"
            elif not is_open(scope["path"]):
                await self.throttle.failed()
        elif session.get("auth") is True:
            state["auth"] = "session"
        if state.get("auth") or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        await self._refuse(scope)(scope, receive, send)

    @staticmethod
    def _refuse(scope: Scope) -> Response:
        path = scope["path"]
        if path == "/api" or path.startswith("/api/"):
            response = json_error("sign in, or send Authorization: Bearer TOKEN", 401)
            response.headers["www-authenticate"] = "Bearer"
            return response
        request = HTTPConnection(scope)
        here = path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("hx-request") == "true":
            # A partial (a search form, a retry) of a page whose session ran out: the whole page
            # goes to sign-in, rather than the sign-in page swapped into the results.
            page = urlsplit(request.headers.get("hx-current-url", ""))
            back = safe_next(page.path + (f"?{page.query}" if page.query else ""))
            return Response(status_code=401, headers={"hx-redirect": f"/login?next={quote(back, safe='')}"})
        if scope["method"] == "GET" and request.headers.get("sec-fetch-site") == "cross-site":
            # A link followed from elsewhere (a chat) comes without the SameSite=Strict cookie. Asked
            # again from this site, the browser sends it; sent to /login instead, the sign-in page
            # would start a new session over the one the browser holds, and sign the user out.
            return HTMLResponse(_AGAIN.format(url=html.escape(here, quote=True)))
        return RedirectResponse(f"/login?next={quote(here, safe='')}", status_code=303)


_AGAIN = (
    '<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={url}">'
    '<title>tgsentinel</title><a href="{url}">Continue to tgsentinel</a>'
)


class SecurityHeaders:
    """The CSP and friends on every response, the probes' and the errors' included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS:
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never `//host` or `https://host`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/search"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ch in target for ch in "\r\n\t\\"):
        return "/search"
    return target


async def login_page(request: Request) -> Response:
    return render(request, "login.html", {"next": safe_next(request.query_params.get("next")), "error": ""})


async def login(request: Request) -> Response:
    """Sign in: the token from the form, compared in constant time; the session says only `auth`."""
    data = await form(request)  # the CSRF token /login's page put in its session
    given = data.get("token")
    target = safe_next(str(data.get("next") or ""))
    token: str = request.app.state.web_token
    if request.app.state.throttle.busy():
        context = {"next": target, "error": f"{BUSY[0].upper()}{BUSY[1:]}."}
        return render(request, "login.html", context, status=429)
    if not isinstance(given, str) or not same_token(given.strip(), token):
        await request.app.state.throttle.failed()
        context = {"next": target, "error": "That is not the token."}
        return render(request, "login.html", context, status=401)  # the token is never echoed
    # A fresh session, and a fresh CSRF token with it (made at the next page).
    request.session.clear()
    request.session["auth"] = True
    return RedirectResponse(target, status_code=303)


async def logout(request: Request) -> Response:
    await form(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def root(request: Request) -> Response:
    return RedirectResponse("/search", status_code=303)


routes: list[BaseRoute] = [
    Route("/", root, include_in_schema=False),
    Route("/login", login_page, methods=["GET"], include_in_schema=False),
    Route("/login", login, methods=["POST"], include_in_schema=False),
    Route("/logout", logout, methods=["POST"], include_in_schema=False),
]
