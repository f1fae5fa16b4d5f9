"""OpenTelemetry: the metrics of every request and the traces of the sampled ones, configured
only by the standard OTEL_* variables, so that any collector or vendor works without a code change.

RequestTelemetry (added in main.py) times every request for the duration histogram of
OpenTelemetry's HTTP semantic conventions and gives the traced ones a server span; it does only
that, on the SDK's API, at a third of FastAPI's own telemetry's cost (FASTAPI, below: off).

- Service: OTEL_SERVICE_NAME (default: {{ cookiecutter.project_slug }}) and OTEL_RESOURCE_ATTRIBUTES
  (e.g. deployment.environment.name=production,service.version=1.2.0).
- Sampling: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, read by the SDK. The default here is
  parentbased_always_off: a request is traced when its caller's W3C traceparent says it is sampled
  (the load balancer, gateway, mesh or service in front decides, once for the whole trace), and
  its trace is carried on. parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG=0.05 starts
  traces here too, for 5 % of the requests without a caller; parentbased_always_on, for all of
  them (compose.override.yaml, for development).
- Export: over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (or the _TRACES_ and _METRICS_ endpoints),
  with OTEL_EXPORTER_OTLP_HEADERS; without an endpoint nothing is sent (no retries, no log lines).
  OTEL_TRACES_EXPORTER=none and OTEL_METRICS_EXPORTER (a list of otlp, prometheus, none) choose.
- Prometheus: the metrics as text on a port of their own, OTEL_EXPORTER_PROMETHEUS_HOST and
  OTEL_EXPORTER_PROMETHEUS_PORT (default 0.0.0.0:9464, path /metrics), apart from the API's port.
- OTEL_SDK_DISABLED=true: no span, no metric, nothing served.

Spans and metric points are handed to a background thread (the SDK's batch processor and periodic
reader) that exports them: a slow or unreachable collector delays that thread, never a request.
"""

import logging
import os
import threading
import time
{%- if cookiecutter.database == "postgresql" %}
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
{%- endif %}

from fastapi.telemetry import TelemetryConfig
from opentelemetry import context, metrics, propagate, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
{%- if cookiecutter.database == "postgresql" %}
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
{%- endif %}
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import DEFAULT_OFF
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import start_http_server
{%- if cookiecutter.database == "postgresql" %}
from sqlalchemy.ext.asyncio import AsyncEngine
{%- endif %}
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import PROBES

logger = logging.getLogger(__name__)

# The service's name when OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) is unset.
DEFAULT_SERVICE_NAME = "{{ cookiecutter.project_slug }}"
# What set_up() chose, for the lifespan: the OTLP exporters, which flush() gives FLUSH_SECONDS at
# shutdown to send the rest, and the Prometheus reader, whose port serve_metrics() opens.
exporting: list[BatchSpanProcessor | PeriodicExportingMetricReader] = []
scraped: list[PrometheusMetricReader] = []
FLUSH_SECONDS = 3
# The samplers OTEL_TRACES_SAMPLER can name here (the SDK's; it would take any other for its own
# default, every request traced), and this service's default.
SAMPLERS = {
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
}
DEFAULT_SAMPLER = "parentbased_always_off"
# Whether the sampler set_up() chose may trace a request that has no caller's traceparent: not the
# default, so RequestTelemetry skips the SDK's span machinery for those (even a span that records
# nothing costs a request about a tenth of its CPU time: docs/benchmark.md).
starts_traces = False
# The only OTLP protocol this image speaks: grpc needs grpcio, a large native package.
PROTOCOL = "http/protobuf"


class OncePerMinute(logging.Filter):
    """At most one record a minute: the SDK's batch processor warns for every span it drops while
    its queue is full (a collector down or slow), which would be a line per request."""

    def __init__(self) -> None:
        super().__init__()
        self.last = -60.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last < 60:
            return False
        self.last = now
        return True


class TelemetryConfigError(RuntimeError):
    """An OTEL_* variable asks for what this service does not ship; str() names it and the fix."""


def exporters(variable: str, default: str, offered: set[str]) -> set[str]:
    """The exporters an OTEL_*_EXPORTER variable names (a comma-separated list)."""
    names = {n.strip() for n in os.environ.get(variable, default).split(",") if n.strip()}
    if names - offered:
        raise TelemetryConfigError(
            f"{variable}={os.environ[variable]} is not supported: one or more of "
            f"{', '.join(sorted(offered))}"
        )
    return names - {"none"}


