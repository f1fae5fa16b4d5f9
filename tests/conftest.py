"""Shared fixtures of the template's test suite.

Tiers (fast to slow): hooks, render, service need only Python; image and deploy (marker `docker`)
need a Docker engine with buildx and compose. Without one those are skipped with the reason,
unless --require-docker or REQUIRE_DOCKER=1 makes that a failure (CI does).

Builds go through a package mirror when FASTAPI_DOCKER_INDEX_URL is set (the offline build
environment of scripts/buildenv/env.sh sets it): the URL reaches the build as the BuildKit secret
`index_url`, exactly as a team behind Artifactory or devpi would pass theirs; and on the network
FASTAPI_DOCKER_BUILD_NETWORK names (`host`, so that a loopback mirror is reachable).
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parent.parent
COOKIECUTTER_JSON = json.loads((TEMPLATE / "cookiecutter.json").read_text())
BIN = Path(sys.executable).parent  # the test venv's tools: ruff, hadolint, checkov, ...
INDEX_URL_ENV = "FASTAPI_DOCKER_INDEX_URL"
NETWORK_ENV = "FASTAPI_DOCKER_BUILD_NETWORK"
SERVICE = TEMPLATE / "{{cookiecutter.__project_dir}}"


def choices() -> dict[str, list]:
    """Every question with a fixed set of answers: choice lists and booleans."""
    return {
        key: value if isinstance(value, list) else [value, not value]
        for key, value in COOKIECUTTER_JSON.items()
        if not key.startswith("_") and isinstance(value, list | bool)
    }


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: install requirements/test.txt (bash scripts/test does)"
    return found


def bake(output_dir: Path, **answers: object) -> Path:
    """Generate a project with the cookiecutter API, as `cookiecutter --no-input k=v` would.

    Its replay file and clones go to the suite's own directory (COOKIECUTTER_CONFIG, set in
    pytest_configure), never to ~/.cookiecutter_replay or ~/.cookiecutters.
    """
    project = cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers, output_dir=str(output_dir))
    return Path(project)


def cookiecutter_cli(tmp_path: Path, *answers: str, **env: str) -> subprocess.CompletedProcess:
    """The real `cookiecutter --no-input` command line, as a user runs it, writing to tmp_path/out.

    The environment is the test's, less CI and FASTAPI_DOCKER_PREFLIGHT, plus env (e.g. PATH).
    """
    environ = {k: v for k, v in os.environ.items() if k not in {"CI", "FASTAPI_DOCKER_PREFLIGHT"}}
    environ.update(HOME=str(tmp_path), **env)
    command = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path / "out")]
    return subprocess.run(
        [*command, str(TEMPLATE), *answers], env=environ, capture_output=True, text=True, timeout=120
    )


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, deadline: float, timeout: float = 2) -> tuple[int, object]:
    """(status, JSON body) of GET url, retried until it answers or time.monotonic() passes deadline."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


Seen = TypeVar("Seen")


def wait_until(
    what: str,
    probe: Callable[[], Seen],
    done: Callable[[Seen], bool],
    timeout: float,
    interval: float = 0.2,
) -> Seen:
    """What probe() returns once done() holds for it, polled every interval seconds.

    A probe raising OSError (not answering yet) counts as not done. After timeout seconds the
    test fails with what, and the last thing the probe saw.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = probe()
        except OSError as error:
            seen = error
        else:
            if done(seen):
                return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; last seen: {seen!r}"[-4000:])
        time.sleep(interval)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-docker",
        action="store_true",
        default=os.environ.get("REQUIRE_DOCKER") == "1",
        help="fail (instead of skip) the docker tests when no Docker engine is usable",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: builds or runs images (needs a Docker engine)")
    # Generation in tests skips the Docker preflight, except where a test asks for it.
    os.environ.setdefault("FASTAPI_DOCKER_PREFLIGHT", "off")
    # cookiecutter's user directories (replay files, clones) for the API calls of this run.
    user_dir = Path(tempfile.mkdtemp(prefix="fastapi-docker-cookiecutter-"))
    config = user_dir / "config.yaml"
    config.write_text(
        f"cookiecutters_dir: {json.dumps(str(user_dir / 'cookiecutters'))}\n"
        f"replay_dir: {json.dumps(str(user_dir / 'replay'))}\n"
    )
    os.environ["COOKIECUTTER_CONFIG"] = str(config)
    config_dirs.append(user_dir)


config_dirs: list[Path] = []


def pytest_unconfigure(config: pytest.Config) -> None:
    for user_dir in config_dirs:
        shutil.rmtree(user_dir, ignore_errors=True)


def docker_problem() -> str | None:
    """Why the docker tests cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    probes = {
        "the Docker daemon": ["docker", "info", "--format", "{{.ServerVersion}}"],
        "docker buildx": ["docker", "buildx", "version"],
        "docker compose v2": ["docker", "compose", "version"],
    }
    for what, command in probes.items():
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return f"{what} did not answer within 20 s"
        if result.returncode != 0:
            return f"{what} is not usable: {result.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="session")
def docker_ready(request: pytest.FixtureRequest) -> None:
    problem = docker_problem()
    if problem:
        message = f"Docker tests cannot run: {problem} (bash scripts/buildenv/env.sh provides one)"
        if request.config.getoption("--require-docker"):
            pytest.fail(message + "; they are required (--require-docker / REQUIRE_DOCKER=1)")
        pytest.skip(message)


def build_flags() -> list[str]:
    """`docker build` flags for the package mirror and build network, if configured."""
    flags = []
    if os.environ.get(NETWORK_ENV):
        flags += ["--network", os.environ[NETWORK_ENV]]
    if os.environ.get(INDEX_URL_ENV):
        flags += ["--secret", f"id=index_url,env={INDEX_URL_ENV}"]
    return flags


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cleanup() -> Iterator[list[list[str]]]:
    """Docker commands to run after the test, pass or fail: cleanup.append(["rm", "-f", name])."""
    commands: list[list[str]] = []
    yield commands
    for command in reversed(commands):
        docker(*command, check=False)


def pairwise(options: dict[str, list]) -> list[dict]:
    """A small set of answer combinations in which every pair of values of two questions occurs.

    Greedy all-pairs: deterministic, and it starts from the defaults (the first value of each).
    """
    keys = list(options)
    uncovered = {
        (a, va, b, vb)
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
        for va in options[a]
        for vb in options[b]
    }
    rows = [{k: options[k][0] for k in keys}]
    while True:
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                uncovered.discard((a, rows[-1][a], b, rows[-1][b]))
        if not uncovered:
            return rows
        a, va, b, vb = min(uncovered, key=repr)
        row = {a: va, b: vb}
        for k in keys:
            if k not in row:
                row[k] = max(
                    options[k],
                    key=lambda v, k=k: sum(
                        (k2, row[k2], k, v) in uncovered or (k, v, k2, row[k2]) in uncovered for k2 in row
                    ),
                )
        rows.append({k: row[k] for k in keys})


@pytest.fixture(scope="session")
def venv(tmp_path_factory) -> Path:
    """A venv with the generated requirements-dev.txt, installed the way `make install` does."""
    lock = (SERVICE / "requirements-dev.txt").read_bytes()
    cache = TEMPLATE / "build" / f"service-venv-{hashlib.sha256(lock).hexdigest()[:12]}"
    if not (cache / "bin" / "pytest").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(cache)], check=True)
        pip = [str(cache / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--require-hashes", "-r", str(SERVICE / "requirements-dev.txt")], check=True)
    return cache
