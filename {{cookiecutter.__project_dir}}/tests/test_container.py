"""Container smoke test: build the image, run it, probe /health, stop it gracefully.

Deselected by default (it needs a Docker engine and takes a minute): run it with `make smoke`
or `pytest -m container`. Extra `docker build` flags (a package mirror, a build network) come
from DOCKER_BUILD_FLAGS, e.g. "--secret id=index_url,env=INDEX_URL". Without a reachable Docker
engine the test is skipped with the reason, unless REQUIRE_DOCKER=1 makes that a failure.
"""

import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from app import __version__

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONTAINER_PORT = {{ cookiecutter.port }}
SLUG = "{{ cookiecutter.project_slug }}"

pytestmark = pytest.mark.container


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not on PATH"
    try:
        info = docker("info", "--format", "{% raw %}{{.ServerVersion}}{% endraw %}", timeout=10)
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer within 10 s"
    if info.returncode != 0:
        return f"the Docker daemon is not reachable: {info.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    problem = docker_problem()
    if problem:
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(f"REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(problem)
    tag = f"{SLUG}:smoke-{uuid.uuid4().hex[:8]}"
    flags = shlex.split(os.environ.get("DOCKER_BUILD_FLAGS", ""))
    build = docker("build", *flags, "--tag", tag, str(PROJECT_DIR), timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    yield tag
    docker("rmi", "--force", tag)


def wait_for_health(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                assert json.load(response) == {"status": "ok"}
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_container_serves_health_and_stops_gracefully(image: str) -> None:
    name = f"{SLUG}-smoke-{uuid.uuid4().hex[:8]}"
    publish = f"127.0.0.1::{CONTAINER_PORT}"  # an ephemeral host port: never clashes
    # `docker run` can fail after creating the container: it is removed in any case.
    try:
        run = docker("run", "--detach", "--name", name, "--publish", publish, image)
        assert run.returncode == 0, run.stderr
        host_port = docker("port", name, str(CONTAINER_PORT)).stdout.split(":")[-1].strip()
        wait_for_health(f"http://127.0.0.1:{host_port}/health", time.monotonic() + 30)
        user = docker("exec", name, "id", "-u").stdout.strip()
        assert int(user) >= 10000, f"the service runs as uid {user}"
        stop = docker("stop", name)
        assert stop.returncode == 0, stop.stderr
        exit_code = docker("inspect", "--format", "{% raw %}{{.State.ExitCode}}{% endraw %}", name).stdout.strip()
        assert exit_code in {"0", "143"}, f"exit code {exit_code}: not a graceful SIGTERM shutdown"
    finally:
        docker("rm", "--force", name)


def test_image_is_labelled_with_the_version(image: str) -> None:
    """`make smoke` passes the Makefile's build arguments: the version of app/__init__.py."""
    labels = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
