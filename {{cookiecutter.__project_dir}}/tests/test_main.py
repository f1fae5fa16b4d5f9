"""Unit tests of the app, in-process through FastAPI's TestClient (no server, no container)."""

from fastapi.testclient import TestClient

from main import app

client = TestClient(app)


def test_root_says_hello() -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {"Hello": "World"}


def test_health_is_ok() -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_names_the_service() -> None:
    info = client.get("/openapi.json").json()["info"]
    assert info["title"] == "{{ cookiecutter.project_name }}"
