"""Tier 3: the generated service works without Docker.

Its locked requirements install with --require-hashes, its own lint and tests pass through its
Makefile, the lock resolves to wheels for every offered Python on amd64 and arm64, `make lock`
reproduces the lock, and uvicorn serves the app for real on a loopback port. A `postgresql`
project's lint and tests pass without a database, and `make lock` reproduces its locks too.
"""

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.support.applog import access_log, json_lines
from tests.support.generated import pins
from tests.support.net import free_port
from tests.support.polling import get, urlopen
from tests.support.project import COOKIECUTTER_JSON, DATABASE_ANSWER_SETS, LOCK_FRAGMENTS, bake, make

ANSWER_SETS = [
    {},
    {"port": "8080", "python_version": "3.11", "installer": "uv"},
    {"project_name": "Café API"},
]


@pytest.fixture(scope="module", params=ANSWER_SETS, ids=["defaults", "port8080-py311-uv", "cafe"])
def project(request, tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp("service"), **request.param)


def test_own_lint_and_tests_pass(project, venv):
    result = make(project, venv, "lint", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20 passed, 2 deselected" in result.stdout  # the container test waits for `make smoke`


def test_make_help_lists_every_target(project, venv):
    result = make(project, venv, "help", "PORT=9123")
    makefile = (project / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:")).split()[1:]
    assert sorted(line.split()[0] for line in result.stdout.splitlines()) == sorted(phony)
    # Variables in the descriptions show their values, not `$(PORT)`.
    assert "$(" not in result.stdout and "http://127.0.0.1:9123" in result.stdout, result.stdout


OURS = f"{sys.version_info[0]}.{sys.version_info[1]}"
# The oldest offered Python: the locks' floor (scripts/relock), so one lock serves every version.
FLOOR = min(COOKIECUTTER_JSON["python_version"], key=lambda v: tuple(map(int, v.split("."))))


@pytest.mark.parametrize("image_python", sorted({COOKIECUTTER_JSON["python_version"][0], OURS}))
def test_make_install_warns_when_the_venv_python_is_not_the_image_python(tmp_path, image_python):
    """`make install` with a Python other than the image's says so; with the image's, it does not.
    A fresh clone's `make test` installs first (not `Error 127`), and its tests pass."""
    project = bake(tmp_path / "out", python_version=image_python)
    ours = OURS
    result = subprocess.run(
        ["make", "test", f"PYTHON={sys.executable}", f"VENV={tmp_path / 'venv'}"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and (tmp_path / "venv" / "bin" / "pytest").exists()
    warned = f"WARNING: {sys.executable} is Python {ours}, the image runs {image_python}" in result.stderr
    assert warned == (ours != image_python), result.stderr


FAILING_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_CALLS"
case "$1" in
  run) echo "docker: Error response from daemon: failed to set up container networking" >&2; exit 125 ;;
  info) echo 26.1.5 ;;
esac
"""


def test_smoke_test_removes_the_container_when_docker_run_fails(project, venv, tmp_path):
    """`docker run` can create the container and then fail: the smoke test removes it all the same."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text(FAILING_DOCKER)
    (fake / "docker").chmod(0o755)
    calls = tmp_path / "calls"
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", DOCKER_CALLS=str(calls))
    result = subprocess.run(
        [str(venv / "bin" / "pytest"), "-m", "container", "-k", "stops_gracefully", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "failed to set up container networking" in result.stdout, result.stdout
    lines = calls.read_text().splitlines()
    [run] = [line.split() for line in lines if line.startswith("run ")]
    name = run[run.index("--name") + 1]
    assert f"rm --force {name}" in lines, lines


def assert_make_lock_keeps_the_pins(project: Path, venv: Path, floor: bool = False) -> None:
    """`make lock` in project succeeds and changes no pinned version or hash of its locks; at the
    floor (the oldest offered Python, the fragments' own), it writes exactly the assembled locks."""
    before = {n: (project / n).read_text() for n in ("requirements.txt", "requirements-dev.txt")}
    env = {"SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE") or os.environ.get("PIP_CERT", "")}
    result = make(project, venv, "lock", **{k: v for k, v in env.items() if v})
    assert result.returncode == 0, result.stdout + result.stderr
    for name, text in before.items():
        # The shipped lock's floor is the oldest offered Python, the project's is its own: the
        # "via" comments and markers may differ, the pinned versions and hashes must not.
        after = (project / name).read_text()
        assert pins(after) == pins(text), f"`make lock` changed the pins of {name}: the lock is stale"
        assert not floor or after == text, f"`make lock` rewrote {name}: the fragments do not add up"


def test_make_lock_reproduces_the_committed_lock(project, venv):
    floor = f"--python-version {FLOOR}" in (project / "Makefile").read_text()
    assert_make_lock_keeps_the_pins(project, venv, floor)


# A database URL nothing answers at (port 1 of the loopback refuses connections).
CLOSED_DATABASE = "postgresql+psycopg://app@127.0.0.1:1/app"


# ---- the database option: its lock fragment (the post-gen hook assembles the locks) -----------


def test_postgresql_project_lints_and_tests_without_a_database(tmp_path, postgresql_venv):
    project = bake(tmp_path, **DATABASE_ANSWER_SETS["postgresql"])
    result = make(project, postgresql_venv, "lint", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "51 passed, 2 deselected" in result.stdout


def test_a_streamed_body_over_the_limit_is_refused_while_it_is_sent(tmp_path, postgresql_venv):
    """uvicorn serving POST /items (no database needed: the body is refused first): a chunked body
    (no Content-Length) past MAX_BODY_SIZE gets 413 while the rest of it is still to come."""
    project = bake(tmp_path, database="postgresql")
    port = free_port()
    server = uvicorn(project, postgresql_venv, port, MAX_BODY_SIZE="1000", DATABASE_URL=CLOSED_DATABASE)
    try:
        get(f"http://127.0.0.1:{port}/health", time.monotonic() + 20)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(
                b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                + b"400\r\n" + b" " * 0x400 + b"\r\n"  # 1 KiB: past the limit, and more to come
            )  # fmt: skip
            answer = b""
            while not answer.endswith(b"}") and (received := client.recv(4096)):
                answer += received
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=15)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert answer.endswith(b'{"detail":"Content Too Large"}'), answer


def test_make_lock_reproduces_the_committed_postgresql_locks(tmp_path, postgresql_venv):
    # At the shipped locks' floor (3.11, the oldest offered Python): no pin there is for older ones only.
    project = bake(tmp_path, database="postgresql", python_version="3.11")
    assert_make_lock_keeps_the_pins(project, postgresql_venv, floor=True)


# The platforms a wheel may be for: the manylinux tags (glibc <= 2.28) that pip accepts for
# `--platform manylinux_2_28_ARCH --platform manylinux_2_17_ARCH --platform manylinux2014_ARCH
# --platform manylinux_2_5_ARCH` (manylinux2014 brings its aliases 2010 and 1).
MANYLINUX = ["manylinux_2_28", "manylinux_2_17", "manylinux2014", "manylinux2010", "manylinux1"]
MANYLINUX += ["manylinux_2_5"]


@functools.cache
def index_files(project: str) -> dict[str, str]:
    """{sha256: file name} of every file of project on the package index pip uses (its JSON API)."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    url, accept = f"{index}/{canonicalize_name(project)}/", {"Accept": "application/vnd.pypi.simple.v1+json"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=accept), timeout=60) as response:
        files = json.load(response)["files"]
    return {f["hashes"]["sha256"]: f["filename"] for f in files if "sha256" in f["hashes"]}


@pytest.mark.parametrize("python", COOKIECUTTER_JSON["python_version"])
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
# Every runtime lock fragment (the image installs them; the post-gen hook assembles them).
@pytest.mark.parametrize("lock", [p.parent.name for p in sorted(LOCK_FRAGMENTS.glob("*/requirements.txt"))])
def test_lock_has_wheels_for_every_offered_python(python, arch, lock):
    """Each pin of the lock that applies on Linux has, among its hashes, a wheel on the index that
    CPython `python` on `arch` installs: what `pip download --only-binary=:all: --require-hashes
    --python-version X --platform ...` checks, without downloading every wheel for every case."""
    version = tuple(map(int, python.split(".")))
    platforms = [f"{tag}_{arch}" for tag in MANYLINUX]
    supported = {*cpython_tags(version, platforms=platforms)}
    supported |= {*compatible_tags(version, f"cp{version[0]}{version[1]}", platforms)}
    # A pin for other platforms only (psycopg's tzdata is for Windows) is not one of Linux's.
    linux = {"sys_platform": "linux", "platform_machine": arch, "python_version": python}
    entries = re.split(r"\n(?=[a-z])", (LOCK_FRAGMENTS / lock / "requirements.txt").read_text())
    pinned = [e for e in entries if "==" in e.split("\n")[0]]
    assert pinned, lock
    missing = []
    for entry in pinned:
        requirement = entry.split("\n")[0].rstrip(" \\")
        name, _, marker = requirement.partition(";")
        if marker and not Marker(marker).evaluate(linux):
            continue
        files = index_files(name.split("==")[0])
        wheels = [files[h] for h in re.findall(r"sha256:(\w+)", entry) if files.get(h, "").endswith(".whl")]
        if not any(supported & parse_wheel_filename(wheel)[3] for wheel in wheels):
            missing.append(f"{name.strip()} (none of its {len(wheels)} wheels)")
    assert not missing, f"no wheel for CPython {python} on {arch}:\n" + "\n".join(missing)


def uvicorn(project: Path, venv: Path, port: int, **env: str) -> subprocess.Popen:
    """The generated app served by the venv's uvicorn on 127.0.0.1:port, output captured."""
    return subprocess.Popen(
        [str(venv / "bin" / "uvicorn"), "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=project,
        env=dict(os.environ, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_uvicorn_serves_the_app(project, venv):
    port = free_port()
    server = uvicorn(project, venv, port, UVICORN_ROOT_PATH="/api", UVICORN_LOG_LEVEL="warning")
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/", time.monotonic() + 20) == (200, {"Hello": "World"})
        assert get(f"{base}/health", time.monotonic() + 5) == (200, {"status": "ok"})
        # Settings come from the environment: the root path shows in the OpenAPI servers.
        _, openapi = get(f"{base}/openapi.json", time.monotonic() + 5)
        assert openapi["servers"] == [{"url": "/api"}]
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=15)
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught (exit 143 in a container).
    assert server.returncode in {0, -signal.SIGTERM}, output
    assert "INFO" not in output  # UVICORN_LOG_LEVEL=warning was honoured


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_uvicorn_logs_json_with_request_ids_and_no_health_probes(project, venv, root_path):
    port = free_port()
    env = {"LOG_FORMAT": "json", "UVICORN_LOG_LEVEL": "info", "UVICORN_ROOT_PATH": root_path}
    server = uvicorn(project, venv, port, **env)
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/health", time.monotonic() + 20) == (200, {"status": "ok"})
        head = urlopen(urllib.request.Request(f"{base}/health", method="HEAD"), timeout=5)
        assert head.status == 200
        request = urllib.request.Request(f"{base}/", headers={"X-Request-ID": "service-test-1"})
        with urlopen(request, timeout=5) as response:
            assert response.headers["X-Request-ID"] == "service-test-1"
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=15)
    lines = json_lines(output)  # every line is one JSON object
    access = access_log(lines)
    # The probes (GET and HEAD /health) are not logged, under any root path; one line a request,
    # the app's (uvicorn's own is silenced), with its status and duration.
    assert access == [(f"GET {root_path}/ HTTP/1.1", "service-test-1")], access
    (line,) = [line for line in lines if line["logger"] == "app.access"]
    assert line["status"] == 200 and line["duration_ms"] >= 0
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any(line["logger"] == "app.main" for line in lines), lines


def test_uvicorn_access_log_false_turns_the_access_log_off(project, venv):
    port = free_port()
    server = uvicorn(project, venv, port, LOG_FORMAT="json", UVICORN_ACCESS_LOG="false")
    try:
        assert get(f"http://127.0.0.1:{port}/", time.monotonic() + 20) == (200, {"Hello": "World"})
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=15)
    lines = json_lines(output)
    assert any(line["logger"] == "app.main" for line in lines), lines  # the app logs
    assert access_log(lines) == [], lines


def test_index_url_reaches_pip_uv_and_the_image_build(project, venv):
    """Behind a mirror, INDEX_URL is the one setting: pip, uv and `docker build` get it."""
    show = "show: ; @echo $$PIP_INDEX_URL $$UV_DEFAULT_INDEX $(DOCKER_BUILD_FLAGS)"
    url = "https://user:token@mirror.example.com/simple"
    result = make(project, venv, "--silent", f"--eval={show}", "show", f"INDEX_URL={url}")
    assert result.stdout.split() == [url, url, "--secret", "id=index_url,env=INDEX_URL"], result.stderr
    unset = make(
        project,
        venv,
        "--silent",
        f"--eval={show}",
        "show",
        INDEX_URL="",
        PIP_INDEX_URL="",
        UV_DEFAULT_INDEX="",
    )
    assert unset.stdout.split() == [], unset.stdout
    readme = (project / "README.md").read_text()
    mirror = readme.index("## Behind a package mirror")
    assert (
        mirror < readme.index("## Run it without Docker") < readme.index("## Run it in Docker, step by step")
    )
    section = readme[mirror : readme.index("\n## ", mirror + 1)]
    for word in ("make install", "make lock", "PIP_INDEX_URL", "UV_DEFAULT_INDEX", "--secret id=index_url"):
        assert word in section, word
