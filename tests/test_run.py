"""`tgsentinel run` as a process: no credentials, the web preview on a loopback server, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from werkzeug import Request, Response

from tests.test_web_source import page_html

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)  # polling another process's state: there is no event to await across processes
    raise AssertionError(f"timed out waiting for {what}")


def test_run_without_credentials_watches_the_web_preview_alerts_new_posts_and_stops_on_sigterm(
    httpserver, tmp_path
):
    posts = [(1, "Ordinary news"), (2, "Moldova: an old story already on the page")]
    hooks: list[dict] = []
    got_hook = threading.Event()

    def page(request: Request) -> Response:
        return Response(page_html(posts, channel="testchan"), content_type="text/html")

    def hook(request: Request) -> Response:
        hooks.append(json.loads(request.get_data()))
        got_hook.set()
        return Response("ok")

    httpserver.expect_request("/s/testchan").respond_with_handler(page)
    httpserver.expect_request("/hook").respond_with_handler(hook)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "watch.yaml").write_text(
        "channels: [testchan]\n"
        f"destinations:\n  - {{name: hook, type: webhook, url: '{httpserver.url_for('/hook')}'}}\n"
        "rules:\n  - id: moldova\n    match: {any: [Moldova]}\n    notify: [hook]\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TGSENTINEL_", "TELEGRAM_", "DATABASE_URL"))
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}",
        TGSENTINEL_RULES_DIR=str(rules),
        TGSENTINEL_DATA_DIR=str(tmp_path / "data"),
        TGSENTINEL_WEB_BASE=httpserver.url_for("/").rstrip("/"),
        TGSENTINEL_WEB_INTERVAL="0.5",
        TGSENTINEL_WEB_RPM="600",
        TGSENTINEL_HTTP_HOST="127.0.0.1",
        TGSENTINEL_HTTP_PORT=str(port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        health = f"http://127.0.0.1:{port}/healthz"

        def first_poll_done():  # type: ignore[no-untyped-def]
            try:
                status, body = get(health)
            except OSError:
                return None
            channel = json.loads(body)["channels"].get("testchan")
            return (status, channel) if channel and channel["last_sweep"] else None

        status, channel = wait_for(first_poll_done, what="the first poll")
        assert status == 200 and channel["source"] == "web"
        metrics = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
        assert "tgsentinel_posts_ingested_total" in metrics

        # The first poll is the starting point: post 2 matched, but did not alert.
        posts.append((3, "Moldova: breaking, after the first poll"))
        assert got_hook.wait(20), "the new post never alerted"
        assert [h["message"]["id"] for h in hooks] == [3]
        assert hooks[0]["channel"]["username"] == "testchan"
        assert hooks[0]["message"]["url"] == "https://t.me/testchan/3"

        # Hot reload: a channel added to the rules is watched without a restart.
        httpserver.expect_request("/s/otherchan").respond_with_handler(
            lambda request: Response(
                page_html([(7, "Quiet news")], channel="otherchan"), content_type="text/html"
            )
        )
        text = (
            (rules / "watch.yaml")
            .read_text()
            .replace("channels: [testchan]", "channels: [testchan, otherchan]")
        )
        (rules / "watch.yaml").write_text(text, encoding="utf-8")

        def other_polled():  # type: ignore[no-untyped-def]
            channel = json.loads(get(health)[1])["channels"].get("otherchan")
            return channel if channel and channel["last_sweep"] else None

        wait_for(other_polled, what="the added channel's first poll")
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert time.monotonic() - started < 10
    log = err.decode()
    assert "no Telegram credentials" in log and "watching via web preview: testchan" in log
    assert "watching via web preview: testchan, otherchan" in log  # said again after the reload
    assert "Traceback" not in log
    assert "/hook" not in log  # a webhook URL's path is a secret
    assert len(hooks) == 1  # nothing sent twice


def test_run_with_a_broken_session_says_how_to_log_in_and_exits_non_zero(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TGSENTINEL_", "TELEGRAM_", "DATABASE_URL"))
    }
    env.update(
        TELEGRAM_API_ID="12345",
        TELEGRAM_API_HASH="0123456789abcdef0123456789abcdef",
        TELEGRAM_SESSION="1NotAStringSession",
        DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}",
        TGSENTINEL_RULES_DIR=str(ROOT / "rules"),
        TGSENTINEL_HTTP_HOST="127.0.0.1",
        TGSENTINEL_HTTP_PORT=str(free_port()),
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"], cwd=tmp_path, env=env, capture_output=True, timeout=60
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "tgsentinel login" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert "0123456789abcdef" not in err and "1NotAStringSession" not in err  # secrets stay out of logs
