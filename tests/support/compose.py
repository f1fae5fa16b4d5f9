"""`docker compose` run the way the generated README tells a user to, and what a project leaves behind."""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.docker import INDEX_URL_ENV, NETWORK_ENV, docker, unique
from tests.support.net import free_port


def compose_env(**variables: str) -> dict:
    """The environment of a user's shell, plus the mirror (if any) the way the README says, plus variables.

    Variables the compose files read (INDEX_URL, BUILD_NETWORK, HOST_PORT, IMAGE, PROMETHEUS_PORT,
    TAG) and COMPOSE_* come only from here, never from the caller's environment.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for name in ("INDEX_URL", "BUILD_NETWORK", "HOST_PORT", "IMAGE", "PROMETHEUS_PORT", "TAG"):
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


class Stack:
    """One Compose project of a generated project's files, with its own name and host ports (the
    app's, and the Prometheus UI's of the observability option: prometheus_port).

    tag: the image's TAG (built already, or built by `up --build`). settings: the app's environment
    variables to add (written to an extra compose file, merged after compose.yaml and
    compose.override.yaml, as a team's own override file would be). answer_set: a name for it.
    """

    def __init__(
        self, root: Path, tag: str, settings: dict[str, str] | None = None, answer_set: str = ""
    ) -> None:
        self.root, self.project, self.port = root, unique("stacktest"), free_port()
        self.prometheus_port = free_port()
        self.answer_set = answer_set
        self.env = compose_env(HOST_PORT=str(self.port), PROMETHEUS_PORT=str(self.prometheus_port), TAG=tag)
        self.files: list[str] = []
        if settings:
            extra = Path(tempfile.mkdtemp(prefix=f"{self.project}-")) / "settings.yaml"
            extra.write_text(json.dumps({"services": {"app": {"environment": settings}}}))
            self.files = ["-f", "compose.yaml", "-f", "compose.override.yaml", "-f", str(extra)]

    @contextlib.contextmanager
    def up(self, *args: str, timeout: float = 600) -> Iterator["Stack"]:
        """`docker compose up --wait ARGS` (healthy, or AssertionError with the output), and
        everything it made removed afterwards, whatever happened."""
        try:
            self.compose("up", "--wait", *args, timeout=timeout)
            yield self
        finally:
            self.remove()

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`docker compose ARGS` of this project; AssertionError with its output if it fails."""
        command = ["--project-name", self.project, *self.files, *args]
        return compose(self.root, *command, env=self.env, timeout=timeout)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def container(self, service: str) -> dict:
        (cid,) = self.compose("ps", "--all", "--quiet", service).stdout.split()
        return json.loads(docker("inspect", cid).stdout)[0]

    def logs(self, service: str, since: str | None = None) -> str:
        """The service's output (stdout and stderr), since a docker timestamp if given."""
        result = docker("logs", *(["--since", since] if since else []), self.container(service)["Id"])
        return result.stdout + result.stderr

    def volume_exists(self) -> bool:
        return docker("volume", "inspect", f"{self.project}_db-data", check=False).returncode == 0

    def remove(self) -> None:
        """Its containers, network, volume and images."""
        down = ["--profile", "dev", "down", "--volumes", "--remove-orphans"]
        command = ["docker", "compose", "--project-name", self.project, *self.files, *down]
        try:
            subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, timeout=300)
            remove_images(self.project)
        finally:
            if self.files:
                shutil.rmtree(Path(self.files[-1]).parent, ignore_errors=True)
