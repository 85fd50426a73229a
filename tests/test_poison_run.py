"""`tgsentinel run` as a process against a loopback t.me whose pages carry poison posts (markup nested
thousands deep, an id beyond int64, an absurdly high id, an id going backwards, an id that is no
number) beside a channel whose page never answers: the poison is skipped and recorded, the posts
after it are stored and alert at a loopback webhook, and the hanging channel holds up nothing."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from werkzeug import Request, Response

from tests.test_health_run import Collected, Running
from tests.test_poison_posts import nested, own_page, with_markup
from tests.test_run import get


def test_poison_posts_are_skipped_and_recorded_and_later_posts_alert_while_another_channel_hangs(
    http, tmp_path: Path
) -> None:
    posts = [(1, "Ordinary news"), (3, "BRICS: an old story, the starting point")]  # 2 was deleted
    poison: list[str] = []
    hooks = Collected()
    release = threading.Event()
    hang_arrived = threading.Event()

    def page(request: Request) -> Response:
        body = own_page("poisonchan", posts).replace("</section>", "".join(poison) + "</section>")
        return Response(body, content_type="text/html")

    def hang(request: Request) -> Response:
        hang_arrived.set()
        release.wait(60)  # longer than the monitor's 10 s request timeout
        return Response("late", status=503)

    def hook(request: Request) -> Response:
        hooks.add(json.loads(request.get_data()))
        return Response("ok")

    http.expect_request("/s/poisonchan").respond_with_handler(page)
    http.expect_request("/s/hangchan").respond_with_handler(hang)
    http.expect_request("/hook").respond_with_handler(hook)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "watch.yaml").write_text(
        "channels: [hangchan, poisonchan]\n"
        f"destinations:\n  - {{name: hook, type: webhook, url: '{http.url_for('/hook')}'}}\n"
        "rules:\n  - id: brics\n    match: {any: [BRICS]}\n    notify: [hook]\n",
        encoding="utf-8",
    )
    base = http.url_for("/").rstrip("/")
    with Running(tmp_path, rules, base, TGSENTINEL_WEB_INTERVAL="0.5") as monitor:
        try:
            monitor.wait_health(
                lambda _, body: (body["channels"].get("poisonchan") or {}).get("last_sweep"),
                "poisonchan's first poll",
            )
            assert hang_arrived.wait(20), "hangchan was never polled"
            poison.extend(
                [
                    with_markup(4, "BRICS nested deep: " + nested(3000, "still read"), channel="poisonchan"),
                    with_markup(2**63, "BRICS beyond int64", channel="poisonchan"),
                    with_markup(10**15, "BRICS absurdly far ahead", channel="poisonchan"),
                    with_markup(2, "BRICS going backwards", channel="poisonchan"),
                    with_markup(6, "BRICS no number", channel="poisonchan").replace(
                        'data-post="poisonchan/6"', 'data-post="poisonchan/6x"'
                    ),
                ]
            )
            posts.append((5, "BRICS: after the poison"))

            got = hooks.wait(lambda items: len(items) >= 2 and items, "the alerts after the poison")
            # Polled and alerted while hangchan's first request was still waiting for its timeout.
            assert not any(re.search(r"hangchan: poll failed", line) for line in monitor.log.items)
            assert sorted(h["message"]["id"] for h in got) == [4, 5]
            assert any("still read" in json.dumps(h, ensure_ascii=False) for h in got)

            metrics = get(f"{monitor.url}/metrics")[1].decode()
            for reason in ("id_range", "out_of_sequence", "bad_id"):
                assert f'tgsentinel_posts_rejected_total{{reason="{reason}"}} 1.0' in metrics, reason
            assert re.search(r'tgsentinel_posts_dropped_total\{reason="behind_cursor"\} [1-9]', metrics)
            monitor.line(r"poisonchan: post 9223372036854775808 skipped \(id_range\)", "the id_range line")
            # Stopped with hangchan's request still open: SIGTERM must not wait for it.
            log = monitor.stop()
        finally:
            release.set()
    assert "BRICS beyond int64" not in log  # a skipped post's words stay out of the log

    from bot.store.models import Message, RejectedPost

    engine = create_engine(monitor.db)
    try:
        with Session(engine) as session:
            rejected = {(r.channel, r.ref, r.reason) for r in session.scalars(select(RejectedPost))}
            stored = sorted(session.scalars(select(Message.msg_id)))
    finally:
        engine.dispose()
    assert rejected == {
        ("poisonchan", str(2**63), "id_range"),
        ("poisonchan", str(10**15), "out_of_sequence"),
        ("poisonchan", "6x", "bad_id"),
    }
    assert stored == [1, 3, 4, 5]
