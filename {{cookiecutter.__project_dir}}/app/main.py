"""{{ cookiecutter.project_name }}: the HTTP API.

Its settings are app/settings.py's; uvicorn reads its own from the environment (UVICORN_*,
WEB_CONCURRENCY: see the README).
"""

import asyncio
import json
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
{%- if cookiecutter.database == "postgresql" %}
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import async_sessionmaker
{%- endif %}
from starlette.routing import Match

{% if cookiecutter.database == "postgresql" -%}
from app import __version__, db, items, logs{% if cookiecutter.observability == "opentelemetry" %}, telemetry{% endif %}
{%- else -%}
from app import __version__, logs{% if cookiecutter.observability == "opentelemetry" %}, telemetry{% endif %}
{%- endif %}
from app.settings import settings

logs.configure(settings)
logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
{%- if cookiecutter.database == "postgresql" %}
    # The database's pool, made at startup (it connects on first use) and closed at shutdown,
    # and /ready's own connection beside it.
    app.state.engine = db.engine(settings)
    app.state.sessions = async_sessionmaker(app.state.engine, expire_on_commit=False)
    app.state.probe_engine = db.probe_engine(settings)
{%- if cookiecutter.observability == "opentelemetry" %}
    telemetry.instrument_engine(app.state.engine)
{%- endif %}
{%- endif %}
{%- if cookiecutter.observability == "opentelemetry" %}
    telemetry.serve_metrics()
{%- endif %}
    logger.info("%s %s ready", app.title, app.version)
    flusher = asyncio.create_task(logs.flush_access_log())
    yield
    flusher.cancel()  # its last flush writes out what is left
    await asyncio.wait([flusher])
{%- if cookiecutter.observability == "opentelemetry" %}
    telemetry.flush()  # spans and metrics not yet exported, within seconds
{%- endif %}
{%- if cookiecutter.database == "postgresql" %}
    await app.state.engine.dispose()
    await app.state.probe_engine.dispose()
{%- if cookiecutter.observability == "opentelemetry" %}
    telemetry.uninstrument_engine()
{%- endif %}
{%- endif %}


def operation_id(route: APIRoute) -> str:
    """Operations are named after their functions (read_item): short, stable ids for generated
    clients (FastAPI's own add the path and one of the route's methods, picked at random)."""
    return route.name


class Detail(BaseModel):
    """The body of an error answer: what went wrong, in words."""

    detail: str


{% if cookiecutter.observability == "opentelemetry" -%}
# Traces and metrics (app/telemetry.py), from the OTEL_* variables.
telemetry.configure()
{% endif -%}
app = FastAPI(
    title="{{ cookiecutter.project_name }}",
    description="{{ cookiecutter.description }}",
    version=__version__,
    lifespan=lifespan,
    generate_unique_id_function=operation_id,
{%- if cookiecutter.observability == "opentelemetry" %}
    telemetry=telemetry.FASTAPI,
{%- endif %}
)
app.add_middleware(
    logs.RequestLogMiddleware,
    access_log=settings.access_log,
    log_probes=settings.log_health_checks,
    max_body_size=settings.max_body_size,
)
{%- if cookiecutter.observability == "opentelemetry" %}
# Outermost: the access line and everything the app does are within the request's span.
app.add_middleware(telemetry.RequestTelemetry)
{%- endif %}
{%- if cookiecutter.database == "postgresql" %}
app.include_router(
    items.router,
    responses={
        503: {
            "model": Detail,
            "description": "the database is unavailable or overloaded: retry later",
            "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
        },
    },
)
{%- endif %}

# At most this many problems in a 422: the answer stays small whatever the input.
MAX_ERRORS = 10


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, error: RequestValidationError) -> Response:
    """422 saying where (`loc`), what (`msg`) and which rule (`type`) without FastAPI's echo of
    the input: a 20 MB value is not sent back, and text JSON cannot encode (a lone surrogate)
    does not turn the answer into a 500 (json.dumps escapes it)."""
    problems = [
        {"loc": problem["loc"], "msg": problem["msg"], "type": problem["type"]}
        for problem in error.errors()[:MAX_ERRORS]
    ]
    body = json.dumps({"detail": problems})
    return Response(body, status_code=422, media_type="application/json")


# The methods an Allow header can name, in the order it names them.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


