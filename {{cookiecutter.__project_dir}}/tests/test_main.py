"""Unit tests of the app, in-process through FastAPI's TestClient (no server, no container)."""

import io
import json
import logging
{%- if cookiecutter.observability == "opentelemetry" %}
import os
{%- endif %}
import re
{%- if cookiecutter.database == "postgresql" or cookiecutter.observability == "opentelemetry" %}
import socket
{%- endif %}
{%- if cookiecutter.observability == "opentelemetry" %}
import subprocess
import sys
import urllib.request
{%- endif %}
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
{%- if cookiecutter.observability == "opentelemetry" %}
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
{%- endif %}
from pydantic import BaseModel, Field
{%- if cookiecutter.database == "postgresql" %}
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
{%- endif %}

{% if cookiecutter.database == "postgresql" -%}
from app import __version__, db, items, logs{% if cookiecutter.observability == "opentelemetry" %}, telemetry{% endif %}
from app.main import app
from app.settings import Settings, settings
{%- else -%}
from app import __version__, logs{% if cookiecutter.observability == "opentelemetry" %}, telemetry{% endif %}
from app.main import app
from app.settings import Settings, settings
{%- endif %}

client = TestClient(app)
{%- if cookiecutter.database == "postgresql" or cookiecutter.observability == "opentelemetry" %}


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
{%- endif %}


def test_root_says_hello() -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"Hello": "World"}


def test_health_is_ok_for_get_and_head() -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head("/health").status_code == 200


# Every path, and the methods it answers (Allow lists them all, in this order).
PATHS = {
    "/": "GET, HEAD",
    "/health": "GET, HEAD",
{%- if cookiecutter.database == "postgresql" %}
    "/ready": "GET, HEAD",
    "/items": "GET, HEAD, POST",
    "/items/1": "GET, HEAD",
{%- endif %}
}


@pytest.fixture
def running(monkeypatch):
    """A client of the app with its lifespan run{% if cookiecutter.database == "postgresql" %}, and its database down{% endif %}."""
{%- if cookiecutter.database == "postgresql" %}
    url = f"postgresql+psycopg://app@127.0.0.1:{closed_port()}/app"
    monkeypatch.setattr(settings, "database_url", url)
{%- endif %}
    with TestClient(app) as started:
        yield started


@pytest.mark.parametrize("path", PATHS)
def test_head_wherever_get_and_allow_names_every_method(running, path: str) -> None:
    get, head = running.get(path), running.head(path)
    assert head.status_code == get.status_code and head.content == b""
    response = running.options(path)
    assert response.status_code == 405 and response.headers["Allow"] == PATHS[path]


def test_openapi_names_the_service_and_its_version() -> None:
    info = client.get("/openapi.json").json()["info"]
    assert info["title"] == "{{ cookiecutter.project_name }}"
    assert info["version"] == __version__


def test_openapi_has_one_operation_per_method_with_unique_ids() -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operations = [(path, method) for path, methods in paths.items() for method in methods]
    ids = [paths[path][method]["operationId"] for path, method in operations]
    assert len(ids) == len(set(ids)), ids
    # HEAD is implied by GET (RFC 9110): documenting it would repeat GET's operation.
    assert all(method != "head" for _, method in operations)


