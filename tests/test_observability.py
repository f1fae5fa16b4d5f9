"""The `observability` option running (marker `docker`): the image of a `postgresql` +
`opentelemetry` project under Docker Compose, exporting to an OTLP/HTTP receiver run by this module.

The receiver is a small HTTP server in the test process, on an address the containers reach
(`host-gateway`), that decodes each export with the OpenTelemetry protobuf definitions. One request
sent with a caller's `traceparent` makes one trace: its server span keeps the caller's trace id and
parent, the database's spans are its children, the probes make none, and the request's JSON log
line names the same trace and span. The HTTP metrics arrive over OTLP by route template, and the
Prometheus text on the metrics port has one series for fifty ids. An unreachable collector (a
closed port, one that takes the connection and never answers) leaves requests answered. The image
is built once.
"""

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.applog import json_lines
from tests.support.compose import Stack, compose, compose_env, remove_images
from tests.support.docker import docker, unique
from tests.support.net import free_port
from tests.support.polling import request, request_json, wait_until
from tests.support.project import bake, run

pytestmark = pytest.mark.docker

CALLER_TRACE, CALLER_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP receiver: keeps every export request, decoded, by its path."""

    daemon_threads = True

    def __init__(self) -> None:
        self.exports: dict[str, list] = {"/v1/traces": [], "/v1/metrics": []}
        self.lock = threading.Lock()
        super().__init__(("0.0.0.0", free_port("0.0.0.0")), Handler)

    def spans(self) -> list:
        with self.lock:
            exports = list(self.exports["/v1/traces"])
        return [
            span
            for export in exports
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def metrics(self) -> list:
        with self.lock:
            exports = list(self.exports["/v1/metrics"])
        return [
            metric
            for export in exports
            for resource in export.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        ]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        kind = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest}
        if self.path not in kind or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_response(404)
            self.end_headers()
            return
        export = kind[self.path]()
        export.ParseFromString(body)
        with self.server.lock:
            self.server.exports[self.path].append(export)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def otel_service(tmp_path_factory, docker_ready) -> Iterator[Path]:
    """A `postgresql` + `opentelemetry` project and its image `SLUG:otel`, built once."""
    root = bake(
        tmp_path_factory.mktemp("otel-service"),
        database="postgresql",
        observability="opentelemetry",
        project_slug=unique("oteltest"),
    )
    result = run(["make", "--no-print-directory", "db-password.txt"], cwd=root)
    assert result.returncode == 0, result.stderr
    try:
        compose(root, "build", "app", env=compose_env(TAG="otel"), timeout=1200)
        yield root
    finally:
        remove_images(root.name)


@pytest.fixture(scope="module")
def stack(otel_service, receiver) -> Iterator[Stack]:
    """The project up and healthy, exporting to the receiver, its metrics port published."""
    stack = Stack(otel_service, "otel", settings={"LOG_FORMAT": "json"})
    stack.metrics_port = free_port()
    app = {
        "environment": {
            "LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://host.docker.internal:{receiver.server_port}",
            # Exported at once, for the test; the defaults (5 s, a minute) batch more.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        },
        "extra_hosts": ["host.docker.internal:host-gateway"],
        "ports": [f"127.0.0.1:{stack.metrics_port}:9464"],
    }
    Path(stack.files[-1]).write_text(json.dumps({"services": {"app": app}}))
    with stack.up():
        yield stack


def hex_id(raw: bytes) -> str:
    return raw.hex()


def test_one_request_is_one_trace_under_its_caller_with_the_database_inside(stack, receiver):
    for probe in ("/health", "/ready"):
        assert request(stack.port, "GET", probe).status == 200
    status, item = request_json("POST", stack.url("/items"), {"name": "traced"})
    assert status == 201, item
    answer = request(stack.port, "GET", f"/items/{item['id']}", headers={"traceparent": TRACEPARENT})
    assert answer.status == 200
    request_id = answer.headers["X-Request-ID"]

    def trace() -> list:
        return [s for s in receiver.spans() if hex_id(s.trace_id) == CALLER_TRACE]

    spans = wait_until(
        "the request's server span and its database spans at the receiver",
        trace,
        lambda spans: any(s.kind == SERVER for s in spans) and any(s.kind == CLIENT for s in spans),
        timeout=30,
    )
    (server,) = [s for s in spans if s.kind == SERVER]
    assert hex_id(server.parent_span_id) == CALLER_SPAN
    attributes = {a.key: a.value.string_value or a.value.int_value for a in server.attributes}
    assert attributes["http.route"] == "/items/{item_id}", attributes
    database = [s for s in spans if s.kind == CLIENT]
    assert all(s.parent_span_id == server.span_id for s in database), database
    assert any(s.name.startswith("SELECT") for s in database), [s.name for s in database]
    # No probe is traced (Docker's HEALTHCHECK probes /health every half second while starting).
    routes = {
        a.value.string_value
        for s in receiver.spans()
        for a in s.attributes
        if a.key in {"http.route", "url.path", "http.target"}
    }
    assert not routes & {"/health", "/ready"}, routes
    assert not [s for s in receiver.spans() if s.name.startswith("connect") and not s.parent_span_id]

    def access_line() -> list[dict]:
        lines = json_lines(stack.logs("app"))
        return [line for line in lines if line["logger"] == "app.access" and line["request_id"] == request_id]

    (line,) = wait_until("the request's access line", access_line, lambda lines: len(lines) == 1, timeout=10)
    assert (line["trace_id"], line["span_id"]) == (CALLER_TRACE, hex_id(server.span_id))


def test_the_http_metrics_arrive_over_otlp_by_route_template(stack, receiver):
    assert request(stack.port, "GET", "/items/1").status in {200, 404}

    def routes() -> set[str]:
        return {
            attribute.value.string_value
            for metric in receiver.metrics()
            if metric.name == "http.server.request.duration"
            for point in metric.histogram.data_points
            for attribute in point.attributes
            if attribute.key == "http.route"
        }

    wait_until(
        "http.server.request.duration for /items/{item_id}",
        routes,
        lambda found: "/items/{item_id}" in found,
        timeout=30,
    )


def test_prometheus_text_has_one_series_for_fifty_ids_and_the_pool(stack):
    for number in range(1, 51):
        assert request(stack.port, "GET", f"/items/{number}").status in {200, 404}

    def metrics() -> str:
        url = f"http://127.0.0.1:{stack.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    text = metrics()
    series = [
        line
        for line in text.splitlines()
        if line.startswith("http_server_request_duration_seconds_count{") and "/items/" in line
    ]
    by_status = {}
    for line in series:
        status = line.split('http_response_status_code="')[1].split('"')[0]
        by_status.setdefault(status, []).append(line)
    assert by_status and all(len(lines) == 1 for lines in by_status.values()), series
    assert all('http_route="/items/{item_id}"' in line for line in series), series
    assert "db_client_connections_usage" in text


@pytest.fixture
def hung_collector() -> Iterator[str]:
    """The endpoint of a collector that takes connections and never answers (the kernel accepts
    them into the backlog; nothing reads): each export waits for the exporter's timeout."""
    with socket.socket() as hung:
        hung.bind(("0.0.0.0", 0))
        hung.listen(1024)
        yield f"http://host.docker.internal:{hung.getsockname()[1]}"


