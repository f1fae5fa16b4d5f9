"""The `observability` option, rendered: `none` generates byte for byte what the template generated
before the option existed, `opentelemetry` its module, packages, README section and the hook's rule.

Its lint and compile checks are the render tier's (test_render.py renders it pairwise); its own unit
tests run in the generated project's `make test` (test_service.py), its image against an OTLP
receiver in test_observability.py.
"""

import json
import re
from pathlib import Path

import pytest

from tests.support.hooks import load_hook
from tests.support.project import COMPLETE, LOCK_FRAGMENTS, bake, cookiecutter_cli, make

OTEL = {"observability": "opentelemetry"}
# Answer sets whose `none` projects are searched for a trace of the option.
NONE = {
    "defaults": {},
    "github-postgresql": {**COMPLETE["github"], "database": "postgresql"},
    "gitlab-9090-2workers": COMPLETE["gitlab-9090-2workers"],
}
# What only the option brings; none of it may appear in a `none` project. (opentelemetry-api is
# in every lock: FastAPI depends on it.)
OPTION_WORDS = ["telemetry", "trace_id", "span_id", "OTEL_", "9464", "prometheus", "traceparent"]


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.parametrize("name", NONE)
def test_none_leaves_no_trace_of_the_option(rendered, name):
    """`none` generates what the template generated before the option (byte for byte: checked
    against the commit before it when it was added); what the option brings is nowhere in it."""
    root = rendered({**NONE[name], "observability": "none"})
    project = files(root)
    assert "app/telemetry.py" not in project
    for path, text in project.items():
        if path.startswith("requirements") and path.endswith(".txt"):
            continue  # the locks: below
        found = [word for word in OPTION_WORDS if word in text]
        assert not found, f"{path} mentions {found}"
    fragments = ["base", *(["database-postgresql"] if NONE[name].get("database") == "postgresql" else [])]
    runtime = set(re.findall(r"^([a-z0-9._-]+)==", project["requirements.txt"], re.M))
    assert runtime == {
        name
        for fragment in fragments
        for name in re.findall(
            r"^([a-z0-9._-]+)==", (LOCK_FRAGMENTS / fragment / "requirements.txt").read_text(), re.M
        )
    }


@pytest.mark.parametrize("database", ["none", "postgresql"])
def test_opentelemetry_brings_its_module_packages_and_readme_section(rendered, database):
    root = rendered({**OTEL, "database": database})
    assert (root / "app/telemetry.py").is_file()
    main = (root / "app/main.py").read_text()
    # RequestTelemetry records the requests, on the providers telemetry.configure() sets; FastAPI's
    # own telemetry, which turns itself on with those providers, is off.
    assert "telemetry.configure()" in main and "telemetry=telemetry.FASTAPI" in main
    assert "app.add_middleware(telemetry.RequestTelemetry)" in main
    assert "telemetry.serve_metrics()" in main and "telemetry.flush()" in main
    assert ("telemetry.instrument_engine(" in main) == (database == "postgresql")
    # /ready's own database work is not traced, as its request is not.
    assert ("telemetry.untraced()" in main) == (database == "postgresql")
    assert '"trace_id"' in (root / "app/logs.py").read_text()
    direct = set((root / "requirements.in").read_text().split())
    assert {
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-sqlalchemy",
        "opentelemetry-exporter-prometheus",
    } <= direct
    # Not the contrib instrumentation's middleware (RequestTelemetry does what it would), nor
    # FastAPI's extra for its own telemetry.
    assert "opentelemetry-instrumentation-fastapi" not in direct
    assert "fastapi[opentelemetry]" not in direct
    runtime = set(re.findall(r"^([a-z0-9._-]+)==", (root / "requirements.txt").read_text(), re.M))
    base = set(re.findall(r"^([a-z0-9._-]+)==", (LOCK_FRAGMENTS / "base/requirements.txt").read_text(), re.M))
    added = runtime - base
    assert {"opentelemetry-sdk", "opentelemetry-exporter-prometheus", "prometheus-client"} <= added
    # OTLP over HTTP only: not the grpc exporter and its large native grpcio, not the distro.
    assert not added & {
        "grpcio",
        "opentelemetry-exporter-otlp-proto-grpc",
        "opentelemetry-distro",
        "opentelemetry-instrumentation-fastapi",
    }, added
    readme = (root / "README.md").read_text()
    assert "## Traces and metrics" in readme and "OTEL_EXPORTER_OTLP_ENDPOINT" in readme
    assert "/metrics" in readme and "\n\n\n" not in readme
    assert "`app/telemetry.py`" in readme


def test_the_lock_fragment_is_what_the_option_adds():
    fragment = LOCK_FRAGMENTS / "observability-opentelemetry"
    assert sorted(p.name for p in fragment.iterdir()) == ["requirements.txt"]
    assert "opentelemetry-sdk==" in (fragment / "requirements.txt").read_text()


def test_the_hook_refuses_opentelemetry_with_more_than_one_worker(tmp_path):
    result = cookiecutter_cli(tmp_path, "observability=opentelemetry", "workers=2")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert errors == [
        "ERROR: observability 'opentelemetry' is not valid: it needs workers '1', not '2' "
        "(one metrics port per container; scale with replicas)"
    ]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("answers", "refused"),
    [
        ({"observability": "opentelemetry", "workers": "1"}, False),
        ({"observability": "none", "workers": "4"}, False),
        ({"observability": "opentelemetry", "workers": "4"}, True),
    ],
)
def test_the_requires_rule(tmp_path, answers, refused):
    pre = load_hook("pre_gen_project", tmp_path, **answers)
    context = json.loads(pre.CONTEXT_JSON)
    errors = [str(e) for e in pre.validate(context, {})]
    assert errors == (
        [
            "observability 'opentelemetry' is not valid: it needs workers '1', not '4' "
            "(one metrics port per container; scale with replicas)"
        ]
        if refused
        else []
    )


@pytest.mark.parametrize("database", ["none", "postgresql"])
def test_the_generated_project_lints_and_tests_its_telemetry(tmp_path_factory, answers_venv, database):
    """The service tier for the option: the project's own `make lint test` (its telemetry tests
    among them: the caller's trace kept, log lines joined, probes untraced, one series per route)."""
    answers = {**OTEL, "database": database}
    venv = answers_venv(**answers)
    project = bake(tmp_path_factory.mktemp("otel-make"), **answers)
    result = make(project, venv, "lint", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    tests = re.findall(r"^def (test_\w+)", (project / "tests/test_main.py").read_text(), re.M)
    telemetry = [name for name in tests if "trace" in name or "metrics" in name]
    assert len(telemetry) >= 5, telemetry
    passed = int(re.search(r"(\d+) passed", result.stdout)[1])
    assert passed >= len(tests) and " failed" not in result.stdout, result.stdout[-2000:]