def test_request_id_is_taken_from_the_request_or_made_up() -> None:
    assert client.get("/", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made_up = client.get("/").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made_up)
    # A header that could forge log lines, or is not ASCII, is replaced, not echoed.
    for given in ("x\tINFO: fake", "café".encode(), "١٢٣".encode()):
        replaced = client.get("/", headers={"X-Request-ID": given}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", replaced), given


def test_settings_come_from_the_environment_and_dotenv(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LOG_FORMAT=json\nLOG_HEALTH_CHECKS=true\n")
    assert Settings().log_format == "json" and Settings().log_health_checks is True
    monkeypatch.setenv("LOG_FORMAT", "text")  # the environment wins over .env
    assert Settings().log_format == "text"
    monkeypatch.setenv("UVICORN_ACCESS_LOG", "false")
    monkeypatch.setenv("MAX_BODY_SIZE", "2048")
    assert Settings().access_log is False and Settings().max_body_size == 2048
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()


class Order(BaseModel):
    name: str = Field(min_length=2)
    count: int


async def echo(order: Order) -> Order:
    return order


async def fail() -> None:
    raise RuntimeError("a bug")


@pytest.fixture
def test_routes():
    """The tests' own routes, on the app for one test: one reading a body, one failing."""
    before = list(app.router.routes)
    app.add_api_route("/test/echo", echo, methods=["POST"])
    app.add_api_route("/test/fail", fail, methods=["GET"])
    yield
    app.router.routes[:] = before


def test_a_body_over_the_limit_is_refused_before_it_is_read(test_routes) -> None:
    assert client.post("/test/echo", json={"name": "ok", "count": 1}).status_code == 200
    too_large = b" " * (settings.max_body_size + 1)
    # Its Content-Length says so: refused before a byte is read.
    response = client.post("/test/echo", content=too_large)
    assert response.status_code == 413 and response.json() == {"detail": "Content Too Large"}
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])

    def chunks():  # a chunked body (no Content-Length): refused once past the limit
        for _ in range(100):
            yield b" " * (64 * 1024)

    response = client.post("/test/echo", content=chunks())
    assert response.status_code == 413 and response.json() == {"detail": "Content Too Large"}


