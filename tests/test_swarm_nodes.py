"""Docker Swarm on two nodes: the generated README's multi-node walk-through, run as written.

A `postgresql` project (database_service's) on a swarm of two engines (conftest.swarm_nodes): the
README's commands form it (init, join), push the image to the registry both nodes pull from, label
the database's node and deploy the stack; then a release rolls out, a node is drained and comes
back. Between the commands, the test checks what the README says they do: one app task on each
node, the database on the labelled one and reached from the other node over the overlay network
(with the password from the secret, on both nodes), every task on the new version after the
release, a drain that the service answers throughout, and no task on the node back in service
until the replicas are spread again. The stack's copy publishes the app's port in host mode
(support.swarm.host_mode_stack_file), so that each task is reached on its own node.
"""

import contextlib
import json
import re
import shlex
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.compose import compose_env
from tests.support.docker import docker
from tests.support.polling import request_json, urlopen, wait_until
from tests.support.project import run
from tests.support.swarm import BalancingClient, host_mode_stack_file, remove_stack, tasks
from tests.support.swarm import nodes as swarm_nodes_of

HEADING = "### On several machines"


def walkthrough(project: Path) -> list[str]:
    """The lines of the first shell block under the README's HEADING, comments and blanks left out."""
    section = (project / "README.md").read_text().split(f"\n{HEADING}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def placement(service: str) -> list[tuple[str, str]]:
    """(node, state) of each task of service that Swarm wants running."""
    return [(t["node"], t["state"]) for t in tasks(service)]


def versions(service: str) -> list[tuple[str, object]]:
    """(node, the version the app reports in its OpenAPI document) of each running task."""
    found = []
    for task in tasks(service):
        version: object = task["state"]
        if task["state"] == "running" and task["port"]:
            try:
                status, document = request_json("GET", f"http://{task['addr']}:{task['port']}/openapi.json")
                version = document["info"]["version"] if status == 200 else status
            except OSError as error:
                version = repr(error)
        found.append((task["node"], version))
    return found


def stack_containers(worker_host: str, stack: str, *flags: str) -> list[str]:
    """The names of the stack's running containers (with "--all": any) on the worker engine."""
    label = f"label=com.docker.stack.namespace={stack}"
    listing = docker("--host", worker_host, "ps", *flags, "--filter", label, "--format", "{{.Names}}").stdout
    return listing.split()


def delete_from_registry(registry: str, repository: str, tags: list[str]) -> None:
    """Delete the tags' manifests from the registry (its garbage collection frees the blobs)."""
    accept = ", ".join(
        ["application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"]
    )
    for tag in tags:
        url = f"http://{registry}/v2/{repository}/manifests/{tag}"
        with contextlib.suppress(OSError):
            with urlopen(urllib.request.Request(url, method="HEAD", headers={"Accept": accept})) as answer:
                digest = answer.headers["Docker-Content-Digest"]
            urlopen(urllib.request.Request(url.replace(tag, digest), method="DELETE")).close()


@pytest.mark.parametrize("database", ["none", "postgresql"])
def test_multi_node_walkthrough_labels_the_node_compose_pins_the_database_to(rendered, database):
    """The label the README's Swarm blocks add is the one compose.yaml's database is pinned to, and
    the image is named by IMAGE, as the multi-node block sets it."""
    root = rendered({"database": database})
    compose_file = yaml.safe_load((root / "compose.yaml").read_text())
    assert compose_file["services"]["app"]["image"] == f"${{IMAGE:-{root.name}}}:${{TAG:-latest}}"
    lines = walkthrough(root)
    assert lines[0] == f"export IMAGE=registry.example.com/team/{root.name} TAG=v1"
    labels = [line for line in (root / "README.md").read_text().splitlines() if "--label-add" in line]
    if database == "none":
        assert "db" not in compose_file["services"] and labels == []
        return
    constraint = compose_file["services"]["db"]["deploy"]["placement"]["constraints"]
    assert constraint == [f"node.labels.{root.name}-db == true"]
    assert len(labels) == 2, "the one-node and the multi-node blocks label the database's node"
    assert all(f" --label-add {root.name}-db=true " in line for line in labels), labels


@pytest.mark.docker
def test_readme_multi_node_walkthrough_spreads_updates_drains_and_rebalances(database_service, swarm_nodes):
    """The README's multi-node commands in order, the manager's unless the README says "on each
    other machine" (the join, run on the worker). Adaptations outside their meaning: IMAGE names
    the test's registry instead of registry.example.com/team, MANAGER_ADDR and NODE (the worker)
    are this swarm's, the stack file is the host-mode copy of compose.yaml, and the release bumps
    app/__init__.py's version as a team does.
    """
    project, nodes = database_service, swarm_nodes
    manager, worker, worker_host = nodes["manager"], nodes["worker"], nodes["worker_host"]
    stack = project.name
    app = f"{stack}_app"
    stack_file = project / "stack-test.yaml"
    compose_file = host_mode_stack_file(project / "compose.yaml", stack_file)
    version_file = project / "app" / "__init__.py"
    original_version = version_file.read_text()
    env = compose_env(MANAGER_ADDR=nodes["manager_addr"], NODE=worker)
    deploys, item = 0, {}

    def execute(line: str) -> str:
        """Run one line as a shell would, on the worker for the join; its output."""
        command = line.replace("--compose-file compose.yaml", f"--compose-file {stack_file.name}")
        assigned = re.fullmatch(r"(\w+)=\$\((.*)\)", command)  # NAME=$(...): kept for the lines below
        on = {"DOCKER_HOST": worker_host} if command.startswith("docker swarm join") else {}
        shell = assigned.group(2) if assigned else command
        result = run(["bash", "-c", shell], cwd=project, env={**env, **on}, timeout=1200)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr[-3000:]}"
        if assigned:
            env[assigned.group(1)] = result.stdout.strip()
        return result.stdout

    try:
        for line in walkthrough(project):
            if line.startswith("export "):  # as a shell does: the variables of the lines below
                for assignment in shlex.split(line)[1:]:
                    name, value = assignment.split("=", 1)
                    env[name] = value.replace("registry.example.com/team", nodes["registry"])
                continue
            if line.startswith("TAG=v2 docker compose build"):  # the release's version
                assert '__version__ = "0.1.0"' in original_version
                version_file.write_text(original_version.replace('"0.1.0"', '"0.2.0"'))
            if "--availability drain" not in line:
                output = execute(line)
            else:
                path = f"/items/{item['id']}"
                with BalancingClient(app, path) as client, BalancingClient(app, path, None) as static:
                    started = time.monotonic()
                    execute(line)
                    # Converged: nothing of the stack left on the worker, both replicas running on
                    # the manager and answering.
                    wait_until(
                        f"{worker}'s tasks moved to {manager}",
                        lambda: (stack_containers(worker_host, stack), versions(app)),
                        ([], [(manager, "0.2.0"), (manager, "0.2.0")]).__eq__,
                        180,
                        interval=0.5,
                    )
                    converged = time.monotonic() - started
                print(f"\ndrain of {worker}: converged in {converged:.1f} s")
                clients = {"tasks resolved every 0.5 s": client, "the ports of the start": static}
                for name, seen in clients.items():
                    print(
                        f"  client to {name}: {seen.requests} requests, {seen.failed} failed, "
                        f"{seen.errors} connection errors retried on another task; answered by node "
                        f"address: {dict(seen.answered)}"
                    )
                worker_addr = next(n["addr"] for n in swarm_nodes_of().values() if n["name"] == worker)
                assert static.answered[worker_addr] > 0, "the worker's task served before the drain"
                # The manager's replica answers throughout a drain of the worker: a client that
                # retries a refused connection on another task (as a load balancer does) loses none.
                for seen in (client, static):
                    assert seen.failed == 0, f"failed requests during the drain, last: {seen.seen[-5:]}"
            if line.startswith("docker node ls"):
                rows = sorted([w for w in row.split() if w != "*"][1:4] for row in output.splitlines()[1:])
                assert rows == sorted([[manager, "Ready", "Active"], [worker, "Ready", "Active"]]), output
            if "docker stack deploy" in line:
                deploys += 1
                if deploys == 1:
                    item = deployed(stack, manager, worker, compose_file)
                else:
                    rolled_out(stack, manager, worker)
            if "--availability active" in line:
                # Swarm does not move running tasks to a node back in service by itself.
                assert stack_containers(worker_host, stack) == [], "tasks moved to the worker unasked"
                assert placement(app) == [(manager, "running"), (manager, "running")]
            if line.startswith("docker service scale") and line.endswith("=2"):
                one_on_each_node(app, manager, worker, "spread again", 300)
            if line.startswith("docker stack rm"):

                def left() -> list[str]:
                    label = f"label=com.docker.stack.namespace={stack}"
                    on_manager = docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
                    return on_manager + stack_containers(worker_host, stack, "--all")

                wait_until(f"{stack}'s containers gone from both nodes", left, [].__eq__, 120, interval=1)
        assert deploys == 2, "the walk-through deploys, then rolls out a release"
    finally:
        version_file.write_text(original_version)
        stack_file.unlink(missing_ok=True)
        docker("node", "update", "--availability", "active", worker, check=False)
        remove_stack(stack)
        worker_images = docker("--host", worker_host, "images", "--quiet", env.get("IMAGE", stack)).stdout
        if worker_images.split():
            docker("--host", worker_host, "rmi", "--force", *set(worker_images.split()), check=False)
        if "IMAGE" in env:
            delete_from_registry(nodes["registry"], env["IMAGE"].split("/", 1)[1], ["v1", "v2"])


