"""The schema. Created only by Alembic migrations (alembic/versions); this module is its Python face.

Plain tables with plain types, so the SQLite file opens in sqlite3, Datasette or pandas.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out: SQLite keeps no zone, and naive times compare with nothing."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# The highest id a row can have (a BIGINT): a larger one asked for is no row, not a driver's overflow.
MAX_ROW_ID = 2**63 - 1


def alert_key() -> str:
    """A new alert's idempotency key: the same on every retry of its deliveries."""
    return f"msg_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: UTCDateTime(),
    }


class Channel(Base):
    """A watched channel, keyed by Telegram's numeric id where known; a dump is a channel of its own."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tg_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    username: Mapped[str | None] = mapped_column(String(64), unique=True)  # lower case, no '@'
    dump: Mapped[str | None] = mapped_column(String(200), unique=True)  # "dump:<name>" channels
    title: Mapped[str | None] = mapped_column(Text)
    access_hash: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("channel_id", "msg_id", name="uq_messages_channel_msg"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    msg_id: Mapped[int] = mapped_column(BigInteger)
    date: Mapped[datetime | None]
    edit_date: Mapped[datetime | None]
    # The text as the source gave it (what `entities` point into), or '' when it is `text` itself,
    # as it is for most posts: a second copy of every post's text was a third of the store.
    raw_text: Mapped[str] = mapped_column(Text)
    entities: Mapped[list[Any]] = mapped_column(JSON)
    text: Mapped[str] = mapped_column(Text)  # normalised: what the rules match and the search indexes
    title: Mapped[str] = mapped_column(Text)
    hashtags: Mapped[list[Any]] = mapped_column(JSON)
    mentions: Mapped[list[Any]] = mapped_column(JSON)
    urls: Mapped[list[Any]] = mapped_column(JSON)
    media: Mapped[list[Any]] = mapped_column(JSON)
    fingerprint: Mapped[str | None] = mapped_column(String(32), index=True)
    # The story: the row id of its first post (bot.stories). NULL only while the batch storing it
    # runs, and on rows stored before stories existed until the migration gave each its own.
    story_id: Mapped[int | None] = mapped_column(Integer, index=True)
    media_key: Mapped[str | None] = mapped_column(String(80))  # bot.stories.media_key: the same file
    forwarded_from: Mapped[str | None] = mapped_column(Text)
    fwd_tg_id: Mapped[int | None] = mapped_column(BigInteger)
    fwd_post_id: Mapped[int | None] = mapped_column(BigInteger)
    grouped_id: Mapped[int | None] = mapped_column(BigInteger)
    views: Mapped[int | None] = mapped_column(BigInteger)
    link_preview: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    signature: Mapped[str | None] = mapped_column(Text)  # the post's author line, not part of its text
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]

    @property
    def source_text(self) -> str:
        return self.raw_text or self.text


def stored_raw_text(raw_text: str, text: str) -> str:
    """What `raw_text` holds for a post: '' when the source's text is the normalised text."""
    return "" if raw_text == text else raw_text


class MessageEdit(Base):
    """A message's earlier versions: the text it had before each edit."""

    __tablename__ = "message_edits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    edit_date: Mapped[datetime | None]
    raw_text: Mapped[str] = mapped_column(Text)  # '' when it is `text`, as in `messages`
    text: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime]

    @property
    def source_text(self) -> str:
        return self.raw_text or self.text

    message: Mapped[Message] = relationship()


class Match(Base):
    __tablename__ = "matches"
    __table_args__ = (UniqueConstraint("rule_id", "message_id", name="uq_matches_rule_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(100), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    terms: Mapped[list[Any]] = mapped_column(JSON)
    hits: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class Alert(Base):
    """One alert: a match worth telling, a follow-up, a digest or an ops notice."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # idempotency key, stable across retries
    kind: Mapped[str] = mapped_column(String(16))  # match | followup | digest | ops
    rule_id: Mapped[str | None] = mapped_column(String(100))
    severity: Mapped[str | None] = mapped_column(String(16))
    match_id: Mapped[int | None] = mapped_column(ForeignKey("matches.id", ondelete="SET NULL"), index=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id", ondelete="SET NULL"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"), index=True)
    fingerprint: Mapped[str | None] = mapped_column(String(32))
    story_id: Mapped[int | None] = mapped_column(Integer, index=True)  # the post's story, for a match
    also_seen_in: Mapped[list[Any]] = mapped_column(JSON)
    summary: Mapped[str | None] = mapped_column(Text)
    items: Mapped[list[Any]] = mapped_column(JSON)  # alert ids a follow-up or digest stands for
    created_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (Index("ix_alerts_fingerprint_created", "fingerprint", "created_at"),)


class Delivery(Base):
    """One alert to one destination: the outbox row a worker claims, sends and marks."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "destination", name="uq_deliveries_alert_destination"),
        Index("ix_deliveries_status_due", "status", "next_attempt_at"),
        Index("ix_deliveries_hold", "status", "hold_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))  # pending | held | sent | dead | folded
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    # "throttle:<rule>:<channel>" or "digest:<rule>": what a follow-up or digest folds together
    hold_key: Mapped[str | None] = mapped_column(String(200))
    hold_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class Silence(Base):
    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str | None] = mapped_column(String(200))
    until: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class DestinationState(Base):
    """A destination disabled by a 410, until someone re-enables it."""

    __tablename__ = "destination_state"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    disabled_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)


class RejectedPost(Base):
    """A post that could not be parsed or stored: skipped so its channel moves on, kept so it is seen."""

    __tablename__ = "rejected_posts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(200))  # the channel key, as the rules name it
    ref: Mapped[str | None] = mapped_column(String(64))  # the post id as the source gave it, if any
    reason: Mapped[str] = mapped_column(String(32))  # the label of tgsentinel_posts_rejected_total
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(index=True)


class Worker(Base):
    """A `tgsentinel run` process on PostgreSQL, as the others see it: alive while it beats."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # all | source | delivery
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    accounts: Mapped[list[Any]] = mapped_column(JSON)  # its Telegram accounts by name; [] for the web preview
    capacity: Mapped[int] = mapped_column(Integer)  # channels it may hold
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]


class ChannelLease(Base):
    """A watched channel (its key in the rules), held by at most one source worker until `expires_at`."""

    __tablename__ = "channel_leases"

    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64), index=True)
    account: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    listed_at: Mapped[datetime]  # the last time a worker's rules listed it
    takeovers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
