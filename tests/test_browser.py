"""The archive in a real browser: Debian's headless Chromium, driven by Selenium, against real
`tgsentinel web` and `tgsentinel run` processes on 127.0.0.1 over a store filled by `tgsentinel replay`.

The scenario of issue 13, a step a test: sign in; search an inflected Cyrillic word and find the post;
open it and follow to its rule hits; try a rule and see its matches; retry a dead delivery and see it
reach a loopback receiver; add a silence. Each page is kept as a screenshot in
$TGSENTINEL_TEST_ARTEFACTS (default: pytest's temporary directory, under screenshots/).

Browsers cannot be downloaded here: without chromium and chromedriver on PATH (`.ci/run` installs
them with apt), every test skips with the reason.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.cli import ROOT, tgs
from tests.test_run import free_port, wait_for
from tests.test_web_http import TOKEN, Web

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions as shown  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# One browser and one store for the module: with `pytest -n auto --dist loadgroup` its tests stay on
# one worker instead of each starting its own Chromium and servers.
pytestmark = pytest.mark.xdist_group("browser")

WAIT = 15.0  # seconds an explicit wait allows a page; a healthy run takes a fraction of one

# The channel's posts, oldest first, each so many hours old: the two about sanctions are recent
# enough to alert (a day at most), and all show on the rules page's chart of the last days.
# Post 2 says `санкциям` (dative), post 4 `санкций` (genitive): neither says `санкции`.
POSTS = [
    (1, 50, "Брифинг в Брюсселе\nСовет ЕС обсудил поставки газа и погоду на рынке."),
    (2, 5, "Новый пакет ограничений\nСовет ЕС подготовил поправки к санкциям против поставщиков дронов."),
    (3, 30, "Погода в Брюсселе\nДожди продлятся до пятницы, ветер усилится."),
    (4, 2, "Продление мер\nЕвросоюз продлил срок действия санкций на полгода."),
]
SANCTIONS = "Новый пакет ограничений"
RULES = """\
destinations:
  - {{name: hook, type: webhook, url: '{hook}'}}
rules:
  - id: sanctions
    description: Sanctions, in any inflection
    severity: high
    match: {{any: ["санкци*"]}}
    notify: [hook]
"""
TRIED = 'id: rain\nmatch:\n  any: ["дожд*", "ливн*"]\n'


def artefacts(tmp: pytest.TempPathFactory) -> Path:
    given = os.environ.get("TGSENTINEL_TEST_ARTEFACTS")
    where = Path(given) if given else tmp.getbasetemp() / "screenshots"
    where.mkdir(parents=True, exist_ok=True)
    return where


STARTED = datetime.now(UTC).replace(microsecond=0)


def posted(msg_id: int) -> datetime:
    hours = next(h for i, h, _ in POSTS if i == msg_id)
    return STARTED - timedelta(hours=hours)


def channel_export(path: Path) -> None:
    """A Telegram Desktop export of channel `news` with POSTS."""
    messages = []
    for msg_id, _, text in POSTS:
        when = posted(msg_id)
        messages.append(
            {
                "id": msg_id,
                "type": "message",
                "date": when.replace(tzinfo=None).isoformat(),
                "date_unixtime": str(int(when.timestamp())),
                "from": "News",
                "from_id": "channel7654321",
                "text": text,
                "text_entities": [{"type": "plain", "text": text}],
            }
        )
    export = {"name": "News", "type": "public_channel", "id": 7654321, "messages": messages}
    path.write_text(json.dumps(export, ensure_ascii=False), encoding="utf-8")


class Receiver:
    """The webhook's far end on 127.0.0.1: refuses with a 400 (a dead delivery at once) until
    `accept()`, then answers 200. Every request it gets is kept, the accepted ones signalled."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.refused: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.got = threading.Event()
        self._accepting = False
        self._lock = threading.Lock()
        server.expect_request("/hook/s3cret", method="POST").respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for("/hook/s3cret")

    def accept(self) -> None:
        with self._lock:
            self._accepting = True

    def _handle(self, request: Request) -> Response:
        body = json.loads(request.get_data())
        with self._lock:
            if not self._accepting:
                self.refused.append(body)
                return Response('{"error": "unknown hook"}', status=400, content_type="application/json")
            self.accepted.append(body)
        self.got.set()
        return Response("ok")


