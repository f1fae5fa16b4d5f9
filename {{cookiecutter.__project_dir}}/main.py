"""{{ cookiecutter.project_name }}: {{ cookiecutter.description }}

Runtime settings come from the environment and are read by uvicorn itself, so this file stays
free of configuration code: UVICORN_LOG_LEVEL (default info), UVICORN_ROOT_PATH (the path prefix
when served behind a proxy), FORWARDED_ALLOW_IPS (proxies trusted for X-Forwarded-* headers) and
WEB_CONCURRENCY (worker processes).
"""

from fastapi import FastAPI

app = FastAPI(
    title="{{ cookiecutter.project_name }}",
    description="{{ cookiecutter.description }}",
)


@app.get("/")
async def read_root() -> dict[str, str]:
    """The greeting from the tutorial this template grew from."""
    return {"Hello": "World"}


@app.get("/health")
async def health() -> dict[str, str]:
    """Probe for Docker's HEALTHCHECK, compose and Kubernetes: cheap and dependency-free."""
    return {"status": "ok"}
