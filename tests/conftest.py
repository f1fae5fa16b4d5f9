"""The suite's fixtures and options; the helpers themselves are in tests/support/.

Tiers (fast to slow): hooks, render, service need only Python; image and deploy (marker `docker`)
need a Docker engine with buildx and compose v2. Without one those are skipped with the reason,
unless --require-docker or REQUIRE_DOCKER=1 makes that a failure (CI does).

The suite runs on parallel workers (pytest-xdist, `--dist loadgroup`, see pyproject.toml): tests that
share a costly fixture instance are grouped onto one worker (pytest_collection_modifyitems), and
caches shared by every worker are made under a file lock (cache_lock).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.compose import Stack, compose, compose_env, remove_images
from tests.support.docker import docker, docker_problem, unique
from tests.support.polling import wait_until
from tests.support.project import COMPLETE, TEMPLATE, answers_of, bake, run


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-docker",
        action="store_true",
        default=os.environ.get("REQUIRE_DOCKER") == "1",
        help="fail (instead of skip) the docker tests when no Docker engine is usable",
    )


config_dirs: list[Path] = []
# Where scripts/test keeps its venv; the service venvs are kept there too.
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastapi-docker"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: builds or runs images (needs a Docker engine)")
    config.addinivalue_line("markers", "slow: waits a minute or more on purpose (CI runs it too)")
    config.addinivalue_line("markers", "stack: brings a compose stack up itself (runs with the stacks)")
    # Generation in tests skips the Docker preflight, except where a test asks for it.
    os.environ.setdefault("FASTAPI_DOCKER_PREFLIGHT", "off")
    # cookiecutter's user directories (replay files, clones) for the API calls of this run.
    user_dir = Path(tempfile.mkdtemp(prefix="fastapi-docker-cookiecutter-"))
    config_file = user_dir / "config.yaml"
    config_file.write_text(
        f"cookiecutters_dir: {json.dumps(str(user_dir / 'cookiecutters'))}\n"
        f"replay_dir: {json.dumps(str(user_dir / 'replay'))}\n"
    )
    os.environ["COOKIECUTTER_CONFIG"] = str(config_file)
    config_dirs.append(user_dir)


# Fixtures whose tests run on one worker, one after another: `swarm` and `swarm_nodes` (one swarm
# per engine), the stacks' images (each worker would build its own; the Swarm tests use both), and
# every compose stack: an engine joining or leaving a swarm breaks name resolution on the networks
# made meanwhile (seen: a stack's `migrate` failing "failed to resolve host 'db'" for minutes after
# the Swarm test's `swarm leave`). Tests that bring a stack up by other means are marked `stack`.
ONE_WORKER = ("swarm", "swarm_nodes", "database_service", "compose_service", "otel_service", "observed")


def worker_group(item: pytest.Item) -> str | None:
    """The xdist group of item: "stacks" if it uses a ONE_WORKER fixture, else its module and the
    parameters of its module-scoped fixtures (so that e.g. each image of test_image.py is built once)."""
    names = item.fixturenames
    if any(name in names for name in ONE_WORKER) or item.get_closest_marker("stack"):
        return "stacks"
    definitions = item._fixtureinfo.name2fixturedefs
    shared = [n for n in names if n in definitions and definitions[n][-1].scope in ("module", "class")]
    if not shared:
        return None
    indices = item.callspec.indices if hasattr(item, "callspec") else {}
    return item.path.stem + "".join(f"-{n}{indices[n]}" for n in shared if n in indices)


# The longest tests (an arm64 build through QEMU; the benchmark's smoke run) start first, then the
# other Docker tests, then the rest: short tests fill the workers' last minutes, not one long one.
LONGEST = ("test_multiplatform", "test_benchmark")


def start_order(item: pytest.Item) -> int:
    if item.path.stem in LONGEST and item.get_closest_marker("docker"):
        return 0
    return 1 if item.get_closest_marker("docker") else 2


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its own hook adds them to the node ids)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    items.sort(key=start_order)  # stable: each module's order (and its fixtures' grouping) is kept
    for item in items:
        group = worker_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Held while cache (a directory every worker may make or use) is checked and made."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def pytest_unconfigure(config: pytest.Config) -> None:
    for user_dir in config_dirs:
        shutil.rmtree(user_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_ready(request: pytest.FixtureRequest) -> None:
    """Skips (or, with --require-docker, fails) the test when no usable Docker engine is here."""
    problem = docker_problem()
    if problem:
        message = f"Docker tests cannot run: {problem} (they need an engine with buildx and compose v2)"
        if request.config.getoption("--require-docker"):
            pytest.fail(message + "; they are required (--require-docker / REQUIRE_DOCKER=1)")
        pytest.skip(message)


@pytest.fixture
def cleanup() -> Iterator[list[list[str]]]:
    """Docker commands to run after the test, pass or fail: cleanup.append(["rm", "-f", name])."""
    commands: list[list[str]] = []
    yield commands
    for command in reversed(commands):
        docker(*command, check=False)


def service_venv(tmp_path_factory: pytest.TempPathFactory, **answers: str) -> Path:
    """A venv with the dev lock of a project of these answers, installed the way `make install` does.

    Kept under the lock's hash in the user's cache, beside scripts/test's venv: made once (by one
    worker, the others wait; a fresh clone reuses it), made anew for a changed lock.
    """
    lock = bake(tmp_path_factory.mktemp("lock"), **answers) / "requirements-dev.txt"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    cache = CACHE / f"service-venv-{digest}"
    with cache_lock(cache):
        if not (cache / ".installed").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache)], check=True)
            pip = [str(cache / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, "--require-hashes", "-r", str(lock)], check=True)
            (cache / ".installed").touch()
    return cache


@pytest.fixture(scope="session")
def venv(tmp_path_factory) -> Path:
    """A venv with the generated requirements-dev.txt (database `none`)."""
    return service_venv(tmp_path_factory)


@pytest.fixture(scope="session")
def postgresql_venv(tmp_path_factory) -> Path:
    """A venv with the dev lock of a `postgresql` project."""
    return service_venv(tmp_path_factory, database="postgresql")


@pytest.fixture(scope="session")
def answers_venv(tmp_path_factory) -> Callable[..., Path]:
    """answers_venv(**answers): a venv with the dev lock of a project of these answers."""
    return lambda **answers: service_venv(tmp_path_factory, **answers)


@pytest.fixture(scope="session")
def rendered(cookies_session) -> Callable[[dict], Path]:
    """rendered(answer_set): the project of that answer set, baked by pytest-cookies once per run.

    Shared by the modules that read rendered projects; none of them may change one.
    """
    projects: dict[str, Path] = {}

    def render(answer_set: dict) -> Path:
        key = json.dumps(answer_set, sort_keys=True)
        if key not in projects:
            result = cookies_session.bake(extra_context=answer_set, template=str(TEMPLATE))
            assert (result.exit_code, result.exception) == (0, None)
            projects[key] = result.project_path
        return projects[key]

    return render


@pytest.fixture(scope="session")
def complete_projects(rendered) -> dict[str, Path]:
    """The project of each complete answer set (support.project.COMPLETE)."""
    return {name: rendered(answers) for name, answers in COMPLETE.items()}


@pytest.fixture(params=list(COMPLETE))
def complete(request, complete_projects) -> tuple[Path, dict]:
    """(root, expected) of each complete project: the values its files derive from its answers."""
    answers = answers_of(COMPLETE[request.param])
    root = complete_projects[request.param]
    return root, {"slug": root.name, "port": int(answers["port"]), "workers": int(answers["workers"])}


@pytest.fixture(scope="session")
def github_project(complete_projects) -> Path:
    return complete_projects["github"]


@pytest.fixture(scope="session")
def gitlab_project(complete_projects) -> Path:
    return complete_projects["gitlab-9090-2workers"]


@pytest.fixture(scope="session")
def compose_service(tmp_path_factory, docker_ready) -> Iterator[Path]:
    """One generated project (compose on) and its image `SLUG:v1`, built once for the compose and
    Swarm modules (its images are removed at the end of the run)."""
    root = bake(tmp_path_factory.mktemp("compose-service"), project_slug=unique("deploytest"))
    started = time.monotonic()
    try:
        compose(root, "build", env=compose_env(TAG="v1"), timeout=1200)
        print(f"\nimage {root.name}:v1 built in {time.monotonic() - started:.1f} s")
        yield root
    finally:
        remove_images(root.name)


@pytest.fixture(scope="session")
def database_service(tmp_path_factory, docker_ready) -> Iterator[Path]:
    """One `postgresql` project (compose on), its password file and its image `SLUG:db`, built
    once for the database's compose and Swarm tests (its images are removed at the end of the run)."""
    root = bake(tmp_path_factory.mktemp("db-service"), database="postgresql", project_slug=unique("dbtest"))
    result = run(["make", "--no-print-directory", "db-password.txt"], cwd=root)
    assert result.returncode == 0, result.stderr
    started = time.monotonic()
    try:
        compose(root, "build", "app", env=compose_env(TAG="db"), timeout=1200)
        print(f"\nimage {root.name}:db built in {time.monotonic() - started:.1f} s")
        yield root
    finally:
        remove_images(root.name)


