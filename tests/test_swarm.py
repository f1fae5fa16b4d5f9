"""Docker Swarm: the generated compose.yaml deployed as a stack on a single-node swarm.

The stack converges to the declared replicas, every task healthy and answering, with the update,
rollback and hardening settings of compose.yaml; a start-first rolling update to a rebuilt image
completes with requests answered throughout. With the database option, the same file runs the
database (one replica, placed, on its volume, reached by DNS, published nowhere) and the migration
to completion, and every app replica reads what one wrote. The images are the compose module's
(compose_service) and the database modules' (database_service).
"""

import contextlib
import json
import time

import pytest

from tests.support.compose import compose, compose_env, edit_greeting
from tests.support.docker import docker, unique
from tests.support.polling import get_json, request_json, wait_until
from tests.support.project import run
from tests.support.swarm import healthy_task_ports, host_mode_stack_file, remove_stack, replicas

pytestmark = pytest.mark.docker


def replies_on(ports: list[int]) -> list[object]:
    """The JSON replies to GET / on each loopback port that answers within a second."""
    replies = []
    for port in ports:
        with contextlib.suppress(OSError):
            replies.append(get_json(f"http://127.0.0.1:{port}/", timeout=1))
    return replies


def stack_state(name: str) -> tuple[str, list[object]]:
    """(`docker service ls` replicas, the replies of the service's healthy tasks)."""
    replicas = docker("service", "ls", "--filter", f"name={name}", "--format", "{{.Replicas}}").stdout
    return replicas.strip(), replies_on(healthy_task_ports(name))


