"""Unit tests of the app, in-process through FastAPI's TestClient (no server, no container)."""

import io
import json
import logging
import re
{%- if cookiecutter.database == "postgresql" %}
import socket
{%- endif %}
{%- if cookiecutter.use_kubernetes or cookiecutter.database == "postgresql" %}
from pathlib import Path
{%- endif %}

import pytest
from fastapi.testclient import TestClient

{% if cookiecutter.database == "postgresql" -%}
from app import __version__, db, logs
from app.main import app
from app.settings import Settings, settings
{%- else -%}
from app import __version__, logs
from app.main import app
from app.settings import Settings
{%- endif %}

client = TestClient(app)


def test_root_says_hello() -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"Hello": "World"}


def test_health_is_ok_for_get_and_head() -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.head("/health").status_code == 200


def test_openapi_names_the_service_and_its_version() -> None:
    info = client.get("/openapi.json").json()["info"]
    assert info["title"] == "{{ cookiecutter.project_name }}"
    assert info["version"] == __version__


def test_request_id_is_taken_from_the_request_or_made_up() -> None:
    assert client.get("/", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made_up = client.get("/").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made_up)
    # A header that could forge log lines is replaced, not echoed.
    forged = client.get("/", headers={"X-Request-ID": "x\tINFO: fake"}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", forged)


def test_settings_come_from_the_environment_and_dotenv(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LOG_FORMAT=json\nLOG_HEALTH_CHECKS=true\n")
    assert Settings().log_format == "json" and Settings().log_health_checks is True
    monkeypatch.setenv("LOG_FORMAT", "text")  # the environment wins over .env
    assert Settings().log_format == "text"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()


@pytest.fixture
def json_logs():
    """LOG_FORMAT=json for one test; a function returning the lines logged so far, parsed."""
    logs.configure(Settings(log_format="json"))
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    stream = io.StringIO()
    (handler,) = logging.getLogger("uvicorn").handlers  # the one handler every logger shares
    handler.setStream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logs.configure(Settings())


def test_json_logs_carry_the_request_id_and_skip_health_probes(json_logs) -> None:
    access = logging.getLogger("uvicorn.access")
    token = logs.request_id.set("req-1")
    try:
        # uvicorn's access record: (client, method, path, HTTP version, status)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/", "1.1", 200)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/health", "1.1", 200)
{%- if cookiecutter.database == "postgresql" %}
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/ready", "1.1", 503)
{%- endif %}
        logging.getLogger("app.main").warning("from the app")
    finally:
        logs.request_id.reset(token)
    lines = json_logs()
    assert [line["message"] for line in lines] == [
        '127.0.0.1:5000 - "GET / HTTP/1.1" 200',
        "from the app",
    ]
    assert all(line["request_id"] == "req-1" for line in lines)
    assert lines[1]["level"] == "WARNING" and lines[1]["logger"] == "app.main"
{%- if cookiecutter.use_kubernetes %}


def test_kubernetes_deploys_this_version() -> None:
    """k8s/kustomization.yaml names the image tag that CI pushes for this version."""
    k8s = Path(__file__).resolve().parent.parent / "k8s"
    assert re.search(r'newTag: "(.*)"', (k8s / "kustomization.yaml").read_text())[1] == __version__
{%- endif %}
{%- if cookiecutter.database == "postgresql" %}


# The database's own path (POST/GET /items, migrations) is tested against a real PostgreSQL by
# the template's deploy tests; these need no database.


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_without_a_database_the_app_is_live_but_not_ready(monkeypatch) -> None:
    url = f"postgresql+psycopg://app@127.0.0.1:{closed_port()}/app"
    monkeypatch.setattr(settings, "database_url", url)
    with TestClient(app) as running:  # runs the lifespan: the pool is made, nothing connects
        assert running.get("/health").json() == {"status": "ok"}
        response = running.get("/ready")
        assert response.status_code == 503 and response.json() == {"status": "unavailable"}


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
    assert Settings().database_url == "postgresql+psycopg://u@h:5433/d"
    assert Settings().database_password_file == Path("/run/secrets/db_password")
{%- endif %}
