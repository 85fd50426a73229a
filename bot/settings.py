"""Process settings: environment variables `TGSENTINEL_*` (and `DATABASE_URL`), read once at the edge.

Every field is listed, with a comment, in `.env.example`. An empty value means unset, so a copy of
`.env.example` with `TELEGRAM_API_ID=` left blank is the same as no line at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.database_url import database_url, parse
from bot.duration import parse_duration
from bot.errors import InputError
from bot.redact import SECRETS

Seconds = Annotated[float, Field(gt=0), BeforeValidator(parse_duration)]
"""A positive duration: a number of seconds, or 30s, 10m, 2h, 1d."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TGSENTINEL_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    database_url: str = Field(
        default="sqlite:///data/tgsentinel.db",
        validation_alias=AliasChoices("DATABASE_URL", "TGSENTINEL_DATABASE_URL", "database_url"),
    )
    rules_dir: Path = Path("rules")
    data_dir: Path = Path("data")

    # Telegram user account (the live source). Without them, `run` watches through the web preview.
    api_id: int | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("TELEGRAM_API_ID", "api_id")
    )
    api_hash: str | None = Field(
        default=None, validation_alias=AliasChoices("TELEGRAM_API_HASH", "api_hash"), repr=False
    )
    session: str | None = Field(
        default=None, validation_alias=AliasChoices("TELEGRAM_SESSION", "session"), repr=False
    )

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # Health and metrics HTTP server. Loopback unless told otherwise: it shows rule ids and channel
    # names. The container image sets 0.0.0.0 itself.
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=1, le=65535)
    # With a token, /metrics and the detail of /healthz need `Authorization: Bearer TOKEN`.
    http_token: str | None = Field(default=None, repr=False)
    # The archive's pages and JSON API on the same port: off unless this sign-in token is set (a
    # secret; `tgsentinel init` writes a random one). People sign in with it; scripts send it as
    # `Authorization: Bearer TOKEN`.
    web_token: str | None = Field(default=None, repr=False)
    # For when a TLS proxy fronts the UI: marks the session cookie Secure, so a browser never sends
    # it over plain HTTP. Leave it off when the UI is reached over http://127.0.0.1.
    web_https: bool = False

    # Sources.
    sweep_interval: Seconds = 300.0  # between catch-up sweeps (jittered)
    resolve_interval: Seconds = 2.0  # between ResolveUsername/JoinChannel requests
    lag_threshold: Seconds = 900.0  # a channel not confirmed up to date for this long is unhealthy
    flood_wait_alert: Seconds = 300.0  # FloodWaits longer than this are reported to ops
    outage_notice: Seconds = 600.0  # a source failing this long sends one ops notice (and one on recovery)
    heartbeat: float = Field(900.0, ge=0)  # seconds between "what I did" log lines; 0 turns them off
    store_failures: int = Field(3, ge=1, le=1000)  # store operations failing in a row before /healthz is 503
    web_base: str = "https://t.me"
    web_interval: Seconds = 60.0
    web_rpm: int = Field(60, ge=1)  # requests per minute to the web preview, across all channels
    web_max_pages: int = Field(20, ge=1)

    # Scale-out (PostgreSQL only): what this process runs, and how source workers share the channels.
    role: Literal["all", "source", "delivery"] = "all"
    channel_lease: Annotated[Seconds, Field(ge=3)] = 60.0  # a dead source worker's channels move after this
    join_budget: int = Field(450, ge=1, le=1000)  # channels one Telegram account may hold (500 is the cap)
    # The Telegram accounts this process runs, by name ("default" is TELEGRAM_SESSION or the login
    # file), comma-separated; unset: every one it has a session for. Two processes must never run
    # one account: Telegram drops a session used from two connections at once.
    accounts: str | None = None

    # Delivery.
    retry_base: Seconds = 2.0
    retry_cap: Seconds = 900.0
    max_attempts: int = Field(10, ge=1)
    max_age: Seconds = 86400.0  # after which an undelivered alert is dead
    lease: Seconds = 60.0  # a worker holds a claimed delivery this long
    poll_interval: Seconds = 5.0  # fallback polling of the outbox
    dedup_window: Seconds = 86400.0
    max_alert_age: Seconds = 86400.0
    # Stories: a post joins an earlier one's story within this window when their shingles' estimated
    # Jaccard similarity reaches the threshold.
    story_window: Seconds = 72 * 3600.0
    story_threshold: float = Field(0.7, gt=0, le=1)
    # An alert that cannot be edited in place gets one "also seen in" line this long after its story
    # spread further.
    story_line_delay: Seconds = 300.0
    ops_destination: str = "console"

    # Matching: what regex terms may cost before the rest are skipped (counted), and how many
    # timeouts in a row disable a term until the rules are reloaded.
    match_post_budget: Annotated[Seconds, Field(le=60)] = 0.25
    match_batch_budget: Annotated[Seconds, Field(le=600)] = 2.0
    regex_disable_after: int = Field(3, ge=1, le=1000)

    retention: str | None = None  # e.g. "90d": prune old messages and sent deliveries

    def secrets(self) -> list[str]:
        """The values `_SECRET` names, for the redactor; of the database URL, only the password."""
        password = parse(self.database_url).password
        return [str(password or ""), *(getattr(self, f) or "" for f in _SECRET if f != "database_url")]

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if info.field_name == "log_level" else value.strip().lower()

    @field_validator("heartbeat", mode="before")
    @classmethod
    def _heartbeat(cls, value: Any) -> Any:
        return 0.0 if value in (0, "0") else parse_duration(value)

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # checked at start, not an hour later at the first prune
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return database_url(value)

    @field_validator("web_base")
    @classmethod
    def _web_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, not {value!r}")
        return value.rstrip("/")


