"""The `database` option, rendered: `none` generates what the template generated before it existed,
`postgresql` the files of a persisted, health-gated data path.

`none` has no database file or line and the default locks. `postgresql` has its files and its own
locks (the post-gen hook moves them into place, idempotently), compose's `db` and `migrate`
services with the promised properties (a literal image tag a bot updates, a named volume,
pg_isready, no published port, DNS round-robin on a Swarm, the password a secret's file kept out of
git and the build context), and Kubernetes wiring (DATABASE_URL from a Secret, readiness on /ready,
liveness on /health, egress to 5432, no database of its own). The linters' runs over this project
are rows of test_linters.py; its lint, unit tests and locks are checked in test_service.py, its
containers in test_database_compose.py and test_swarm.py.
"""

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from tests.support import dockerfile
from tests.support.generated import k8s_objects, load_yaml
from tests.support.hooks import load_hook
from tests.support.project import DATABASE_ANSWER_SETS, LOCK_FRAGMENTS, SERVICE, TEMPLATE, bake, run, tool

DATABASE_FILES = ["app/db.py", "app/items.py", "app/alembic.ini", "app/alembic/env.py"]
# What only the database option brings; none of it may appear in a `none` project.
DATABASE_WORDS = [
    "sqlalchemy",
    "alembic",
    "psycopg",
    "DATABASE_URL",
    "/ready",
    "db_password",
    "db-password",
    "postgres:",
    "pg_isready",
    "migrate",
]


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def postgresql_project(rendered) -> Path:
    """The complete project with the database option (shared: no test may change it)."""
    return rendered(DATABASE_ANSWER_SETS["postgresql"])


def test_none_generates_no_database_file_or_line(github_project):
    """The complete `github` project (database `none`, the default)."""
    root = github_project
    # Exactly the template's files less the other options' (k8s on, GitHub CI, pip).
    expected = {
        re.sub(r"^\{\{cookiecutter.__project_dir\}\}/", "", str(p.relative_to(TEMPLATE)))
        for p in SERVICE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    unused = (
        "app/db.py",
        "app/items.py",
        "app/alembic",
        "app/telemetry.py",
        "observability/",
        "k8s/monitoring/",
        ".gitlab-ci.yml",
        "renovate.json",
        "requirements-build",
    )
    expected = {f for f in expected if not f.startswith((*unused, "lock-fragments/"))}
    assert files(root) == expected | {"requirements.txt", "requirements-dev.txt"}
    for relative in sorted(files(root)):
        text = (root / relative).read_text()
        found = [word for word in DATABASE_WORDS if word in text]
        assert not found, f"{relative} mentions {found}"
    assert (root / "requirements.txt").read_text() == (
        LOCK_FRAGMENTS / "base" / "requirements.txt"
    ).read_text()
    compose = load_yaml(root / "compose.yaml")
    assert list(compose["services"]) == ["app"] and "volumes" not in compose and "secrets" not in compose


def test_postgresql_has_its_files_locks_dependencies_and_readme_section(postgresql_project):
    root = postgresql_project
    present = files(root)
    assert set(DATABASE_FILES) <= present
    assert sorted(p for p in present if p.startswith("app/alembic/versions/")) == [
        "app/alembic/versions/20260101_0001_create_items.py",
        "app/alembic/versions/20260201_0002_bigint_item_ids.py",
    ]
    direct = (root / "requirements.in").read_text().split()
    assert {"sqlalchemy[asyncio]", "psycopg[binary]", "alembic"} <= set(direct)
    pinned = (root / "requirements.txt").read_text()
    for package in ("sqlalchemy", "psycopg", "psycopg-binary", "alembic", "greenlet"):
        assert re.search(rf"^{package}==\S+ ", pinned, re.M), package
    readme = (root / "README.md").read_text()
    assert "## The database" in readme and "revision --autogenerate" in readme
    assert "\n\n\n" not in readme


def entry(pin: str, *via: str) -> str:
    """A lock entry as uv writes it."""
    sources = [f"    # via {via[0]}"] if len(via) == 1 else ["    # via", *(f"    #   {s}" for s in via)]
    return "\n".join([f"{pin} \\", f"    --hash=sha256:{pin[0] * 4}", *sources]) + "\n"


def test_assemble_locks_unites_the_fragments_of_the_answers_once(tmp_path):
    post = load_hook("post_gen_project", tmp_path, database="postgresql")
    context = post.json.loads(post.CONTEXT_JSON)
    root = tmp_path / "project"
    fragments = {
        "base/requirements.txt": "# runtime\n" + entry("a==1", "-r requirements.in") + entry("c==1", "a"),
        "database-postgresql/requirements.txt": "# runtime\n"
        + entry("b==2", "-r requirements.in")
        + entry("c==1", "b"),
        "base/requirements-dev.txt": "# dev\n" + entry("a==1", "d") + entry("d==3", "-r requirements-dev.in"),
    }
    for name, text in fragments.items():
        (root / post.FRAGMENTS / name).parent.mkdir(parents=True, exist_ok=True)
        (root / post.FRAGMENTS / name).write_text(text)
    (root / "requirements.in").write_text("a\nb\n")
    (root / "requirements-dev.in").write_text("-r requirements.in\n-c requirements.txt\nd\n")
    for _ in range(2):  # cruft re-runs the hook: the second run finds the locks made, the fragments gone
        post.assemble_locks(root, context)
        post.remove_paths(root, post.unused_paths(context))
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["requirements.in", "requirements-dev.in", *LOCKS]
    )
    runtime = (
        entry("a==1", "-r requirements.in") + entry("b==2", "-r requirements.in") + entry("c==1", "a", "b")
    )
    assert (root / "requirements.txt").read_text() == "# runtime\n" + runtime
    assert (root / "requirements-dev.txt").read_text() == "# dev\n" + "".join(
        [
            entry("a==1", "-c requirements.txt", "-r requirements.in", "d"),
            entry("b==2", "-c requirements.txt", "-r requirements.in"),
            entry("c==1", "-c requirements.txt", "a", "b"),
            entry("d==3", "-r requirements-dev.in"),
        ]
    )