def otlp_endpoint(signal: str) -> str | None:
    """The OTLP endpoint of signal (TRACES, METRICS), checked to be one this image can talk to."""
    endpoint = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    for variable in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = os.environ.get(variable)
        if endpoint and protocol:
            if protocol != PROTOCOL:
                raise TelemetryConfigError(
                    f"{variable}={protocol} is not supported: this image exports over {PROTOCOL}"
                    " (port 4318 on a collector); for grpc, add"
                    " opentelemetry-exporter-otlp-proto-grpc to requirements.in, run `make lock`,"
                    " and use its exporters here"
                )
            break
    return endpoint or None


def resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the SDK reads them), the slug by default."""
    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return detected


def is_probe(scope: Scope) -> bool:
    """The probes, every few seconds from Docker, compose and Kubernetes, under any root path."""
    return scope["path"].removeprefix(scope.get("root_path", "")) in PROBES


# FastAPI's own telemetry, off: FastAPI turns it on as soon as an SDK provider is set (configure()
# sets them), and it costs a request three times RequestTelemetry's (docs/benchmark.md): several
# metric points and a span's worth of bookkeeping per request, sampled or not.
FASTAPI: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def sampler_name() -> str:
    """The sampler OTEL_TRACES_SAMPLER names (DEFAULT_SAMPLER when unset or empty), one the SDK
    knows, read exactly as the SDK reads it (case aside): the SDK builds it from the variable."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").lower() or DEFAULT_SAMPLER
    if name not in SAMPLERS:
        raise TelemetryConfigError(
            f"OTEL_TRACES_SAMPLER={os.environ['OTEL_TRACES_SAMPLER']} is not supported: one of "
            f"{', '.join(sorted(SAMPLERS))}"
        )
    return name


def configure() -> None:
    """The SDK's providers and exporters, from the OTEL_* variables. A variable asking for what
    this service does not ship stops it at startup with one line naming it (SystemExit)."""
    try:
        set_up()
    except TelemetryConfigError as error:
        logger.critical("%s", error)
        raise SystemExit(1) from None


