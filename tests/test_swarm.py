"""Docker Swarm: the generated compose.yaml deployed as a stack on a single-node swarm.

The stack converges to the declared replicas, every task healthy and answering, with the update,
rollback and hardening settings of compose.yaml; a rolling update to a rebuilt image completes with
requests answered throughout. The image is the compose module's (compose_service). The database
option's stack runs on two nodes, in test_swarm_nodes.py.
"""

import contextlib
import json
import time

import pytest

from tests.support.compose import compose, compose_env, edit_greeting
from tests.support.docker import docker, unique
from tests.support.polling import get_json, wait_until
from tests.support.project import run
from tests.support.swarm import healthy_task_ports, host_mode_stack_file, remove_stack

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
    """compose.yaml as a stack: declared replicas, then a rolling update, answering throughout.

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
        assert spec["UpdateConfig"]["Order"] == "stop-first"
        assert spec["UpdateConfig"]["FailureAction"] == "rollback"
        assert spec["RollbackConfig"]["Order"] == "stop-first"
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
