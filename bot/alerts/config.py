"""Destinations as declared under `destinations:` in the rules directory."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Destination(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)


class ConsoleDestination(_Destination):
    type: Literal["console"] = "console"


class SlackDestination(_Destination):
    type: Literal["slack"]
    url: SecretStr  # the incoming-webhook URL is itself the secret
    timeout: float | None = Field(default=None, gt=0)  # seconds per request; default: the client's


class DiscordDestination(_Destination):
    type: Literal["discord"]
    url: SecretStr
    timeout: float | None = Field(default=None, gt=0)  # seconds per request; default: the client's


class TelegramDestination(_Destination):
    type: Literal["telegram"]
    bot_token: SecretStr
    chat_id: int | str  # numeric id, or @channelusername
    thread_id: int | None = None
    api_url: str = "https://api.telegram.org"
    timeout: float | None = Field(default=None, gt=0)  # seconds per request; default: the client's


class WebhookDestination(_Destination):
    type: Literal["webhook"]
    url: SecretStr
    secret: SecretStr | None = None  # Standard Webhooks "whsec_" + base64
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0)  # seconds per request; default: the client's


Destination = Annotated[
    ConsoleDestination | SlackDestination | DiscordDestination | TelegramDestination | WebhookDestination,
    Field(discriminator="type"),
]

CONSOLE = ConsoleDestination(name="console")