@app.exception_handler(405)
async def method_not_allowed(request: Request, error: Exception) -> Response:
    """405 with Allow naming every method the path answers. Starlette names the methods of the
    first route whose path matches, not those of the path's other routes (GET and POST /items)."""
    allowed = [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    body = Detail(detail="Method Not Allowed").model_dump_json()
    headers = {"Allow": ", ".join(allowed)}
    return Response(body, status_code=405, media_type="application/json", headers=headers)


@app.exception_handler(Exception)
async def server_error(request: Request, error: Exception) -> Response:
    """A bug: 500 with the request's id, which the traceback uvicorn logs carries too. Starlette
    calls this outside the middleware, so the id comes from the request's state."""
    request_id = getattr(request.state, "request_id", "")
    headers = {"X-Request-ID": request_id} if request_id else None
    body = Detail(detail="Internal Server Error").model_dump_json()
    return Response(body, status_code=500, media_type="application/json", headers=headers)
{%- if cookiecutter.database == "postgresql" %}


def cause(error: Exception) -> str:
    """The error in one short line: its type and the driver's first line (the server's words)."""
    first_line = str(getattr(error, "orig", None) or error).partition("\n")[0]
    return f"{type(error).__name__}: {first_line[:200]}"


async def database_unavailable(request: Request, error: Exception) -> Response:
    """503 and Retry-After when the database cannot answer (down, unreachable, restarting, the
    pool exhausted, a statement cancelled by its timeout): the client retries later, and the log
    gets one line, no traceback and no request data (the engine hides statements' values).

    A cancelled statement is 503 too, not 504: the service is overloaded (a lock held, a slow
    query), which clients and balancers treat alike with Retry-After; no gateway timed out.
    """
    is_outage = isinstance(error, OperationalError | InterfaceError | PoolTimeoutError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )
    if not is_outage:  # any other database error is a bug: the 500 handler's
        raise error
    logger.warning(
        "database unavailable: %s %s: %s", request.method, request.url.path, cause(error)
    )
    body = Detail(detail="the database is unavailable: retry later").model_dump_json()
    headers = {"Retry-After": str(settings.retry_after)}
    return Response(body, status_code=503, media_type="application/json", headers=headers)


app.add_exception_handler(DBAPIError, database_unavailable)
app.add_exception_handler(PoolTimeoutError, database_unavailable)
{%- endif %}


def openapi() -> dict[str, Any]:
    """FastAPI's document with HEAD left implicit, as HTTP (RFC 9110) and API tools take it: a
    route's GET and HEAD are one function, so they would share its operationId, which must be
    unique. FastAPI's way to change its document: fastapi.tiangolo.com/how-to/extending-openapi/
    """
    with warnings.catch_warnings():
        # The HEADs' duplicate ids, dropped below (tests/test_main.py checks all ids differ).
        warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
        document = FastAPI.openapi(app)  # made once, then cached
    for operations in document["paths"].values():
        operations.pop("head", None)
    return document


app.openapi = openapi  # type: ignore[method-assign]


# GET and HEAD on one route each: Allow lists the methods a path answers (405 for the others).
@app.api_route("/", methods=["GET", "HEAD"])
async def read_root() -> dict[str, str]:
    """The greeting from the tutorial this template grew from."""
    return {"Hello": "World"}


@app.api_route("/health", methods=["GET", "HEAD"])  # some load balancers probe with HEAD
async def health() -> dict[str, str]:
    """Probe for Docker's HEALTHCHECK, compose and Kubernetes: cheap and dependency-free."""
    return {"status": "ok"}
{%- if cookiecutter.database == "postgresql" %}


# Seconds /ready waits for the database: less than the probes' timeouts (k8s/deployment.yaml).
READY_TIMEOUT = 2


@app.api_route(
    "/ready",
    methods=["GET", "HEAD"],
    responses={503: {"description": "the database does not answer"}},
)
async def ready(response: Response) -> dict[str, str]:
    """Readiness: can this process serve requests now? Kubernetes sends traffic only while it can.

    It asks the database; /health does not, so an outage takes the pods out of the Service
    without Kubernetes restarting them, and they are back as soon as the database is. It asks
    over a connection of its own: a pool busy with requests does not make the pod unready.
    """
    try:
        async with (
            asyncio.timeout(READY_TIMEOUT),
{%- if cookiecutter.observability == "opentelemetry" %}
            telemetry.untraced(),  # as the probe's request: no span every few seconds
{%- endif %}
            app.state.probe_engine.connect() as connection,
        ):
            await connection.execute(text("SELECT 1"))
    except (OSError, SQLAlchemyError, TimeoutError) as error:
        logger.warning("not ready: the database does not answer: %s", cause(error))
        response.status_code = 503
        return {"status": "unavailable"}
    return {"status": "ok"}
{%- endif %}
