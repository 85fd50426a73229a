"""What each destination's server receives: hostile channel text escaped and cut, signatures that
verify, Telegram's migrations and parse-error fallback, every alert kind, and the console."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug import Response

from bot.alerts.config import (
    ConsoleDestination,
    DiscordDestination,
    SlackDestination,
    TelegramDestination,
    WebhookDestination,
)
from bot.alerts.model import AlertView, Permanent, Sent
from bot.alerts.ratelimit import RateLimits, RatePolicy
from bot.alerts.senders import build_sender
from bot.rules.model import Hit
from tests.conftest import alert_view

TOKEN = "123456:TELEGRAMSECRETTOKEN"
TELEGRAM_PATH = f"/bot{TOKEN}/sendMessage"
FAST = RatePolicy(slack_interval=0.0, telegram_interval=0.0, telegram_group=(1000, 1.0))
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()

HOSTILE = (
    "<b>bold?</b> & &amp; <!channel> <!here> @everyone @here <@123> <#456> **x** __u__ ~~s~~ "
    "[click](https://evil.example) <script>alert(1)</script> `code` ||spoiler|| [bold red]rich[/] "
    "<a href='https://evil.example'>link</a>\n> quote\n# heading\n- item\n1. first\n"
)
LONG = HOSTILE + "the grid is down " + "x" * 10_000
HIT = Hit("grid", LONG.index("grid"), LONG.index("grid") + 4)


def alert(**kw: Any) -> AlertView:
    # Hostile wherever channel text goes.
    return alert_view(
        **{
            "id": "alert-7",
            "channel_id": 1001,
            "channel_title": "News <i>&</i> @everyone",
            "title": "<b>Grid</b> & <!channel>",
            "text": LONG,
            "hashtags": ("#grid", "#power"),
            "forwarded_from": "<!here> Source",
            "fingerprint": "fp1",
            "hits": (HIT,),
            "also_seen_in": ("@mirror",),
            **kw,
        }
    )


def received(http: HTTPServer, n: int = -1) -> dict[str, Any]:
    return json.loads(http.log[n][0].get_data())


async def deliver(
    http: HTTPServer, client: httpx.AsyncClient, dest: Any, view: AlertView, reply: Response
) -> Sent:
    http.expect_request(re.compile(".*")).respond_with_response(reply)
    return await build_sender(dest, client, limits=RateLimits(FAST)).send(view)


# --- Slack -----------------------------------------------------------------------------------------


def slack_texts(body: dict[str, Any]) -> list[str]:
    texts = [body["text"]]
    for block in body["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(e["text"] for e in block.get("elements", ()))
    return texts


async def test_slack_escapes_and_cuts_hostile_text(http: HTTPServer, client: httpx.AsyncClient) -> None:
    dest = SlackDestination(name="s", type="slack", url=http.url_for("/services/T/B/X"))
    await deliver(http, client, dest, alert(), Response("ok"))
    body = received(http)
    assert len(body["blocks"]) <= 50
    texts = slack_texts(body)
    for text in texts:
        assert len(text) <= 3000
        # Our one link is the only Slack control sequence; channel text has no raw < or > left.
        rest = re.sub(r"<https://t\.me/news/5\|https://t\.me/news/5>", "", text)
        assert "<" not in rest and ">" not in rest
        assert re.fullmatch(r"(?:[^&]|&amp;|&lt;|&gt;)*", text, re.S)
    joined = "\n".join(texts)
    assert "&lt;!channel&gt;" in joined and "&lt;b&gt;bold?&lt;/b&gt; &amp; &amp;amp;" in joined
    assert "*grid*" in joined
    excerpt = body["blocks"][1]["text"]["text"]
    assert excerpt.endswith("…") and len(excerpt) > 2500  # cut near the limit, not far below it
    assert "#grid #power" in joined and "@mirror" in joined
    for fact in ("*HIGH*", "(@news)", "2024-05-01 12:00 UTC", "forwarded from &lt;!here&gt; Source"):
        assert fact in joined, fact


async def test_slack_digest_stays_within_fifty_blocks(http: HTTPServer, client: httpx.AsyncClient) -> None:
    items = tuple(alert(id=f"i{n}", channel_title=f"Chan {n}", text="grid", hits=()) for n in range(60))
    view = alert(kind="digest", summary="60 matches in the last hour", items=items)
    dest = SlackDestination(name="s", type="slack", url=http.url_for("/services/T/B/X"))
    await deliver(http, client, dest, view, Response("ok"))
    body = received(http)
    assert len(body["blocks"]) <= 50
    joined = "\n".join(slack_texts(body))
    assert "60 matches in the last hour" in joined and "Chan 0" in joined
    assert "and 15 more" in joined


# --- Discord ---------------------------------------------------------------------------------------


def discord_strings(body: dict[str, Any]) -> list[str]:
    embed = body["embeds"][0]
    out = [body["content"], embed["title"], embed.get("description", ""), embed["footer"]["text"]]
    for f in embed["fields"]:
        out.extend((f["name"], f["value"]))
    return out


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def test_discord_escapes_mentions_and_markdown(http: HTTPServer, client: httpx.AsyncClient) -> None:
    dest = DiscordDestination(name="d", type="discord", url=http.url_for("/api/webhooks/1/T"))
    reply = Response('{"id": "99"}', content_type="application/json")
    assert await deliver(http, client, dest, alert(), reply) == Sent("99")
    assert http.log[0][0].args["wait"] == "true"
    body = received(http)
    assert body["allowed_mentions"] == {"parse": []}
    assert len(body["embeds"]) == 1
    embed = body["embeds"][0]
    assert units(body["content"]) <= 2000
    assert units(embed["title"]) <= 256
    assert units(embed["description"]) <= 4096
    assert sum(units(s) for s in discord_strings(body)[1:]) <= 6000
    for text in discord_strings(body):
        assert not re.search(r"(?<!\\)@(everyone|here)", text)
        assert not re.search(r"(?<!\\)<[@#!]", text)
        assert not re.search(r"(?<!\\)\[click(?<!\\)\]", text)
        assert not re.search(r"(?<!\\)\*\*x", text)
    assert "**grid**" in embed["description"]
    assert embed["description"].endswith("\n\n\\#grid #power")  # "#" escaped where it starts a line
    assert embed["url"] == "https://t.me/news/5"
    assert embed["timestamp"].startswith("2024-05-01T12:00:00")
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Channel"] == "News \\<i>&\\</i> \\@everyone (\\@news)"
    assert fields["Forwarded from"] == "\\<!here> Source"


async def test_discord_embed_total_stays_under_6000(http: HTTPServer, client: httpx.AsyncClient) -> None:
    huge = "🚨" * 3000
    view = alert(title=huge, channel_title=huge, forwarded_from=huge, also_seen_in=(huge,), text=huge)
    dest = DiscordDestination(name="d", type="discord", url=http.url_for("/api/webhooks/1/T"))
    await deliver(http, client, dest, view, Response('{"id": "1"}', content_type="application/json"))
    body = received(http)
    strings = discord_strings(body)
    assert units(body["content"]) <= 2000
    assert sum(units(s) for s in strings[1:]) <= 6000
    assert all(units(f["value"]) <= 1024 for f in body["embeds"][0]["fields"])
    assert not any(re.search(r"[\ud800-\udfff]", s) for s in strings)


# --- Telegram --------------------------------------------------------------------------------------


class Visible(HTMLParser):
    """What Telegram shows for an HTML message: text with entities parsed, tags checked to nest."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: list[str] = []
        self.open: list[str] = []
        self.feed(html)
        self.close()
        assert not self.open, f"unclosed tags {self.open}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open.pop() == tag

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def telegram(http: HTTPServer, **kw: Any) -> TelegramDestination:
    kw.setdefault("chat_id", -1001234567890)
    return TelegramDestination(
        name="analysts", type="telegram", bot_token=TOKEN, api_url=http.url_for("/").rstrip("/"), **kw
    )


