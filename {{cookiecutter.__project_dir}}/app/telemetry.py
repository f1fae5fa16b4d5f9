"""OpenTelemetry: traces and metrics of every request{% if cookiecutter.database == "postgresql" %} and database statement{% endif %}, configured only by the
standard OTEL_* variables, so that any collector or vendor works without a code change.

The requests' spans and metrics are FastAPI's own (`FastAPI(telemetry=...)`, with this module's
FASTAPI settings): it records them once an SDK provider is set, which configure() does.

- Service: OTEL_SERVICE_NAME (default: {{ cookiecutter.project_slug }}) and OTEL_RESOURCE_ATTRIBUTES
  (e.g. deployment.environment.name=production,service.version=1.2.0).
- Sampling: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, read by the SDK (default: every trace
  whose caller did not decide otherwise; a caller's W3C traceparent is honoured and propagated).
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
from opentelemetry import metrics, trace
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
from prometheus_client import start_http_server
{%- if cookiecutter.database == "postgresql" %}
from sqlalchemy.ext.asyncio import AsyncEngine
{%- endif %}
from starlette.types import Scope

from app.logs import PROBES

logger = logging.getLogger(__name__)

# The service's name when OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) is unset.
DEFAULT_SERVICE_NAME = "{{ cookiecutter.project_slug }}"
# What set_up() chose, for the lifespan: the OTLP exporters, which flush() gives FLUSH_SECONDS at
# shutdown to send the rest, and the Prometheus reader, whose port serve_metrics() opens.
exporting: list[BatchSpanProcessor | PeriodicExportingMetricReader] = []
scraped: list[PrometheusMetricReader] = []
FLUSH_SECONDS = 3
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


# FastAPI's telemetry (main.py): a server span per request (none for the probes) and the HTTP
# metrics of OpenTelemetry's semantic conventions, by route template (bounded cardinality). No
# span per dependency, endpoint and serialization: they multiply a request's cost and say little
# the request's span does not. The exporters are configure()'s, not FastAPI's own from the
# environment, which would add a second set to these providers.
FASTAPI: TelemetryConfig = {"exclude": is_probe, "operation_spans": False, "auto_configure": False}


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
        return  # no provider at all: FastAPI then skips its telemetry, which costs nothing
    service = resource()
    # The SDK reads OTEL_TRACES_SAMPLER(_ARG) itself.
    # Not shut down at exit (that flush is unbounded: a collector that is down would hold the
    # process past Docker's grace period, to a SIGKILL); flush() ends the lifespan instead.
    tracer_provider = TracerProvider(resource=service, shutdown_on_exit=False)
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