@pytest.fixture(scope="module")
def receiver(server: HTTPServer) -> Iterator[Receiver]:
    server.clear()
    yield Receiver(server)
    server.clear()


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Path:
    rules = tmp_path_factory.mktemp("rules")
    (rules / "news.yaml").write_text(RULES.format(hook=receiver.url), encoding="utf-8")
    return rules


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, rules_dir: Path, receiver: Receiver) -> str:
    """The channel replayed through the whole pipeline: both sanctions posts alerted, and the
    receiver's 400s left both deliveries dead."""
    where = tmp_path_factory.mktemp("browser")
    db = f"sqlite:///{where / 'archive.db'}"
    export = where / "news.json"
    channel_export(export)
    ran = tgs(
        "replay", str(export), "--channel", "news", "--db", db, env={"TGSENTINEL_RULES_DIR": str(rules_dir)}
    )
    assert ran.returncode == 0, ran.stderr.decode()
    summary = ran.stderr.decode().splitlines()[-1]
    assert "4 posts read, 4 new" in summary and "2 matches" in summary and "2 dead" in summary, summary
    assert len(receiver.refused) == 2 and not receiver.accepted
    return db


@pytest.fixture(scope="module")
def web(store: str, rules_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    server = Web(store, tmp_path_factory.mktemp("cwd"), TGSENTINEL_RULES_DIR=str(rules_dir))
    try:
        yield server
    finally:
        log = server.stop()
        assert server.proc.returncode == 0, log
        assert TOKEN not in log and "Traceback" not in log, log


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium is not installed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",  # containers' /dev/shm is small
        "--window-size=1280,1100",
        "--lang=en-GB",
    ):
        options.add_argument(flag)
    try:
        chrome = webdriver.Chrome(service=Service(driver), options=options)
    except WebDriverException as exc:
        pytest.fail(f"Chromium is installed but does not start: {exc.msg}")
    chrome.set_page_load_timeout(WAIT)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return artefacts(tmp_path_factory)


# --- helpers --------------------------------------------------------------------------------------


def wait(chrome: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(chrome, WAIT)


def element(chrome: WebDriver, css: str) -> WebElement:
    found: WebElement = wait(chrome).until(shown.visibility_of_element_located((By.CSS_SELECTOR, css)))
    return found


def path_of(chrome: WebDriver) -> str:
    return "/" + chrome.current_url.split("/", 3)[3]


def sign_in(chrome: WebDriver, base: str, path: str = "/search") -> None:
    """Open `path` on `base`, through the sign-in form when the browser is not signed in there."""
    chrome.get(base + path)
    wait(chrome).until(lambda c: c.find_elements(By.ID, "token") or c.find_elements(By.CSS_SELECTOR, "nav"))
    if chrome.find_elements(By.ID, "token"):
        chrome.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)
        wait(chrome).until(lambda c: c.find_elements(By.CSS_SELECTOR, "form.signout"))
    assert path_of(chrome) == path, chrome.current_url


def screenshot(chrome: WebDriver, shots: Path, name: str) -> None:
    """The whole page, not the window: the retried row or the silence may sit below the fold."""
    size = chrome.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = chrome.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    (shots / name).write_bytes(base64.b64decode(shot["data"]))


# --- the scenario ---------------------------------------------------------------------------------


def test_1_signing_in_with_the_token_opens_the_page_asked_for(
    browser: WebDriver, web: Web, shots: Path
) -> None:
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})  # every origin's, not the page's
    browser.get(f"{web.url}/rules")
    token = element(browser, "#token")
    assert path_of(browser).startswith("/login?next="), browser.current_url
    # A wrong token is refused on the same page, saying so.
    token.send_keys("not-the-token", Keys.ENTER)
    refused = element(browser, ".login .error")
    assert refused.text == "That is not the token."
    screenshot(browser, shots, "01-signin.png")
    element(browser, "#token").send_keys(TOKEN, Keys.ENTER)
    wait(browser).until(lambda c: c.find_element(By.TAG_NAME, "h1").text == "Rules")
    assert path_of(browser) == "/rules"  # back where the browser was going
    nav = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert {"Search", "Rules", "Alerts", "Channels"} <= set(nav), nav
    assert browser.find_element(By.CSS_SELECTOR, "form.signout button").text == "Sign out"
    # The session cookie is out of the page's scripts' reach.
    assert browser.execute_script("return document.cookie") == ""
    screenshot(browser, shots, "01-signed-in.png")


def test_2_searching_an_inflected_cyrillic_word_finds_the_post(
    browser: WebDriver, web: Web, shots: Path
) -> None:
    sign_in(browser, web.url, "/search")
    # `санкции` is no substring of `санкциям` or `санкций`: only the Russian stemmer joins them.
    element(browser, "#q").send_keys("санкции", Keys.ENTER)
    wait(browser).until(lambda c: c.find_elements(By.CSS_SELECTOR, "#results li.hit, #results .empty"))
    hits = browser.find_elements(By.CSS_SELECTOR, "#results li.hit")
    titles = [h.find_element(By.CSS_SELECTOR, "a.title").text for h in hits]
    assert titles == ["Продление мер", SANCTIONS], titles  # newest first, and nothing else
    hit = hits[1]
    assert [m.text for m in hit.find_elements(By.TAG_NAME, "mark")] == ["санкциям"]
    assert hit.find_element(By.CSS_SELECTOR, ".channel").text == "dump:news"
    # htmx swapped the results in and kept the search in the address bar, for the back button.
    assert "q=" in browser.current_url
    screenshot(browser, shots, "02-search.png")


