"""Tier 4 (marker `docker`): projects built and run the ways their README and Makefile say.

The README's Docker walk-through runs as written, with its own names and port, and so does the
database walk-through of a `postgresql` project (the item read back, again after `down` and `up`;
the volume listed until `down --volumes`; the app and the database on the project network); the
default project's own container smoke test (`make smoke`) passes; a project grown the way a team
grows it (a module and a data file under app/, a git clone with a credentialed remote) builds with
`make build` and no edit of the build files, serves the addition, carries the OCI labels of its
version, revision, source and build time, and logs JSON lines with request ids and no health probes.
"""

import datetime
import json
import os
import re
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.applog import access_log, json_lines
from tests.support.compose import compose_env, remove_images
from tests.support.docker import INDEX_URL_ENV, NETWORK_ENV, build_flags, docker, health, unique
from tests.support.net import free_port
from tests.support.polling import get, urlopen, wait_until
from tests.support.project import bake, run

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


def readme_walkthrough(project: Path, heading: str) -> list[str]:
    """The commands of the first shell block under the README's heading, one a line."""
    section = (project / "README.md").read_text().split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


# The one adaptation of the walk-throughs' curl lines: they retry while the service starts.
CURL_RETRY = ["--silent", "--show-error", "--retry", "30", "--retry-all-errors", "--retry-delay", "1"]


def test_readme_walkthrough_works_as_written(tmp_path, cleanup):
    """Run the generated README's Docker commands in order, with its own names and port.

    Adaptations outside the commands' meaning: `docker build` gets the environment's mirror flags
    (nothing when building against PyPI), `docker exec -it` gets a terminal from `script` and a
    line of input, as a person typing would, and curl retries while the service starts.
    """
    slug, port = unique("walkthrough"), str(free_port())
    project = bake(tmp_path, project_slug=slug, port=port)
    cleanup.extend([["rmi", "--force", slug], ["rm", "--force", slug]])
    outputs = {}
    for line in readme_walkthrough(project, "## Run it in Docker, step by step"):
        argv = shlex.split(line)
        if argv[:2] == ["docker", "build"]:
            argv[2:2] = build_flags()
        if argv[:3] == ["docker", "exec", "-it"]:
            result = subprocess.run(
                ["script", "--quiet", "--return", "--command", shlex.join(argv), "/dev/null"],
                input="id -u; exit\n",
                capture_output=True,
                text=True,
                timeout=60,
                cwd=project,
            )
        elif argv[0] == "curl":
            argv[1:1] = CURL_RETRY
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=project)
        else:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=1200, cwd=project)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        outputs[line] = result.stdout
    by_command = {
        line.split()[1] if line.startswith("docker") else line: out for line, out in outputs.items()
    }
    assert slug in by_command["image"]
    assert slug in by_command["ps"] and f"0.0.0.0:{port}->{port}/tcp" in by_command["ps"]
    assert json.loads(outputs[f"curl http://localhost:{port}/"]) == {"Hello": "World"}
    assert json.loads(outputs[f"curl http://localhost:{port}/health"]) == {"status": "ok"}
    assert "10001" in by_command["exec"]
    assert docker("image", "inspect", slug, check=False).returncode != 0  # `docker rmi` removed it


@pytest.mark.stack
def test_readme_database_walkthrough_works_as_written(tmp_path):
    """Run the README's database commands in order, with the project's own names and port; they say
    what the README says: the item written and read back, again after `down` and `up`; ready; the
    volume listed until `down --volumes`; the project network holding the app and the database.

    The environment has the package mirror the README tells a user behind one to set.
    """
    slug, port = unique("dbwalk"), str(free_port())
    project = bake(tmp_path, project_slug=slug, port=port, database="postgresql")
    env = compose_env()
    outputs: list[tuple[str, str]] = []
    try:
        for line in readme_walkthrough(project, "## The database"):
            argv = shlex.split(line)
            if argv[0] == "curl":
                argv[1:1] = CURL_RETRY
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