@pytest.mark.parametrize("collector", ["closed", "hung"])
def test_an_unreachable_collector_leaves_requests_answered(otel_service, hung_collector, collector):
    """A closed port and a collector that never answers: every request answered 200, within the
    client's timeout, while the exporter fails in the background."""
    endpoint = "http://127.0.0.1:9" if collector == "closed" else hung_collector
    name, port = unique("oteldead"), free_port()
    docker(
        "run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8000",
        "--add-host", "host.docker.internal:host-gateway",
        "--env", f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}",
        "--env", "OTEL_BSP_SCHEDULE_DELAY=100", "--env", "OTEL_METRIC_EXPORT_INTERVAL=500",
        # Every request traced (the default traces only what callers sampled): the most spans to
        # queue, drop and fail to export.
        "--env", "OTEL_TRACES_SAMPLER=parentbased_always_on",
        f"{otel_service.name}:otel",
    )  # fmt: skip
    try:
        wait_until(
            "the app answering",
            lambda: request(port, "GET", "/health", timeout=2).status,
            lambda status: status == 200,
            timeout=60,
        )
        statuses: list[int] = []

        def served_meanwhile() -> str:
            statuses.extend(request(port, "GET", "/", timeout=3).status for _ in range(50))
            return docker("logs", name).stderr

        # Requests go on until the exporter has given up on a batch (after its retries or its
        # 10 s timeout): every one of them answered.
        wait_until(
            "a failed export in the log",
            served_meanwhile,
            lambda logs: "Failed to export" in logs,
            timeout=90,
        )
        assert statuses and set(statuses) == {200}, statuses
        # Spans dropped while the exporter is stuck are said once a minute, not once a request.
        logs = docker("logs", name).stderr
        assert logs.count("Queue full") <= 2, logs[-2000:]
        # And it stops by itself within Docker's grace period (10 s): 0 or 143 (SIGTERM handled),
        # not 137, the SIGKILL of a process still flushing to its collector at exit.
        docker("stop", name, timeout=60)
        state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
        assert state["ExitCode"] in {0, 143} and not state["OOMKilled"], state
    finally:
        docker("rm", "--force", name, check=False)
