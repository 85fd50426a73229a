"""Secrets stay out of every output channel, even when a receiver echoes them back.

A receiver or proxy that echoes the request (Express's `Cannot POST /path`, a 401 quoting the
Authorization header, the path percent-encoded or JSON-escaped) must not get a Slack URL's path, a
Discord token, a Bot API token, a webhook's path, query or header values, the signing secret or
TGSENTINEL_HTTP_TOKEN into the log, the store, the ops notices or the CLI's output.
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from bot.redact import SECRETS, RedactFilter, Redactor, url_secrets, value_secrets
from bot.settings import load_settings
from tests.cli import ROOT, tgs_process
from tests.conftest import SAMPLE

SLACK_PATH = "/services/T0SLACKTEAM/B0SLACKBOT/slackSECRETtoken42xyz"
DISCORD_PATH = "/api/webhooks/987654321098765432/discordSECRETtoken_42-xyz"
TG_TOKEN = "123456789:AAtelegramSECRETtoken42xyz012345678"
HOOK_PATH = "/hooks/webhookSECRETpath42"
HOOK_QUERY = "key=querySECRETvalue42"
BEARER = "Bearer headerSECRETbearer42"
API_KEY = "apikeySECRETvalue42"
SIGNING = "whsec_c2lnbmluZy1zZWNyZXQta2V5LTAxMjM0NTY3ODlhYmNk"
OPS_PATH = "/ops/opsSECREThook42"
HTTP_TOKEN = "httpSECRETtoken42"

# What must never be seen: the distinctive part of each secret, which every spelling of it (raw,
# percent-encoded, JSON- or HTML-escaped) contains as it is.
NEEDLES = (
    "T0SLACKTEAM",
    "B0SLACKBOT",
    "slackSECRETtoken42xyz",
    "987654321098765432",
    "discordSECRETtoken_42-xyz",
    "telegramSECRETtoken42",
    "webhookSECRETpath42",
    "querySECRETvalue42",
    "headerSECRETbearer42",
    "apikeySECRETvalue42",
    SIGNING.removeprefix("whsec_"),
    "opsSECREThook42",
    HTTP_TOKEN,
)


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def echoes(path: str, values: list[str]) -> list[str]:
    """The ways a receiver echoes a request back, one per attempt: Express's 404 page (path HTML-
    escaped) with the Authorization header quoted, the lot percent-encoded (upper- and lower-case
    hex), and a JSON error with escaped slashes."""
    encoded = " ".join(quote(v, safe="") for v in (path, *values))
    return [
        f"<pre>Cannot POST {html.escape(path)}</pre> " + " ".join(values),
        encoded,
        lower_hex(encoded),
        json.dumps({"error": "denied", "path": path, "got": values}).replace("/", "\\/"),
    ]


class Echo:
    """Answers 500 to every destination, echoing its request in the next spelling each time."""

    def __init__(self, server: HTTPServer) -> None:
        self.attempts: dict[str, int] = {}
        self.ops: list[dict] = []
        self.lock = threading.Lock()
        server.expect_request(re.compile(r"^/(services/|api/|bot\d|hooks/)")).respond_with_handler(
            self.handle
        )
        server.expect_request(OPS_PATH).respond_with_handler(self.ops_notice)

    def handle(self, request: Request) -> Response:
        path = request.full_path.rstrip("?")
        # What a receiver knows besides the request: a webhook's signing secret, say.
        values = [v for v in (request.headers.get("Authorization"), request.headers.get("X-Api-Key")) if v]
        values += [SIGNING, HTTP_TOKEN]
        kind = path.split("/")[1]
        with self.lock:
            n = self.attempts[kind] = self.attempts.get(kind, -1) + 1
        text = echoes(path, values)[n % 4]
        if kind.startswith("bot"):  # the Bot API's error shape: the sender reads `description`
            body = json.dumps({"ok": False, "error_code": 500, "description": text})
            return Response(body, 500, content_type="application/json")
        return Response(text, 500)

    def ops_notice(self, request: Request) -> Response:
        with self.lock:
            self.ops.append(json.loads(request.get_data()))
        return Response("ok")


def write_rules(rules: Path, server: HTTPServer) -> None:
    base = server.url_for("/").rstrip("/")
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "destinations:\n"
        f"  - {{name: slack, type: slack, url: '{base}{SLACK_PATH}'}}\n"
        f"  - {{name: discord, type: discord, url: '{base}{DISCORD_PATH}'}}\n"
        f"  - {{name: tg, type: telegram, bot_token: '{TG_TOKEN}', chat_id: -100123, api_url: '{base}'}}\n"
        f"  - name: hook\n    type: webhook\n    url: '{base}{HOOK_PATH}?{HOOK_QUERY}'\n"
        f"    secret: {SIGNING}\n"
        f"    headers: {{Authorization: '{BEARER}', X-Api-Key: {API_KEY}}}\n"
        f"  - {{name: ops, type: webhook, url: '{base}{OPS_PATH}'}}\n"
        "ops: ops\n"
        "rules:\n  - id: moldova\n    match: {any: [Moldova]}\n    notify: [slack, discord, tg, hook]\n",
        encoding="utf-8",
    )


def store_text(db: Path) -> str:
    """Every text value of every column of every table of the SQLite store."""
    out: list[str] = []
    with sqlite3.connect(db) as conn:
        # The search index's blocks are binary (and hold its tokens as plain bytes): read them too.
        conn.text_factory = lambda data: data.decode("utf-8", "replace")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                for (value,) in conn.execute(f'SELECT CAST("{column}" AS TEXT) FROM "{table}"'):
                    if value is not None:
                        out.append(value)
    return "\n".join(out)


def leaked(where: str, text: str) -> list[str]:
    return [f"{where}: {needle}" for needle in NEEDLES if needle in text]


def test_echoed_secrets_reach_no_log_store_notice_or_cli_output(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    echo = Echo(httpserver)
    rules = tmp_path / "rules"
    write_rules(rules, httpserver)
    db = tmp_path / "x.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        "TGSENTINEL_RULES_DIR": str(rules),
        "TGSENTINEL_DATA_DIR": str(tmp_path / "data"),
        "TGSENTINEL_HTTP_TOKEN": HTTP_TOKEN,
        "TGSENTINEL_RETRY_BASE": "0.05",
        "TGSENTINEL_RETRY_CAP": "0.1",
        "TGSENTINEL_MAX_ATTEMPTS": "4",  # one attempt per spelling of the echo, then a dead letter
    }
    replay = tgs_process("replay", str(SAMPLE), "--channel", "mfa", "--drain-timeout", "60", env=env)
    err = replay.stderr.decode()
    assert replay.returncode == 0, err[-3000:]
    # Every spelling came back from every destination, and each destination's alert died of it.
    assert len(echo.attempts) == 4 and set(echo.attempts.values()) == {3}, echo.attempts
    assert "deliveries: 4 sent, 0 pending, 0 held, 4 dead" in err, err[-3000:]
    assert len(echo.ops) == 4 and all("dead letter" in n["summary"] for n in echo.ops)
    assert sum("HTTP 500" in line and "retrying" in line for line in err.splitlines()) == 12

    listed = tgs_process("alerts", "list", env=env)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 8
    tested = [
        tgs_process("alerts", "test", "--destination", name, env=env)
        for name in ("slack", "discord", "tg", "hook")
    ]
    assert all(t.returncode == 1 and b"HTTP 500" in t.stderr for t in tested)

    problems = (
        leaked("log", err)
        + leaked("replay stdout", replay.stdout.decode())
        + leaked("store", store_text(db))
        + leaked("ops notices", json.dumps(echo.ops, ensure_ascii=False))
        + leaked("alerts list", listed.stdout.decode() + listed.stderr.decode())
        + leaked("alerts test", "".join(t.stdout.decode() + t.stderr.decode() for t in tested))
    )
    assert problems == []
    # Redacted, not dropped: the reason still says what the receiver said around the secret.
    assert "Cannot POST ***" in store_text(db) or "Cannot POST ***" in err


def test_every_spelling_of_a_secret_is_blanked_and_a_cut_leaves_no_beginning_of_one() -> None:
    r = Redactor(url_secrets(f"https://hooks.slack.com{SLACK_PATH}") + value_secrets(BEARER))
    for text in echoes(SLACK_PATH, [BEARER]):
        assert not leaked("echo", r(text)), text
    assert r("token slackSECRETtoken42xyz alone") == "token *** alone"
    body = "x" * 290 + SLACK_PATH
    cut = r.excerpt(body, 300)
    assert cut.endswith("***") and "/services/T0" not in cut and len(cut) <= 303


def test_settings_secrets_are_learnt_at_the_edge_and_every_log_record_is_redacted(tmp_path: Path) -> None:
    load_settings(
        database_url="postgresql://tgs:pgSECRETpassword42@127.0.0.1:5432/x",
        http_token=HTTP_TOKEN,
        _env_file=None,
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("connecting with %s and %s", "pgSECRETpassword42", quote(HTTP_TOKEN))
        try:
            raise ValueError(f"bad url http://h/{HTTP_TOKEN}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "pgSECRETpassword42" not in out and HTTP_TOKEN not in out
    assert "connecting with *** and ***" in out and "ValueError: bad url http://h/***" in out
    assert SECRETS("pgSECRETpassword42") == "***"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_cli_log_setup_redacts_every_record_of_every_logger(fmt: str, tmp_path: Path) -> None:
    # The monitor's own logging setup, in a process of its own: a record from any library, message
    # or traceback, that carries a setting's secret.
    script = (
        "import logging\n"
        "from bot import cli\n"
        "cli._logging()\n"
        "log = logging.getLogger('some.library')\n"
        f"log.warning('GET http://127.0.0.1/x?token=%s', {quote(HTTP_TOKEN)!r})\n"
        "try:\n"
        f"    raise RuntimeError('auth failed for ' + {HTTP_TOKEN!r})\n"
        "except RuntimeError:\n"
        "    log.exception('request failed')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TGSENTINEL_", "DATABASE_URL"))}
    env.update(TGSENTINEL_HTTP_TOKEN=HTTP_TOKEN, TGSENTINEL_LOG_FORMAT=fmt, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, timeout=60, check=True
    )
    err = proc.stderr.decode()
    assert "token=***" in err and "RuntimeError: auth failed for ***" in err, err
    assert leaked("log", err) == []
