"""Alembic environment: configured from code (cloudfilm.storage.database.alembic_config)."""

from alembic import context
from sqlalchemy import create_engine, pool

import cloudfilm.access.models
import cloudfilm.accounts.models  # noqa: F401  (hospitals, AE titles, users)
from cloudfilm.keeping import models as _keeping_models  # noqa: F401  (fixity, retention)
from cloudfilm.portal import models as _portal_models  # noqa: F401  (reports, films, shares)
from cloudfilm.regional import models as _regional_models  # noqa: F401  (persons, consent)
from cloudfilm.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
