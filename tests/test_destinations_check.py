"""`rules check` judges every destination as its sender would, at the value's line, without ever
printing the value: a URL, a token or a header value is a secret."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.cli import tgs

SECRET = "SECRETPART"  # in every value below, wherever it can go: it must never be printed
TOKEN = "123456:" + SECRET + "A" * 25  # @BotFather's shape: digits, ':', 35 characters
SLACK = f"https://hooks.slack.com/services/T0/B0/{SECRET}"
ENV = {"SLACK_WEBHOOK_URL": SLACK}

# (destination item as written under `destinations:` from line 2, [(line, message)])
BAD = {
    "not a url": (
        "- {name: s, type: slack, url: not a url " + SECRET + "}",
        [(2, "url: no scheme (write https://...)")],
    ),
    "no scheme": (
        f"- {{name: s, type: slack, url: hooks.slack.com/services/T0/B0/{SECRET}}}",
        [(2, "url: no scheme (write https://...)")],
    ),
    "ftp": (
        f"- {{name: s, type: slack, url: 'ftp://hooks.slack.com/services/T0/B0/{SECRET}'}}",
        [(2, "url: ftp:// is not supported (write https://...)")],
    ),
    "trailing space": (
        f"- {{name: s, type: slack, url: '{SLACK} '}}",
        [(2, "url: a space or line break at the start or end")],
    ),
    "space inside": (
        f"- {{name: w, type: webhook, url: 'https://siem.example/a {SECRET}'}}",
        [(2, "url: a space or line break inside the URL")],
    ),
    "$VAR without braces": (
        "- {name: s, type: slack, url: $SLACK_WEBHOOK_URL}",
        [(2, "url: $SLACK_WEBHOOK_URL is not substituted: write ${SLACK_WEBHOOK_URL}")],
    ),
    "${VAR unclosed": (
        "- {name: w, type: webhook, url: 'https://siem.example/${PATH_PART'}",
        [(2, "url: '${' without its closing '}'")],
    ),
    "slack over http": (
        f"- {{name: s, type: slack, url: 'http://hooks.slack.com/services/T0/B0/{SECRET}'}}",
        [(2, "url: http:// is only for localhost or 127.0.0.1 (write https://...)")],
    ),
    "slack, not an incoming webhook": (
        f"- {{name: s, type: slack, url: 'https://hooks.slack.com/triggers/{SECRET}'}}",
        [(2, "url: not an incoming-webhook URL (https://hooks.slack.com/services/...)")],
    ),
    "discord path": (
        f"- {{name: d, type: discord, url: 'https://discord.com/api/webhooks/{SECRET}'}}",
        [(2, "url: not a webhook URL (https://discord.com/api/webhooks/ID/TOKEN)")],
    ),
    "discord over http": (
        f"- {{name: d, type: discord, url: 'http://discord.com/api/webhooks/1/{SECRET}'}}",
        [(2, "url: http:// is only for localhost or 127.0.0.1 (write https://...)")],
    ),
    "bot token": (
        f"- {{name: t, type: telegram, bot_token: 'bot{SECRET}', chat_id: -1001}}",
        [(2, "bot_token: not a bot token (digits, ':', then letters, digits, - and _; from @BotFather)")],
    ),
    "chat id": (
        f"- {{name: t, type: telegram, bot_token: '{TOKEN}', chat_id: mychannel}}",
        [(2, "chat_id: a numeric chat id (-100...) or @channelusername")],
    ),
    "api_url": (
        f"- {{name: t, type: telegram, bot_token: '{TOKEN}', chat_id: 1, "
        f"api_url: 'api.telegram.org/{SECRET}'}}",
        [(2, "api_url: no scheme (write https://...)")],
    ),
    "no host": (
        f"- {{name: w, type: webhook, url: 'https:///{SECRET}'}}",
        [(2, "url: no host (write https://HOST/...)")],
    ),
    "bad port": (
        f"- {{name: w, type: webhook, url: 'http://127.0.0.1:99999/{SECRET}'}}",
        [(2, "url: not a valid URL (a bad port or [IPv6] host?)")],
    ),
    # What the webhook sender itself refused when it was built: now the model's one check.
    "signing secret": (
        f"- {{name: w, type: webhook, url: 'https://siem.example/h', secret: 'whsec_!!{SECRET}'}}",
        [(2, "secret: must be 'whsec_' followed by base64 (a Standard Webhooks secret)")],
    ),
    "headers": (
        textwrap.dedent(
            f"""\
            - name: w
              type: webhook
              url: https://siem.example/h
              headers:
                X-Team: osint
                X-Key: "line one\\n{SECRET}"
                "Bad Name": x
                Authorization: "Bearer ${SECRET.lower()}"
            """
        ),
        [
            (7, "X-Key: a header value is plain ASCII on one line"),
            (8, "Bad Name: not a header name (letters, digits and - only)"),
            # A lower-case name may be part of a literal secret: not shown.
            (9, "Authorization: $NAME is not substituted: write ${NAME}"),
        ],
    ),
}


def check(tmp_path: Path, item: str, env: dict[str, str] | None = None):
    f = tmp_path / "d.yaml"
    # A channel after the destinations keeps their line numbers, and the check's no-channels warning out.
    body = "destinations:\n" + textwrap.indent(item, "  ").rstrip("\n") + "\nchannels: [news]\n"
    f.write_text(body, encoding="utf-8")
    return f, tgs("rules", "check", str(tmp_path), env={**ENV, **(env or {})})


def output(proc) -> str:
    return (proc.stdout + proc.stderr).decode()


@pytest.mark.parametrize(("item", "expected"), BAD.values(), ids=BAD.keys())
def test_a_bad_destination_is_its_file_line_and_never_its_value(
    tmp_path: Path, item: str, expected: list[tuple[int, str]]
) -> None:
    f, proc = check(tmp_path, item)
    assert proc.returncode == 1, output(proc)
    assert proc.stdout.decode().splitlines() == [f"{f}:{line}: {message}" for line, message in expected]
    assert SECRET.lower() not in output(proc).lower()


WARN = {
    "a proxy in front of Slack": (
        f"- {{name: s, type: slack, url: 'https://proxy.example/services/T0/B0/{SECRET}'}}",
        (2, "url: the host is not hooks.slack.com (fine for a proxy; a typo otherwise)"),
    ),
    "a proxy in front of Discord": (
        f"- {{name: d, type: discord, url: 'https://proxy.example/api/webhooks/1/{SECRET}'}}",
        (2, "url: the host is not discord.com (fine for a proxy; a typo otherwise)"),
    ),
    "a short bot token": (
        f"- {{name: t, type: telegram, bot_token: '1:{SECRET}', chat_id: '@news'}}",
        (2, "bot_token: the part after ':' is 35 characters in @BotFather's tokens"),
    ),
    "the token sent in clear": (
        f"- {{name: t, type: telegram, bot_token: '{TOKEN}', chat_id: 1, api_url: 'http://bots.example'}}",
        (2, "api_url: http:// sends the bot token unencrypted (https:// unless the server is local)"),
    ),
    "a header the sender sets": (
        "- name: w\n  type: webhook\n  url: https://siem.example/h\n"
        "  headers:\n    Content-Type: text/plain\n",
        (6, "Content-Type: set by tgsentinel itself: this value is not sent"),
    ),
}


@pytest.mark.parametrize(("item", "expected"), WARN.values(), ids=WARN.keys())
def test_what_may_be_meant_is_a_warning_and_the_check_passes(
    tmp_path: Path, item: str, expected: tuple[int, str]
) -> None:
    f, proc = check(tmp_path, item)
    assert proc.returncode == 0, output(proc)
    line, message = expected
    assert proc.stdout.decode().splitlines() == [
        f"{f}:{line}: warning: {message}",
        "rules OK: 1 file, 0 rules, 1 channel, 2 destinations (1 warning)",
    ]
    assert SECRET.lower() not in output(proc).lower()


def test_real_shapes_and_loopback_test_servers_pass_without_a_word(tmp_path: Path) -> None:
    item = textwrap.dedent(
        f"""\
        - {{name: slack, type: slack, url: "${{SLACK_WEBHOOK_URL}}"}}
        - {{name: discord, type: discord, url: "https://discord.com/api/webhooks/123/{SECRET}?thread_id=9"}}
        - {{name: bot, type: telegram, bot_token: "{TOKEN}", chat_id: "@news", thread_id: 4}}
        - {{name: hook, type: webhook, url: "https://siem.example/h", secret: "whsec_MfKQ9r8GKYqrTwjUPD8I"}}
        - {{name: local-slack, type: slack, url: "http://127.0.0.1:8080/slack"}}
        - {{name: local-discord, type: discord, url: "http://localhost:8080/discord"}}
        - {{name: local-bot, type: telegram, bot_token: "{TOKEN}", chat_id: -1001, api_url: "http://[::1]:81"}}
        - {{name: internal, type: webhook, url: "http://siem.internal:8000/h", headers: {{X-Team: osint}}}}
        """
    )
    _, proc = check(tmp_path, item)
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.decode().splitlines() == ["rules OK: 1 file, 0 rules, 1 channel, 9 destinations"]


def test_a_rule_naming_an_invalid_destination_is_not_told_it_is_unknown(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "destinations:\n"
        f"  - {{name: pager, type: slack, url: 'hooks.slack.com/services/T0/B0/{SECRET}'}}\n"
        "ops: pager\n"
        "rules:\n"
        "  - {id: a, match: {any: [x]}, notify: [pager]}\n"
    )
    proc = tgs("rules", "check", str(tmp_path))
    assert proc.returncode == 1
    # One problem, at its line; not also "unknown destination 'pager'" for the rule and for ops.
    assert proc.stdout.decode().splitlines() == [f"{f}:2: url: no scheme (write https://...)"]


def test_every_command_that_reads_the_rules_refuses_a_bad_destination(tmp_path: Path) -> None:
    _, check_proc = check(tmp_path, "- {name: s, type: slack, url: $SLACK_WEBHOOK_URL}")
    assert check_proc.returncode == 1
    run = tgs("run", "--rules", str(tmp_path), env={**ENV, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert run.returncode == 2
    found = check_proc.stdout.decode().splitlines()
    assert run.stderr.decode().splitlines() == [f"tgsentinel: {x}" for x in found]
    assert SECRET not in output(run)
