"""`tgsentinel replay` as a process: twenty catastrophic regex rules over twenty posts that set them off
delay an ordinary post's alert by at most the batch's regex budget, and the terms that keep timing
out are disabled, logged with their rule's FILE:LINE and told to ops."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from werkzeug import Request, Response

from tests.cli import ROOT, _ambient

BUDGET = 1.0  # TGSENTINEL_MATCH_BATCH_BUDGET for the run, in seconds
SLACK = 4.0  # a busy shared machine: the unbounded engine takes 20 s of CPU here, not 5


def _replay(tmp_path: Path, name: str, rules_yaml: str, dump: str, hook_url: str, arrived: list[float]):
    rules = tmp_path / f"rules-{name}"
    rules.mkdir()
    hook = f"destinations:\n  - {{name: hook, type: webhook, url: '{hook_url}'}}\n"
    (rules / "r.yaml").write_text(hook + rules_yaml, encoding="utf-8")
    (tmp_path / f"{name}.txt").write_text(dump, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in _ambient()}
    env.update(
        PYTHONPATH=str(ROOT),
        TGSENTINEL_MATCH_POST_BUDGET="0.25",
        TGSENTINEL_MATCH_BATCH_BUDGET=str(BUDGET),
        TGSENTINEL_REGEX_DISABLE_AFTER="3",
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "replay", str(tmp_path / f"{name}.txt"), "--channel", name,
         "--rules", str(rules), "--db", f"sqlite:///{tmp_path / name}.db"],
        capture_output=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert len(arrived) == 1, proc.stderr.decode()[-2000:]
    return arrived.pop() - started, proc.stderr.decode(), rules / "r.yaml"


def test_catastrophic_rules_delay_an_ordinary_alert_by_at_most_the_budget(httpserver, tmp_path):
    arrived: list[float] = []
    bodies: list[dict] = []

    def hook(request: Request) -> Response:
        arrived.append(time.monotonic())
        bodies.append(json.loads(request.get_data()))
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(hook)
    url = httpserver.url_for("/hook")
    ordinary = "rules:\n  - id: moldova\n    match: {any: [Moldova]}\n    notify: [hook]\n"
    # Each pattern its own term (a comment tells them apart); (a|aa)+$ backtracks exponentially on a
    # run of a's that ends in '!'.
    term = "(a|aa)+$(?#{})"
    slow = "".join(
        f"  - id: slow{i}\n    match: {{any: [{{regex: '{term.format(i)}'}}]}}\n" for i in range(20)
    )
    traps = "".join(f"Forwarded from Test\n{'a' * 28}! post {i}\n" for i in range(20))
    last = "Forwarded from Test\nMoldova: the ordinary news, last in the batch\n"

    plain, _, _ = _replay(tmp_path, "plain", ordinary, traps + last, url, arrived)
    delayed, log, rules_file = _replay(tmp_path, "slow", ordinary + slow, traps + last, url, arrived)

    assert [b["rule"]["id"] for b in bodies] == ["moldova", "moldova"]
    assert delayed - plain < BUDGET + SLACK, (plain, delayed)
    assert "regex budget spent" in log and "skipped over 21 post(s)" in log
    # The first terms timed out three posts in a row: disabled, each named with its FILE:LINE, and
    # one ops notice (on the console, which a replay writes to stderr) for the batch.
    assert f"of rule slow0 ({rules_file}:7) timed out 3 times in a row: disabled until the rules" in log
    assert len(re.findall(r"ops: \d+ regex term\(s\) disabled until the rules are reloaded", log)) == 1
    assert "deliveries: 2 sent, 0 pending" in log  # the ordinary alert and the ops notice
    assert "Traceback" not in log
