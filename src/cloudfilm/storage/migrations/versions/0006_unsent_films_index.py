"""index for films whose SMS is still to be sent

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 13:40:00

The film issuer retries the SMS of films not yet notified (the hospital's gateway may be down
when a film is issued, or the server may stop between issuing and sending). It looks for
``notified_at IS NULL`` among recent films on every pass; films of patients without a phone
number stay unnotified for ever, so without this index the pass would scan every film.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_portal_films_notified_issued", "portal_films", ["notified_at", "issued_at"])


def downgrade() -> None:
    op.drop_index("ix_portal_films_notified_issued", table_name="portal_films")
