"""Shared fixtures: real SQLite always, real PostgreSQL when TGSENTINEL_TEST_DATABASE_URL is set."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import hypothesis
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bot.alerts.model import AlertView
from bot.app import Pipeline
from bot.config.ruleset import RuleSet
from bot.settings import Settings
from bot.store.migrate import open_store

if TYPE_CHECKING:
    from tests.pg_server import PgServer

# CI must give the same verdict on the same commit: there, hypothesis draws the same examples each
# run (derandomized); locally it keeps exploring new ones.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = FIXTURES / "mfa_channel_dump.txt"
PG_URL = os.environ.get("TGSENTINEL_TEST_DATABASE_URL")


def alert_view(**kw: Any) -> AlertView:
    """An alert as the senders see it: a plain match in @news, with `kw` changing what a test needs."""
    base: dict[str, Any] = dict(
        id="alert-1",
        kind="match",
        rule_id="grid",
        severity="high",
        channel_username="news",
        channel_title="News",
        message_id=5,
        date=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        url="https://t.me/news/5",
        title="Grid attack",
        hashtags=("#grid",),
    )
    return AlertView(**{**base, **kw})


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    """A threaded recording HTTP server on 127.0.0.1, shared by a module's tests."""
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def http(server: HTTPServer) -> Iterator[HTTPServer]:
    """That server, with no expectations or log left from the test before."""
    server.clear()
    yield server
    server.clear()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tgsentinel.db'}"
        return
    if not PG_URL:
        pytest.skip("PostgreSQL store tests need TGSENTINEL_TEST_DATABASE_URL (set by .ci/run)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tgsentinel.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Engine]:
    engine = open_store(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Callable[[str], Path]:
    """Write a rules directory from YAML text; returns its path."""

    def make(yaml_text: str = "") -> Path:
        d = tmp_path / f"rules-{uuid.uuid4().hex[:6]}"
        d.mkdir()
        (d / "rules.yaml").write_text(yaml_text, encoding="utf-8")
        return d

    return make


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path / "data", retry_base=0.05, retry_cap=0.2, poll_interval=0.2
    )


@pytest.fixture
async def make_pipeline(
    store: Engine, settings: Settings, rules_dir: Callable[[str], Path]
) -> AsyncIterator[Callable[..., Pipeline]]:
    """Build the real pipeline (ingest, match, outbox, senders) over the test database."""
    made: list[Pipeline] = []

    def make(yaml_text: str = "", *, console: io.StringIO | None = None, **overrides: object) -> Pipeline:
        rules = RuleSet.load(rules_dir(yaml_text), env={})
        pipeline = Pipeline(
            settings.model_copy(update=overrides), store, rules, console=console or io.StringIO()
        )
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        await pipeline.aclose()


@pytest.fixture
async def sink(make_pipeline: Callable[..., Pipeline]) -> object:
    """The real ingest path over a real store, with no rules: what sources write to."""
    return make_pipeline().ingest


@pytest.fixture
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server of the test's own (tests.pg_server), for tests that stop it or run workers."""
    from tests.pg_server import PgServer

    server = PgServer()
    server.start()
    yield server
    server.remove()
