"""`tgsentinel alerts test --destination NAME`: one sample alert, marked as a test, through the real
sender to a real server on 127.0.0.1; the outcome in one line, no secret in it, no database."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

from tests.cli import tgs

SECRET = "SECRETPART"
TOKEN = "123456:" + SECRET + "A" * 25
SIGNING = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
PATHS = {
    "slack": f"/services/T0/B0/{SECRET}",
    "discord": f"/api/webhooks/1/{SECRET}",
    "telegram": f"/bot{TOKEN}/sendMessage",
    "webhook": f"/hooks/{SECRET}",
}


def rules(tmp_path: Path, httpserver: HTTPServer) -> Path:
    base = httpserver.url_for("/").rstrip("/")
    d = tmp_path / "rules"
    d.mkdir()
    (d / "d.yaml").write_text(
        "destinations:\n"
        f"  - {{name: ops-slack, type: slack, url: '{base}{PATHS['slack']}'}}\n"
        f"  - {{name: newsroom, type: discord, url: '{base}{PATHS['discord']}'}}\n"
        f"  - {{name: analysts, type: telegram, bot_token: '{TOKEN}', chat_id: -1001, api_url: '{base}'}}\n"
        f"  - {{name: siem, type: webhook, url: '{base}{PATHS['webhook']}', secret: '{SIGNING}'}}\n"
    )
    return d


def run(tmp_path: Path, httpserver: HTTPServer, name: str):
    # DATABASE_URL names a file that must not come into being: the command needs no database.
    db = tmp_path / "nowhere" / "x.db"
    proc = tgs(
        "alerts", "test", "--destination", name, "--rules", str(rules(tmp_path, httpserver)),
        env={"DATABASE_URL": f"sqlite:///{db}"},
    )  # fmt: skip
    assert not db.parent.exists()
    return proc


def said(proc) -> str:
    return (proc.stdout + proc.stderr).decode()


def only_request(httpserver: HTTPServer) -> Request:
    assert len(httpserver.log) == 1
    return httpserver.log[0][0]


def test_slack(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATHS["slack"], method="POST").respond_with_data("ok")
    proc = run(tmp_path, httpserver, "ops-slack")
    assert proc.returncode == 0, said(proc)
    assert proc.stdout.decode().splitlines() == ["sent to ops-slack (slack): HTTP 200"]
    body = json.loads(only_request(httpserver).get_data())
    assert "tgsentinel test alert" in body["text"]
    assert "This is a test alert" in json.dumps(body["blocks"])
    assert SECRET not in said(proc)


def test_discord(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATHS["discord"], method="POST").respond_with_json({"id": "987"})
    proc = run(tmp_path, httpserver, "newsroom")
    assert proc.returncode == 0, said(proc)
    assert proc.stdout.decode().splitlines() == ["sent to newsroom (discord): HTTP 200, message 987"]
    request = only_request(httpserver)
    assert request.args["wait"] == "true"
    embed = json.loads(request.get_data())["embeds"][0]
    assert embed["title"] == "tgsentinel test alert" and "This is a test alert" in embed["description"]
    assert SECRET not in said(proc)


def test_telegram_through_the_bot_api_url(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATHS["telegram"], method="POST").respond_with_json(
        {"ok": True, "result": {"message_id": 42}}
    )
    proc = run(tmp_path, httpserver, "analysts")
    assert proc.returncode == 0, said(proc)
    assert proc.stdout.decode().splitlines() == ["sent to analysts (telegram): HTTP 200, message 42"]
    body = json.loads(only_request(httpserver).get_data())
    assert body["chat_id"] == -1001
    assert "tgsentinel test alert" in body["text"] and "This is a test alert" in body["text"]
    assert SECRET not in said(proc)


def test_webhook_signed(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request(PATHS["webhook"], method="POST").respond_with_data("", status=204)
    proc = run(tmp_path, httpserver, "siem")
    assert proc.returncode == 0, said(proc)
    assert proc.stdout.decode().splitlines() == ["sent to siem (webhook): HTTP 204"]
    request = only_request(httpserver)
    payload: dict[str, Any] = Webhook(SIGNING).verify(request.get_data(), dict(request.headers))
    assert payload["rule"]["id"] == "tgsentinel-test"
    assert payload["message"]["title"] == "tgsentinel test alert"
    assert "This is a test alert" in payload["message"]["text"]
    assert SECRET not in said(proc)


def test_two_tests_are_two_alerts_to_a_receiver_that_drops_repeats(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(PATHS["webhook"]).respond_with_data("", status=204)
    assert run(tmp_path, httpserver, "siem").returncode == 0
    assert tgs("alerts", "test", "--destination", "siem", "--rules", str(tmp_path / "rules")).returncode == 0
    ids = {request.headers["webhook-id"] for request, _ in httpserver.log}
    assert len(ids) == 2


def test_console(tmp_path: Path, httpserver: HTTPServer) -> None:
    proc = run(tmp_path, httpserver, "console")
    assert proc.returncode == 0, said(proc)
    out = proc.stdout.decode()
    assert "tgsentinel test alert" in out and "This is a test alert" in out
    assert out.splitlines()[-1] == "sent to console (console)"
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("name", "reply", "reason"),
    [
        ("siem", Response("nope", status=400), "HTTP 400: nope"),
        ("ops-slack", Response("invalid_token", status=403), "HTTP 403: invalid_token"),
        ("newsroom", Response("busy", status=503), "HTTP 503: busy"),
        # The Bot API's own description quotes the token: the line must not.
        (
            "analysts",
            Response(
                json.dumps({"ok": False, "error_code": 401, "description": f"Unauthorized: bot{TOKEN}"}),
                status=401,
                content_type="application/json",
            ),
            "HTTP 401: Unauthorized: bot***",
        ),
    ],
)
def test_a_refusal_is_one_line_with_the_reason_and_exit_1(
    tmp_path: Path, httpserver: HTTPServer, name: str, reply: Response, reason: str
) -> None:
    kind = {"siem": "webhook", "ops-slack": "slack", "newsroom": "discord", "analysts": "telegram"}[name]
    httpserver.expect_request(PATHS[kind]).respond_with_response(reply)
    proc = run(tmp_path, httpserver, name)
    assert proc.returncode == 1
    assert proc.stdout == b""
    base = httpserver.url_for("/").rstrip("/")
    assert proc.stderr.decode().splitlines() == [f"tgsentinel: {name}: failed: {name} ({base}): {reason}"]
    assert SECRET not in said(proc)


def test_an_unreachable_destination_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "d.yaml").write_text(
        f"destinations:\n  - {{name: siem, type: webhook, url: 'http://127.0.0.1:{port}/hooks/{SECRET}'}}\n"
    )
    proc = tgs("alerts", "test", "--destination", "siem", "--rules", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == [
        f"tgsentinel: siem: failed: siem (http://127.0.0.1:{port}): "
        "ConnectError: All connection attempts failed"
    ]


def test_an_unknown_destination_says_what_was_meant_and_exits_2(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    proc = run(tmp_path, httpserver, "newsrom")
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines() == [
        f"tgsentinel: --destination: no destination 'newsrom' in {tmp_path / 'rules'} "
        "(did you mean 'newsroom'?)"
    ]
    assert httpserver.log == []
