"""Alembic's entry point: runs the migrations in versions/ against the app's database.

Online only (against a live database, through the app's own settings and URL); the models'
metadata is what `alembic revision --autogenerate` compares with the database's schema.
"""

import asyncio
import logging

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app import db, items
from app.settings import settings

# Alembic's progress ("Running upgrade ...") on stderr.
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
# Every model module is imported, so its table is in the metadata (the Base's).
target_metadata = items.Item.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def main() -> None:
    # One connection, no pool: a migration is a short one-off.
    engine = create_async_engine(db.url(settings), poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


asyncio.run(main())
