"""Logging: text for people by default, one JSON object per line with LOG_FORMAT=json.

Every line carries the request id of the request it belongs to (`request_id`): taken from the
client's or the proxy's X-Request-ID header, or made up, and echoed in the response, so a report
quoting it finds every line of that request. The app writes the access log itself, one line per
request with its status, duration and request id; uvicorn's own access line (no duration) is
silenced. Uvicorn configures its loggers first (levels from UVICORN_LOG_LEVEL); configure() then
gives them and the app's loggers one handler and format.
"""

import logging
import logging.config
import re
import time
import uuid
from contextvars import ContextVar
from urllib.parse import quote, quote_from_bytes

from pythonjsonlogger.core import RESERVED_ATTRS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# Accepted as given: ids of proxies and tracing tools, ASCII only. Anything else is replaced.
VALID_REQUEST_ID = re.compile(r"[\w.:@/+=-]{1,128}", re.ASCII)
access_logger = logging.getLogger("app.access")

# The paths that Docker, compose and Kubernetes probe every few seconds (below any root path).
PROBES = {"/health"{% if cookiecutter.database == "postgresql" %}, "/ready"{% endif %}}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure(settings: Settings) -> None:
    # What no format here shows is not worked out for every line: the caller's file and line, the
    # thread and process (the logging HOWTO's "Optimization"); the access log writes one a request.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if settings.log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601, UTC
            # uvicorn's coloured copy of some messages is for terminals.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
        access_formatter = formatter
    else:
        formatter = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"}
        # The access line ends with its request id; other lines are not all a request's.
        access_formatter = {**formatter, "fmt": "%(levelprefix)s %(message)s %(request_id)s"}
    # The level uvicorn set from UVICORN_LOG_LEVEL: kept for its loggers, followed by the app's.
    level = logging.getLogger("uvicorn.error").getEffectiveLevel()
    handler = {
        "class": "logging.StreamHandler",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "formatters": {"default": formatter, "access": access_formatter},
            "handlers": {
                "default": {**handler, "formatter": "default"},
                "access": {**handler, "formatter": "access"},
            },
            "loggers": {
                "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
                # Without a handler uvicorn skips its own access line (RequestLogMiddleware's
                # replaces it), whatever the command line says.
                "uvicorn.access": {"handlers": [], "propagate": False},
                "app.access": {"handlers": ["access"], "propagate": False},
            },
            "root": {"handlers": ["default"], "level": level},
        }
    )


class RequestLogMiddleware:
    """Sets the request id for the request's log lines, returns it as X-Request-ID, and writes
    the request's access line once it is answered.

    Plain ASGI (no BaseHTTPMiddleware and its extra task per request): it runs on every request.
    """

    def __init__(self, app: ASGIApp, access_log: bool = True, log_probes: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self.log_probes = log_probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        current = given if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(current)
        # For the 500 handler (app/main.py), which runs outside this middleware.
        scope.setdefault("state", {})["request_id"] = current
        header = (b"x-request-id", current.encode())
        status = 500  # what the server answers when the app fails before responding

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                self.log(scope, status, time.perf_counter() - started)
        # Reset only on success: after an error, the server's traceback line keeps the id.
        request_id.reset(token)

    def log(self, scope: Scope, status: int, seconds: float) -> None:
        path, root = scope["path"], scope.get("root_path", "")
        if not self.log_probes and path.removeprefix(root) in PROBES:
            return
        # Quoted as uvicorn does: nothing from the request can break or forge a line.
        target = quote(path)
        if scope["query_string"]:
            target += "?" + quote_from_bytes(scope["query_string"], safe="/?=&;+,:@%")
        client = "{}:{}".format(*scope["client"]) if scope.get("client") else "-"
        access_logger.info(
            '%s - "%s %s HTTP/%s" %d %.1fms',
            client,
            scope["method"],
            target,
            scope["http_version"],
            status,
            seconds * 1000,
            extra={"status": status, "duration_ms": round(seconds * 1000, 1)},
        )
