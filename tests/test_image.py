"""Tier 4 (marker `docker`): build the generated images with BuildKit and run them for real.

Each answer set bakes a fresh project, builds it with `docker buildx build` (through the package
mirror when FASTAPI_DOCKER_INDEX_URL is set), and checks what a production container must do:
serve through the published port and turn healthy, pass schemathesis with every check (its API
as its OpenAPI document says, support.apitest), run as a numeric non-root UID, also with a
read-only root filesystem and no capabilities, carry nothing from the build context or the package
caches and nothing of weight beyond its installed packages, rebuild a code-only change from the
dependency layer cache, stop gracefully and fast while finishing a request in flight, and keep
build secrets out of the image. Nothing is timed here: the benchmark shows speed. The README's and
the Makefile's ways of building and running are in test_image_workflows.py.
"""

import json
import os
import re
import subprocess
import threading
import time

import pytest

from tests.support.apitest import failure_report, schemathesis
from tests.support.buildkit import dependency_layers
from tests.support.docker import (
    INDEX_URL_ENV,
    NETWORK_ENV,
    build_slot,
    buildx_build,
    docker,
    health,
    layers,
    probe_packages,
    size_above_base,
    unique,
)
from tests.support.dockerfile import base_image
from tests.support.net import free_port
from tests.support.polling import get, wait_until
from tests.support.project import bake

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

ANSWER_SETS = {
    "defaults": {},
    "python3.11-bookworm": {"python_version": "3.11", "debian_release": "bookworm"},
    "uv": {"installer": "uv"},
    "port9090-2workers": {"port": "9090", "workers": "2"},
    "full-flavour": {"base_image_flavour": "full"},
}
SLOW_ENDPOINT = '''

@app.get("/slow")
async def slow() -> dict[str, str]:
    """Added by the template's tests: a request still in flight when `docker stop` begins."""
    import asyncio

    print("slow request started", flush=True)
    await asyncio.sleep(2)
    return {"slow": "done"}
'''
# Beyond its installed packages an image adds the app package, requirements.txt, the user's entry in
# /etc/passwd and /etc/group and the packages' console scripts: tens of kilobytes (about 45 kB for
# every answer set here). A package cache, a copied build context or a second copy of the packages
# would add megabytes (the runtime lock's wheels alone are several). 1 MB of slack lies far from both.
SIZE_SLACK_BYTES = 1_000_000


@pytest.fixture(scope="module", params=list(ANSWER_SETS))
def built(request, tmp_path_factory):
    """(answer set name, project dir, image tag, answers) of a fresh project built cold."""
    name, answers = request.param, ANSWER_SETS[request.param]
    project = bake(tmp_path_factory.mktemp(name), **answers)
    # Things that must never reach the image, placed in the build context as a developer would.
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text("[core]\n")
    (project / ".env").write_text("API_TOKEN=do-not-ship-me\n")
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "main.cpython-313.pyc").write_bytes(b"stale")
    (project / ".venv").mkdir()
    tag = unique(f"fastapi-docker-test-{name}")
    buildx_build(project, tag, "--no-cache")
    yield name, project, tag, {"port": "8000", **answers}
    docker("rmi", "--force", tag, check=False)


@pytest.fixture(scope="module")
def rebuilt(built):
    """(plain progress log, tag) of the built project rebuilt after an edit of app/main.py only.

    The edit adds GET /slow, a request the graceful-stop test keeps in flight.
    """
    _, project, tag, _ = built
    main = project / "app" / "main.py"
    main.write_text(main.read_text() + SLOW_ENDPOINT)
    edited = f"{tag}-edited"
    try:
        result, _ = buildx_build(project, edited)
        yield result.stderr, edited
    finally:
        docker("rmi", "--force", edited, check=False)


