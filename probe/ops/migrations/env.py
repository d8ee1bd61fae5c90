"""Alembic environment for the ops database: the engine comes from ``probe.ops.db.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import func, select

from probe.ops.db import Base

MIGRATION_LOCK = 0x4F505331  # "OPS1": one instance migrates at a time on PostgreSQL

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_lock(MIGRATION_LOCK)))
        connection.commit()
    try:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK)))
            connection.commit()
