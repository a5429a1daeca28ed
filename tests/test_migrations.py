"""Opening an index recognises one already at the newest revision without running Alembic,
and still migrates one that is not."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from cloudfilm.storage.database import Database, alembic_config, head_revision


def test_head_read_from_the_scripts_is_alembics_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert head_revision() == script.get_current_head()


@pytest.mark.unmigrated_index
def test_an_index_one_revision_behind_is_still_upgraded(database_url: str) -> None:
    db = Database(database_url)
    assert db.revision() is None
    behind = [
        r.revision
        for r in ScriptDirectory.from_config(alembic_config(database_url)).walk_revisions()
    ][1]
    command.upgrade(alembic_config(database_url), behind)
    assert db.revision() == behind
    db.upgrade()
    assert db.revision() == head_revision()
    # what the newest revision adds is there (0010: the tombstone's blob key)
    columns = {c["name"] for c in sa.inspect(db.engine).get_columns("keeping_tombstones")}
    assert "blob_key" in columns
    db.upgrade()  # at head: nothing to do, nothing breaks
    assert db.revision() == head_revision()
    db.dispose()
