"""keeping: fixity events, the replica queue, retention rules, holds, deletions, tombstones,
the research export's mapping; studies get their patient class and storage tier

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _hospital() -> sa.Column:
    return sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "keeping_fixity_events",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("blob_key", sa.String(256), nullable=False),
        sa.Column("hospital_pk", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    for column in ("at", "blob_key", "hospital_pk"):
        op.create_index(f"ix_keeping_fixity_events_{column}", "keeping_fixity_events", [column])
    op.create_table(
        "keeping_replica_queue",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("blob_key", sa.String(256), nullable=False, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", _TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
    )
    op.create_index("ix_keeping_replica_queue_next_at", "keeping_replica_queue", ["next_at"])
    op.create_table(
        "keeping_retention_rules",
        sa.Column("pk", sa.Integer(), primary_key=True),
        _hospital(),
        sa.Column("patient_class", sa.String(16), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("years", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("hospital_pk", "patient_class", "modality", name="uq_retention_rule"),
    )
    op.create_index(
        "ix_keeping_retention_rules_hospital_pk", "keeping_retention_rules", ["hospital_pk"]
    )
    op.create_table(
        "keeping_holds",
        sa.Column("pk", sa.Integer(), primary_key=True),
        _hospital(),
        sa.Column("patient_pk", sa.Integer(), nullable=True),
        sa.Column("study_uid", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("released_at", _TS, nullable=True),
        sa.Column("released_by", sa.String(128), nullable=False),
    )
    for column in ("hospital_pk", "patient_pk", "study_uid"):
        op.create_index(f"ix_keeping_holds_{column}", "keeping_holds", [column])
    op.create_table(
        "keeping_deletions",
        sa.Column("pk", sa.Integer(), primary_key=True),
        _hospital(),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("listed_at", _TS, nullable=False),
        sa.Column("approved_by", sa.String(128), nullable=False),
        sa.Column("approved_at", _TS, nullable=True),
        sa.Column("deleted_at", _TS, nullable=True),
    )
    for column in ("hospital_pk", "study_uid"):
        op.create_index(f"ix_keeping_deletions_{column}", "keeping_deletions", [column])
    op.create_table(
        "keeping_tombstones",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("hospital_pk", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("index_id", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", _TS, nullable=False),
        sa.Column("deleted_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    for column in ("hospital_pk", "study_uid", "sop_uid"):
        op.create_index(f"ix_keeping_tombstones_{column}", "keeping_tombstones", [column])
    op.create_table(
        "keeping_deid_map",
        sa.Column("pk", sa.Integer(), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("original_key", sa.String(64), nullable=False),
        sa.Column("replacement", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("project", "kind", "original_key", name="uq_deid_value"),
    )
    # plain ADD COLUMN (no table copy on SQLite: it would lose 0005's expression indexes)
    op.add_column(
        "studies",
        sa.Column("patient_class", sa.String(16), nullable=False, server_default=""),
    )
    op.add_column("studies", sa.Column("tier", sa.String(16), nullable=False, server_default="hot"))


def downgrade() -> None:
    op.drop_column("studies", "tier")
    op.drop_column("studies", "patient_class")
    for table in (
        "keeping_deid_map",
        "keeping_tombstones",
        "keeping_deletions",
        "keeping_holds",
        "keeping_retention_rules",
        "keeping_replica_queue",
        "keeping_fixity_events",
    ):
        op.drop_table(table)