@pytest.fixture(scope="module", params=["defaults", "postgresql"])
def service_stack(request) -> Iterator[Stack]:
    """Each service the suite builds, up and healthy as `docker compose up --wait` runs it: the
    default answers' image (compose_service's) and the `postgresql` one with its database
    (database_service's). Once per module; everything it made goes afterwards."""
    if request.param == "defaults":
        stack = Stack(request.getfixturevalue("compose_service"), "v1", answer_set=request.param)
    else:
        stack = Stack(request.getfixturevalue("database_service"), "db", answer_set=request.param)
    with stack.up():
        yield stack


@contextlib.contextmanager
def swarm_lock() -> Iterator[None]:
    """Held while a test forms and uses a swarm of this engine: one at a time, across runs too."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".swarm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
def swarm() -> Iterator[None]:
    """A single-node swarm: initialised here if the engine is not in one, and left afterwards."""
    with swarm_lock():
        yield from _single_node_swarm()


def _single_node_swarm() -> Iterator[None]:
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


@pytest.fixture(scope="module")
def swarm_nodes(request, docker_ready) -> Iterator[dict[str, str]]:
    """Two engines, neither in a swarm, to be formed into one by the test: this one (the manager, at
    FASTAPI_DOCKER_SWARM_ADVERTISE_ADDR for the other) and FASTAPI_DOCKER_SWARM_WORKER_HOST; the
    registry both pull from: FASTAPI_DOCKER_SWARM_REGISTRY. Both leave whatever swarm they are in
    afterwards, with what it made (labels, availability, overlay networks)."""
    names = ("WORKER_HOST", "ADVERTISE_ADDR", "REGISTRY")
    given = {name: os.environ.get(f"FASTAPI_DOCKER_SWARM_{name}", "") for name in names}
    worker = ["--host", given["WORKER_HOST"]]
    if not all(given.values()) or docker(*worker, "info", check=False).returncode != 0:
        message = f"no second Docker engine to form a two-node swarm with (FASTAPI_DOCKER_SWARM_*: {given})"
        if request.config.getoption("--require-docker"):
            pytest.fail(message + "; it is required (--require-docker / REQUIRE_DOCKER=1)")
        pytest.skip(message)
    with swarm_lock():

        def state() -> str:
            return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()

        wait_until("this engine in no swarm (another test's)", state, "inactive".__eq__, 300, interval=2)
        docker(*worker, "swarm", "leave", "--force", check=False)  # a run that was killed left it in one
        had_gwbridge = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
        try:
            yield {
                "worker_host": given["WORKER_HOST"],
                "manager_addr": given["ADVERTISE_ADDR"],
                "registry": given["REGISTRY"],
                "manager": docker("info", "-f", "{{.Name}}").stdout.strip(),
                "worker": docker(*worker, "info", "-f", "{{.Name}}").stdout.strip(),
            }
        finally:
            docker(*worker, "swarm", "leave", "--force", check=False)
            docker(*worker, "network", "rm", "docker_gwbridge", check=False)
            docker("swarm", "leave", "--force", check=False)
            if not had_gwbridge:
                docker("network", "rm", "docker_gwbridge", check=False)