# What a command-line option is called, for a bad value given as one.
_OPTIONS = {
    "database_url": "--db",
    "rules_dir": "--rules",
    "http_host": "--host",
    "http_port": "--port",
    "role": "--role",
}


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment and `.env`, with `overrides` (command-line options) on top.

    Every command reads its settings through here, so a bad value is the same one line everywhere,
    naming the variable (or the option) as the user wrote it: `TGSENTINEL_HTTP_PORT must be 1-65535`,
    exit status 2.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field(str(err["loc"][0])) if err["loc"] else ""
        name = _OPTIONS[field] if field in given and field in _OPTIONS else _variable(field)
        raise InputError(f"{name} {_reason(err, field)}") from None
    SECRETS.learn(*settings.secrets())
    return settings


def _reason(err: Any, field: str) -> str:
    bounds = {}
    info = Settings.model_fields.get(field)
    for meta in info.metadata if info else ():
        for attr in ("ge", "gt", "le"):
            if getattr(meta, attr, None) is not None:
                bounds[attr] = getattr(meta, attr)
    got = err.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float) and field not in _SECRET else ""
    if err["type"] in ("greater_than_equal", "less_than_equal", "greater_than"):
        if "ge" in bounds and "le" in bounds:
            return f"must be {bounds['ge']}-{bounds['le']}{shown}"
        if "gt" in bounds and "le" in bounds:
            return f"must be greater than {bounds['gt']} and at most {bounds['le']}{shown}"
        if "gt" in bounds:
            return f"must be greater than {bounds['gt']}{shown}"
        return f"must be at least {bounds.get('ge')}{shown}"
    if err["type"] == "literal_error":
        return f"must be {err['ctx']['expected']}{shown}"
    return f"is invalid: {str(err['msg']).removeprefix('Value error, ')}"


_SECRET = {"api_hash", "session", "database_url", "http_token", "web_token"}


def _field(loc: str) -> str:
    """The field an error location names: pydantic names an aliased field by its alias."""
    for name, info in Settings.model_fields.items():
        choices = getattr(info.validation_alias, "choices", ())
        if loc == name or loc in choices:
            return name
    return loc


def _variable(field: str) -> str:
    """The environment variable a field is read from, as a user would set it."""
    info = Settings.model_fields.get(field)
    choices = getattr(getattr(info, "validation_alias", None), "choices", None)
    if choices:
        return str(choices[0])
    return f"TGSENTINEL_{field.upper()}"
