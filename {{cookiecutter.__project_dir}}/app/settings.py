"""The app's own settings, in one typed object: from the environment and, locally, from `.env`.

`.env` (git- and docker-ignored; copy `.env.example`) is for local runs such as `make run`; in a
container the same names come from the environment (`docker run -e`, compose, Kubernetes).
Uvicorn reads its own settings (UVICORN_*, WEB_CONCURRENCY) itself: they are not repeated here,
but for UVICORN_ACCESS_LOG, which switches the app's access log (app/logs.py).
"""

{% if cookiecutter.database == "postgresql" -%}
from pathlib import Path
{% endif -%}
from typing import Literal

from pydantic import Field{% if cookiecutter.database == "postgresql" %}, field_validator{% endif %}
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # Names are matched case-insensitively (LOG_FORMAT=json); unknown names in .env are ignored.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", validate_by_name=True)

    # text for people (the default), json for log pipelines: one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    # One line per request, written by the app (it knows the duration and the request id). The
    # name is uvicorn's own, so the switch operators know turns it off; uvicorn's line never shows.
    access_log: bool = Field(True, validation_alias="uvicorn_access_log")
    # Health probes arrive every few seconds from Docker, compose and Kubernetes: not logged.
    log_health_checks: bool = False
    # Bytes a request body may have: larger ones get 413 before they are read whole, well below
    # the container's memory limit (a body is held in memory while it is parsed).
    max_body_size: int = Field(1024 * 1024, ge=0)
    # Seconds a client is told to wait (Retry-After) when the service answers 503.
    retry_after: int = Field(5, ge=0)
{%- if cookiecutter.database == "postgresql" %}
    # The database (app/db.py), as SQLAlchemy's URL with psycopg 3 as the driver. The password
    # stays out of committed files: DATABASE_PASSWORD_FILE names a file holding it (compose's and
    # Swarm's secret), which wins over one in the URL (Kubernetes passes the URL from a Secret).
    database_url: str = "postgresql+psycopg://app@localhost:5432/app"
    database_password_file: Path | None = None
    # The pool of each worker process: connections kept open, extra ones opened under load. Their
    # sum times processes times replicas must stay under the server's max_connections.
    database_pool_size: int = Field(5, ge=1)
    database_max_overflow: int = Field(10, ge=0)
    # Seconds, each bounding how long a request can wait on the database before it gets a 503:
    # for a pooled connection when all are busy, for a new connection to the server, and for
    # one statement (the server cancels it: a lock held too long, a runaway query).
    database_pool_timeout: float = Field(3, gt=0)
    database_connect_timeout: int = Field(3, ge=1)
    database_statement_timeout: float = Field(5, gt=0)

    @field_validator("database_url")
    @classmethod
    def psycopg_driver(cls, url: str) -> str:
        """The URLs providers hand out (postgres://, postgresql://) name psycopg 3 as the driver."""
        scheme, _, rest = url.partition("://")
        return f"postgresql+psycopg://{rest}" if scheme in {"postgres", "postgresql"} else url

    @field_validator("database_password_file", mode="before")
    @classmethod
    def empty_is_unset(cls, value: object) -> object:
        """DATABASE_PASSWORD_FILE= (empty, as templates and unset variables leave it): no file."""
        return None if value == "" else value
{%- endif %}


settings = Settings()
