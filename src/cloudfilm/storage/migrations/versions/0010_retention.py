"""retention: the blob a tombstone still has to remove, and the patient class a report names

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMN (no table copy on SQLite)
    op.add_column(
        "keeping_tombstones",
        sa.Column("blob_key", sa.String(256), nullable=False, server_default=""),
    )
    op.add_column(
        "portal_reports",
        sa.Column("patient_class", sa.String(16), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_column("portal_reports", "patient_class")
    op.drop_column("keeping_tombstones", "blob_key")