def set_up() -> None:
    """configure(), raising TelemetryConfigError."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return  # no provider at all: RequestTelemetry's calls do nothing
    global starts_traces
    service = resource()
    # The SDK reads OTEL_TRACES_SAMPLER(_ARG) when set; unset, it would trace every request.
    name = sampler_name()
    sampler = DEFAULT_OFF if name == DEFAULT_SAMPLER else None
    starts_traces = name not in {"parentbased_always_off", "always_off"}
    # Not shut down at exit (that flush is unbounded: a collector that is down would hold the
    # process past Docker's grace period, to a SIGKILL); flush() ends the lifespan instead.
    tracer_provider = TracerProvider(resource=service, sampler=sampler, shutdown_on_exit=False)
    # A collector that is down: one error line per failed export, not a warning per retry too,
    # and one line a minute about the spans dropped meanwhile, not one per span.
    logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.ERROR)
    logging.getLogger("opentelemetry.sdk._shared_internal").addFilter(OncePerMinute())
    chosen = exporters("OTEL_TRACES_EXPORTER", "otlp", {"otlp", "none"})
    if "otlp" in chosen and otlp_endpoint("TRACES"):
        # Imported only when used: requests and protobuf are loaded by an exporting service only.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporting.append(BatchSpanProcessor(OTLPSpanExporter()))
        tracer_provider.add_span_processor(exporting[-1])
    trace.set_tracer_provider(tracer_provider)

    readers: list[MetricReader] = []
    chosen = exporters("OTEL_METRICS_EXPORTER", "otlp,prometheus", {"otlp", "prometheus", "none"})
    if "otlp" in chosen and otlp_endpoint("METRICS"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        # OTEL_METRIC_EXPORT_INTERVAL (default a minute) says how often.
        exporting.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        readers.append(exporting[-1])
    if "prometheus" in chosen:
        scraped.append(PrometheusMetricReader())  # read on each scrape of serve_metrics()' port
        readers.append(scraped[-1])
    provider = MeterProvider(resource=service, metric_readers=readers, shutdown_on_exit=False)
    metrics.set_meter_provider(provider)


def flush() -> None:
    """At shutdown: the spans and metric points not yet exported sent, for at most FLUSH_SECONDS
    (an exporter's own flush retries a collector that is down for up to its 10 s timeout, past
    Docker's grace period): in a daemon thread, which the process does not wait for at exit."""

    def send() -> None:
        for component in exporting:
            component.force_flush()

    sender = threading.Thread(target=send, name="telemetry-flush", daemon=True)
    sender.start()
    sender.join(FLUSH_SECONDS)


def serve_metrics() -> None:
    """The Prometheus text of the metrics on OTEL_EXPORTER_PROMETHEUS_HOST:PORT, path /metrics, in
    a thread of its own, if set_up() made a Prometheus reader. A port already taken (a second
    process) gets one warning, not a crash."""
    if not scraped:
        return
    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0")  # noqa: S104 (a container's)
    port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
    try:
        start_http_server(port, addr=host)
    except OSError as error:
        logger.warning(
            "metrics not served: %s:%s: %s (one port per process: run one worker per container)",
            host,
            port,
            error.strerror,
        )


# The methods OpenTelemetry's HTTP conventions name as they are; any other is "_OTHER" (bounded
# cardinality: a client cannot make a series per made-up method).
METHODS = {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
# The conventions' advised buckets for http.server.request.duration, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


def has_traceparent(scope: Scope) -> bool:
    """Whether the request carries a caller's W3C trace context (sampled or not)."""
    return any(name == b"traceparent" for name, _ in scope["headers"])


class RequestTelemetry:
    """Every request's duration in http.server.request.duration, by route template, method and
    status (the request count, error count and latency of OpenTelemetry's HTTP conventions), and
    a server span for the requests the sampler traces, the current span while the app answers
    (statements' spans and log lines are the request's). Not the probes.

    Plain ASGI, on the SDK's API: one histogram point, and a span only where one can be recorded.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tracer = trace.get_tracer(__name__)
        self.duration = metrics.get_meter(__name__).create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=BUCKETS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_probe(scope):
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "_OTHER"
        attributes = {
            "http.request.method": method,
            "url.scheme": scope["scheme"],
            "network.protocol.version": scope["http_version"],
        }
        span = token = None
        if starts_traces or has_traceparent(scope):
            parent = propagate.extract(Headers(scope=scope))  # the caller's W3C trace context
            span_attributes = {**attributes, "url.path": scope["path"]}
            span = self.tracer.start_span(method, parent, SpanKind.SERVER, span_attributes)
            token = context.attach(trace.set_span_in_context(span, parent))
        status = 500  # what the server answers when the app fails before responding

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        except Exception as error:
            attributes["error.type"] = type(error).__qualname__
            if span is not None:
                span.record_exception(error)
            raise
        finally:
            route = scope.get("route")  # the matched route, set by the router: none for a 404
            if route is not None:
                attributes["http.route"] = route.path
            attributes["http.response.status_code"] = status
            if status >= 500:
                attributes.setdefault("error.type", str(status))
            self.duration.record(time.perf_counter() - started, attributes)
            if span is not None:
                context.detach(token)
                if span.is_recording():
                    span.update_name(f"{method} {route.path}" if route is not None else method)
                    span.set_attributes(attributes)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                span.end()
{%- if cookiecutter.database == "postgresql" %}


def instrument_engine(engine: AsyncEngine) -> None:
    """A span per statement, the child of the request's span, and the pool's usage as metrics
    (db.client.connections.usage, idle and used). Only this engine: engines made earlier (the
    probe's) are not instrumented."""
    # Its declared SQLAlchemy range lags SQLAlchemy's releases; it uses SQLAlchemy's stable event
    # API, and the template's tests check its spans and metrics against the locked version.
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)


def uninstrument_engine() -> None:
    """At shutdown: the next lifespan's engine (a test's) is instrumented anew."""
    SQLAlchemyInstrumentor().uninstrument()


@asynccontextmanager
async def untraced() -> AsyncIterator[None]:
    """No span within (a probe's own work, as its request has none): the instrumentations' off."""
    with suppress_instrumentation():
        yield
{%- endif %}