def test_3_a_post_leads_to_the_rule_it_matched_and_that_rule_s_hits(
    browser: WebDriver, web: Web, shots: Path
) -> None:
    sign_in(browser, web.url, "/search")
    element(browser, "#q").send_keys("санкциям", Keys.ENTER)
    element(browser, "#results li.hit a.title")
    link = next(
        a for a in browser.find_elements(By.CSS_SELECTOR, "#results li.hit a.title") if a.text == SANCTIONS
    )
    link.click()
    wait(browser).until(lambda c: c.find_element(By.TAG_NAME, "h1").text == SANCTIONS)
    assert path_of(browser).startswith("/posts/")
    body = element(browser, "article.post .text")
    assert "поправки к санкциям против поставщиков" in body.text
    match = element(browser, ".matches #rule-sanctions")
    assert [c.text for c in match.find_elements(By.CSS_SELECTOR, "code")] == ["санкци*"]
    assert [m.text for m in match.find_elements(By.TAG_NAME, "mark")] == ["санкциям"]
    # The alert it raised, and the delivery the receiver refused.
    delivery = element(browser, ".alerts tr.status-dead")
    assert "hook" in delivery.text and "400" in delivery.text, delivery.text
    screenshot(browser, shots, "03-post.png")

    match.find_element(By.CSS_SELECTOR, "h3 > a").click()
    row = element(browser, "#rule-sanctions")
    assert path_of(browser) == "/rules#rule-sanctions"
    assert row.find_element(By.CSS_SELECTOR, ".total").text == "2"
    days = {
        bar.get_attribute("data-day"): bar.get_attribute("data-hits")
        for bar in row.find_elements(By.CSS_SELECTOR, ".chart li")
    }
    expected: dict[str, int] = {}
    for msg_id in (2, 4):
        day = posted(msg_id).date().isoformat()
        expected[day] = expected.get(day, 0) + 1
    assert {d: int(n) for d, n in days.items() if n != "0"} == expected, days
    screenshot(browser, shots, "03-rule-hits.png")

    row.find_element(By.CSS_SELECTOR, "a.rule-search").click()
    wait(browser).until(lambda c: c.find_elements(By.CSS_SELECTOR, "#results li.hit"))
    titles = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#results li.hit a.title")]
    assert titles == ["Продление мер", SANCTIONS], titles


def test_4_trying_a_rule_shows_the_stored_posts_it_would_match_and_saves_nothing(
    browser: WebDriver, web: Web, shots: Path
) -> None:
    sign_in(browser, web.url, "/rules")
    element(browser, "#try-link").click()
    paste = element(browser, "#yaml")
    paste.clear()
    paste.send_keys(TRIED)
    browser.find_element(By.ID, "try").click()
    summary = element(browser, "#try-summary")
    assert browser.find_element(By.ID, "matched").text == "1"
    assert browser.find_element(By.ID, "read").text == "4"
    assert "rain" in summary.text
    hits = browser.find_elements(By.CSS_SELECTOR, "#try-hits li.hit")
    assert [h.find_element(By.CSS_SELECTOR, "a.title").text for h in hits] == ["Погода в Брюсселе"]
    assert [m.text for m in hits[0].find_elements(By.TAG_NAME, "mark")] == ["Дожди"]
    assert browser.find_element(By.ID, "yaml").get_attribute("value") == TRIED  # kept, to edit again
    screenshot(browser, shots, "04-try-rule.png")

    # A broken paste shows the loader's problem at its line instead.
    paste = browser.find_element(By.ID, "yaml")
    paste.clear()
    paste.send_keys('id: rain\nmatch:\n  any: ["дожд*"]\n  sometimes: ["ливн*"]\n')
    browser.find_element(By.ID, "try").click()
    problem = element(browser, "#problems li.problem")
    assert problem.get_attribute("data-line") == "4", problem.text

    browser.find_element(By.LINK_TEXT, "Rules").click()
    element(browser, "#rules")
    assert not browser.find_elements(By.ID, "rule-rain")  # nothing was saved


