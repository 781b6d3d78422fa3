"""A claimed delivery names its holder, which renews the claim's lease while it works; refused notices
are kept with their reason.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ceptoar.store.tables import UtcDateTime

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("holder", sa.String(length=255), nullable=True))
    op.create_table(
        "rejections",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("source_id", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("field", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejections")),
    )
    op.create_index(op.f("ix_rejections_at"), "rejections", ["at"])
    op.create_index(op.f("ix_rejections_source_id"), "rejections", ["source_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rejections_source_id"), table_name="rejections")
    op.drop_index(op.f("ix_rejections_at"), table_name="rejections")
    op.drop_table("rejections")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("holder")
