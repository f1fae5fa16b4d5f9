"""Logging: text for people by default, one JSON object per line with LOG_FORMAT=json.

Every line carries the request id of the request it belongs to (`request_id`, JSON only): taken
from the client's or the proxy's X-Request-ID header, or made up, and echoed in the response, so a
report quoting it finds every line of that request. Uvicorn configures its loggers first (levels
from UVICORN_LOG_LEVEL); configure() then gives them and the app's loggers one handler and format.
"""

import logging
import logging.config
import re
import uuid
from contextvars import ContextVar

from pythonjsonlogger.core import RESERVED_ATTRS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# Accepted as given: ids of proxies and tracing tools. Anything else is replaced, not logged.
VALID_REQUEST_ID = re.compile(r"[\w.:@/+=-]{1,128}")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


# The paths that Docker, compose and Kubernetes probe every few seconds.
PROBES = {"/health"{% if cookiecutter.database == "postgresql" %}, "/ready"{% endif %}}


class HealthCheckFilter(logging.Filter):
    """Drops uvicorn's access-log lines of the PROBES: one per probe, all alike."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: args = (client, method, path with query, http version, status).
        args = record.args
        is_access = isinstance(args, tuple) and len(args) == 5
        return not (is_access and str(args[2]).split("?")[0] in PROBES)


def configure(settings: Settings) -> None:
    formatter = (
        {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601, UTC
            # uvicorn's coloured copy of some messages is for terminals.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
        if settings.log_format == "json"
        else {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"}
    )
    access_filters = [] if settings.log_health_checks else ["health"]
    # The level uvicorn set from UVICORN_LOG_LEVEL: kept for its loggers, followed by the app's.
    level = logging.getLogger("uvicorn.error").getEffectiveLevel()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}, "health": {"()": HealthCheckFilter}},
            "formatters": {"default": formatter},
            "handlers": {
                "default": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "filters": ["request_id"],
                    "stream": "ext://sys.stderr",
                }
            },
            "loggers": {
                "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
                # No level: uvicorn's own (UVICORN_ACCESS_LOG=false turns these lines off).
                "uvicorn.access": {
                    "handlers": ["default"],
                    "filters": access_filters,
                    "propagate": False,
                },
            },
            "root": {"handlers": ["default"], "level": level},
        }
    )


class RequestIdMiddleware:
    """Sets the request id for the request's log lines and returns it as X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        current = given if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(current)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-request-id", current.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