class Monitor:
    """`tgsentinel run` over the store, serving the archive on its HTTP port (TGSENTINEL_WEB_TOKEN set)."""

    def __init__(self, db: str, rules: Path, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TGSENTINEL_", "TELEGRAM_", "DATABASE_URL"))
        }
        env.update(
            PYTHONPATH=str(ROOT),
            DATABASE_URL=db,
            TGSENTINEL_RULES_DIR=str(rules),
            TGSENTINEL_DATA_DIR=str(cwd / "data"),
            TGSENTINEL_WEB_TOKEN=TOKEN,
            TGSENTINEL_WEB_BASE="http://127.0.0.1:9",  # no channel is watched; were one, never t.me
            TGSENTINEL_HTTP_HOST="127.0.0.1",
            TGSENTINEL_HTTP_PORT=str(self.port),
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run"],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(self._serving, timeout=30, what="tgsentinel run to serve the archive")

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"tgsentinel run exited {self.proc.returncode}: {self.proc.stderr.read()!r}")
        try:
            return httpx.get(f"{self.url}/login", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=15)
        return err.decode(errors="replace")


@pytest.fixture
def monitor(store: str, rules_dir: Path, tmp_path: Path) -> Iterator[Monitor]:
    running = Monitor(store, rules_dir, tmp_path)
    try:
        yield running
    finally:
        log = running.stop()
        assert running.proc.returncode == 0, log[-3000:]
        assert TOKEN not in log and "Traceback" not in log and "s3cret" not in log, log[-3000:]


def test_5_retrying_a_dead_delivery_sends_it_to_the_receiver(
    browser: WebDriver, monitor: Monitor, receiver: Receiver, shots: Path
) -> None:
    receiver.accept()  # the far end is fixed: now a retry can succeed
    sign_in(browser, monitor.url, "/alerts")
    rows = browser.find_elements(By.CSS_SELECTOR, "#dead-deliveries tbody tr")
    assert len(rows) == 2, [r.text for r in rows]
    dead = rows[0]
    delivery_id = dead.get_attribute("data-delivery")
    assert "400" in dead.find_element(By.CSS_SELECTOR, ".last-error").text
    assert not receiver.got.is_set()  # the monitor leaves dead letters alone

    element(browser, f"#retry-{delivery_id}").click()
    notice = element(browser, "#notice")
    assert notice.text.startswith(f"Delivery {delivery_id} is queued again"), notice.text
    assert receiver.got.wait(WAIT), "the retried delivery never reached the receiver"
    assert len(receiver.accepted) == 1
    sent = receiver.accepted[0]
    # The very alert the receiver refused at replay, about one of the two sanctions posts.
    assert sent["id"] in [r["id"] for r in receiver.refused] and sent["rule"]["id"] == "sanctions"
    assert sent["message"]["title"] in (SANCTIONS, "Продление мер"), sent

    # The page says so once the monitor has marked it: reloaded until then, as a user would.
    def marked_sent(chrome: WebDriver) -> bool:
        chrome.get(f"{monitor.url}/alerts")
        row = chrome.find_elements(By.ID, f"delivery-{delivery_id}")
        return bool(row) and row[0].get_attribute("data-status") == "sent"

    wait(browser).until(marked_sent)
    left = browser.find_elements(By.CSS_SELECTOR, "#dead-deliveries tbody tr")
    assert [r.get_attribute("data-delivery") for r in left] != [delivery_id] and len(left) == 1
    screenshot(browser, shots, "05-retry.png")


def test_6_adding_a_silence_lists_it_until_it_ends(browser: WebDriver, web: Web, shots: Path) -> None:
    sign_in(browser, web.url, "/alerts")
    element(browser, "#silence-rule").send_keys("sanctions")
    browser.find_element(By.ID, "silence-channel").send_keys("dump:news")
    browser.find_element(By.ID, "silence-for").send_keys("2h")
    browser.find_element(By.ID, "silence-reason").send_keys("Брифинг: не будить дежурного")
    browser.find_element(By.ID, "silence-add").click()
    notice = element(browser, "#notice")
    assert notice.text.startswith("Silence ") and notice.text.endswith(" added."), notice.text
    rows = browser.find_elements(By.CSS_SELECTOR, "#silence-list tbody tr")
    assert len(rows) == 1, [r.text for r in rows]
    row = rows[0]
    assert row.find_element(By.CSS_SELECTOR, ".rule").text == "sanctions"
    assert row.find_element(By.CSS_SELECTOR, ".channel").text == "dump:news"
    assert row.find_element(By.CSS_SELECTOR, ".reason").text == "Брифинг: не будить дежурного"
    screenshot(browser, shots, "06-silence.png")

    # An unknown rule is refused on the page, with what was typed kept.
    element(browser, "#silence-rule").send_keys("no-such-rule")
    browser.find_element(By.ID, "silence-for").send_keys("1h")
    browser.find_element(By.ID, "silence-add").click()
    error = element(browser, "#error")
    assert "no-such-rule" in error.text, error.text
    assert browser.find_element(By.ID, "silence-rule").get_attribute("value") == "no-such-rule"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#silence-list tbody tr")) == 1