def test_invalid_input_is_a_small_422_that_does_not_echo_it(test_routes) -> None:
    big = "A" * 500_000
    response = client.post("/test/echo", json={"name": "x", "count": big})
    assert response.status_code == 422 and len(response.content) < 1000
    name, count = response.json()["detail"]
    assert name == {
        "loc": ["body", "name"],
        "msg": "String should have at least 2 characters",
        "type": "string_too_short",
    }
    assert count["loc"] == ["body", "count"] and set(count) == {"loc", "msg", "type"}
    # Text JSON can carry but not encode (a lone surrogate) is a 422 too, not a 500.
    body = b'{"name": "\\ud800", "count": "\\udfff"}'
    response = client.post("/test/echo", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text


def test_a_500_carries_the_request_id_and_logs_it(test_routes, json_logs) -> None:
    failing = TestClient(app, raise_server_exceptions=False)
    response = failing.get("/test/fail", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "bug-1"
    assert response.json() == {"detail": "Internal Server Error"}
    (access,) = [line for line in json_logs() if line["logger"] == "app.access"]
    assert access["status"] == 500 and access["request_id"] == "bug-1"


def test_the_example_dotenv_names_settings_at_their_defaults() -> None:
    """.env.example is where a newcomer learns the settings: each name is one, at its default."""
    example = Path(__file__).resolve().parent.parent / ".env.example"
    lines = [line for line in example.read_text().splitlines() if line and line[0] != "#"]
    names = {line.partition("=")[0].lower() for line in lines}
    fields = {field.validation_alias or name for name, field in Settings.model_fields.items()}
    assert names <= fields, names - fields
    assert Settings(_env_file=example) == Settings(_env_file=None)


@pytest.fixture
def json_logs():
    """LOG_FORMAT=json for one test; a function returning the lines logged so far, parsed."""
    logs.configure(Settings(log_format="json"))
    logging.getLogger("app.access").setLevel(logging.INFO)
    stream = io.StringIO()
    for name in ("uvicorn", "app.access"):  # the handlers every logger shares
        for handler in logging.getLogger(name).handlers:
            handler.setStream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logs.configure(settings)


def test_one_access_line_per_request_with_status_duration_and_request_id(json_logs) -> None:
    client.get("/?page=2", headers={"X-Request-ID": "req-1"})
    # uvicorn's own access logger writes nothing: the app's line replaces it.
    logging.getLogger("uvicorn.access").info("uvicorn's line")
    logging.getLogger("app.main").warning("from the app")
    (access, app_line) = json_logs()
    assert access["logger"] == "app.access" and access["request_id"] == "req-1"
    assert access["message"].startswith('testclient:50000 - "GET /?page=2 HTTP/1.1" 200 ')
    assert access["status"] == 200 and access["duration_ms"] >= 0
    assert app_line["level"] == "WARNING" and app_line["logger"] == "app.main"


def test_json_lines_carry_their_own_time_in_utc() -> None:
    """The formatter works the date and time out once a second: each line still has its own."""
    formatter = logs.JsonFormatter()
    for created in (1_700_000_000.25, 1_700_000_000.5, 1_700_000_001.75, 1_699_999_999.0):
        record = logging.makeLogRecord({"msg": "m", "created": created})
        stamp = datetime.fromisoformat(json.loads(formatter.format(record))["time"])
        assert stamp == datetime.fromtimestamp(created, UTC), (created, stamp)


class Thing:
    """An object json has no form for: the formatter writes its str()."""

    def __str__(self) -> str:
        return 'a "thing"\non two lines'


AWKWARD = 'quotes " backslash \\ newline \n tab \t controls \x00\x1f\x7f'
AWKWARD += " café ☕ 𝄞 line separator \u2028 lone surrogate \ud800"


def test_json_lines_are_what_the_json_module_writes() -> None:
    """The formatter puts each line together itself (for speed): byte for byte what json.dumps
    writes for the same fields, so any reader reads what json.loads reads, on one line, whatever
    the text, the values or the traceback."""
    try:
        raise ValueError(AWKWARD)
    except ValueError as error:
        failure = (ValueError, error, error.__traceback__)
    nan, inf = float("nan"), float("inf")
    cases = [  # (the call's message and args, its own fields, the request id, a traceback)
        (("%s", AWKWARD), {}, None, None),
        (("said %r at %d%%", "hi", 5), {"user": AWKWARD, AWKWARD: "a key"}, AWKWARD, None),
        (("numbers",), {"n": 0, "big": -(2**70), "x": 2.3, "tiny": 1e-300, "zero": -0.0}, "", None),
        (("not numbers",), {"nan": nan, "inf": inf, "ninf": -inf}, "r-1", None),
        (("others",), {"yes": True, "no": False, "none": None, "thing": Thing()}, None, None),
        (("nested",), {"list": [1, "a\n", None], "dict": {"k": Thing()}}, None, None),
        (("failed",), {"status": 500}, "r-2", failure),
    ]
    formatter = logs.JsonFormatter()
    for second, ((msg, *args), extra, request_id, exc_info) in enumerate(cases):
        record = logging.makeLogRecord(
            {"name": "app.ünï", "levelno": logging.INFO, "levelname": "INFO", **extra}
        )
        record.msg, record.args, record.exc_info = msg, tuple(args), exc_info
        record.created = 1_700_000_000.25 + second  # a time whose digits are known exactly
        token = logs.request_id.set(request_id)
        logs.RequestIdFilter().filter(record)  # as every handler's filter does
        logs.request_id.reset(token)
        fields = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": "INFO",
            "logger": "app.ünï",
            "message": msg % tuple(args),
            "request_id": request_id,
{%- if cookiecutter.observability == "opentelemetry" %}
            "trace_id": None,  # outside a span
            "span_id": None,
{%- endif %}
            **extra,
        }
        if exc_info:
            fields["exc_info"] = logging.Formatter().formatException(exc_info)
        line = formatter.format(record)
        assert line == json.dumps(fields, separators=(",", ":"), default=str), (msg, line)
        assert len(line.splitlines()) == 1, line


def test_probes_are_not_logged_under_any_root_path(running, json_logs) -> None:
    # As uvicorn serves under UVICORN_ROOT_PATH: the path includes the root path.
    behind_a_proxy = TestClient(app, root_path="/api", base_url="http://testserver/api")
    for path in logs.PROBES:
        assert behind_a_proxy.get(path).status_code in {200, 503}
        assert running.head(path).status_code in {200, 503}
    assert behind_a_proxy.get("/").status_code == 200
    access = [line["message"] for line in json_logs() if line["logger"] == "app.access"]
    assert [line.split('"')[1] for line in access] == ["GET /api/ HTTP/1.1"]


async def no_content(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize("access_log", [True, False])
def test_the_access_log_switches_off(json_logs, access_log: bool) -> None:
    served = logs.RequestLogMiddleware(no_content, access_log=access_log)
    response = TestClient(served).get("/", headers={"X-Request-ID": "quiet-1"})
    assert response.headers["X-Request-ID"] == "quiet-1"
    assert len(json_logs()) == access_log
{%- if cookiecutter.use_kubernetes %}


def test_kubernetes_deploys_this_version() -> None:
    """k8s/kustomization.yaml names the image tag that CI pushes for this version."""
    k8s = Path(__file__).resolve().parent.parent / "k8s"
    assert re.search(r'newTag: "(.*)"', (k8s / "kustomization.yaml").read_text())[1] == __version__
{%- endif %}
{%- if cookiecutter.database == "postgresql" %}


# The database's own path (POST/GET /items, migrations) is tested against a real PostgreSQL by
# the template's deploy tests; these need no database.


def test_without_a_database_the_app_is_live_but_not_ready(running) -> None:
    assert running.get("/health").json() == {"status": "ok"}
    response = running.get("/ready")
    assert response.status_code == 503 and response.json() == {"status": "unavailable"}


def test_without_a_database_requests_get_503_and_one_log_line_each(running, caplog) -> None:
    caplog.set_level(logging.INFO)
    for method, path, body in [
        ("POST", "/items", {"name": "private words"}),
        ("GET", "/items/1", None),
        ("GET", "/items", None),
    ]:
        caplog.clear()
        response = running.request(method, path, json=body)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == str(settings.retry_after)
        assert response.json() == {"detail": "the database is unavailable: retry later"}
        # The server's lines but the access line (the test client, httpx, logs its own).
        (line,) = [r for r in caplog.records if not r.name.startswith(("app.access", "httpx"))]
        assert line.levelname == "WARNING" and line.exc_info is None
        assert line.getMessage().startswith(f"database unavailable: {method} {path}: ")
        assert "private" not in caplog.text


@pytest.mark.parametrize(
    "error",
    [
        PoolTimeoutError("QueuePool limit of size 5 overflow 10 reached"),
        OperationalError("SELECT", {}, Exception("canceling statement due to statement timeout")),
    ],
)
def test_an_exhausted_pool_or_a_cancelled_statement_is_a_503(error) -> None:
    async def unavailable():
        raise error
        yield  # a generator, like the session it replaces

    app.dependency_overrides[db.session] = unavailable
    try:
        response = client.get("/items/1")
    finally:
        app.dependency_overrides.clear()
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_other_database_errors_are_bugs_answered_500() -> None:
    async def broken():
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))
        yield

    app.dependency_overrides[db.session] = broken
    try:
        response = TestClient(app, raise_server_exceptions=False).get("/items/1")
    finally:
        app.dependency_overrides.clear()
    assert response.status_code == 500


