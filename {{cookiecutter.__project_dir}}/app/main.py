"""{{ cookiecutter.project_name }}: the HTTP API.

Its settings are app/settings.py's; uvicorn reads its own from the environment (UVICORN_*,
WEB_CONCURRENCY: see the README).
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__, logs
from app.settings import settings

logs.configure(settings)
logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    logger.info("%s %s ready", app.title, app.version)
    yield


app = FastAPI(
    title="{{ cookiecutter.project_name }}",
    description="{{ cookiecutter.description }}",
    version=__version__,
    lifespan=lifespan,
)
app.add_middleware(logs.RequestIdMiddleware)


@app.get("/")
async def read_root() -> dict[str, str]:
    """The greeting from the tutorial this template grew from."""
    return {"Hello": "World"}


@app.get("/health")
@app.head("/health", include_in_schema=False)  # some load balancers probe with HEAD
async def health() -> dict[str, str]:
    """Probe for Docker's HEALTHCHECK, compose and Kubernetes: cheap and dependency-free."""
    return {"status": "ok"}
