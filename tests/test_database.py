"""The `database` option: `none` generates what the template generated before it existed,
`postgresql` a working, persisted, health-gated data path.

Render level (no Docker): `none` has no database file or line and the default locks; `postgresql`
has its files, its own locks (the post-gen hook puts them in place), compose's `db` and `migrate`
services with the promised properties (literal image tag, named volume, pg_isready, not
published, secret file kept out of git and the build context), Kubernetes wiring (DATABASE_URL
from a Secret, readiness on /ready, liveness on /health, egress to 5432) that passes
kubernetes-validate, kustomize and checkov.

Service level: the postgresql project's own lint and unit tests pass (without a database), and
`make lock` reproduces its committed locks.

Docker level (marker `docker`): `docker compose up --wait` with the database; the example
resource writes and reads back; the data survives `down` and `up`, and goes with `down -v`; the
app and the database share the project network and the database publishes no port; with the
database down the app starts, is live and not ready, and becomes ready when the database is
back; the migrations match the models (`alembic check`); the compose file deploys as a Swarm
stack with the database (one replica, placed, its volume); the README's database walk-through
runs as written. The tests rely on the official postgres image's documented contract only.
"""

import contextlib
import json
import os
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from conftest import (
    INDEX_URL_ENV,
    SERVICE,
    TEMPLATE,
    bake,
    docker,
    free_port,
    tool,
    unique,
    wait_until,
)
from hooks_loader import load_hook

DATABASE_FILES = ["app/db.py", "app/items.py", "app/alembic.ini", "app/alembic/env.py"]
TEMPLATE_LOCKS = {
    "requirements-postgresql.txt": "requirements.txt",
    "requirements-dev-postgresql.txt": "requirements-dev.txt",
}
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
# checkov's checks that do not fit a kustomize base, as tests/test_deploy.py skips them (reasons there).
CHECKOV_K8S_SKIPS = ["CKV_K8S_21", "CKV_K8S_43", "CKV_K8S_14", "CKV_K8S_15"]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def run(
    command: list[str], cwd: Path | None = None, timeout: float = 600, **kwargs
) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def none_project(tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp("db-none"), use_kubernetes=True)


@pytest.fixture(scope="module")
def pg_project(tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp("db-pg"), database="postgresql", use_kubernetes=True)


# --- render level ------------------------------------------------------------------------------------


def test_none_generates_no_database_file_or_line(none_project):
    root = none_project
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
        ".gitlab-ci.yml",
        "renovate.json",
        "requirements-build",
    )
    expected = {f for f in expected if not f.startswith(unused) and f not in TEMPLATE_LOCKS}
    assert files(root) == expected
    for relative in sorted(files(root)):
        text = (root / relative).read_text()
        found = [word for word in DATABASE_WORDS if word in text]
        assert not found, f"{relative} mentions {found}"
    assert (root / "requirements.txt").read_text() == (SERVICE / "requirements.txt").read_text()
    assert (root / "requirements-dev.txt").read_text() == (SERVICE / "requirements-dev.txt").read_text()
    compose = load(root / "compose.yaml")
    assert list(compose["services"]) == ["app"] and "volumes" not in compose and "secrets" not in compose


def test_postgresql_has_its_files_and_locks(pg_project):
    root = pg_project
    present = files(root)
    assert set(DATABASE_FILES) <= present
    assert [p for p in present if p.startswith("app/alembic/versions/")] == [
        "app/alembic/versions/20260101_0001_create_items.py"
    ]
    assert not set(TEMPLATE_LOCKS) & present, "the template's postgresql locks are moved into place"
    for template_lock, project_lock in TEMPLATE_LOCKS.items():
        assert (root / project_lock).read_text() == (SERVICE / template_lock).read_text(), project_lock
    direct = (root / "requirements.in").read_text().split()
    assert {"sqlalchemy[asyncio]", "psycopg[binary]", "alembic"} <= set(direct)
    pinned = (root / "requirements.txt").read_text()
    for package in ("sqlalchemy", "psycopg", "psycopg-binary", "alembic", "greenlet"):
        assert re.search(rf"^{package}==\S+ ", pinned, re.M), package
    readme = (root / "README.md").read_text()
    assert "## The database" in readme and "revision --autogenerate" in readme
    assert "\n\n\n" not in readme