@pytest.mark.docker
def test_swarm_stack_converges_and_rolls_out_a_new_image(compose_service, swarm, tmp_path):
    """compose.yaml as a stack: declared replicas, then a start-first rolling update, answering.

    Each task is published in host mode (support.swarm.host_mode_stack_file), to be probed by itself.
    """
    service = compose_service
    stack_file = tmp_path / "stack.yaml"
    compose_file = host_mode_stack_file(service / "compose.yaml", stack_file)
    declared = compose_file["services"]["app"]["deploy"]
    stack = unique("deploytest")
    name = f"{stack}_app"
    env = compose_env(TAG="v1")
    try:
        started = time.monotonic()
        deploy = run(["docker", "stack", "deploy", "--compose-file", str(stack_file), stack], env=env)
        assert deploy.returncode == 0, deploy.stderr
        # Converged: Swarm counts every declared task running (it counts a task once it is
        # healthy), and each of them answers through its published port.
        converged = (
            f"{declared['replicas']}/{declared['replicas']}",
            [{"Hello": "World"}] * declared["replicas"],
        )
        wait_until(f"stack {stack} converged", lambda: stack_state(name), converged.__eq__, 120, interval=0.5)
        seconds = time.monotonic() - started
        print(f"\nstack converged to {declared['replicas']} healthy, answering tasks in {seconds:.1f} s")
        spec = json.loads(docker("service", "inspect", name).stdout)[0]["Spec"]
        task = spec["TaskTemplate"]
        assert spec["UpdateConfig"]["Order"] == "start-first"
        assert spec["UpdateConfig"]["FailureAction"] == "rollback"
        assert spec["RollbackConfig"]["Order"] == "start-first"
        assert task["ContainerSpec"]["ReadOnly"] is True
        assert task["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
        assert [m["Target"] for m in task["ContainerSpec"]["Mounts"] if m["Type"] == "tmpfs"] == ["/tmp"]
        assert task["Resources"]["Limits"]["MemoryBytes"] == 256 * 2**20

        original = edit_greeting(service, "v2")
        try:
            compose(service, "build", env=compose_env(TAG="v2"))
        finally:
            (service / "app" / "main.py").write_text(original)
        started = time.monotonic()
        docker("service", "update", "--detach", "--image", f"{service.name}:v2", name)
        rounds, silent, rolled_out = [], 0, []

        def update_state() -> str:
            nonlocal silent
            status = docker("service", "inspect", "--format", "{{json .UpdateStatus}}", name).stdout
            state = (json.loads(status) or {}).get("State", "")
            assert state in {"", "updating", "completed"}, f"update {state}: {status}"
            rounds.append(state)
            replies = replies_on(healthy_task_ports(name))
            silent += not replies
            if not rolled_out and replies == [{"Hello": "v2"}] * declared["replicas"]:
                rolled_out.append(time.monotonic() - started)
            return state

        wait_until(f"rolling update of {name}", update_state, "completed".__eq__, 300, interval=0.5)
        seconds = time.monotonic() - started
        first_all_v2 = f"{rolled_out[0]:.1f} s" if rolled_out else "never seen"
        print(
            f"rolling update: every task answering v2 after {first_all_v2}, completed (monitor period "
            f"included) in {seconds:.1f} s ({len(rounds)} rounds of requests)"
        )
        assert silent == 0, f"no task answered in {silent} of {len(rounds)} rounds during the update"
        # Completed means the new tasks run; the old ones may still be draining: wait for exactly
        # the state asserted, every declared task healthy and answering with the new image.
        rolled = (f"{declared['replicas']}/{declared['replicas']}", [{"Hello": "v2"}] * declared["replicas"])
        wait_until(f"stack {stack} on v2 only", lambda: stack_state(name), rolled.__eq__, 60, interval=0.5)
    finally:
        remove_stack(stack)


@pytest.mark.docker
def test_swarm_stack_migrates_and_serves_every_replica_from_one_placed_unpublished_database_volume(
    database_service, swarm
):
    """compose.yaml of the database option as a stack: db (1 replica, placed, its volume, DNS
    round-robin, no port), migrate run to completion, and the app's replicas answering /items.

    The host-mode copy of compose.yaml sits beside the original, so `./db-password.txt` resolves as
    it does for a user.
    """
    stack_file = database_service / "stack-test.yaml"
    compose_file = host_mode_stack_file(database_service / "compose.yaml", stack_file)
    stack = unique("dbtest")
    try:
        deploy = run(
            ["docker", "stack", "deploy", "--compose-file", str(stack_file), stack], env=compose_env(TAG="db")
        )
        assert deploy.returncode == 0, deploy.stderr
        app, db = f"{stack}_app", f"{stack}_db"

        # The app's tasks answer /items once the migrate task has made the table and the db is up.
        def first_write() -> tuple[int, object]:
            ports = healthy_task_ports(app)
            if len(ports) < 2:
                return (0, f"healthy app tasks on ports {ports}; services {replicas(stack)}")
            return request_json("POST", f"http://127.0.0.1:{ports[0]}/items", {"name": "swarm"})

        status, item = wait_until(
            f"stack {stack} writing an item", first_write, lambda s: s[0] == 201, 180, interval=1
        )
        for port in healthy_task_ports(app):  # every replica reads what one wrote: one database
            assert request_json("GET", f"http://127.0.0.1:{port}/items/{item['id']}") == (200, item)
        assert replicas(stack)[db] == "1/1" and replicas(stack)[app] == "2/2"
        spec = json.loads(docker("service", "inspect", db).stdout)[0]["Spec"]
        assert spec["Mode"]["Replicated"]["Replicas"] == 1
        assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == manager"]
        mounts = spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
        assert [(m["Type"], m["Source"], m["Target"]) for m in mounts] == [
            ("volume", f"{stack}_db-data", "/var/lib/postgresql/data")
        ]
        assert "ports" not in compose_file["services"]["db"] and not spec.get("EndpointSpec", {}).get("Ports")
        assert spec["EndpointSpec"]["Mode"] == "dnsrr", "compose.yaml's endpoint_mode reaches the service"

        # The migrations' task ends complete (an attempt before the database was up may have failed
        # and been retried); `service ps` lists the newest task first.
        def migrate_tasks() -> list[str]:
            return docker(
                "service", "ps", f"{stack}_migrate", "--format", "{{.CurrentState}}"
            ).stdout.splitlines()

        wait_until(f"{stack}_migrate complete", migrate_tasks, lambda t: t[0].startswith("Complete"), 60)
    finally:
        remove_stack(stack)
        stack_file.unlink(missing_ok=True)
