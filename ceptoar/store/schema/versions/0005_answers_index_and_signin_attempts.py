"""An organisation's latest answer is found by an index, not by reading the alert's answers; operators'
sign-in attempts are counted in the database, shared by every API process.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ceptoar.store.tables import UtcDateTime

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "signin_attempts",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signin_attempts")),
    )
    op.create_index(op.f("ix_signin_attempts_at"), "signin_attempts", ["at"])
    op.create_index(op.f("ix_signin_attempts_client_at"), "signin_attempts", ["client", "at"])
    op.create_index(op.f("ix_signin_attempts_name_at"), "signin_attempts", ["name", "at"])
    op.create_index("ix_answers_alert_organisation", "answers", ["alert_id", "subscriber_code", "id"])


def downgrade() -> None:
    op.drop_index("ix_answers_alert_organisation", table_name="answers")
    op.drop_index(op.f("ix_signin_attempts_name_at"), table_name="signin_attempts")
    op.drop_index(op.f("ix_signin_attempts_client_at"), table_name="signin_attempts")
    op.drop_index(op.f("ix_signin_attempts_at"), table_name="signin_attempts")
    op.drop_table("signin_attempts")
