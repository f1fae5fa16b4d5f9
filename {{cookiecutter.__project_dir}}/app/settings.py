"""The app's own settings, in one typed object: from the environment and, locally, from `.env`.

`.env` (git- and docker-ignored; copy `.env.example`) is for local runs such as `make run`; in a
container the same names come from the environment (`docker run -e`, compose, Kubernetes).
Uvicorn reads its own settings (UVICORN_*, WEB_CONCURRENCY) itself: they are not repeated here.
"""

{% if cookiecutter.database == "postgresql" -%}
from pathlib import Path
{% endif -%}
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # Names are matched case-insensitively (LOG_FORMAT=json); unknown names in .env are ignored.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # text for people (the default), json for log pipelines: one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    # Health probes arrive every few seconds from Docker, compose and Kubernetes: not logged.
    log_health_checks: bool = False
{%- if cookiecutter.database == "postgresql" %}
    # The database (app/db.py), as SQLAlchemy's URL with psycopg 3 as the driver. The password
    # stays out of committed files: DATABASE_PASSWORD_FILE names a file holding it (compose's and
    # Swarm's secret), which wins over one in the URL (Kubernetes passes the URL from a Secret).
    database_url: str = "postgresql+psycopg://app@localhost:5432/app"
    database_password_file: Path | None = None
{%- endif %}


settings = Settings()