def test_serves_through_the_published_port_turns_healthy_with_the_chosen_workers(built, cleanup):
    _, _, tag, answers = built
    name, host_port = unique("fd-run"), free_port()
    cleanup.append(["rm", "--force", name])
    started = time.monotonic()
    docker("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{host_port}:{answers['port']}", tag)
    base = f"http://127.0.0.1:{host_port}"
    assert get(f"{base}/health", started + 30) == (200, {"status": "ok"})
    assert get(f"{base}/", started + 30) == (200, {"Hello": "World"})
    wait_until(f"{name} healthy", lambda: health(name), "healthy".__eq__, 60, interval=0.05)
    workers = docker("exec", name, "python", "-c", "import os; print(os.environ['WEB_CONCURRENCY'])")
    assert workers.stdout.strip() == answers.get("workers", "1")


def test_schemathesis_finds_no_failure_in_the_image(built, cleanup, tmp_path):
    """The ecosystem's API tester with every check (support.apitest), against this answer set's
    image (test_schemathesis.py runs it against the compose stacks)."""
    _, _, tag, answers = built
    name, host_port = unique("fd-api"), free_port()
    cleanup.append(["rm", "--force", name])
    docker("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{host_port}:{answers['port']}", tag)
    base = f"http://127.0.0.1:{host_port}"
    assert get(f"{base}/health", time.monotonic() + 30) == (200, {"status": "ok"})
    result = schemathesis(f"{base}/openapi.json", tmp_path)
    assert result.returncode == 0, failure_report(result)


def test_runs_unprivileged_and_hardened(built, cleanup):
    _, _, tag, answers = built
    name, host_port = unique("fd-hardened"), free_port()
    cleanup.append(["rm", "--force", name])
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--publish",
        f"127.0.0.1:{host_port}:{answers['port']}",
        tag,
    )
    assert get(f"http://127.0.0.1:{host_port}/health", time.monotonic() + 30) == (200, {"status": "ok"})
    uid, gid = (
        docker("exec", name, "id", "-u").stdout.strip(),
        docker("exec", name, "id", "-g").stdout.strip(),
    )
    assert int(uid) >= 10000 and int(gid) >= 10000
    assert docker("inspect", "--format", "{{.Config.User}}", tag).stdout.strip() == f"{uid}:{gid}"
    # EXPOSE takes UVICORN_PORT's value at build time: the image documents the port it listens on.
    exposed = json.loads(docker("inspect", "--format", "{{json .Config.ExposedPorts}}", tag).stdout)
    assert exposed == {f"{answers['port']}/tcp": {}}
    # The process itself (PID 1, uvicorn) runs as that uid, and cannot write its code.
    status = docker("exec", name, "cat", "/proc/1/status").stdout
    assert re.search(rf"^Uid:\s+{uid}\s", status, re.MULTILINE), status
    denied = docker("exec", name, "touch", "/app/app/main.py", check=False)
    assert denied.returncode != 0


def test_image_holds_no_build_context_leftovers_or_caches(built):
    _, _, tag, answers = built
    # BuildKit leaves the cache mount's empty mountpoint (/root/.cache/pip); no file may be there.
    script = (
        "ls -A /app; find /root/.cache -type f 2>/dev/null | sed 's/^/FOUND /'; "
        "for p in /app/.git /app/.env /app/tests /app/__pycache__ /app/.venv /usr/local/bin/uv /bin/uv; "
        "do test -e $p && echo FOUND $p; done; true"
    )
    listing = docker("run", "--rm", "--user", "0", "--entrypoint", "sh", tag, "-c", script).stdout.split()
    assert sorted(listing) == ["app", "requirements.txt"], listing
    package = docker("run", "--rm", "--entrypoint", "ls", tag, "-A", "/app/app").stdout.split()
    assert sorted(package) == ["__init__.py", "logs.py", "main.py", "settings.py"], package
    history = docker("history", "--no-trunc", tag).stdout + docker("inspect", tag).stdout
    assert "do-not-ship-me" not in history


