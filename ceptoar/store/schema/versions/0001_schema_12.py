"""Schema 12, the last before Alembic: the baseline every later revision builds on (`ceptoar.store.baseline`).

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from ceptoar.store.baseline import schema_12

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    schema_12().create_all(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("schema 12 is the baseline: there is nothing before it to go back to")