def test_ready_asks_on_a_connection_of_its_own(running, monkeypatch) -> None:
    """A pool busy with requests cannot starve /ready: it does not borrow from it."""

    class Exhausted:
        def connect(self):
            raise AssertionError("/ready borrowed from the requests' pool")

        async def dispose(self) -> None:
            pass

    monkeypatch.setattr(app.state, "engine", Exhausted())
    assert running.get("/ready").json() == {"status": "unavailable"}  # closed port


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/items/9223372036854775807", 503),  # the largest BIGINT: asked of the database
        ("/items/9223372036854775808", 422),
        ("/items/0", 422),
        ("/items?limit=101", 422),
        ("/items?after=-1", 422),
    ],
)
def test_ids_and_pages_are_bounded_before_the_database(running, path, status) -> None:
    assert running.get(path).status_code == status


@pytest.mark.parametrize("name", ["a\u0000b", "\ud800", "a" * 201, ""])
def test_names_the_database_cannot_store_are_422(running, name) -> None:
    body = json.dumps({"name": name})  # escapes the lone surrogate, as clients send it
    headers = {"Content-Type": "application/json"}
    response = running.post("/items", content=body, headers=headers)
    assert response.status_code == 422, response.text


class FakeSession:
    """Stands in for the database: the row gets the id the database would give it."""

    def add(self, row) -> None:
        self.row = row

    async def commit(self) -> None:
        self.row.id = 7


def test_a_created_item_is_201_with_its_location_under_the_root_path() -> None:
    async def fake():
        yield FakeSession()

    app.dependency_overrides[db.session] = fake
    try:
        behind_a_proxy = TestClient(app, root_path="/api", base_url="http://testserver/api")
        response = behind_a_proxy.post("/items", json={"name": "seven"})
    finally:
        app.dependency_overrides.clear()
    assert response.status_code == 201 and response.json() == {"name": "seven", "id": 7}
    assert response.headers["Location"] == "/api/items/7"