def test_generated_smoke_test_passes(tmp_path, venv):
    """The generated project's own container test (`make smoke`), for the default answers."""
    project = bake(tmp_path)
    flags = shlex.join(build_flags())
    result = subprocess.run(
        ["make", "smoke", f"VENV={venv}", f"DOCKER_BUILD_FLAGS={flags}"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 passed" in result.stdout  # serves, stops gracefully; labelled with the version


GREETINGS_MODULE = '''"""Added by the template's tests, as a team adds one: reads a package data file."""

from importlib import resources


def greeting() -> str:
    return resources.files("app").joinpath("data/greeting.txt").read_text().strip()
'''
GREETING_ROUTE = '''

@app.get("/greeting")
async def read_greeting() -> dict[str, str]:
    """Added by the template's tests: served from app/greetings.py and app/data/greeting.txt."""
    from app.greetings import greeting

    return {"greeting": greeting()}
'''


@pytest.fixture(scope="module")
def team_image(tmp_path_factory):
    """(project, tag) of the default project grown the way a team grows it, built by `make build`.

    A module and a data file are added under app/ (and no line of the Dockerfile or .dockerignore
    changes); the project is a git repository with a credentialed remote, as a clone is.
    """
    project = bake(tmp_path_factory.mktemp("team"))
    (project / "app" / "greetings.py").write_text(GREETINGS_MODULE)
    (project / "app" / "data").mkdir()
    (project / "app" / "data" / "greeting.txt").write_text("Hello from a data file\n")
    main = project / "app" / "main.py"
    main.write_text(main.read_text() + GREETING_ROUTE)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (
        ["init", "--quiet"],
        ["remote", "add", "origin", "https://ci-user:s3cret@git.example.com/team/service.git"],
        ["add", "--all"],
        ["commit", "--quiet", "--message", "initial"],
    ):
        subprocess.run([*git, *command], cwd=project, check=True, capture_output=True)
    image = unique("fastapi-docker-test-team")
    # The mirror the way the generated README says: INDEX_URL for make, the build network as a flag.
    network = f"--network {os.environ[NETWORK_ENV]}" if os.environ.get(NETWORK_ENV) else ""
    env = {k: v for k, v in os.environ.items() if k not in {"INDEX_URL", "PIP_INDEX_URL"}}
    if os.environ.get(INDEX_URL_ENV):
        env["INDEX_URL"] = os.environ[INDEX_URL_ENV]
    result = subprocess.run(
        ["make", "build", f"IMAGE={image}", f"DOCKER_BUILD_FLAGS={network}"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield project, image
    finally:
        docker("rmi", "--force", image, f"{image}:0.1.0", check=False)


def test_an_added_module_and_data_file_are_served_without_build_file_edits(team_image, cleanup):
    project, image = team_image
    name, host_port = unique("fd-team"), free_port()
    cleanup.append(["rm", "--force", name])
    docker("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{host_port}:8000", image)
    reply = get(f"http://127.0.0.1:{host_port}/greeting", time.monotonic() + 30)
    assert reply == (200, {"greeting": "Hello from a data file"})


def test_make_build_labels_the_image_with_version_revision_source_and_created(team_image):
    project, image = team_image
    version = re.search(r'__version__ = "(.+)"', (project / "app" / "__init__.py").read_text())[1]
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", image).stdout)
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True)
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.revision"] == revision.stdout.strip()
    # The remote's URL, without the credentials a clone URL may carry.
    assert labels["org.opencontainers.image.source"] == "https://git.example.com/team/service.git"
    created = datetime.datetime.strptime(labels["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(datetime.datetime.now() - created).total_seconds() < 3600 * 24 * 2
    # Tagged with the version too: the tag the Kubernetes base deploys and CI pushes for a release.
    tagged = docker("image", "inspect", "--format", "{{.Id}}", f"{image}:{version}").stdout
    assert tagged == docker("image", "inspect", "--format", "{{.Id}}", image).stdout


def test_json_logs_one_object_per_line_with_request_ids_and_no_health_probes(team_image, cleanup):
    _, image = team_image
    name, host_port = unique("fd-json"), free_port()
    cleanup.append(["rm", "--force", name])
    started = time.monotonic()
    docker(
        "run", "--detach", "--name", name, "--env", "LOG_FORMAT=json",
        "--publish", f"127.0.0.1:{host_port}:8000", image,
    )  # fmt: skip
    base = f"http://127.0.0.1:{host_port}"
    get(f"{base}/health", started + 30)
    with urlopen(urllib.request.Request(f"{base}/health", method="HEAD"), timeout=5) as head:
        assert head.status == 200
    request = urllib.request.Request(f"{base}/", headers={"X-Request-ID": "image-test-1"})
    with urlopen(request, timeout=5) as response:
        assert response.headers["X-Request-ID"] == "image-test-1"
    with urlopen(f"{base}/", timeout=5) as response:
        made_up = response.headers["X-Request-ID"]
    # Docker's own probes of /health have run too.
    wait_until(f"{name} healthy", lambda: health(name), "healthy".__eq__, 60, interval=0.05)

    def logged() -> list[dict]:
        logs = docker("logs", name)
        return json_lines(logs.stdout + logs.stderr)

    # The access log is written in batches, at least every second (app/logs.py): both lines come.
    lines = wait_until(f"{name}'s two access lines", logged, lambda seen: len(access_log(seen)) >= 2, 10)
    access = access_log(lines)
    assert access == [("GET / HTTP/1.1", "image-test-1"), ("GET / HTTP/1.1", made_up)], access
    assert any(line["logger"] == "app.main" for line in lines), lines
