"""hospitals, their AE titles, users and sessions; every record owned by a hospital

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 17:30:00

An index made before hospitals existed served one anonymous hospital. It becomes hospital 1
(code ``default`` unless ``CLOUDFILM_FIRST_HOSPITAL_CODE`` says otherwise, named after
``CLOUDFILM_HOSPITAL_NAME``): every patient, study, report, film, share, token and audit record
is moved into it. Patient IDs become unique per hospital.
"""

import os
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWNED = ("patients", "studies", "portal_reports", "portal_films", "portal_shares")


def upgrade() -> None:
    with warnings.catch_warnings():
        # SQLite's batch mode reflects tables and cannot see the expression indexes of 0005
        # (they are made again below): its warning says nothing the reader can act on.
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection")
        _upgrade()


def _upgrade() -> None:
    hospitals = op.create_table(
        "hospitals",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("name_latin", sa.String(length=128), nullable=False),
        sa.Column("region_code", sa.String(length=12), nullable=False),
        sa.Column("sms_signature", sa.String(length=32), nullable=False),
        sa.Column("settings_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("code"),
    )
    op.create_index("ix_hospitals_region_code", "hospitals", ["region_code"])
    op.bulk_insert(
        hospitals,
        [
            {
                "pk": 1,
                "code": os.environ.get("CLOUDFILM_FIRST_HOSPITAL_CODE", "default")[:32],
                "name": os.environ.get("CLOUDFILM_HOSPITAL_NAME", "云胶片示范医院")[:128],
                "name_latin": "",
                "region_code": "",
                "sms_signature": "",
                "settings_json": "{}",
                "created_at": datetime.now(UTC),
            }
        ],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SELECT setval('hospitals_pk_seq', (SELECT max(pk) FROM hospitals))")

    op.create_table(
        "application_entities",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("services", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("ae_title", "host", name="uq_ae_title_host"),
    )
    op.create_index("ix_application_entities_hospital_pk", "application_entities", ["hospital_pk"])
    op.create_table(
        "users",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("hospital_pk", sa.Integer(), sa.ForeignKey("hospitals.pk"), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("totp_secret", sa.String(length=64), nullable=True),
        sa.Column("must_change_password", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("user_id"),
        sa.UniqueConstraint("username"),
        sa.UniqueConstraint("phone"),
    )
    op.create_index("ix_users_hospital_pk", "users", ["hospital_pk"])
    op.create_table(
        "user_sessions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("sid_hash", sa.String(length=64), nullable=False),
        sa.Column("user_pk", sa.Integer(), sa.ForeignKey("users.pk"), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("sid_hash"),
    )
    op.create_index("ix_user_sessions_user_pk", "user_sessions", ["user_pk"])

    for table in _OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("hospital_pk", sa.Integer(), nullable=False, server_default="1")
            )
        with op.batch_alter_table(table) as batch:
            batch.alter_column("hospital_pk", server_default=None)
            batch.create_foreign_key(f"fk_{table}_hospital", "hospitals", ["hospital_pk"], ["pk"])
    for table in ("portal_reports", "portal_films", "portal_shares"):
        op.create_index(f"ix_{table}_hospital_pk", table, ["hospital_pk"])
    with op.batch_alter_table("patients") as batch:
        batch.drop_constraint("uq_patient_id_issuer", type_="unique")
        batch.create_unique_constraint(
            "uq_patient_hospital_id", ["hospital_pk", "patient_id", "issuer"]
        )
    op.create_index("ix_studies_hospital_date", "studies", ["hospital_pk", "study_date"])
    _restore_name_indexes()

    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("hospital_pk", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_api_tokens_hospital", "hospitals", ["hospital_pk"], ["pk"])
    op.execute("UPDATE api_tokens SET hospital_pk = 1")
    op.create_index("ix_api_tokens_hospital_pk", "api_tokens", ["hospital_pk"])

    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("hospital_pk", sa.Integer(), nullable=True))
    op.execute("UPDATE audit_events SET hospital_pk = 1")
    op.create_index("ix_audit_events_hospital_pk", "audit_events", ["hospital_pk"])


def _restore_name_indexes() -> None:
    """SQLite's batch mode rebuilt ``patients`` from a reflection that cannot see expression
    indexes, so the name-prefix indexes of migration 0005 are made again."""
    postgres = op.get_bind().dialect.name == "postgresql"
    for col in ("name", "name_alphabetic", "name_ideographic", "name_phonetic"):
        expr = f'(lower({col}) COLLATE "C")' if postgres else f"lower({col})"
        op.execute(f"CREATE INDEX IF NOT EXISTS ix_patients_{col}_folded ON patients ({expr})")


def downgrade() -> None:
    raise NotImplementedError("hospitals cannot be merged back into one anonymous archive")