def test_the_model_s_ids_are_bigint() -> None:
    assert str(items.Item.__table__.c.id.type) == "BIGINT"


def test_the_pool_and_its_timeouts_come_from_the_settings() -> None:
    engine = db.engine(
        Settings(
            database_pool_size=3,
            database_max_overflow=1,
            database_pool_timeout=0.5,
            database_statement_timeout=1.5,
        )
    )
    assert (engine.pool.size(), engine.pool._max_overflow, engine.pool._timeout) == (3, 1, 0.5)
    assert engine.sync_engine.hide_parameters
    probe = db.probe_engine(Settings())
    assert (probe.pool.size(), probe.pool._max_overflow) == (1, 0)


def test_the_password_comes_from_its_file_and_is_never_shown(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("s3cret\n")
    url = db.url(
        Settings(
            database_url="postgresql+psycopg://app:old@db:5432/app",
            database_password_file=tmp_path / "password",
        )
    )
    assert (url.username, url.password, url.host, url.database) == ("app", "s3cret", "db", "app")
    assert "s3cret" not in str(url) and "s3cret" not in repr(url)


def test_database_settings_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@h:5433/d")
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", "/run/secrets/db_password")
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "2.5")
    assert Settings().database_url == "postgresql+psycopg://u@h:5433/d"
    assert Settings().database_password_file == Path("/run/secrets/db_password")
    assert Settings().database_pool_timeout == 2.5
    # Empty is unset (not the current directory), as templates and unset variables leave it.
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", "")
    assert Settings().database_password_file is None


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_the_urls_providers_hand_out_use_psycopg(scheme: str) -> None:
    url = db.url(Settings(database_url=f"{scheme}://u:p@h:5432/d"))
    assert (url.drivername, url.host, url.database) == ("postgresql+psycopg", "h", "d")
{%- endif %}
{%- if cookiecutter.observability == "opentelemetry" %}


# The spans the app ends, kept in memory beside what app/telemetry.py exports (nothing here: the
# tests set no OTLP endpoint).
finished = InMemorySpanExporter()
provider = trace.get_tracer_provider()
assert isinstance(provider, TracerProvider), "app/telemetry.py sets the SDK's provider"
provider.add_span_processor(SimpleSpanProcessor(finished))
# A caller's W3C trace context: trace id, its span's id, sampled.
CALLER_TRACE, CALLER_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans():
    """A function returning the spans ended since the test began."""
    finished.clear()
    return finished.get_finished_spans


def test_a_request_is_traced_in_its_caller_s_trace_and_its_log_lines_say_so(
    spans, json_logs
) -> None:
    client.get("/", headers={"traceparent": TRACEPARENT})
    (server,) = spans()  # one span per request: none per ASGI message
    assert server.kind is SpanKind.SERVER and server.attributes["http.route"] == "/"
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE
    assert f"{server.parent.span_id:016x}" == CALLER_SPAN
    (access,) = [line for line in json_logs() if line["logger"] == "app.access"]
    assert access["trace_id"] == CALLER_TRACE
    assert access["span_id"] == f"{server.context.span_id:016x}"


def test_by_default_a_request_is_traced_only_when_its_caller_sampled_it(spans, json_logs) -> None:
    not_sampled = TRACEPARENT.removesuffix("-01") + "-00"
    before = requests_served("/")
    client.get("/")
    client.get("/", headers={"traceparent": not_sampled})
    assert spans() == ()
    assert requests_served("/") == before + 2  # counted all the same
    first, second = [line for line in json_logs() if line["logger"] == "app.access"]
    # The caller's trace goes on, unsampled, in the log line; no trace is made up for the first.
    assert first["trace_id"] is None and second["trace_id"] == CALLER_TRACE