def deployed(stack: str, manager: str, worker: str, compose_file: dict) -> dict:
    """After the first deploy: one app task on each node, the database on the labelled manager, the
    migrations run, an item written through the worker's task and read through the manager's."""
    app, db = f"{stack}_app", f"{stack}_db"
    wait_until(
        f"{stack}: an app task running on each node, the database on {manager}",
        lambda: (placement(app), placement(db)),
        (sorted([(manager, "running"), (worker, "running")]), [(manager, "running")]).__eq__,
        240,
        interval=1,
    )
    spec = json.loads(docker("service", "inspect", db).stdout)[0]["Spec"]
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == [f"node.labels.{stack}-db == true"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 1
    mounts = spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert [(m["Type"], m["Source"], m["Target"]) for m in mounts] == [
        ("volume", f"{stack}_db-data", "/var/lib/postgresql/data")
    ]
    assert "ports" not in compose_file["services"]["db"] and not spec.get("EndpointSpec", {}).get("Ports")
    assert spec["EndpointSpec"]["Mode"] == "dnsrr", "compose.yaml's endpoint_mode reaches the service"

    # The worker's task reaches the database on the manager over the overlay network (with the
    # password of the secret delivered to the worker); once the migrations have run, it writes.
    by_node = {t["node"]: f"http://{t['addr']}:{t['port']}" for t in tasks(app)}
    status, item = wait_until(
        f"{stack}: an item written through {worker}'s task",
        lambda: request_json("POST", f"{by_node[worker]}/items", {"name": "across nodes"}),
        lambda answer: answer[0] == 201,
        180,
        interval=1,
    )
    assert request_json("GET", f"{by_node[manager]}/items/{item['id']}") == (200, item)

    # The migrations' task ends complete (an attempt before the database was up may have failed and
    # been retried); `service ps` lists the newest task first.
    def migrate_tasks() -> list[str]:
        return docker(
            "service", "ps", f"{stack}_migrate", "--format", "{{.CurrentState}}"
        ).stdout.splitlines()

    wait_until(f"{stack}_migrate complete", migrate_tasks, lambda t: t[0].startswith("Complete"), 60)
    return item


def one_on_each_node(app: str, manager: str, worker: str, what: str, timeout: float) -> None:
    """Waits until app runs release 0.2.0 in two tasks, one on each node."""
    wait_until(
        f"{app}: {what}, one task on each node",
        lambda: versions(app),
        sorted([(manager, "0.2.0"), (worker, "0.2.0")]).__eq__,
        timeout,
        interval=1,
    )


def rolled_out(stack: str, manager: str, worker: str) -> None:
    """After the release's deploy: the rolling update completes, every task on the new version, one
    on each node."""
    app = f"{stack}_app"

    def update_state() -> str:
        status = docker("service", "inspect", "--format", "{{json .UpdateStatus}}", app).stdout
        state = (json.loads(status) or {}).get("State", "")
        assert state in {"", "updating", "completed"}, f"update {state}: {status}"
        return state

    started = time.monotonic()
    wait_until(f"rolling update of {app}", update_state, "completed".__eq__, 300, interval=1)
    one_on_each_node(app, manager, worker, "every task on 0.2.0", 120)
    print(f"\nrelease 0.2.0 rolled out on both nodes in {time.monotonic() - started:.1f} s")
