"""Telegram Desktop exports, and one `parse` for every format: real files through the real commands,
into real SQLite (and PostgreSQL in CI)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from bot.parse import parse_dump, read_dump
from bot.parse.fingerprint import fingerprint
from bot.pipeline.ingest import Ingest
from bot.sources.webpage import parse_page
from bot.store.migrate import open_store
from bot.store.models import Alert, Channel, Delivery, Message
from tests.cli import tgs, tgs_process
from tests.conftest import FIXTURES, SAMPLE

EXPORTS = FIXTURES / "export"
CHANNEL = EXPORTS / "channel_result.json"  # Desktop's layout, written for these tests (see README.md)
CHATSTYLE = EXPORTS / "chatstyle_result.json"  # real, from DomaCKBO3H9K/chatstyle
MULTICHAT = EXPORTS / "multichat_result.json"  # real, from mlomb/chat-analytics
PAGE = FIXTURES / "web" / "channel_page.html"
COPIED = FIXTURES / "copied_posts.txt"
RECORD = {
    "index", "channel", "message_id", "date", "edited", "forwarded_from", "signature", "title", "text",
    "hashtags", "mentions", "urls", "media", "fingerprint",
}  # fmt: skip
RULES = """\
rules:
  - id: brics
    match: {any: ["BRICS", "Sanctions"]}
    notify: [hook]
destinations:
  - {name: hook, type: webhook, url: "%s"}
