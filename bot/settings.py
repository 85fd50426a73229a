"""Process settings: environment variables `TGSENTINEL_*` (and `DATABASE_URL`), read once at the edge.

Every field is listed, with a comment, in `.env.example`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import InputError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TGSENTINEL_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(
        default="sqlite:///data/tgsentinel.db",
        validation_alias=AliasChoices("DATABASE_URL", "TGSENTINEL_DATABASE_URL"),
    )
    rules_dir: Path = Path("rules")
    data_dir: Path = Path("data")

    # Telegram user account (the live source). Without them, `run` watches through the web preview.
    api_id: int | None = Field(default=None, validation_alias=AliasChoices("TELEGRAM_API_ID"))
    api_hash: str | None = Field(default=None, validation_alias=AliasChoices("TELEGRAM_API_HASH"), repr=False)
    session: str | None = Field(default=None, validation_alias=AliasChoices("TELEGRAM_SESSION"), repr=False)

    log_format: str = "text"  # text | json
    log_level: str = "INFO"

    # Health and metrics HTTP server.
    http_host: str = "0.0.0.0"
    http_port: int = 8080

    # Sources.
    sweep_interval: float = 300.0  # seconds between catch-up sweeps (jittered)
    resolve_interval: float = 2.0  # seconds between ResolveUsername/JoinChannel requests
    lag_threshold: float = 900.0  # a channel not confirmed up to date for this long is unhealthy
    flood_wait_alert: float = 300.0  # FloodWaits longer than this are reported to ops
    web_base: str = "https://t.me"
    web_interval: float = 60.0
    web_rpm: int = 60  # requests per minute to the web preview, across all channels
    web_max_pages: int = 20

    # Delivery.
    retry_base: float = 2.0
    retry_cap: float = 900.0
    max_attempts: int = 10
    max_age: float = 86400.0  # seconds after which an undelivered alert is dead
    lease: float = 60.0  # seconds a worker holds a claimed delivery
    poll_interval: float = 5.0  # fallback polling of the outbox
    dedup_window: float = 86400.0
    max_alert_age: float = 86400.0
    ops_destination: str = "console"

    retention: str | None = None  # e.g. "90d": prune old messages and sent deliveries


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment and `.env`, with `overrides` (command-line options) on top.

    Every command reads its settings through here, so a bad value is the same one line everywhere:
    `setting TGSENTINEL_HTTP_PORT: Input should be a valid integer`, exit status 2.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise InputError(f"setting {_variable(field)}: {err['msg']}") from None
    updates = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=updates) if updates else settings


def _variable(field: str) -> str:
    """The environment variable a field is read from, as a user would set it."""
    if field.isupper():
        return field  # pydantic names an aliased field by its alias: TELEGRAM_API_ID, DATABASE_URL
    info = Settings.model_fields.get(field)
    alias = getattr(info, "validation_alias", None) if info else None
    choices = getattr(alias, "choices", None)
    if choices:
        return str(choices[0])
    return f"TGSENTINEL_{field.upper()}"
