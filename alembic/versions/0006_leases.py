"""Scale-out on PostgreSQL: the workers that share the channels, and each channel's lease.

A channel's lease row is held by at most one source worker at a time (`holder`), until
`expires_at`; a worker renews its leases and claims free or expired ones with SKIP LOCKED. SQLite
keeps both tables empty: there, one process does everything.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("accounts", sa.JSON(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "channel_leases",
        sa.Column("channel", sa.String(length=200), primary_key=True),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("account", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("takeovers", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_channel_leases_holder", "channel_leases", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_channel_leases_holder", table_name="channel_leases")
    op.drop_table("channel_leases")
    op.drop_table("workers")