def test_select_locks_is_idempotent(tmp_path):
    post = load_hook("post_gen_project", tmp_path, database="postgresql")
    root = tmp_path / "project"
    root.mkdir()
    for name in ("requirements.txt", "requirements-dev.txt"):
        (root / name).write_text("default\n")
    for name in TEMPLATE_LOCKS:
        (root / name).write_text("postgresql\n")
    for _ in range(2):  # cruft re-runs the hook
        post.select_locks(root, {"database": "postgresql"})
        post.remove_paths(root, post.unused_paths({**post.json.loads(post.CONTEXT_JSON)}))
    assert sorted(p.name for p in root.iterdir()) == ["requirements-dev.txt", "requirements.txt"]
    assert {p.read_text() for p in root.iterdir()} == {"postgresql\n"}


def test_compose_database_properties(pg_project):
    root = pg_project
    compose = load(root / "compose.yaml")
    assert list(compose["services"]) == ["app", "migrate", "db"]
    app, migrate, db = (compose["services"][name] for name in ("app", "migrate", "db"))
    # The official image, a literal tag the update bots can read.
    assert db["image"] == "postgres:17"
    assert db["volumes"] == ["db-data:/var/lib/postgresql/data"] and "db-data" in compose["volumes"]
    assert "pg_isready" in db["healthcheck"]["test"] and "127.0.0.1" in db["healthcheck"]["test"]
    assert "ports" not in db, "the database is not published to the host"
    assert db["networks"] == ["backend"] == app["networks"] == migrate["networks"]
    assert db["deploy"]["replicas"] == 1 and db["deploy"]["placement"]["constraints"]
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
    override = load(root / "compose.override.yaml")["services"]
    assert override["app"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert override["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}


def test_yamllint_passes_on_the_database_files(pg_project, tmp_path):
    """The same yamllint settings as tests/test_deploy.py's for the deployment files."""
    config = tmp_path / "yamllint.yaml"
    config.write_text(
        "extends: default\nrules:\n  document-start: disable\n  line-length: {max: 100}\n"
        "  truthy: {check-keys: false}\n  comments: {min-spaces-from-content: 1}\n"
    )
    paths = sorted(str(p) for p in pg_project.rglob("*") if p.suffix in {".yaml", ".yml"})
    assert len(paths) >= 8, paths
    result = run([tool("yamllint"), "--strict", "--config-file", str(config), *paths])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_bot_keeps_the_database_image_current(pg_project):
    """Dependabot's docker-compose ecosystem reads compose.yaml's literal `postgres:17`."""
    config = pg_project / ".github" / "dependabot.yml"
    updates = {u["package-ecosystem"]: u for u in load(config)["updates"]}
    assert sorted(updates) == ["docker", "docker-compose", "github-actions", "uv"]
    assert (
        updates["docker-compose"]["directory"] == "/"
        and updates["docker-compose"]["cooldown"]["default-days"] >= 7
    )
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_password_file_stays_out_of_git_and_the_build_context(pg_project, tmp_path):
    root = pg_project
    result = run(["make", "--no-print-directory", "db-password.txt"], cwd=root)
    assert result.returncode == 0, result.stderr
    password = (root / "db-password.txt").read_text().strip()
    assert len(password) >= 24
    try:
        run(["git", "init", "--quiet"], cwd=root)
        ignored = run(["git", "check-ignore", "db-password.txt"], cwd=root)
        assert ignored.returncode == 0, "git would commit db-password.txt"
        # The build context: .dockerignore is an allow-list; nothing in it lets the file in.
        patterns = [
            line for line in (root / ".dockerignore").read_text().splitlines() if line.startswith("!")
        ]
        assert patterns and not [p for p in patterns if fnmatch("db-password.txt", p[1:].rstrip("/"))]
        assert "*" in (root / ".dockerignore").read_text().splitlines()
        for relative in files(root) - {"db-password.txt"}:
            assert password not in (root / relative).read_text(), relative
    finally:
        (root / "db-password.txt").unlink()
        subprocess.run(["rm", "-rf", str(root / ".git")], check=True)


def test_kubernetes_takes_the_url_from_a_secret_and_probes_readiness(pg_project):
    root = pg_project
    deployment = load(root / "k8s" / "deployment.yaml")
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
    kinds = {load(p)["kind"] for p in (root / "k8s").glob("*.yaml") if p.name != "kustomization.yaml"}
    assert "StatefulSet" not in kinds
    egress = load(root / "k8s" / "networkpolicy.yaml")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 5432}]} in egress


