"""`docker compose` run the way the generated README tells a user to, and what a project leaves behind."""

import os
import subprocess
from pathlib import Path

from tests.support.docker import INDEX_URL_ENV, NETWORK_ENV, docker


def compose_env(**variables: str) -> dict:
    """The environment of a user's shell, plus the mirror (if any) the way the README says, plus variables.

    Variables the compose files read (INDEX_URL, BUILD_NETWORK, HOST_PORT, TAG) and COMPOSE_* come
    only from here, never from the caller's environment.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for name in ("INDEX_URL", "BUILD_NETWORK", "HOST_PORT", "TAG"):
        env.pop(name, None)
    if os.environ.get(INDEX_URL_ENV):
        env["INDEX_URL"] = os.environ[INDEX_URL_ENV]
        env["BUILD_NETWORK"] = os.environ.get(NETWORK_ENV, "host")
    env.update(variables)
    return env


def compose(root: Path, *args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """`docker compose ARGS` in root with env; AssertionError with its output if it fails."""
    result = subprocess.run(
        ["docker", "compose", *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"docker compose {' '.join(args)}:\n{result.stdout}\n{result.stderr[-4000:]}"
    )
    return result


def images_of(project: str) -> list[str]:
    """Every image `docker compose build` made for the project (by its label), tagged or dangling."""
    found = docker("images", "--quiet", "--filter", f"label=com.docker.compose.project={project}").stdout
    return sorted(set(found.split()))


def remove_images(project: str) -> None:
    """Remove every image of images_of(project)."""
    images = images_of(project)
    if images:
        docker("rmi", "--force", *images, check=False)


def project_resources(project: str) -> dict[str, list[str]]:
    """The containers, networks and volumes labelled as the Compose project's."""
    label = f"label=com.docker.compose.project={project}"
    return {
        "containers": docker("ps", "--all", "--quiet", "--filter", label).stdout.split(),
        "networks": docker("network", "ls", "--quiet", "--filter", label).stdout.split(),
        "volumes": docker("volume", "ls", "--quiet", "--filter", label).stdout.split(),
    }


def edit_greeting(root: Path, greeting: str) -> str:
    """Make a generated project's GET / answer {"Hello": greeting}; returns the original app/main.py."""
    main = root / "app" / "main.py"
    original = main.read_text()
    assert '{"Hello": "World"}' in original
    main.write_text(original.replace('{"Hello": "World"}', f'{{"Hello": "{greeting}"}}'))
    return original