"""


def records(*args: str) -> list[dict]:
    ran = tgs("parse", *args)
    assert ran.returncode == 0, ran.stderr
    return [json.loads(line) for line in ran.stdout.decode().splitlines()]


def fresh_export(tmp_path: Path) -> Path:
    """The channel export with every post dated a minute ago: too fresh for the stale filter."""
    data = json.loads(CHANNEL.read_text(encoding="utf-8"))
    for msg in data["messages"]:
        msg["date_unixtime"] = str(int(time.time()) - 60)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_parse_gives_one_record_shape_for_a_dump_a_page_and_an_export():
    for path in (SAMPLE, PAGE, CHANNEL, CHATSTYLE):
        got = records(str(path))
        assert got and all(set(r) == RECORD for r in got), path
    dump, page, export = records(str(SAMPLE))[0], records(str(PAGE))[0], records(str(CHANNEL))[0]
    assert (dump["channel"], dump["message_id"], dump["date"]) == (None, None, None)
    assert (page["channel"], page["message_id"]) == ("mfarussia", 101)
    # The export's bare channel id is the web preview's: both are the channel Telethon calls 1115678342.
    assert (export["channel"], export["message_id"]) == ("-1001115678342", 101)
    assert export["date"] == "2024-08-18T12:04:05+00:00"  # date_unixtime, in UTC


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
        (b'{"rows": [1, 2, 3]}', 'not a Telegram Desktop export (no "messages" list, nor "chats"'),
        # Shaped like an export at a glance, but not one: refused, never read as an empty export.
        (b'{"messages": "nope"}', '"messages" is not a list'),
        (b'{"chats": 5}', '"chats" is not an object'),
        (b'{"chats": {"about": "x"}}', 'no "messages" list, nor "chats" with a "list"'),
        (b'{"chats": {"list": [{"name": "a", "messages": {}}]}}', '"chats.list[].messages" is not a list'),
        (b"", "empty file"),
        (b'{"name": "x", "messages": [{"id": 1,', "not valid JSON"),
    ],
)
def test_parse_refuses_junk_in_one_line_with_exit_2(tmp_path, content, expected):
    path = tmp_path / "junk.bin"
    path.write_bytes(content)
    proc = tgs_process("parse", str(path))
    err = proc.stderr.decode()
    assert proc.returncode == 2 and proc.stdout == b""
    assert err.startswith(f"tgsentinel: {path}: ") and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for command in (("replay", str(path), "--channel", "x"), ("rules", "test", str(path))):
        ran = tgs(*command, "--rules", str(tmp_path))
        assert ran.returncode == 2 and expected in ran.stderr.decode()


def test_twenty_copied_posts_are_twenty_posts():
    posts = parse_dump(read_dump(COPIED))
    sample = [p.content.text for p in parse_dump(read_dump(SAMPLE))]
    assert len(posts) == 20
    assert [p.content.text for p in posts[0::2]] == sample[:10]
    chat = ["привет))", "Привет. Как дела?", "смотри https://example.com/a круто"]
    assert [p.content.text for p in posts[1:6:2]] == chat
    assert posts[-1].content.text == sample[10]


def test_a_copied_page_splits_at_its_footers_and_drops_its_noise():
    page = (
        "MFA Russia 🇷🇺\n"
        "🚨 Срочно: МИД России & партнёры\n"
        "4.2K views15:04\n"
        "MFA Russia 🇷🇺\n"
        "Forwarded from Russian MFA 🇷🇺\n"
        "🎻 A grand concert was held on the Red Square.\n"
        "0:18\n"
        "This media is not supported in your browser\n"
        "917 views edited 15:30\n"
        "MFA Russia 🇷🇺\n"
        "Short one\n"
        "https://t.me/MFARussia/105\n"
    )
    posts = parse_dump(page)
    assert [(p.forwarded_from, p.content.text, p.content.media) for p in posts] == [
        (None, "🚨 Срочно: МИД России & партнёры", ()),
        # "This media is not supported in your browser" is a player's fallback, not a withheld post.
        ("Russian MFA 🇷🇺", "🎻 A grand concert was held on the Red Square.", ()),
        (None, "Short one", ()),
    ]
    # The player's duration and the placeholder leave the fingerprint alone.
    assert posts[1].content.fingerprint == fingerprint("🎻 A grand concert was held on the Red Square.")


def test_in_the_documented_layout_a_one_line_post_is_a_post_of_its_own():
    posts = parse_dump("Forwarded from A\n📌 Bridge closed\n🌍 Morning briefing\nMarkets up.\nMarkets up.")
    assert [(p.forwarded_from, p.content.text) for p in posts] == [
        ("A", "📌 Bridge closed"),
        (None, "🌍 Morning briefing\nMarkets up."),
    ]


def test_an_export_becomes_text_entities_media_forwards_edits_and_polls():
    got = {r["message_id"]: r for r in records(str(CHANNEL))}
    assert 1 not in got and 114 not in got  # service messages are not posts
    first = got[101]
    assert first["text"].startswith("🚨 Срочно: МИД России & партнёры\n\n📄 Заявление опубликовано на mid.ru")
    assert first["hashtags"] == ["СНГ", "BRICS"] and first["mentions"] == ["MID_Russia"]
    assert first["urls"] == ["http://mid.ru/"]  # a text_link's href, not its label
    assert got[102]["edited"] == "2024-08-18T13:02:11+00:00"
    assert got[102]["signature"] == "Press Office" and "Press" not in got[102]["text"]  # `author`
    assert got[103]["forwarded_from"] == "Russian MFA 🇷🇺"
    assert got[104]["text"] == "Which topic should the next briefing open with?\nGlobal majority\nSanctions"
    assert [got[i]["media"] for i in range(104, 114)] == [
        ["poll"], ["video"], ["voice"], ["location"], ["contact"], ["sticker"], ["gif"], ["round_video"],
        ["audio"], ["document"],
    ]  # fmt: skip
    assert got[101]["media"] == ["photo"]
    real = {r["message_id"]: r for r in records(str(CHATSTYLE))}
    assert real[4]["text"] == "ну реально норм, @boris_k глянь" and real[4]["mentions"] == ["boris_k"]
    assert real[7]["forwarded_from"] == "Какой-то канал"
    assert (real[8]["media"], real[9]["media"]) == (["sticker"], ["photo"])
    assert real[9]["text"] == "короче вот фотка"
    assert 6 not in real  # the pin is a service message


def _count(url: str, *what) -> list[int]:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return [session.scalar(select(func.count()).select_from(w)) for w in what]
    finally:
        engine.dispose()


def test_importing_twice_adds_nothing(db_url, tmp_path):
    first = tgs("import", str(CHANNEL), "--db", db_url, "--rules", str(tmp_path))
    assert first.returncode == 0, first.stderr
    summary = first.stderr.decode()
    assert "13 posts read, 13 new" in summary and "skipped 2 service messages" in summary
    assert _count(db_url, Channel, Message) == [1, 13]
    engine = create_engine(db_url)
    with Session(engine) as session:  # the signed post's author is kept beside its text
        assert session.scalar(select(Message.signature).where(Message.msg_id == 102)) == "Press Office"
    engine.dispose()
    again = tgs("import", str(CHANNEL), "--db", db_url, "--rules", str(tmp_path))
    assert "13 posts read, 0 new, 0 updated, 13 unchanged" in again.stderr.decode()
    assert _count(db_url, Channel, Message) == [1, 13]


def test_a_full_account_export_imports_its_channels_and_skips_the_other_chats(tmp_path):
    account = json.loads(MULTICHAT.read_text(encoding="utf-8"))
    account["chats"]["list"].append(json.loads(CHANNEL.read_text(encoding="utf-8")))
    path = tmp_path / "result.json"
    path.write_text(json.dumps(account, ensure_ascii=False, indent=1), encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'x.db'}"
    ran = tgs("import", str(path), "--db", db, "--rules", str(tmp_path))
    err = ran.stderr.decode()
    assert ran.returncode == 0, err
    assert "13 posts read, 13 new" in err
    assert "2 chats that are not channels (Chat One: personal_chat, Chat Two: private_group)" in err
    assert _count(db, Channel, Message) == [1, 13]


def test_an_export_keys_to_the_channel_the_web_preview_stored(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    engine = open_store(db)
    try:
        asyncio.run(Ingest(engine).ingest(parse_page(PAGE.read_text(encoding="utf-8")).posts))
    finally:
        engine.dispose()
    assert tgs("import", str(CHANNEL), "--db", db, "--rules", str(tmp_path)).returncode == 0
    engine = create_engine(db)
    with Session(engine) as session:
        (row,) = session.scalars(select(Channel)).all()
        assert (row.username, row.tg_id) == ("mfarussia", 1115678342)
        ids = set(session.scalars(select(Message.msg_id)))
    engine.dispose()
    assert {101, 102, 103, 113} <= ids


def test_imported_posts_are_matched_but_never_alerted(tmp_path, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES % httpserver.url_for("/hook"))
    export = fresh_export(tmp_path)
    db = f"sqlite:///{tmp_path / 'x.db'}"
    ran = tgs("import", str(export), "--db", db, "--rules", str(rules))
    assert ran.returncode == 0, ran.stderr
    assert "3 matches (history: not alerted)" in ran.stderr.decode()
    stored = tgs("rules", "test", "--db", db, "--rules", str(rules))
    assert [json.loads(line)["message_id"] for line in stored.stdout.decode().splitlines()] == [101, 103, 104]
    assert _count(db, Alert, Delivery) == [0, 0]
    assert tgs("alerts", "list", "--db", db).stdout == b""
    assert httpserver.log == []
    # The same fresh posts replayed (not imported) do page: the rules and the hook work.
    replayed = tgs("replay", str(export), "--channel", "x", "--db", db, "--rules", str(rules))
    assert replayed.returncode == 0, replayed.stderr
    assert "3 sent" in replayed.stderr.decode() and len(httpserver.log) == 3


def test_rules_test_backtests_an_export_without_storing_it(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES % "https://hooks.example.org/x")
    ran = tgs("rules", "test", str(CHANNEL), "--rules", str(rules), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    lines = [json.loads(line) for line in ran.stdout.decode().splitlines()]
    assert [(r["message_id"], r["channel"], r["matches"]) for r in lines] == [
        (101, "-1001115678342", [{"rule": "brics", "terms": ["BRICS"]}]),
        (103, "-1001115678342", [{"rule": "brics", "terms": ["BRICS"]}]),
        (104, "-1001115678342", [{"rule": "brics", "terms": ["Sanctions"]}]),
    ]
    assert not (tmp_path / "data").exists()  # nothing stored


def test_import_refuses_what_is_not_an_export(tmp_path):
    ran = tgs("import", str(SAMPLE), "--db", f"sqlite:///{tmp_path / 'x.db'}")
    err = ran.stderr.decode()
    assert ran.returncode == 2 and "a text dump, not a Telegram Desktop export" in err


RYNDA = EXPORTS / "rynda_channel_result.json"  # real: a public channel's export (see README.md)


def test_a_real_channel_export_imports_and_backtests(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "channels: [rynda]\nrules:\n  - id: kyiv\n    match: {any: ['Київщин*']}\n", encoding="utf-8"
    )
    tested = tgs("rules", "test", str(RYNDA), "--rules", str(rules))
    assert tested.returncode == 0, tested.stderr
    [hit] = [json.loads(line) for line in tested.stdout.decode().splitlines()]
    assert (hit["message_id"], hit["matches"]) == (192, [{"rule": "kyiv", "terms": ["Київщин*"]}])
    db = f"sqlite:///{tmp_path / 'x.db'}"
    ran = tgs("import", str(RYNDA), "--db", db, "--rules", str(rules))
    assert ran.returncode == 0, ran.stderr
    said = ran.stderr.decode()
    assert "1 post read, 1 new" in said and "skipped 1 service message," in said
    engine = create_engine(db)
    with Session(engine) as session:
        channel = session.scalars(select(Channel)).one()
        post = session.scalars(select(Message)).one()
    engine.dispose()
    # The export's bare id is the channel's, as Telethon and t.me/s know it; the edit is kept.
    assert (channel.tg_id, post.msg_id) == (1875486764, 192)
    assert post.text == "✈️БПЛА→Захід через Київщину/Житомирщину"
    assert post.edit_date is not None and post.edit_date.isoformat() == "2023-09-12T17:29:00+00:00"
