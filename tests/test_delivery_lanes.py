"""A destination that never answers delays only itself: a real `tgsentinel run` process, the web
preview on a loopback server, one webhook that answers at once and one that accepts and hangs."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.test_health_run import Collected, Running
from tests.test_web_source import page_html


class Hanging:
    """A webhook that accepts every connection, reads nothing and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = Collected()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed at the end of the test
            while True:
                conn, _ = self.server.accept()
                self.accepted.add(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.accepted.items:
            conn.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    h = Hanging()
    yield h
    h.close()


def test_a_hanging_destination_does_not_hold_up_the_others(
    httpserver: HTTPServer, hanging: Hanging, tmp_path: Path
) -> None:
    posts = [(1, "Ordinary news")]
    received = Collected()

    def ok(request: Request) -> Response:
        received.add(json.loads(request.get_data())["message"]["id"])
        return Response("ok")

    httpserver.expect_request("/s/testchan").respond_with_handler(
        lambda request: Response(page_html(list(posts), channel="testchan"), content_type="text/html")
    )
    httpserver.expect_request("/ok").respond_with_handler(ok)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "watch.yaml").write_text(
        "channels: [testchan]\n"
        "destinations:\n"
        f"  - {{name: fast, type: webhook, url: '{httpserver.url_for('/ok')}'}}\n"
        # Its own timeout: an hour. Whatever it waits for must be its own business.
        f"  - {{name: stuck, type: webhook, url: 'http://127.0.0.1:{hanging.port}/hook', timeout: 3600}}\n"
        "rules:\n  - id: moldova\n    match: {any: [Moldova]}\n    notify: [fast, stuck]\n",
        encoding="utf-8",
    )
    with Running(
        tmp_path,
        rules,
        httpserver.url_for("/").rstrip("/"),
        TGSENTINEL_WEB_INTERVAL="0.3",
        TGSENTINEL_LEASE="20m",  # the worker's own bound on a send is half of it: far beyond the test
    ) as monitor:
        monitor.wait_health(
            lambda status, body: bool((body["channels"].get("testchan") or {}).get("last_sweep")),
            "the first poll",
        )
        posts.append((2, "Moldova: the first story"))
        received.wait(lambda ids: 2 in ids, "the first alert at the answering webhook")
        hanging.accepted.wait(lambda conns: conns, "the first alert at the hanging webhook")
        # The hanging webhook holds its first alert from now on; later alerts must not wait for it.
        for mid in (3, 4):
            posts.append((mid, f"Moldova: story {mid}"))
            received.wait(lambda ids, mid=mid: mid in ids, f"alert {mid} while the other destination hangs")
        assert len(hanging.accepted.items) == 1  # still on its first send: one at a time, in order
        log = monitor.stop()
    assert received.items == [2, 3, 4]  # each once, in order
    assert "stopped" in log  # SIGTERM with a send in flight still stops cleanly
