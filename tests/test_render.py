"""Tier 2: every answer set renders into a correct project.

The product of the choice questions is several hundred answer sets, so the render tier covers them
pairwise (every pair of values of any two questions occurs in some rendered project), plus answer
sets of hostile but valid free text (support.project.RENDER_ANSWER_SETS); the deployment questions
(compose, Kubernetes, CI) are covered in full product. Each project is checked for leftover Jinja,
Python that compiles, a Dockerfile with the properties the README promises, parseable YAML and
TOML, a fully hash-pinned lock, and exactly the files and README sections its options ask for.
The linters' runs over the same projects are in test_linters.py.
"""

import itertools
import py_compile
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.dockerfile import from_image, lineage, parse, stages
from tests.support.generated import K8S_MANIFESTS
from tests.support.project import (
    LEFTOVER_JINJA,
    RENDER_ANSWER_SETS,
    TEMPLATE,
    answers_of,
    case_id,
    choices,
    leftover_jinja,
    option_files,
)

DEPLOY_QUESTIONS = ("use_compose", "use_kubernetes", "ci")
DEPLOY_ANSWER_SETS = [
    dict(zip(DEPLOY_QUESTIONS, values, strict=True))
    for values in itertools.product(*(choices()[question] for question in DEPLOY_QUESTIONS))
]


def expected_base_image(answers: dict) -> str:
    prefix = f"{answers['registry_prefix']}/" if answers["registry_prefix"] else ""
    slim = "-slim" if answers["base_image_flavour"] == "slim" else ""
    return f"{prefix}python:{answers['python_version']}{slim}-{answers['debian_release']}"


@pytest.fixture(scope="module", params=RENDER_ANSWER_SETS, ids=case_id)
def project(request, rendered) -> tuple[Path, dict]:
    """(root, full answers) of each render answer set's project."""
    root = rendered(request.param)
    return root, {**answers_of(request.param), "project_slug": root.name}


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_nothing_left_unrendered(project):
    root, _ = project
    for path in [root, *root.rglob("*")]:
        assert not LEFTOVER_JINJA.search(path.name), path
        if path.is_file():
            found = leftover_jinja(path.read_text())
            assert found is None, f"{path.relative_to(root)}: {found!r}"


def test_python_compiles(project):
    root, _ = project
    for path in root.rglob("*.py"):
        py_compile.compile(str(path), doraise=True)


def test_yaml_and_toml_parse(project):
    root, _ = project
    for path in files(root):
        if path.suffix in {".yaml", ".yml"}:
            assert list(yaml.safe_load_all(path.read_text())), path
        if path.suffix == ".toml":
            tomllib.loads(path.read_text())


def seconds(duration: str) -> float:
    """A Dockerfile duration (0.5s, 500ms, 30s) in seconds."""
    return float(duration.removesuffix("ms")) / 1000 if duration.endswith("ms") else float(duration[:-1])


