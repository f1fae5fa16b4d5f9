"""Alembic's entry point: runs the migrations in versions/ against the app's database.

Online only (against a live database, through the app's own settings and URL); the models'
metadata is what `alembic revision --autogenerate` compares with the database's schema. One
process at a time: Alembic itself takes no lock, and pods started together (k8s/deployment.yaml's
init container) would otherwise run the same DDL at once, and all but one fail.
"""

import asyncio
import logging

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app import db, items
from app.settings import settings

# Alembic's progress ("Running upgrade ...") on stderr.
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
# Every model module is imported, so its table is in the metadata (the Base's).
target_metadata = items.Item.metadata
# The advisory lock the migrations hold ("alembic" in ASCII: any number no other code of this
# database takes as an advisory lock).
MIGRATIONS_LOCK = 0x616C656D626963


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        # Held until this transaction ends: another process waits here, then finds the schema at
        # head (Alembic reads the version after this) and does nothing. No statement timeout on
        # this connection, so a long migration makes the others wait, not fail.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATIONS_LOCK})
        context.run_migrations()


async def main() -> None:
    # One connection, no pool: a migration is a short one-off.
    engine = create_async_engine(db.url(settings), poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


asyncio.run(main())
