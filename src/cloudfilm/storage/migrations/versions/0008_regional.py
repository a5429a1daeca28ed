"""regional sharing: persons and their links, consent requests and grants, imaging index IDs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:00:00

Studies indexed before this revision get their imaging index ID here, numbered per hospital in
the order they were first stored, dated by that day.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "regional_persons",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("person_id"),
    )
    op.create_table(
        "regional_identifiers",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("person_pk", sa.Integer(), sa.ForeignKey("regional_persons.pk"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value_key", sa.String(64), nullable=False),
        sa.Column("masked", sa.String(32), nullable=False),
        sa.Column("check", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("kind", "value_key", name="uq_identifier_kind_value"),
    )
    op.create_index("ix_regional_identifiers_person_pk", "regional_identifiers", ["person_pk"])
    op.create_table(
        "regional_links",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), sa.ForeignKey("patients.pk"), nullable=False),
        sa.Column("person_pk", sa.Integer(), sa.ForeignKey("regional_persons.pk"), nullable=False),
        sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("patient_pk"),
    )
    op.create_index("ix_regional_links_person_pk", "regional_links", ["person_pk"])
    op.create_index("ix_regional_links_hospital_pk", "regional_links", ["hospital_pk"])
    op.create_table(
        "regional_link_conflicts",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=False),
        sa.Column("patient_pk", sa.Integer(), sa.ForeignKey("patients.pk"), nullable=False),
        sa.Column("person_pk", sa.Integer(), nullable=False),
        sa.Column("other_person_pk", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index(
        "ix_regional_link_conflicts_hospital_pk", "regional_link_conflicts", ["hospital_pk"]
    )
    op.create_index(
        "ix_regional_link_conflicts_patient_pk", "regional_link_conflicts", ["patient_pk"]
    )

    def scope() -> list[sa.Column]:
        return [
            sa.Column("date_from", sa.String(8), nullable=False),
            sa.Column("date_to", sa.String(8), nullable=False),
            sa.Column("modalities", sa.String(64), nullable=False),
        ]

    op.create_table(
        "regional_consent_requests",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("person_pk", sa.Integer(), sa.ForeignKey("regional_persons.pk"), nullable=False),
        sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=False),
        sa.Column("requester", sa.String(128), nullable=False),
        sa.Column("requester_name", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        *scope(),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("code_hash", sa.String(64), nullable=True),
        sa.Column("phone_key", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("decided_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("request_id"),
        sa.UniqueConstraint("token_hash"),
    )
    for column in ("person_pk", "hospital_pk", "requester", "phone_key"):
        op.create_index(
            f"ix_regional_consent_requests_{column}", "regional_consent_requests", [column]
        )
    op.create_table(
        "regional_grants",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column(
            "request_pk",
            sa.Integer(),
            sa.ForeignKey("regional_consent_requests.pk"),
            nullable=False,
        ),
        sa.Column("person_pk", sa.Integer(), sa.ForeignKey("regional_persons.pk"), nullable=False),
        sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=False),
        sa.Column("grantee", sa.String(128), nullable=False),
        sa.Column("grantee_name", sa.String(64), nullable=False),
        *scope(),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revoked_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("grant_id"),
    )
    for column in ("person_pk", "hospital_pk", "grantee", "expires_at"):
        op.create_index(f"ix_regional_grants_{column}", "regional_grants", [column])
    op.create_table(
        "regional_index_sequences",
        sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=False),
        sa.Column("day", sa.String(8), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("hospital_pk", "day"),
    )
    op.create_table(
        "regional_index_changes",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), sa.ForeignKey("studies.pk"), nullable=False),
        sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_regional_index_changes_study_pk", "regional_index_changes", ["study_pk"])
    op.create_index(
        "ix_regional_index_changes_hospital_pk", "regional_index_changes", ["hospital_pk"]
    )
    op.add_column(
        "portal_reports",
        sa.Column("person_keys", sa.Text(), nullable=False, server_default=""),
    )
    # Not a batch (table copy) on SQLite: the copy would lose 0005's expression indexes.
    op.add_column("studies", sa.Column("index_id", sa.String(32), nullable=True))
    op.create_index("ix_studies_index_id", "studies", ["index_id"], unique=True)
    _number_existing_studies()


def _number_existing_studies() -> None:
    from cloudfilm.regional.index_id import china_day, format_index_id

    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT s.pk, s.hospital_pk, s.created_at, h.region_code FROM studies s "
            "JOIN hospitals h ON h.pk = s.hospital_pk ORDER BY s.created_at, s.pk"
        )
    ).all()
    last: dict[tuple[int, str], int] = {}
    for pk, hospital, created, region in rows:
        if isinstance(created, str):  # SQLite hands back text
            created = datetime.fromisoformat(created)
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        day = china_day(created)
        seq = last.get((hospital, day), 0) + 1
        last[(hospital, day)] = seq
        bind.execute(
            sa.text("UPDATE studies SET index_id = :i WHERE pk = :pk"),
            {"i": format_index_id(region or "", hospital, day, seq), "pk": pk},
        )
        bind.execute(
            sa.text(
                "INSERT INTO regional_index_changes (study_pk, hospital_pk, kind, at) "
                "VALUES (:pk, :h, 'new', :at)"
            ),
            {"pk": pk, "h": hospital, "at": created},
        )
    for (hospital, day), seq in last.items():
        bind.execute(
            sa.text(
                "INSERT INTO regional_index_sequences (hospital_pk, day, last) VALUES (:h, :d, :s)"
            ),
            {"h": hospital, "d": day, "s": seq},
        )


def downgrade() -> None:
    op.drop_column("portal_reports", "person_keys")
    op.drop_index("ix_studies_index_id", "studies")
    op.drop_column("studies", "index_id")
    for table in (
        "regional_index_changes",
        "regional_index_sequences",
        "regional_grants",
        "regional_consent_requests",
        "regional_link_conflicts",
        "regional_links",
        "regional_identifiers",
        "regional_persons",
    ):
        op.drop_table(table)
