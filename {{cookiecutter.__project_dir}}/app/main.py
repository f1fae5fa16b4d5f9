"""{{ cookiecutter.project_name }}: the HTTP API.

Its settings are app/settings.py's; uvicorn reads its own from the environment (UVICORN_*,
WEB_CONCURRENCY: see the README).
"""

{% if cookiecutter.database == "postgresql" -%}
import asyncio
{% endif -%}
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

{%- if cookiecutter.database == "postgresql" %}

from fastapi import FastAPI, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from app import __version__, db, items, logs
{%- else %}

from fastapi import FastAPI

from app import __version__, logs
{%- endif %}
from app.settings import settings

logs.configure(settings)
logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
{%- if cookiecutter.database == "postgresql" %}
    # The database's pool, made at startup (it connects on first use) and closed at shutdown.
    app.state.engine = db.engine(settings)
    app.state.sessions = async_sessionmaker(app.state.engine, expire_on_commit=False)
{%- endif %}
    logger.info("%s %s ready", app.title, app.version)
    yield
{%- if cookiecutter.database == "postgresql" %}
    await app.state.engine.dispose()
{%- endif %}


app = FastAPI(
    title="{{ cookiecutter.project_name }}",
    description="{{ cookiecutter.description }}",
    version=__version__,
    lifespan=lifespan,
)
app.add_middleware(logs.RequestIdMiddleware)
{%- if cookiecutter.database == "postgresql" %}
app.include_router(items.router)
{%- endif %}


@app.get("/")
async def read_root() -> dict[str, str]:
    """The greeting from the tutorial this template grew from."""
    return {"Hello": "World"}


@app.get("/health")
@app.head("/health", include_in_schema=False)  # some load balancers probe with HEAD
async def health() -> dict[str, str]:
    """Probe for Docker's HEALTHCHECK, compose and Kubernetes: cheap and dependency-free."""
    return {"status": "ok"}
{%- if cookiecutter.database == "postgresql" %}


# Seconds /ready waits for the database: less than the probes' timeouts (k8s/deployment.yaml).
READY_TIMEOUT = 2


@app.get("/ready", responses={503: {"description": "the database does not answer"}})
async def ready(response: Response) -> dict[str, str]:
    """Readiness: can this process serve requests now? Kubernetes sends traffic only while it can.

    It asks the database; /health does not, so an outage takes the pods out of the Service
    without Kubernetes restarting them, and they are back as soon as the database is.
    """
    try:
        async with asyncio.timeout(READY_TIMEOUT), app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (OSError, SQLAlchemyError, TimeoutError) as error:
        logger.warning("not ready: the database does not answer: %s", error)
        response.status_code = 503
        return {"status": "unavailable"}
    return {"status": "ok"}
{%- endif %}
