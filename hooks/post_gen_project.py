"""Finish the generated project: put the locks of the `database` answer in place, prune the files of
options that are off, check Docker, say what next.

Standard library only, and idempotent: cruft re-runs it on every template update, so it touches
nothing outside the generated directory and removing an already-removed file is not an error.

The Docker preflight never fails generation (teams generate on laptops without Docker, and in CI)
unless FASTAPI_DOCKER_PREFLIGHT=strict. FASTAPI_DOCKER_PREFLIGHT=off skips it, and so does a CI
environment (CI=true) unless strict is asked for.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

CONTEXT_JSON = r"""{{ cookiecutter | tojson }}"""

DOCKER_TIMEOUT = 5  # seconds per docker call: a hung daemon must not hang generation
INSTALL_DOCS = "https://docs.docker.com/engine/install/"
# The oldest Docker Engine the generated Dockerfile works on: HEALTHCHECK --start-interval (fast
# `healthy` while starting, rare probes afterwards) arrived in Engine 25.0; older engines refuse it.
ENGINE_FLOOR = (25, 0)


def unused_paths(context: dict) -> list[str]:
    """The files and folders of options that are off, relative to the project root."""
    paths = []
    if not context["use_compose"]:
        paths += ["compose.yaml", "compose.override.yaml"]
    if not context["use_kubernetes"]:
        paths.append("k8s")
    if context["ci"] != "github":
        paths.append(".github")
    if context["ci"] != "gitlab":
        # Renovate keeps a GitLab project current (Dependabot does it on GitHub).
        paths += [".gitlab-ci.yml", "renovate.json"]
    if context["installer"] != "uv":
        paths += ["requirements-build.in", "requirements-build.txt"]
    if context["database"] != "postgresql":
        paths += ["app/db.py", "app/items.py", "app/alembic", "app/alembic.ini"]
    # The locks of the other database answer (select_locks puts the chosen ones in place first).
    paths += list(DATABASE_LOCKS)
    return paths


# requirements.in lists the database packages only for `postgresql`, so each answer has its own
# lock pair: the template ships both, and the project keeps the one its requirements.in makes
# (`make lock` reproduces it). {template's lock of postgresql: the project's name for it}
DATABASE_LOCKS = {
    "requirements-postgresql.txt": "requirements.txt",
    "requirements-dev-postgresql.txt": "requirements-dev.txt",
}


def select_locks(root: Path, context: dict) -> None:
    """For `postgresql`, its locks replace the default ones (nothing to do when already done)."""
    if context["database"] != "postgresql":
        return
    for source, target in DATABASE_LOCKS.items():
        if (root / source).exists():
            (root / source).replace(root / target)


def remove_paths(root: Path, paths: list[str]) -> None:
    for relative in paths:
        path = root / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_bounded(command: list[str], timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess | None:
    """Run command; None if it is still running after timeout (it and its children are killed)."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def docker_warnings(port: int) -> list[str]:
    """What is missing for building and running the image here, each with its fix."""
    docker = shutil.which("docker")
    if docker is None:
        return [f"the docker CLI is not on PATH: install Docker Engine or Desktop ({INSTALL_DOCS})"]
    checks = [
        (
            [docker, "info", "--format", "{% raw %}{{.ServerVersion}}{% endraw %}"],
            "the Docker daemon",
            "start it (`sudo systemctl start docker`, or open Docker Desktop) and check `docker info`",
        ),
        (
            [docker, "buildx", "version"],
            "docker buildx",
            "install the buildx plugin (package docker-buildx-plugin or docker-buildx)",
        ),
        (
            [docker, "compose", "version"],
            "docker compose v2",
            "install the compose plugin (package docker-compose-plugin or docker-compose)",
        ),
    ]
    warnings = []
    for command, what, fix in checks:
        result = run_bounded(command)
        if result is None:
            warnings.append(
                f"{what} did not answer within {DOCKER_TIMEOUT} s (`{' '.join(command[1:3])}` hangs): {fix}"
            )
            break  # a hung docker would hang every further call too
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            warnings.append(f"{what} is not available ({detail[-1] if detail else 'no output'}): {fix}")
        elif command[1] == "info":
            warnings += engine_warnings(result.stdout.strip())
    if port_in_use(port):
        warnings.append(f"port {port} is already in use here: publish another host port, e.g. -p 8080:{port}")
    return warnings


def engine_warnings(server_version: str) -> list[str]:
    """A warning with the fix if the engine (`docker info` ServerVersion) is older than the floor."""
    found = re.match(r"(\d+)\.(\d+)", server_version)
    floor = ".".join(map(str, ENGINE_FLOOR))
    if found is None:
        return [f"cannot tell the Docker Engine version from {server_version!r}: this project needs {floor}+"]
    if (int(found[1]), int(found[2])) >= ENGINE_FLOOR:
        return []
    return [
        f"Docker Engine {server_version} is older than {floor}, which the Dockerfile needs "
        f"(HEALTHCHECK --start-interval): upgrade Docker Engine or Desktop ({INSTALL_DOCS})"
    ]


def preflight_mode(environ: dict) -> str:
    """strict, on or off, from FASTAPI_DOCKER_PREFLIGHT and CI."""
    mode = environ.get("FASTAPI_DOCKER_PREFLIGHT", "").strip().lower()
    if mode in {"strict", "off"}:
        return mode
    if environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        return "off"
    return "on"


def next_steps(context: dict) -> str:
    slug, port = context["project_slug"], context["port"]
    steps = [
        f"Created {slug}/. Next:",
        f"  cd {slug}",
        "  make install test                  # locked dependencies in .venv, unit tests",
    ]
    if context["database"] == "postgresql" and context["use_compose"]:
        steps.append("  make up                            # the app, its migrations and its database")
        steps.append(f"  curl http://localhost:{port}/ready")
    else:
        steps.append(f"  docker build -t {slug} .")
        steps.append(f"  docker run -d --name {slug} -p {port}:{port} {slug}")
        steps.append(f"  curl http://localhost:{port}/health")
    return "\n".join([*steps, "README.md walks through the rest."])


def main() -> int:
    context = json.loads(CONTEXT_JSON)
    select_locks(Path.cwd(), context)
    remove_paths(Path.cwd(), unused_paths(context))
    port = int(context["port"])
    if port < 1024:
        print(
            f"WARNING: port {port} is below 1024: a non-root pod cannot bind it in Kubernetes",
            file=sys.stderr,
        )
    mode = preflight_mode(dict(os.environ))
    if mode == "off":
        print("Docker preflight skipped (CI or FASTAPI_DOCKER_PREFLIGHT=off).")
    else:
        warnings = docker_warnings(port)
        label = "ERROR" if mode == "strict" else "WARNING"
        for warning in warnings:
            print(f"{label}: {warning}", file=sys.stderr)
        if warnings and mode == "strict":
            print(
                "ERROR: FASTAPI_DOCKER_PREFLIGHT=strict and Docker is not ready; nothing was generated",
                file=sys.stderr,
            )
            return 1
    print(next_steps(context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