LOCKS = ["requirements.txt", "requirements-dev.txt"]


def test_compose_database_properties(postgresql_project):
    root = postgresql_project
    compose = load_yaml(root / "compose.yaml")
    assert list(compose["services"]) == ["app", "migrate", "db"]
    app, migrate, db = (compose["services"][name] for name in ("app", "migrate", "db"))
    # The official image, a literal tag the update bots can read.
    assert db["image"] == "postgres:17"
    assert db["volumes"] == ["db-data:/var/lib/postgresql/data"] and "db-data" in compose["volumes"]
    assert "pg_isready" in db["healthcheck"]["test"] and "127.0.0.1" in db["healthcheck"]["test"]
    assert "ports" not in db, "the database is not published to the host"
    assert db["networks"] == ["backend"] == app["networks"] == migrate["networks"]
    assert db["deploy"]["replicas"] == 1 and db["deploy"]["placement"]["constraints"]
    # On a Swarm its name resolves to its one task: no virtual IP, whose balancer drops idle
    # pooled connections.
    assert db["deploy"]["endpoint_mode"] == "dnsrr"
    # The password: only as the secret's file, never a value in the file.
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert "POSTGRES_PASSWORD" not in db["environment"]
    for service in (app, migrate):
        assert service["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://app@db:5432/")
        assert service["environment"]["DATABASE_PASSWORD_FILE"] == "/run/secrets/db_password"
        assert service["secrets"] == ["db_password"] and service["read_only"] is True
    assert db["secrets"] == ["db_password"]
    assert compose["secrets"] == {"db_password": {"file": "./db-password.txt"}}
    assert migrate["command"] == ["alembic", "-c", "app/alembic.ini", "upgrade", "head"]
    assert (
        migrate["image"] == app["image"] and migrate["deploy"]["restart_policy"]["condition"] == "on-failure"
    )
    # Compose-only ordering lives in the override (Swarm's parser rejects conditions).
    override = load_yaml(root / "compose.override.yaml")["services"]
    assert override["app"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert override["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    # Dev mode: the app's database settings and secret (it extends `app`: no copy of them); it
    # waits for the database only, and migrates from its own (mounted) code, so it needs no
    # production image.
    dev = override["dev"]
    assert dev["extends"] == {"file": "compose.yaml", "service": "app"}
    assert "environment" not in dev and "secrets" not in dev
    assert app["environment"]["DATABASE_URL"] and app["secrets"] == ["db_password"]
    assert dev["depends_on"] == {"db": {"condition": "service_healthy"}}
    # The dev image's command migrates, then serves: the one dev command, compose has no copy.
    assert "command" not in dev
    dev_stage = dockerfile.lineage(dockerfile.parse(root / "Dockerfile"), "dev")
    (cmd,) = [instruction for instruction in dev_stage if instruction.keyword == "CMD"]
    assert cmd.exec_form()[:5] == [
        "sh",
        "-c",
        'alembic -c app/alembic.ini upgrade head && exec "$@"',
        "dev",
        "uvicorn",
    ]


def test_a_bot_keeps_the_database_image_current(postgresql_project):
    """Dependabot's docker-compose ecosystem reads compose.yaml's literal `postgres:17` (the file's
    schema: test_linters.py)."""
    config = load_yaml(postgresql_project / ".github" / "dependabot.yml")
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert sorted(updates) == ["docker", "docker-compose", "github-actions", "uv"]
    assert (
        updates["docker-compose"]["directory"] == "/"
        and updates["docker-compose"]["cooldown"]["default-days"] >= 7
    )


def test_the_password_file_is_long_and_stays_out_of_git_the_build_context_and_every_other_file(tmp_path):
    """`make db-password.txt` (a project of its own: this one writes to it)."""
    root = bake(tmp_path, **DATABASE_ANSWER_SETS["postgresql"])
    result = run(["make", "--no-print-directory", "db-password.txt"], cwd=root)
    assert result.returncode == 0, result.stderr
    password = (root / "db-password.txt").read_text().strip()
    assert len(password) >= 24
    run(["git", "init", "--quiet"], cwd=root)
    ignored = run(["git", "check-ignore", "db-password.txt"], cwd=root)
    assert ignored.returncode == 0, "git would commit db-password.txt"
    # The build context: .dockerignore is an allow-list; nothing in it lets the file in.
    dockerignore = (root / ".dockerignore").read_text().splitlines()
    patterns = [line for line in dockerignore if line.startswith("!")]
    assert patterns and not [p for p in patterns if fnmatch("db-password.txt", p[1:].rstrip("/"))]
    assert "*" in dockerignore
    for relative in files(root) - {"db-password.txt"}:
        assert password not in (root / relative).read_text(), relative


def test_kubernetes_takes_the_url_from_a_secret_and_probes_readiness_on_ready(postgresql_project):
    root = postgresql_project
    deployment = k8s_objects(root)["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": f"{root.name}-database", "key": "url"}
    }
    assert "value" not in env["DATABASE_URL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["timeoutSeconds"] > 2, "above /ready's own 2 s limit"
    # checkov's one skip beyond the base's (test_linters.py), justified where it applies.
    annotations = deployment["metadata"]["annotations"]
    assert {k: v.split("=", 1)[0] for k, v in annotations.items()} == {"checkov.io/skip1": "CKV_K8S_35"}
    assert "Secret" in annotations["checkov.io/skip1"].split("=", 1)[1]
    # What `kubectl apply -k` applies keeps the reference to the Secret.
    rendered = run([tool("kubectl"), "kustomize", str(root / "k8s")])
    assert rendered.returncode == 0, rendered.stderr
    objects = list(yaml.safe_load_all(rendered.stdout))
    (applied,) = [o for o in objects if o["kind"] == "Deployment"]
    applied_env = applied["spec"]["template"]["spec"]["containers"][0]["env"]
    assert any(e["name"] == "DATABASE_URL" and "secretKeyRef" in e["valueFrom"] for e in applied_env)


def test_kubernetes_ships_no_database_and_lets_the_pods_out_to_port_5432(postgresql_project):
    """A managed database is the usual choice: the base has no StatefulSet, only the way out to one."""
    root = postgresql_project
    kinds = {load_yaml(p)["kind"] for p in (root / "k8s").glob("*.yaml") if p.name != "kustomization.yaml"}
    assert "StatefulSet" not in kinds
    egress = load_yaml(root / "k8s" / "networkpolicy.yaml")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 5432}]} in egress
