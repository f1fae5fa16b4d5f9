"""The database: one async SQLAlchemy engine (its connection pool) per process, and a session per
request.

SQLAlchemy 2 with psycopg 3: the pairing FastAPI's docs and its full-stack template use. SQLAlchemy
is Python's standard ORM and query builder, Alembic (app/alembic/) migrates its models, and
psycopg 3 is the PostgreSQL driver its maintainers keep for both sync and async code (its binary
wheels bundle libpq, so the slim image needs no system package). main.py's lifespan makes the
engine at startup and disposes of it at shutdown.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from app.settings import Settings


class Base(DeclarativeBase):
    """The models' base: its metadata is what `alembic revision --autogenerate` compares."""


def url(settings: Settings) -> URL:
    """DATABASE_URL, with the password read from DATABASE_PASSWORD_FILE when that is set.

    The URL's str() and repr() mask the password, so it never reaches a log line.
    """
    result = make_url(settings.database_url)
    if settings.database_password_file is not None:
        # Like the postgres image's *_FILE variables: the file's text less its final newline.
        password = settings.database_password_file.read_text().rstrip("\n")
        result = result.set(password=password)
    return result


def engine(settings: Settings) -> AsyncEngine:
    """The pool: it connects on first use, so the app starts (and is live) with the database down.

    pool_pre_ping replaces a connection the server closed (a restart, a failover) before it is
    handed out. The timeouts (settings) bound every wait on the database, so an outage or an
    overload answers 503 in seconds (app/main.py) instead of queueing requests for half a minute.
    hide_parameters keeps request data (the statements' values) out of errors and logs.
    """
    # The server cancels a statement running longer than this (milliseconds, as it counts).
    statement_timeout = round(settings.database_statement_timeout * 1000)
    return create_async_engine(
        url(settings),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={
            "connect_timeout": settings.database_connect_timeout,
            "options": f"-c statement_timeout={statement_timeout}",
        },
    )


def probe_engine(settings: Settings) -> AsyncEngine:
    """/ready's own single connection: a pool saturated by requests cannot starve the probe.

    A busy pod whose database is fine stays ready; one connection per process, kept open.
    """
    return create_async_engine(
        url(settings),
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"connect_timeout": settings.database_connect_timeout},
    )


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for one request, from the pool of the app's lifespan; closed after the response."""
    async with request.app.state.sessions() as db_session:
        yield db_session


Session = Annotated[AsyncSession, Depends(session)]
