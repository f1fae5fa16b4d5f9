"""Logging: text for people by default, one JSON object per line with LOG_FORMAT=json.

Every line carries the request id of the request it belongs to (`request_id`): taken from the
client's or the proxy's X-Request-ID header, or made up, and echoed in the response, so a report
quoting it finds every line of that request. The app writes the access log itself, one line per
request with its status, duration and request id; uvicorn's own access line (no duration) is
silenced. Uvicorn configures its loggers first (levels from UVICORN_LOG_LEVEL); configure() then
gives them and the app's loggers one handler and format.
"""

import asyncio
import json
import logging
import logging.config
import re
import sys
import time
import uuid
from contextvars import ContextVar
from json.encoder import encode_basestring_ascii as json_string  # json's own escaping, in C
from math import isfinite
from urllib.parse import quote, quote_from_bytes

{% if cookiecutter.observability == "opentelemetry" -%}
from opentelemetry import trace
{% endif -%}
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
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
{%- if cookiecutter.observability == "opentelemetry" %}
        # The trace and span the line was written in (app/telemetry.py), in W3C's hex form, so a
        # log search and a trace view find each other; None outside a traced request.
        context = trace.get_current_span().get_span_context()
        record.trace_id = f"{context.trace_id:032x}" if context.is_valid else None
        record.span_id = f"{context.span_id:016x}" if context.is_valid else None
{%- endif %}
        return True


class BatchedStreamHandler(logging.StreamHandler):
    """The access log's handler: its lines are written to stderr in batches, when its buffer
    fills and at least every FLUSH_SECONDS (flush_access_log, run by app/main.py's lifespan), as
    nginx's `access_log ... buffer= flush=`. One write to the container's log pipe per batch, not
    per request, saves about a third of a request's CPU; a line can show up to FLUSH_SECONDS
    late, and a killed process loses at most that much of its access log.
    """

    def __init__(self) -> None:
        stream = open(sys.stderr.fileno(), "w", buffering=64 * 1024, closefd=False)  # noqa: SIM115
        super().__init__(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)  # no flush per line
        except Exception:
            self.handleError(record)


FLUSH_SECONDS = 1


async def flush_access_log() -> None:
    """Writes out the access log's buffer every FLUSH_SECONDS, until cancelled (then once more)."""
    try:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            for handler in access_logger.handlers:
                handler.flush()
    finally:
        for handler in access_logger.handlers:
            handler.flush()


# A record's own attributes; any other is a field its call added (`extra=`: the access line's).
STANDARD = {*vars(logging.makeLogRecord({})), "message", "request_id", "color_message"}
{%- if cookiecutter.observability == "opentelemetry" %}
STANDARD |= {"trace_id", "span_id"}  # RequestIdFilter's, written beside request_id
{%- endif %}


# The json module's own writer, compact, for the values json_value leaves to it; default=str: an
# object it has no form for is written as its str().
encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def json_value(value: object) -> str:
    """A value as `encode` writes it, the common kinds without its setup (most of its cost)."""
    if type(value) is str:
        return json_string(value)
    if type(value) is int or type(value) is float and isfinite(value):
        return repr(value)  # json's own form of both
    if value is None:
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    return encode(value)  # NaN, the infinities, a list, a subclass, any other object


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, request_id, the
    call's own fields, and a traceback as exc_info. The standard library's json and these few
    lines instead of a formatter package: one dependency less.

    Written for the access log's rate, one line a request: the line is put together from json's
    own pieces (its string escaping, its number forms) rather than by encoding a dict, which costs
    as much as the rest of the line; it is byte for byte what json.dumps writes for the same fields
    (tests/test_main.py holds it to that). The date and time are worked out once a second."""

    clock = (-1, "")  # (second, the line up to it): one attribute, so threads never mix the two

    def format(self, record: logging.LogRecord) -> str:
        second, start = self.clock
        if int(record.created) != second:
            second = int(record.created)
            start = '{"time":"' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.clock = (second, start)
        # The microseconds, cut as int() cuts (%-formatting: cheaper than an f-string's "06d").
        line = '%s.%06dZ"' % (start, record.created % 1 * 1e6)  # noqa: UP031
        fields = record.__dict__
        line += (
            f',"level":{json_value(record.levelname)},"logger":{json_value(record.name)}'
            f',"message":{json_string(record.getMessage())}'
            f',"request_id":{json_value(fields.get("request_id"))}'
{%- if cookiecutter.observability == "opentelemetry" %}
            f',"trace_id":{json_value(fields.get("trace_id"))}'
            f',"span_id":{json_value(fields.get("span_id"))}'
{%- endif %}
        )
        # The call's own fields, in its order. One named time, level or logger comes again after
        # the line's own: readers take the last, as json.loads does.
        for key in fields:
            if key not in STANDARD:
                line += f",{json_string(key)}:{json_value(fields[key])}"
        if record.exc_info:
            line += f',"exc_info":{json_string(self.formatException(record.exc_info))}'
        return line + "}"


def configure(settings: Settings) -> None:
    # What no format here shows is not worked out for every line: the caller's file and line, the
    # thread and process (the logging HOWTO's "Optimization"); the access log writes one a request.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if settings.log_format == "json":
        formatter = {"()": JsonFormatter}
        access_formatter = formatter
    else:
        formatter = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"}
        # The access line ends with its request id; other lines are not all a request's. Plain
        # logging's formatter, in uvicorn's layout: uvicorn's copies each record to colour it.
        access_formatter = {"format": "%(levelname)s:     %(message)s %(request_id)s"}
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
                "access": {
                    "()": BatchedStreamHandler,
                    "formatter": "access",
                    "filters": ["request_id"],
                },
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


TOO_LARGE_DETAIL = "Content Too Large"
TOO_LARGE = JSONResponse({"detail": TOO_LARGE_DETAIL}, status_code=413)


class RequestLogMiddleware:
    """Sets the request id for the request's log lines, returns it as X-Request-ID, refuses a
    body over the limit, and writes the request's access line once it is answered.

    Plain ASGI (no BaseHTTPMiddleware and its extra task per request): it runs on every request.
    """

    def __init__(
        self,
        app: ASGIApp,
        access_log: bool = True,
        log_probes: bool = False,
        max_body_size: int = 1024 * 1024,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.log_probes = log_probes
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
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

        # The body limit (MAX_BODY_SIZE), here so that its 413 is JSON with the request's id and
        # access line, like every other error: FastAPI's own (max_body_size) answers a declared
        # Content-Length in plain text from outside the app's middleware, without either.
        app, received = self.app, 0
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_size:
            app = TOO_LARGE  # refused unread

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_size:  # a chunked body, stopped as it grows
                raise HTTPException(413, TOO_LARGE_DETAIL)
            return message

        try:
            await app(scope, receive_within_limit, send_with_id)
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