def test_kubernetes_manifests_validate_kustomize_and_pass_checkov(pg_project, tmp_path):
    root = pg_project
    from kubernetes_validate.utils import latest_version

    manifests = sorted(str(p) for p in (root / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
    result = run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", latest_version(), *manifests]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = run([tool("kubectl"), "kustomize", str(root / "k8s")])
    assert rendered.returncode == 0, rendered.stderr
    objects = list(yaml.safe_load_all(rendered.stdout))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert any(e["name"] == "DATABASE_URL" and "secretKeyRef" in e["valueFrom"] for e in env)
    command = [tool("checkov"), "--directory", str(root / "k8s"), "--framework", "kubernetes"]
    command += ["--output", "json", "--skip-download", "--skip-check", ",".join(CHECKOV_K8S_SKIPS)]
    report = json.loads(run(command).stdout)
    failed = [f"{c['check_id']} {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert not failed, failed
    # One skip beyond the base's, justified in the Deployment: the URL as an env var from a Secret.
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped - set(CHECKOV_K8S_SKIPS) == {"CKV_K8S_35"}
    assert report["summary"]["passed"] > 0


# --- service level -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_venv() -> Path:
    """A venv with the postgresql dev lock, installed the way `make install` does (cached)."""
    import hashlib
    import sys

    lock = SERVICE / "requirements-dev-postgresql.txt"
    cache = TEMPLATE / "build" / f"service-venv-{hashlib.sha256(lock.read_bytes()).hexdigest()[:12]}"
    if not (cache / "bin" / "pytest").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache)], check=True)
        pip = [str(cache / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--require-hashes", "-r", str(lock)], check=True)
    return cache


def make(project: Path, venv: Path, *targets: str, **env: str) -> subprocess.CompletedProcess:
    return run(["make", *targets, f"VENV={venv}"], cwd=project, env={**os.environ, **env})


def test_postgresql_project_lints_and_tests_without_a_database(pg_project, pg_venv):
    result = make(pg_project, pg_venv, "lint", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 passed, 2 deselected" in result.stdout


def pins(lock: str) -> dict[str, tuple[str, frozenset[str]]]:
    result = {}
    for entry in re.split(r"\n(?=[a-z])", lock):
        if "==" in entry:
            name, _, rest = entry.partition("==")
            result[name] = (re.split(r"[ ;]", rest)[0], frozenset(re.findall(r"sha256:(\w+)", entry)))
    return result


def test_make_lock_reproduces_the_postgresql_locks(tmp_path, pg_venv):
    project = bake(tmp_path, database="postgresql", python_version="3.11")
    before = {n: (project / n).read_text() for n in ("requirements.txt", "requirements-dev.txt")}
    env = {"SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE") or os.environ.get("PIP_CERT", "")}
    result = make(project, pg_venv, "lock", **{k: v for k, v in env.items() if v})
    assert result.returncode == 0, result.stdout + result.stderr
    for name, text in before.items():
        assert pins((project / name).read_text()) == pins(text), (
            f"`make lock` changed {name}: the lock is stale"
        )


# --- docker level ------------------------------------------------------------------------------------


def compose_env(**variables: str) -> dict:
    """The environment of a user's shell, plus the mirror (if any) the way the README says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for name in ("INDEX_URL", "BUILD_NETWORK", "HOST_PORT", "TAG"):
        env.pop(name, None)
    if os.environ.get(INDEX_URL_ENV):
        env["INDEX_URL"] = os.environ[INDEX_URL_ENV]
        env["BUILD_NETWORK"] = os.environ.get("FASTAPI_DOCKER_BUILD_NETWORK", "host")
    env.update(variables)
    return env


def request(method: str, url: str, body: dict | None = None, timeout: float = 3) -> tuple[int, object]:
    """(status, JSON body) of one HTTP request; error statuses are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    call = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text


def remove_images(project: str) -> None:
    images = docker("images", "--quiet", "--filter", f"label=com.docker.compose.project={project}").stdout
    if images.split():
        docker("rmi", "--force", *sorted(set(images.split())), check=False)


class Stack:
    """One Compose project of the generated service, with its own name and host port."""

    def __init__(self, root: Path, project: str) -> None:
        self.root, self.project, self.port = root, project, free_port()
        self.env = compose_env(HOST_PORT=str(self.port), TAG="db")

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = run(
            ["docker", "compose", "--project-name", self.project, *args],
            cwd=self.root,
            env=self.env,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, (
                f"docker compose {' '.join(args)}:\n{result.stdout}\n{result.stderr[-4000:]}"
            )
        return result

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def container(self, service: str) -> dict:
        (cid,) = self.compose("ps", "--all", "--quiet", service).stdout.split()
        return json.loads(docker("inspect", cid).stdout)[0]

    def volume(self) -> str:
        return f"{self.project}_db-data"

    def volume_exists(self) -> bool:
        return docker("volume", "inspect", self.volume(), check=False).returncode == 0


@pytest.fixture(scope="module")
def db_service(tmp_path_factory, docker_ready) -> Path:
    """One postgresql project, its password file and its image, built once for the module."""
    root = bake(tmp_path_factory.mktemp("db-docker"), database="postgresql", project_slug=unique("dbtest"))
    result = run(["make", "--no-print-directory", "db-password.txt"], cwd=root)
    assert result.returncode == 0, result.stderr
    started = time.monotonic()
    build = run(["docker", "compose", "build", "app"], cwd=root, env=compose_env(TAG="db"), timeout=1200)
    assert build.returncode == 0, build.stderr[-4000:]
    print(f"\nimage {root.name}:db built in {time.monotonic() - started:.1f} s")
    try:
        yield root
    finally:
        docker("rmi", "--force", f"{root.name}:db", check=False)


@pytest.fixture
def stack(db_service) -> Stack:
    """A Compose project; its containers, network, volume and images go afterwards."""
    stack = Stack(db_service, unique("dbtest"))
    yield stack
    stack.compose("down", "--volumes", "--remove-orphans", check=False)
    remove_images(stack.project)


@pytest.mark.docker
def test_compose_data_persists_on_a_private_network(stack):
    started = time.monotonic()
    stack.compose("up", "--wait")
    print(f"\ncompose up --wait with the database: {time.monotonic() - started:.1f} s")
    assert request("GET", stack.url("/ready")) == (200, {"status": "ok"})
    status, item = request("POST", stack.url("/items"), {"name": "first"})
    assert status == 201 and item["name"] == "first", item
    item_url = stack.url(f"/items/{item['id']}")
    assert request("GET", item_url) == (200, item)
    # The migrations match the models: Alembic finds nothing to add.
    check = stack.compose("run", "--rm", "migrate", "alembic", "-c", "app/alembic.ini", "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    # One network of the project's own holds both; the database publishes nothing on the host.
    network = json.loads(docker("network", "inspect", f"{stack.project}_backend").stdout)[0]
    on_network = {c["Name"] for c in network["Containers"].values()}
    app, db = stack.container("app"), stack.container("db")
    assert {app["Name"].lstrip("/"), db["Name"].lstrip("/")} <= on_network
    assert not db["HostConfig"]["PortBindings"]
    assert all(not bindings for bindings in db["NetworkSettings"]["Ports"].values()), db["NetworkSettings"][
        "Ports"
    ]
    # `docker compose port` answers ":0" (or fails) for a port published nowhere.
    published = stack.compose("port", "db", "5432", check=False)
    assert published.returncode != 0 or published.stdout.strip() in {"", ":0"}, published.stdout
    # The app's DATABASE_URL names the host `db`: the service's name on that network.
    names = db["NetworkSettings"]["Networks"][f"{stack.project}_backend"]
    assert "db" in (names.get("DNSNames") or []) + (names.get("Aliases") or []), names
    # The password is in no container's configuration, only in the secret's file.
    password = (stack.root / "db-password.txt").read_text().strip()
    for container in (app, db):
        assert password not in json.dumps(container["Config"]), container["Name"]
    # The database server runs unprivileged: every process as the image's `postgres` user.
    postgres_uid = docker("exec", db["Id"], "id", "-u", "postgres").stdout.strip()
    uids = [line.split()[1] for line in docker("top", db["Id"], "-o", "pid,uid").stdout.splitlines()[1:]]
    assert postgres_uid != "0" and uids and set(uids) == {postgres_uid}, (postgres_uid, uids)

    # `down` keeps the named volume, so the data outlives the containers...
    stack.compose("down")
    assert stack.volume_exists() and not stack.compose("ps", "--all", "--quiet").stdout.split()
    stack.compose("up", "--wait")
    assert request("GET", item_url) == (200, item), "the data did not survive down/up"
    # ...and `down --volumes` removes it, and the data with it.
    stack.compose("down", "--volumes")
    assert not stack.volume_exists()
    stack.compose("up", "--wait")
    assert request("GET", item_url)[0] == 404


@pytest.mark.docker
def test_app_without_its_database_is_live_not_ready_then_ready(stack):
    stack.compose("up", "--wait")
    stack.compose("stop", "db")
    # The app (re)started while the database is down: it starts and its health check passes.
    stack.compose("up", "--detach", "--no-deps", "--force-recreate", "--wait", "app")
    assert stack.container("db")["State"]["Running"] is False
    assert request("GET", stack.url("/health")) == (200, {"status": "ok"})
    assert request("GET", stack.url("/ready")) == (503, {"status": "unavailable"})
    assert stack.container("app")["State"]["Health"]["Status"] == "healthy"
    stack.compose("start", "db")
    ready = (200, {"status": "ok"})
    wait_until(
        "/ready once the database is back", lambda: request("GET", stack.url("/ready")), ready.__eq__, 60
    )
    status, item = request("POST", stack.url("/items"), {"name": "after the outage"})
    assert status == 201, item


# --- docker level: Swarm -----------------------------------------------------------------------------


@pytest.fixture
def swarm() -> None:
    """A single-node swarm: initialised here if the engine is not in one, and left afterwards."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state == "active":
        if docker("info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip() != "true":
            pytest.skip("this engine is a swarm worker: a stack needs a manager")
        yield
        return
    assert state == "inactive", f"swarm state {state!r}"
    had_gwbridge = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        docker("swarm", "leave", "--force", check=False)
        if not had_gwbridge:
            docker("network", "rm", "docker_gwbridge", check=False)


def task_ports(service: str) -> list[int]:
    listing = docker(
        "ps",
        "--filter",
        f"label=com.docker.swarm.service.name={service}",
        "--filter",
        "health=healthy",
        "--format",
        "{{.Ports}}",
    ).stdout
    return sorted({int(p) for p in re.findall(r"0\.0\.0\.0:(\d+)->", listing)})


def replicas(stack: str) -> dict[str, str]:
    listing = docker("stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}").stdout
    return dict(line.split(" ", 1) for line in listing.splitlines())


def remove_stack(stack: str) -> None:
    docker("stack", "rm", stack, check=False)
    label = f"label=com.docker.stack.namespace={stack}"

    def left() -> list[str]:
        return (
            docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
            + docker("network", "ls", "--quiet", "--filter", label).stdout.split()
        )

    with contextlib.suppress(AssertionError):
        wait_until(f"stack {stack} removed", left, lambda seen: not seen, 90, interval=1)
    docker("rm", "--force", *docker("ps", "--all", "--quiet", "--filter", label).stdout.split(), check=False)
    volumes = docker("volume", "ls", "--quiet", "--filter", label).stdout.split()
    if volumes:
        docker("volume", "rm", "--force", *volumes, check=False)


@pytest.mark.docker
def test_swarm_stack_runs_the_database_with_its_volume(db_service, swarm):
    """compose.yaml as a stack: db (1 replica, placed, its volume), migrate, app answering /items.

    As in tests/test_deploy.py, the app publishes in host mode (the routing mesh needs IPVS, which
    the test machines may lack), and for the same reason the db service is resolved by DNS to its
    task (endpoint_mode dnsrr) rather than through a virtual IP. The copy of compose.yaml with
    those two changes sits beside the original, so `./db-password.txt` resolves as for a user.
    """
    compose_file = load(db_service / "compose.yaml")
    target = int(compose_file["services"]["app"]["ports"][0].rsplit(":", 1)[1])
    compose_file["services"]["app"]["ports"] = [{"target": target, "mode": "host"}]
    compose_file["services"]["db"]["deploy"]["endpoint_mode"] = "dnsrr"
    stack_file = db_service / "stack-test.yaml"
    stack_file.write_text(yaml.safe_dump(compose_file, sort_keys=False))
    stack = unique("dbtest")
    try:
        deploy = run(
            ["docker", "stack", "deploy", "--compose-file", str(stack_file), stack], env=compose_env(TAG="db")
        )
        assert deploy.returncode == 0, deploy.stderr
        app, db = f"{stack}_app", f"{stack}_db"

        # The app's tasks answer /items once the migrate task has made the table and the db is up.
        def first_write() -> tuple[int, object]:
            ports = task_ports(app)
            if len(ports) < 2:
                return (0, f"healthy app tasks on ports {ports}; services {replicas(stack)}")
            return request("POST", f"http://127.0.0.1:{ports[0]}/items", {"name": "swarm"})

        status, item = wait_until(
            f"stack {stack} writing an item", first_write, lambda s: s[0] == 201, 180, interval=1
        )
        for port in task_ports(app):  # every replica reads what one wrote: one database
            assert request("GET", f"http://127.0.0.1:{port}/items/{item['id']}") == (200, item)
        assert replicas(stack)[db] == "1/1" and replicas(stack)[app] == "2/2"
        spec = json.loads(docker("service", "inspect", db).stdout)[0]["Spec"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 1
        assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == manager"]
        mounts = spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
        assert [(m["Type"], m["Source"], m["Target"]) for m in mounts] == [
            ("volume", f"{stack}_db-data", "/var/lib/postgresql/data")
        ]
        assert "ports" not in compose_file["services"]["db"] and not spec.get("EndpointSpec", {}).get("Ports")

        # The migrations' task ends complete (an attempt before the database was up may have failed
        # and been retried); `service ps` lists the newest task first.
        def migrate_tasks() -> list[str]:
            return docker(
                "service", "ps", f"{stack}_migrate", "--format", "{{.CurrentState}}"
            ).stdout.splitlines()

        wait_until(f"{stack}_migrate complete", migrate_tasks, lambda t: t[0].startswith("Complete"), 60)
    finally:
        remove_stack(stack)
        stack_file.unlink(missing_ok=True)


# --- docker level: the README walk-through -----------------------------------------------------------


def database_walkthrough(project: Path) -> list[str]:
    section = (project / "README.md").read_text().split("## The database", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.docker
def test_readme_database_walkthrough_works_as_written(tmp_path, docker_ready):
    """Run the README's database commands in order, with the project's own names and port.

    The one adaptation, as in tests/test_image.py: curl retries while the service starts. The
    environment has the package mirror the README tells a user behind one to set.
    """
    slug, port = unique("dbwalk"), str(free_port())
    project = bake(tmp_path, project_slug=slug, port=port, database="postgresql")
    env = compose_env()
    outputs: list[tuple[str, str]] = []
    try:
        for line in database_walkthrough(project):
            argv = shlex.split(line)
            if argv[0] == "curl":
                argv[1:1] = [
                    "--silent",
                    "--show-error",
                    "--retry",
                    "30",
                    "--retry-all-errors",
                    "--retry-delay",
                    "1",
                ]
            result = run(argv, cwd=project, env=env, timeout=1200)
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr[-3000:]}"
            outputs.append((line, result.stdout))
    finally:
        run(["docker", "compose", "down", "--volumes", "--remove-orphans"], cwd=project, env=env)
        remove_images(slug)
    said = [out for _, out in outputs]
    lines = [line for line, _ in outputs]
    item = {"name": "first", "id": 1}
    assert json.loads(said[lines.index(next(x for x in lines if "-X POST" in x))]) == item
    reads = [
        json.loads(out) for line, out in outputs if line.startswith("curl") and line.endswith("/items/1")
    ]
    assert reads == [item, item], "the item is read back, and again after down and up"
    assert json.loads(said[lines.index(next(x for x in lines if x.endswith("/ready")))]) == {"status": "ok"}
    volume = f"{slug}_db-data"
    listings = [out for line, out in outputs if line.startswith("docker volume ls")]
    assert [volume in out for out in listings] == [True, True, False], listings
    (inspected,) = [out for line, out in outputs if line.startswith("docker network inspect")]
    members = sorted(c["Name"] for c in json.loads(inspected)[0]["Containers"].values())
    assert members == [f"{slug}-app-1", f"{slug}-db-1"], members
