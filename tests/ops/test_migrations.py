"""The ops database is made only by its Alembic migrations, and they describe the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from probe.ops.db import Base, current_revision, make_engine, upgrade


def test_upgrade_from_empty_matches_the_models_and_is_idempotent(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # a second instance starting: nothing to do, no error
    assert current_revision(engine) == "0001"
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    engine.dispose()


def test_downgrade_then_upgrade(database_url: str) -> None:
    from alembic import command

    from probe.ops.db import alembic_config

    engine = make_engine(database_url)
    upgrade(engine)
    command.downgrade(alembic_config(engine), "base")
    assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    upgrade(engine)
    assert current_revision(engine) == "0001"
    engine.dispose()