def tg_ok(message_id: int = 77) -> Response:
    return Response(
        json.dumps({"ok": True, "result": {"message_id": message_id}}), content_type="application/json"
    )


def tg_error(description: str, **parameters: Any) -> Response:
    body = {"ok": False, "error_code": 400, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Response(json.dumps(body), 400, content_type="application/json")


async def test_telegram_escapes_everything_and_disables_previews(
    http: HTTPServer, client: httpx.AsyncClient
) -> None:
    sent = await deliver(http, client, telegram(http, thread_id=42), alert(), tg_ok())
    assert sent == Sent("77")
    body = received(http)
    assert body["parse_mode"] == "HTML"
    assert body["link_preview_options"] == {"is_disabled": True}
    assert body["message_thread_id"] == 42
    assert body["chat_id"] == -1001234567890
    html = body["text"]
    # Only the entities Telegram knows, and only the tags we chose.
    assert re.fullmatch(r"(?:[^&]|&amp;|&lt;|&gt;|&quot;)*", html, re.S)
    page = Visible(html)
    assert set(page.tags) <= {"b", "a"}
    assert "<b>bold?</b> & &amp; <!channel>" in page.text  # arrives literally
    assert "<script>alert(1)</script>" in page.text
    assert "News <i>&</i> @everyone (@news)" in page.text
    assert "<b>grid</b>" in html
    assert '<a href="https://t.me/news/5">' in html
    assert units(page.text) <= 4096
    for fact in ("HIGH", "grid", "2024-05-01 12:00 UTC", "forwarded from <!here> Source", "#grid #power"):
        assert fact in page.text, fact


@pytest.mark.parametrize("pad", [0, 1])
async def test_telegram_cut_never_splits_an_astral_emoji(
    pad: int, http: HTTPServer, client: httpx.AsyncClient
) -> None:
    # Every character after "grid " is 2 UTF-16 units. Of the two paddings, one puts the 4,096-unit
    # limit in the middle of an emoji, whatever the length of the header lines.
    text = "grid " + "a" * pad + "😀" * 6000
    view = alert(text=text, hits=(Hit("grid", 0, 4),), title="t", channel_title="c", forwarded_from=None)
    await deliver(http, client, telegram(http), view, tg_ok())
    shown = Visible(received(http)["text"]).text
    assert not re.search(r"[\ud800-\udfff]", shown)  # no half of a surrogate pair
    assert 4090 <= units(shown) <= 4096  # cut at the limit, not far below it
    assert "😀…" in shown  # the last emoji whole, then the ellipsis
    assert shown.endswith("😀…\n#grid #power\nalso seen in @mirror (first in @news at 12:00 UTC)")


async def test_telegram_follows_a_chat_migration_and_remembers_it(
    http: HTTPServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    upgraded = tg_error(
        "Bad Request: group chat was upgraded to a supergroup chat", migrate_to_chat_id=-1009999
    )
    http.expect_ordered_request(TELEGRAM_PATH).respond_with_response(upgraded)
    http.expect_ordered_request(TELEGRAM_PATH).respond_with_response(tg_ok(1))
    http.expect_ordered_request(TELEGRAM_PATH).respond_with_response(tg_ok(2))
    sender = build_sender(telegram(http, chat_id=-4321), client, limits=RateLimits(FAST))
    with caplog.at_level(logging.WARNING):
        assert await sender.send(alert()) == Sent("1")
        assert await sender.send(alert()) == Sent("2")
    assert [received(http, n)["chat_id"] for n in range(3)] == [-4321, -1009999, -1009999]
    assert "-1009999" in caplog.text and "TELEGRAMSECRETTOKEN" not in caplog.text
    http.check_assertions()


async def test_telegram_resends_once_as_plain_text_when_entities_do_not_parse(
    http: HTTPServer, client: httpx.AsyncClient
) -> None:
    bad = tg_error('Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 3')
    http.expect_ordered_request(TELEGRAM_PATH).respond_with_response(bad)
    http.expect_ordered_request(TELEGRAM_PATH).respond_with_response(tg_ok(5))
    sender = build_sender(telegram(http), client, limits=RateLimits(FAST))
    assert await sender.send(alert()) == Sent("5")
    first, second = received(http, 0), received(http, 1)
    assert "parse_mode" not in second
    assert second["text"] == Visible(first["text"]).text  # the same words, no markup
    assert second["link_preview_options"] == {"is_disabled": True}

    http.clear()
    http.expect_request(TELEGRAM_PATH).respond_with_response(bad)
    with pytest.raises(Permanent):
        await sender.send(alert())
    assert len(http.log) == 2  # once, not a loop


# --- Webhook ---------------------------------------------------------------------------------------


async def test_a_huge_post_makes_a_bounded_webhook_body_that_says_it_was_cut(
    http: HTTPServer, client: httpx.AsyncClient
) -> None:
    http.expect_request("/hook").respond_with_response(Response("", 204))
    huge = "Moldova " + "word " * 20_000  # 100k characters
    far = Hit("far", len(huge) - 4, len(huge))  # a hit past the cut has nothing to point at
    dest = WebhookDestination(name="siem", type="webhook", url=http.url_for("/hook"))
    sender = build_sender(dest, client, limits=RateLimits(FAST))
    await sender.send(alert(text=huge, hits=(Hit("Moldova", 0, 7), far)))
    (request, _), = http.log
    body = json.loads(request.get_data())
    assert len(request.get_data()) < 20_000  # was over 100 KB
    assert body["message"]["text"] == huge[:16_384] and body["message"]["truncated"] is True
    assert body["hits"] == [{"term": "Moldova", "start": 0, "end": 7}]

    http.clear()
    http.expect_request("/hook").respond_with_response(Response("", 204))
    small = WebhookDestination(name="siem", type="webhook", url=http.url_for("/hook"), max_text=100)
    await build_sender(small, client, limits=RateLimits(FAST)).send(alert(text="short", hits=()))
    (request, _), = http.log
    message = json.loads(request.get_data())["message"]
    assert (message["text"], message["truncated"]) == ("short", False)


async def test_webhook_signatures_verify_and_ids_are_stable_across_retries(
    http: HTTPServer, client: httpx.AsyncClient
) -> None:
    http.expect_ordered_request("/hook").respond_with_response(Response("busy", 503))
    http.expect_ordered_request("/hook").respond_with_response(Response("", 204))
    dest = WebhookDestination(
        name="siem", type="webhook", url=http.url_for("/hook"), secret=SECRET, headers={"X-Team": "osint"}
    )
    sender = build_sender(dest, client, limits=RateLimits(FAST))
    with pytest.raises(Exception, match="HTTP 503"):
        await sender.send(alert())
    assert await sender.send(alert()) == Sent(None)
    verifier = Webhook(SECRET)
    for request, _ in http.log:
        headers = dict(request.headers)
        assert headers["Webhook-Id"] == "alert-7"
        assert headers["X-Team"] == "osint"
        payload = verifier.verify(request.get_data(), headers)
        assert payload["message"]["text"] == LONG  # the whole post, raw: JSON needs no other escaping
        with pytest.raises(WebhookVerificationError):
            verifier.verify(request.get_data() + b" ", headers)
    body = payload
    assert body["type"] == "alert" and body["id"] == "alert-7"
    assert body["rule"] == {"id": "grid", "severity": "high"}
    assert body["channel"] == {"id": 1001, "username": "news", "title": "News <i>&</i> @everyone"}
    assert body["message"]["url"] == "https://t.me/news/5"
    assert body["message"]["date"] == "2024-05-01T12:00:00+00:00"
    assert body["message"]["hashtags"] == ["#grid", "#power"]
    assert body["message"]["forwarded_from"] == "<!here> Source"
    assert body["message"]["fingerprint"] == "fp1"
    assert body["hits"] == [{"term": "grid", "start": HIT.start, "end": HIT.end}]
    assert body["also_seen_in"] == ["@mirror"]


async def test_webhook_without_secret_still_carries_an_id(
    http: HTTPServer, client: httpx.AsyncClient
) -> None:
    dest = WebhookDestination(name="siem", type="webhook", url=http.url_for("/hook"))
    await deliver(http, client, dest, alert(), Response("", 200))
    headers = http.log[0][0].headers
    assert headers["webhook-id"] == "alert-7" and "webhook-signature" not in headers


async def test_webhook_ops_and_digest_bodies(http: HTTPServer, client: httpx.AsyncClient) -> None:
    dest = WebhookDestination(name="siem", type="webhook", url=http.url_for("/hook"))
    ops = alert(id="ops-1", kind="ops", rule_id="", severity="warning", summary="destination slack disabled")
    await deliver(http, client, dest, ops, Response("", 200))
    body = received(http)
    assert body["type"] == "ops" and body["summary"] == "destination slack disabled"
    items = (alert(id="m1"), alert(id="m2"))
    await build_sender(dest, client, limits=RateLimits(FAST)).send(
        alert(id="d1", kind="digest", summary="2 matches", items=items)
    )
    body = received(http)
    assert body["type"] == "alert" and body["kind"] == "digest"
    assert [i["id"] for i in body["items"]] == ["m1", "m2"]


def test_webhook_bad_secret_is_refused_by_the_model_without_the_secret() -> None:
    # The model makes the check (so `rules check` makes it too): no sender is built from a bad secret.
    with pytest.raises(ValidationError) as exc:
        WebhookDestination(name="siem", type="webhook", url="https://x.example/h", secret="whsec_!!notb64!!")
    assert "'whsec_' followed by base64" in str(exc.value) and "notb64" not in str(exc.value)


# --- Console ---------------------------------------------------------------------------------------


async def test_console_shows_channel_text_literally(client: httpx.AsyncClient) -> None:
    out = io.StringIO()
    view = alert(text="[bold red]pwned[/] \x1b[31mred\x1b[0m :smile: the grid", hits=())
    sender = build_sender(ConsoleDestination(name="console"), client, console=out)
    assert await sender.send(view) == Sent(None)
    shown = out.getvalue()
    assert "[bold red]pwned[/]" in shown
    assert "\x1b" not in shown  # not a terminal: any escape sequence would have come from the post
    assert ":smile:" in shown
    assert "News <i>&</i> @everyone (@news)" in shown and "https://t.me/news/5" in shown


# --- Every kind, every destination -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["followup", "digest", "ops"])
async def test_other_kinds_render_for_every_destination(
    kind: str, http: HTTPServer, client: httpx.AsyncClient
) -> None:
    summary = {
        "followup": "+4 more matches for rule grid in News",
        "digest": "2 matches in 1h",
        "ops": "worker restarted",
    }[kind]
    view = alert(
        kind=kind, summary=summary, items=(alert(id="m1"), alert(id="m2")) if kind == "digest" else ()
    )
    http.expect_request(re.compile(".*")).respond_with_handler(
        lambda r: (
            tg_ok() if "sendMessage" in r.path else Response('{"id": "1"}', content_type="application/json")
        )
    )
    base = http.url_for("/").rstrip("/")
    dests = [
        SlackDestination(name="s", type="slack", url=base + "/slack"),
        DiscordDestination(name="d", type="discord", url=base + "/discord"),
        telegram(http),
        WebhookDestination(name="w", type="webhook", url=base + "/webhook"),
    ]
    for dest in dests:
        await build_sender(dest, client, limits=RateLimits(FAST)).send(view)
    bodies = [json.loads(r.get_data()) for r, _ in http.log]
    assert summary in json.dumps(bodies[0]["blocks"])
    assert summary in bodies[1]["embeds"][0]["description"]
    assert summary in Visible(bodies[2]["text"]).text
    assert bodies[3]["summary"] == summary
    out = io.StringIO()
    await build_sender(ConsoleDestination(name="c"), client, console=out).send(view)
    assert summary in out.getvalue()