def test_a_sampler_that_starts_traces_traces_requests_without_a_caller() -> None:
    """OTEL_TRACES_SAMPLER is read once, at import: a process of its own."""
    script = (
        "from fastapi.testclient import TestClient\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from app.main import app\n"
        "finished = InMemorySpanExporter()\n"
        "trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(finished))\n"
        "TestClient(app).get('/')\n"
        "(server,) = finished.get_finished_spans()\n"
        "print(server.name, server.parent)\n"
    )
    environment = {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        cwd=Path(__file__).parent.parent,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["GET", "/", "None"]


def test_a_failing_request_is_a_server_span_in_error_and_an_error_in_the_metrics(
    spans, test_routes
) -> None:
    failing = TestClient(app, raise_server_exceptions=False)
    assert failing.get("/test/fail", headers={"traceparent": TRACEPARENT}).status_code == 500
    (server,) = spans()
    assert server.name == "GET /test/fail" and server.status.status_code is StatusCode.ERROR
    assert [event.name for event in server.events] == ["exception"]
    (series,) = request_series("/test/fail")
    assert series["error_type"] == "RuntimeError" and series["http_response_status_code"] == "500"


def test_probes_are_neither_traced_nor_counted(running, spans) -> None:
    for path in logs.PROBES:
        running.get(path, headers={"traceparent": TRACEPARENT})
        running.head(path)
        assert not request_series(path)
    assert spans() == ()


async def thing(number: int) -> dict[str, int]:
    return {"number": number}


def request_counts(route: str) -> list:
    """The request count of each series of requests served by route, in the Prometheus registry."""
    return [
        sample
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "http_server_request_duration_seconds_count"
        and sample.labels.get("http_route") == route
    ]


def request_series(route: str) -> list[dict[str, str]]:
    """The labels of each series of requests served by route."""
    return [sample.labels for sample in request_counts(route)]


def requests_served(route: str) -> float:
    """How many requests route has answered, in all its series."""
    return sum(sample.value for sample in request_counts(route))


def test_request_metrics_are_by_route_template_not_path(test_routes) -> None:
    app.add_api_route("/test/things/{number}", thing, methods=["GET"])
    for number in range(1, 51):
        assert client.get(f"/test/things/{number}").status_code == 200
    (series,) = request_series("/test/things/{number}")
    assert series["http_request_method"] == "GET" and series["http_response_status_code"] == "200"
    assert not request_series("/test/things/1")


def test_metrics_are_served_on_their_own_port(monkeypatch) -> None:
    port = closed_port()
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    client.get("/")
    telemetry.serve_metrics()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "http_server_request_duration_seconds_count{" in text and 'http_route="/"' in text


def test_a_metrics_port_taken_is_one_warning_not_a_crash(monkeypatch, caplog) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
        monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(taken.getsockname()[1]))
        telemetry.serve_metrics()
    (warning,) = [r for r in caplog.records if r.name == "app.telemetry"]
    assert warning.levelname == "WARNING" and "metrics not served" in warning.message


def test_the_service_is_named_by_otel_service_name_or_the_slug(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert telemetry.resource().attributes["service.name"] == "{{ cookiecutter.project_slug }}"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
    attributes = telemetry.resource().attributes
    assert attributes["service.name"] == "orders"
    assert attributes["deployment.environment.name"] == "staging"


def test_nothing_is_exported_without_an_endpoint(monkeypatch) -> None:
    for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    assert telemetry.otlp_endpoint("TRACES") is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert telemetry.otlp_endpoint("TRACES") == "http://collector:4318"


def test_otel_sdk_disabled_sets_no_provider(monkeypatch) -> None:
    """Nothing is recorded, at no cost, while no SDK provider is set."""
    set_providers = []
    monkeypatch.setattr(trace, "set_tracer_provider", set_providers.append)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    telemetry.configure()
    assert set_providers == []
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    telemetry.configure()
    assert len(set_providers) == 1


def test_a_collector_down_is_one_line_a_minute_not_one_per_request() -> None:
    once = telemetry.OncePerMinute()
    records = [logging.makeLogRecord({"msg": "Queue full, dropping span."}) for _ in range(100)]
    assert [once.filter(record) for record in records] == [True] + [False] * 99


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_TRACES_SAMPLER", "ratelimiting"),
    ],
)
def test_what_the_image_lacks_stops_it_with_one_line(monkeypatch, caplog, variable, value) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit):
        telemetry.configure()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "app.telemetry"]
    assert line.startswith(f"{variable}={value} is not supported")
{%- endif %}
