"""Destinations as declared under `destinations:` in the rules directory.

Every check of a destination's values is made here, once, by the model: `rules check` reports what
fails (as FILE:LINE, through `bot.config.load`) and a sender built from a model can rely on it, so
nothing a sender would reject gets past `rules check`. `warnings()` is what looks wrong but may be
meant (a proxy in front of Slack). Messages never repeat a value: URLs, tokens and header values
are secrets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Annotated, ClassVar, Literal
from urllib.parse import SplitResult, urlsplit

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

SECRET_PREFIX = "whsec_"
SLACK_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})
DISCORD_HOSTS = frozenset({"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"})
# Headers the webhook sender sets itself, after the configured ones.
SENDER_HEADERS = frozenset({"content-type", "webhook-id", "webhook-timestamp", "webhook-signature"})

_SLACK_PATH = re.compile(r"^/services/[^/]+/[^/]+/[^/]+/?$")
_DISCORD_PATH = re.compile(r"^/api/(?:v\d+/)?webhooks/\d+/[A-Za-z0-9_-]+/?$")
_SLACK_TOKEN = re.compile(r"^xox[bpa]-[A-Za-z0-9-]+$")
_BOT_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_BOT_TOKEN_SECRET = 35  # characters after the ':' in every token @BotFather hands out
_CHAT = re.compile(r"^(?:-?\d+|@[A-Za-z][A-Za-z0-9_]{3,31})$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")  # what httpx can send: ASCII, no line breaks
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,15}$")


def is_loopback(host: str | None) -> bool:
    """A local test server: localhost, 127.0.0.0/8, ::1."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, https: bool = False) -> SplitResult:
    """`url` split into its parts, or ValueError saying what is wrong with it (never the URL).

    `https`: plain http:// only to a loopback host (a local test server).
    """
    if not url:
        raise ValueError("empty (write https://...)")
    if url != url.strip():
        raise ValueError("a space or line break at the start or end")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError("no scheme (write https://...)")
    if scheme.lower() not in ("http", "https"):
        shown = f"{scheme.lower()}://" if _SCHEME.match(scheme) else "the scheme"
        raise ValueError(f"{shown} is not supported (write https://...)")
    if any(ch.isspace() for ch in url):
        raise ValueError("a space or line break inside the URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number, or out of range
        httpx.URL(url)  # what the sender will parse
    except (ValueError, httpx.InvalidURL):
        raise ValueError("not a valid URL (a bad port or [IPv6] host?)") from None
    if not parts.hostname:
        raise ValueError("no host (write https://HOST/...)")
    if https and parts.scheme.lower() == "http" and not is_loopback(parts.hostname):
        raise ValueError("http:// is only for localhost or 127.0.0.1 (write https://...)")
    return parts


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ("whsec_" + base64), or ValueError."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        # Padding is optional in the wild (the standardwebhooks libraries add it back too).
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ValueError(f"must be {SECRET_PREFIX!r} followed by base64 (a Standard Webhooks secret)")
    return key


def _header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError("not a header name (letters, digits and - only)")
    return name


def _header_value(value: str) -> str:
    if not _HEADER_VALUE.match(value):
        raise ValueError("a header value is plain ASCII on one line")
    return value


# Names are not secret, values may be (an Authorization header): a message names the header only.
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


class _Destination(BaseModel):
    # hide_input_in_errors: a ValidationError printed anywhere must not carry a URL or a token.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=NAME)

    @property
    def edits(self) -> bool:
        """Whether what was sent can be edited in place (to add where else its story was seen)."""
        return False

    def warnings(self) -> list[tuple[tuple[str, ...], str]]:
        """(where, message) for what looks wrong but may be meant; `rules check` prints them.
        `where` is the path to the value: ("url",), ("headers", "X-Team")."""
        return []


class ConsoleDestination(_Destination):
    type: Literal["console"] = "console"


class _ServiceWebhook(_Destination):
    """A chat service's incoming webhook: the URL is itself the secret, and the service's own hosts
    give it a known path shape."""

    hosts: ClassVar[frozenset[str]]
    path: ClassVar[re.Pattern[str]]
    home: ClassVar[str]  # the service's webhook host, for the messages
    what: ClassVar[str]  # what the URL is, as the service calls it
    shape: ClassVar[str]  # what it looks like

    url: SecretStr
    timeout: float | None = Field(default=None, gt=0)  # seconds per request; default: the client's

    @field_validator("url")
    @classmethod
    def _url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return url
        parts = check_url(url.get_secret_value(), https=True)
        if parts.hostname in cls.hosts and not cls.path.match(parts.path):
            raise ValueError(f"not {cls.what} ({cls.shape})")
        return url

    def warnings(self) -> list[tuple[tuple[str, ...], str]]:
        if self.url is None:
            return []
        host = urlsplit(self.url.get_secret_value()).hostname
        if host in self.hosts or is_loopback(host):
            return []
        return [(("url",), f"the host is not {self.home} (fine for a proxy; a typo otherwise)")]


class SlackDestination(_ServiceWebhook):
    hosts = SLACK_HOSTS
    path = _SLACK_PATH
    home = "hooks.slack.com"
    what = "an incoming-webhook URL"
    shape = "https://hooks.slack.com/services/..."

    type: Literal["slack"]
    # Either the incoming webhook `url`, or a bot `token` (xoxb-...) and the `channel` to post to:
    # with a token, tgsentinel posts by chat.postMessage and can edit its alerts (chat.update).
    url: SecretStr | None = None  # type: ignore[assignment]
    token: SecretStr | None = None
    channel: str | None = None  # a channel id (C0123...) or #name the bot is in
    api_url: str = "https://slack.com/api"

    @field_validator("token")
    @classmethod
    def _token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not _SLACK_TOKEN.match(token.get_secret_value()):
            raise ValueError("not a Slack bot token (xoxb-...; from the app's OAuth & Permissions page)")
        return token

    @field_validator("api_url")
    @classmethod
    def _api(cls, api: str) -> str:
        check_url(api, https=True)
        return api

    @model_validator(mode="after")
    def _one_way(self) -> SlackDestination:
        if self.url is None and self.token is None:
            raise ValueError("needs url (an incoming webhook) or token and channel (a bot)")
        if self.url is not None and self.token is not None:
            raise ValueError("url or token, not both")
        if self.token is not None and not self.channel:
            raise ValueError("a token needs the channel to post to")
        return self

    @property
    def edits(self) -> bool:
        return self.token is not None  # chat.update; an incoming webhook cannot edit


class DiscordDestination(_ServiceWebhook):
    hosts = DISCORD_HOSTS
    path = _DISCORD_PATH
    home = "discord.com"
    what = "a webhook URL"
    shape = "https://discord.com/api/webhooks/ID/TOKEN"

    type: Literal["discord"]

    @property
    def edits(self) -> bool:
        return True  # a webhook edits its own messages


class TelegramDestination(_Destination):
    type: Literal["telegram"]

    @property
    def edits(self) -> bool:
        return True  # editMessageText, on the bot's own messages
    bot_token: SecretStr
    chat_id: int | str  # numeric id, or @channelusername
    thread_id: int | None = None
    api_url: str = "https://api.telegram.org"
    timeout: float | None = Field(default=None, gt=0)  # seconds per request; default: the client's

    @field_validator("bot_token")
    @classmethod
    def _token(cls, token: SecretStr) -> SecretStr:
        if not _BOT_TOKEN.match(token.get_secret_value()):
            raise ValueError("not a bot token (digits, ':', then letters, digits, - and _; from @BotFather)")
        return token

    @field_validator("chat_id")
    @classmethod
    def _chat(cls, chat: int | str) -> int | str:
        if isinstance(chat, str) and not _CHAT.match(chat):
            raise ValueError("a numeric chat id (-100...) or @channelusername")
        return chat

    @field_validator("api_url")
    @classmethod
    def _api(cls, api: str) -> str:
        parts = check_url(api)
        if parts.query or parts.fragment or api.endswith(("?", "#")):
            raise ValueError("the Bot API's base URL, without ?query or #fragment")
        return api

    def warnings(self) -> list[tuple[tuple[str, ...], str]]:
        out = []
        if len(self.bot_token.get_secret_value().partition(":")[2]) != _BOT_TOKEN_SECRET:
            length = f"the part after ':' is {_BOT_TOKEN_SECRET} characters in @BotFather's tokens"
            out.append((("bot_token",), length))
        parts = urlsplit(self.api_url)
        if parts.scheme.lower() == "http" and not is_loopback(parts.hostname):
            plain = "http:// sends the bot token unencrypted (https:// unless the server is local)"
            out.append((("api_url",), plain))
        return out


class WebhookDestination(_Destination):
    type: Literal["webhook"]
    url: SecretStr
    secret: SecretStr | None = None  # Standard Webhooks "whsec_" + base64
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0)  # seconds per request; default: the client's
    max_text: int = Field(
        default=16_384, ge=1, description="post text a body carries, in characters; longer is cut (truncated)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, url: SecretStr) -> SecretStr:
        check_url(url.get_secret_value())
        return url

    @field_validator("secret")
    @classmethod
    def _secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            signing_key(secret.get_secret_value())
        return secret

    def hmac_key(self) -> bytes | None:
        return signing_key(self.secret.get_secret_value()) if self.secret else None

    def warnings(self) -> list[tuple[tuple[str, ...], str]]:
        return [
            (("headers", name), "set by tgsentinel itself: this value is not sent")
            for name in self.headers
            if name.lower() in SENDER_HEADERS
        ]


Destination = Annotated[
    ConsoleDestination | SlackDestination | DiscordDestination | TelegramDestination | WebhookDestination,
    Field(discriminator="type"),
]

CONSOLE = ConsoleDestination(name="console")