def test_dockerfile_properties(project):
    root, answers = project
    instructions = parse(root / "Dockerfile")
    port = answers["port"]
    final = lineage(instructions)  # the production image: the last stage and the stages under it
    keywords = [i.keyword for i in final]
    stage_names = {i.args.split()[-1] for i in instructions if i.keyword == "FROM" and " AS " in i.args}

    # Every FROM is the literal base image the answers ask for (no ARG, so bots can update it), or a
    # stage of this Dockerfile.
    bases = {from_image(i) for i in instructions if i.keyword == "FROM"} - stage_names
    assert bases == {expected_base_image(answers)}
    # Every instruction says why it is there.
    assert all(i.comment for i in instructions), [i.args for i in instructions if not i.comment]
    # Dependencies are installed before the code is copied (code edits reuse the dependency layer),
    # and the code is the whole app/ package: a module or data file added there needs no edit here.
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies == ["requirements.txt ./", "app/ ./app/"]
    install = next(i for i in final if i.keyword == "RUN" and "requirements.txt" in i.args)
    assert final.index(install) < next(i for i, x in enumerate(final) if x.args == "app/ ./app/")
    assert "--require-hashes" in install.args
    assert "--mount=type=cache" in install.args and "--mount=type=secret,id=index_url" in install.args
    assert "--no-cache-dir" not in install.args  # the cache lives in the mount, not the image
    # The production image never holds the dev tools: only the `dev` stage installs their lock.
    assert "requirements-dev.txt" not in " ".join(i.args for i in final)
    # The dev stage exists for compose's dev service, and only with it.
    assert ("dev" in stage_names) == answers["use_compose"]
    ignored = (root / ".dockerignore").read_text().splitlines()
    assert ("!requirements-dev.txt" in ignored) == answers["use_compose"]
    assert "!app/" in ignored and "!requirements.txt" in ignored
    if answers["use_compose"]:
        dev = lineage(instructions, "dev")
        assert any(i.keyword == "RUN" and "requirements-dev.txt" in i.args for i in dev)
        dev_command = [i for i in dev if i.keyword == "CMD"][-1].exec_form()
        assert dev_command[-5:] == ["uvicorn", "app.main:app", "--reload", "--reload-dir", "app"]
    # Unprivileged, numeric, >= 10000.
    [user] = [i.args for i in final if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert int(uid) >= 10000 and int(gid) >= 10000
    assert keywords.index("USER") > keywords.index("COPY")
    # The chosen port in one place, uvicorn's own variable, which the CMDs and the probe read.
    # With the metrics, their port too (OpenTelemetry's Prometheus exporter's; test_prometheus.py).
    metrics = ["9464"] if answers["observability"] == "opentelemetry" else []
    assert [i.args for i in final if i.keyword == "EXPOSE"] == ["${UVICORN_PORT}", *metrics]
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert f"UVICORN_PORT={port}" in env and "UVICORN_HOST=0.0.0.0" in env
    [cmd] = [i for i in final if i.keyword == "CMD"]
    assert cmd.exec_form() == ["uvicorn", "app.main:app"]
    [health] = [i for i in final if i.keyword == "HEALTHCHECK"]
    # The probe itself is run for real in test_production_render.py.
    assert "/dev/tcp/127.0.0.1/$UVICORN_PORT" in health.args and "GET /health " in health.args
    # Probed often while starting (healthy within a second), rarely afterwards (a cost paid all day),
    # with a start period long enough for a slow host.
    timing = {flag: seconds(value) for flag, value in re.findall(r"--([a-z-]+)=([0-9.]+m?s)", health.args)}
    assert timing["start-interval"] <= 0.5 and timing["interval"] >= 30, timing
    assert timing["start-period"] >= 20 and timing["timeout"] < timing["interval"], timing
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and f"WEB_CONCURRENCY={answers['workers']}" in env
    labels = " ".join(i.args for i in final if i.keyword == "LABEL")
    assert f'org.opencontainers.image.title="{answers["project_name"]}"' in labels
    assert f'org.opencontainers.image.description="{answers["description"]}"' in labels
    # Build facts come in as build arguments (make, compose and CI pass them).
    args = " ".join(i.args for i in final if i.keyword == "ARG").split()
    for name in ("version", "revision", "created", "source"):
        assert f'org.opencontainers.image.{name}="${{{name.upper()}}}"' in labels, name
        assert name.upper() in args, name
    assert ("uv pip install" in install.args) == (answers["installer"] == "uv")
    # uv, where used, comes from its own hash-pinned lock, into a stage the final image only mounts from.
    builder = [stage for stage in stages(instructions) if stage[0].args.endswith(" AS uv")]
    assert len(builder) == (answers["installer"] == "uv")
    for stage in builder:
        (run,) = [i for i in stage if i.keyword == "RUN"]
        assert "--require-hashes" in run.args and "-r /tmp/requirements-build.txt" in run.args
        assert "source=requirements-build.txt" in run.args and "uv==" not in run.args
        assert "!requirements-build.txt" in (root / ".dockerignore").read_text().splitlines()


def test_requirements_are_fully_pinned_with_hashes(project):
    root, answers = project
    locks = ["requirements.txt", "requirements-dev.txt"]
    assert (root / "requirements-build.txt").exists() == (answers["installer"] == "uv")
    for name in [*locks, *(["requirements-build.txt"] if answers["installer"] == "uv" else [])]:
        text = (root / name).read_text()
        entries = [e for e in re.split(r"\n(?=\S)", text) if e.strip() and not e.startswith("#")]
        assert entries, name
        for entry in entries:
            assert re.match(r"^[a-z0-9._-]+(\[[a-z,]+\])?==[^ ;]+", entry), entry.splitlines()[0]
            assert "--hash=sha256:" in entry, entry.splitlines()[0]


def lock_names(lock: str) -> set[str]:
    return set(re.findall(r"^([a-z0-9._-]+)==", lock, re.MULTILINE))


def test_the_runtime_lock_holds_what_runs_and_the_dev_lock_the_rest(project):
    root, _ = project
    runtime = lock_names((root / "requirements.txt").read_text())
    dev = lock_names((root / "requirements-dev.txt").read_text())
    # uvicorn with its event loop and HTTP parser; the reload watcher, WebSockets and YAML only for dev.
    assert {"fastapi", "uvicorn", "uvloop", "httptools"} <= runtime
    assert not runtime & {"watchfiles", "websockets", "pyyaml", "pytest", "ruff", "uv"}, runtime
    assert runtime <= dev and {"watchfiles", "pytest", "ruff", "uv"} <= dev


def test_option_files(project):
    """Exactly the files its answers keep (cookiecutter.json's `_options`); the fragments are gone."""
    root, answers = project
    assert {path: (root / path).exists() for path in option_files(answers)} == option_files(answers)
    assert not (root / "lock-fragments").exists()


@pytest.mark.parametrize("answer_set", DEPLOY_ANSWER_SETS, ids=case_id)
def test_deployment_files_and_readme_sections_follow_the_options(rendered, answer_set):
    root = rendered(answer_set)
    readme = (root / "README.md").read_text()
    sections = {
        "## Run it with Docker Compose": answer_set["use_compose"],
        "## Run it on Docker Swarm": answer_set["use_compose"],
        "## Run it on Kubernetes": answer_set["use_kubernetes"],
        "## Continuous integration": answer_set["ci"] != "none",
        "`.github/workflows/ci.yml`": answer_set["ci"] == "github",
        "`.gitlab-ci.yml`": answer_set["ci"] == "gitlab",
    }
    assert {s: s in readme for s in sections} == sections
    assert "\n\n\n" not in readme, "the optional sections leave a double blank line"
    assert not (root / "k8s").exists() or sorted(p.name for p in (root / "k8s").iterdir()) == sorted(
        ["kustomization.yaml", *K8S_MANIFESTS]
    )
    expected = option_files(answers_of(answer_set))
    assert {path: (root / path).exists() for path in expected} == expected
    kept = [root / path for path, wanted in expected.items() if wanted]
    for file in [p for path in kept for p in [path, *path.rglob("*")] if p.is_file()]:
        found = leftover_jinja(file.read_text())
        assert found is None, f"{file.relative_to(root)}: {found!r}"


# ---- through pytest-cookies' `cookies`, as a fork of this template extends its tests -------------


@pytest.mark.parametrize(
    ("answers", "fields"),
    [
        ({"project_slug": "a/b"}, ["project_slug"]),
        ({"project_slug": ""}, ["project_slug"]),
        ({"project_slug": "x" * 300}, ["project_slug"]),
        ({"project_slug": "a\x00b"}, ["project_slug"]),
        ({"project_name": "🚀"}, ["project_name"]),
        ({"project_name": "x" * 300}, ["project_name"]),
        ({"project_name": 42, "port": 0, "workers": True}, ["port", "workers"]),  # the name renders as "42"
        ({"use_kubernetes": 1}, ["use_kubernetes"]),
    ],
)
def test_api_callers_get_the_same_refusal(cookies, capfd, tmp_path, answers, fields):
    result = cookies.bake(extra_context=answers, template=str(TEMPLATE))
    assert result.exit_code != 0 and result.project_path is None
    assert type(result.exception).__name__ == "FailedHookException"
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("ERROR: ")]
    assert [line.split()[1] for line in errors if "is not valid" in line] == fields
    # The output directory pytest-cookies made for the bake stays empty.
    assert [p.name for p in (tmp_path / "cookies").rglob("*")] == ["bake00"]


def test_api_default_slug_follows_the_hooks_rule(cookies):
    result = cookies.bake(extra_context={"project_name": "2FA Service"}, template=str(TEMPLATE))
    assert result.exit_code == 0, result.exception
    assert result.project_path.name == "svc-2fa-service"
