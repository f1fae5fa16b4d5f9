"""bigint item ids: items.id and its sequence as BIGINT, so ids never run out at 2**31

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("items", "id", type_=sa.BigInteger(), existing_type=sa.Integer())
    # The SERIAL column's sequence has a type of its own, which caps the ids it hands out.
    op.execute("ALTER SEQUENCE items_id_seq AS bigint")


def downgrade() -> None:
    op.execute("ALTER SEQUENCE items_id_seq AS integer")
    op.alter_column("items", "id", type_=sa.Integer(), existing_type=sa.BigInteger())