def test_added_size_is_the_installed_packages(built):
    """What the image adds to its base image is its installed packages, and nothing else of weight."""
    _, project, tag, _ = built
    base = base_image(project / "Dockerfile")
    sizes = size_above_base(tag, base, probe_packages(base))
    assert sizes.packages_bytes > 0, sizes
    assert 0 <= sizes.added_bytes - sizes.packages_bytes <= SIZE_SLACK_BYTES, (
        f"{tag} adds {sizes.added_bytes / 1e6:.3f} MB to {base}; its packages are "
        f"{sizes.packages_bytes / 1e6:.3f} MB (allowed: {SIZE_SLACK_BYTES / 1e6:g} MB more)"
    )


def test_rebuild_after_a_code_change_reuses_the_cached_dependency_layers(built, rebuilt):
    """Editing only app/main.py: every step before `COPY app/` (user, workdir, requirements, the
    dependency install, in the stages the production image is built from) comes from the layer
    cache, no dev-stage step runs, and the code layer is rebuilt."""
    _, _, tag, _ = built
    progress, edited = rebuilt
    found = dependency_layers(progress)
    assert [step.text for step in found.code_steps] == ["COPY app/ ./app/"], found.code_steps
    before_code = [step.text for step in found.dependency_steps]
    assert any(text.startswith("RUN") and "requirements.txt" in text for text in before_code)
    assert not any("requirements-dev.txt" in text for text in before_code), "built the dev stage"
    assert found.rebuilt == [], f"rebuilt after an app/main.py edit: {found.rebuilt}"
    assert found.cached
    assert layers(edited)[-1] != layers(tag)[-1]


def test_stops_gracefully_and_finishes_the_request_in_flight(built, rebuilt, cleanup):
    _, _, _, answers = built
    _, edited = rebuilt
    name, host_port = unique("fd-stop"), free_port()
    cleanup.append(["rm", "--force", name])
    docker("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{host_port}:{answers['port']}", edited)
    base = f"http://127.0.0.1:{host_port}"
    get(f"{base}/health", time.monotonic() + 30)
    outcome = {}

    def slow_request() -> None:
        try:
            outcome["response"] = get(f"{base}/slow", time.monotonic(), timeout=15)
        except OSError as error:
            outcome["error"] = error

    client = threading.Thread(target=slow_request)
    client.start()
    wait_until(
        "the slow request in flight",
        lambda: docker("logs", name).stdout,
        lambda logs: "slow request started" in logs,
        30,
    )
    docker("stop", name)
    client.join(20)
    assert outcome.get("response") == (200, {"slow": "done"}), outcome
    state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
    # 0 or 143 (SIGTERM handled): a process that ignored SIGTERM is killed after the grace period (137).
    assert state["ExitCode"] in {0, 143} and not state["OOMKilled"], state


def test_build_secret_never_reaches_the_image(cleanup, tmp_path):
    """A credentialed index URL passed as the build secret leaves no trace in the image."""
    project = bake(tmp_path)
    token = "s3cret-" + unique("token")
    base = os.environ.get(INDEX_URL_ENV) or "https://pypi.org/simple/"
    credentialed = re.sub(r"^(https?://)", rf"\1ci-user:{token}@", base)
    tag = unique("fastapi-docker-test-secret")
    cleanup.append(["rmi", "--force", tag])
    env = dict(os.environ, **{INDEX_URL_ENV: credentialed})
    network = ["--network", os.environ[NETWORK_ENV]] if os.environ.get(NETWORK_ENV) else []
    command = [
        "docker",
        "buildx",
        "build",
        "--load",
        "--no-cache",
        *network,
        "--secret",
        f"id=index_url,env={INDEX_URL_ENV}",
        "--tag",
        tag,
        str(project),
    ]
    with build_slot(no_cache=True):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = tmp_path / "image.tar"
    docker("save", "--output", str(saved), tag)
    assert token.encode() not in saved.read_bytes()
    assert token not in docker("history", "--no-trunc", tag).stdout
    assert token not in docker("inspect", tag).stdout
