"""The generated compose.yaml deployed as a Docker Swarm stack, and what a stack leaves behind."""

import contextlib
import re
from pathlib import Path

import yaml

from tests.support.docker import docker
from tests.support.polling import wait_until


def host_mode_stack_file(compose_file: Path, stack_file: Path) -> dict:
    """Write stack_file: compose_file with the app's port published in host mode; returns its content.

    In host mode each task publishes the port on a free host port of its own, so every task can be
    probed by itself (the routing mesh would answer from any one of them). A second `-c` file cannot
    replace compose.yaml's port (the docker CLI merges ports by published port and would keep the
    ingress one), hence a copy whose only change is the app's ports list.
    """
    content = yaml.safe_load(compose_file.read_text())
    target = int(content["services"]["app"]["ports"][0].rsplit(":", 1)[1])
    content["services"]["app"]["ports"] = [{"target": target, "mode": "host"}]
    stack_file.write_text(yaml.safe_dump(content, sort_keys=False))
    return content


def healthy_task_ports(service: str) -> list[int]:
    """Host ports of the service's healthy task containers (host-mode publishing)."""
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
    """{service: "running/declared"} of the stack's services, as `docker stack services` counts them."""
    listing = docker("stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}").stdout
    return dict(line.split(" ", 1) for line in listing.splitlines())


def remove_stack(stack: str) -> None:
    """Remove the stack, and its containers, networks and volumes once Swarm has let them go."""
    docker("stack", "rm", stack, check=False)
    label = f"label=com.docker.stack.namespace={stack}"

    def left() -> list[str]:
        return (
            docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
            + docker("network", "ls", "--quiet", "--filter", label).stdout.split()
        )

    with contextlib.suppress(AssertionError):
        wait_until(f"stack {stack} removed", left, lambda seen: not seen, 90, interval=1)
    containers = docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
    if containers:
        docker("rm", "--force", *containers, check=False)
    volumes = docker("volume", "ls", "--quiet", "--filter", label).stdout.split()
    if volumes:
        docker("volume", "rm", "--force", *volumes, check=False)
