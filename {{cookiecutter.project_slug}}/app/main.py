"""{{ cookiecutter.project_name }}: the HTTP API.

Settings: app/settings.py (LOG_FORMAT, LOG_HEALTH_CHECKS) and uvicorn's own environment
variables: UVICORN_LOG_LEVEL (default info), UVICORN_ROOT_PATH (the path prefix when served
behind a proxy), FORWARDED_ALLOW_IPS (proxies trusted for X-Forwarded-* headers) and
WEB_CONCURRENCY (worker processes).
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
