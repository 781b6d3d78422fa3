"""The portal: operators, one-time sign-in links and sessions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ceptoar.store.tables import UtcDateTime

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("disabled_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_operators")),
    )
    op.create_table(
        "portal_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("address_id", _Id, nullable=True),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["address_id"], ["addresses.id"], name=op.f("fk_portal_sessions_address_id_addresses")
        ),
        sa.ForeignKeyConstraint(
            ["operator"], ["operators.name"], name=op.f("fk_portal_sessions_operator_operators")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_portal_sessions")),
    )
    op.create_index(op.f("ix_portal_sessions_expires_at"), "portal_sessions", ["expires_at"])
    op.create_table(
        "signin_links",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("address_id", _Id, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["address_id"], ["addresses.id"], name=op.f("fk_signin_links_address_id_addresses")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_signin_links")),
    )
    op.create_index(
        op.f("ix_signin_links_address_id_created_at"), "signin_links", ["address_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_signin_links_address_id_created_at"), table_name="signin_links")
    op.drop_table("signin_links")
    op.drop_index(op.f("ix_portal_sessions_expires_at"), table_name="portal_sessions")
    op.drop_table("portal_sessions")
    op.drop_table("operators")
