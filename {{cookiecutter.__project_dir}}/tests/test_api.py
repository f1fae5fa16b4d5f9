"""The API against its own OpenAPI document, in process (no server): schemathesis generates
requests from the document, valid and invalid, and checks every answer: no server error, and
statuses, headers and bodies as documented. The document is the contract clients rely on.
{%- if cookiecutter.database == "postgresql" %}

No database is needed: nothing listens at the URL below, so the database's endpoints answer
their documented 503 (a running database, a developer's included, is never written to).
{%- endif %}
"""

import schemathesis
{%- if cookiecutter.database == "postgresql" %}
from schemathesis.config import SchemathesisConfig
{%- endif %}

from app.main import app
{%- if cookiecutter.database == "postgresql" %}
from app.settings import settings

# Port 1: nothing listens there, so connections are refused at once.
settings.database_url = "postgresql+psycopg://app@127.0.0.1:1/app"
# 503 (documented, with Retry-After) is the answer while the database is unavailable.
config = SchemathesisConfig.from_dict(
    {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}}}
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
{%- else %}

schema = schemathesis.openapi.from_asgi("/openapi.json", app)
{%- endif %}


@schema.parametrize()
def test_every_answer_is_as_documented(case) -> None:
    case.call_and_validate()
