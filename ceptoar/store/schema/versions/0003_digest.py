"""The security mail magazine: addresses choose a digest, deliveries carry a variant, issues are kept.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ceptoar.store.tables import UtcDateTime

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "digests",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("articles", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("composed_at", UtcDateTime(), nullable=False),
        sa.Column("composed_by", sa.String(length=128), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("alert_id", sa.String(length=32), nullable=True),
        sa.Column("content", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name=op.f("fk_digests_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digests")),
        sa.UniqueConstraint("kind", "number", name=op.f("uq_digests_kind_number")),
        sa.UniqueConstraint("kind", "period", name=op.f("uq_digests_kind_period")),
    )
    op.add_column(
        "addresses", sa.Column("digest", sa.String(length=8), server_default="none", nullable=False)
    )
    op.add_column(
        "addresses", sa.Column("low_notices", sa.String(length=8), server_default="auto", nullable=False)
    )
    op.add_column("deliveries", sa.Column("variant", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("variant")
    with op.batch_alter_table("addresses") as batch:
        batch.drop_column("low_notices")
        batch.drop_column("digest")
    op.drop_table("digests")
