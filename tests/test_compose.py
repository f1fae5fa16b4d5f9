"""Docker Compose: compose.yaml and compose.override.yaml, rendered and run.

Render level (no Docker): the complete projects' compose files have the promised properties.
Docker level (marker `docker`): `docker compose config` accepts them with and without a mirror (and
the docker CLI's stack parser compose.yaml alone); `docker compose up --wait` brings the service up
healthy and hardened on a free host port, `docker compose watch` ships a code edit, `docker compose
down -v` leaves nothing behind. Builds go through the package mirror when FASTAPI_DOCKER_INDEX_URL
is set (INDEX_URL and BUILD_NETWORK, as the generated README tells a user behind a mirror).
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import yaml

from tests.support.compose import (
    compose,
    compose_env,
    edit_greeting,
    images_of,
    project_resources,
    remove_images,
)
from tests.support.docker import docker, unique
from tests.support.generated import load_yaml
from tests.support.net import free_port
from tests.support.polling import get_json, wait_until
from tests.support.project import run

# --- render level -----------------------------------------------------------------------------------


def test_compose_file_properties(complete):
    root, expected = complete
    compose_file = load_yaml(root / "compose.yaml")
    assert "version" not in compose_file, "the Compose specification has no `version:`"
    assert list(compose_file["services"]) == ["app"]
    app = compose_file["services"]["app"]
    assert app["image"] == f"${{IMAGE:-{expected['slug']}}}:${{TAG:-latest}}"
    # The OCI build facts come from the environment (`make up` exports them), empty by default.
    assert app["build"] == {
        "context": ".",
        "args": {name: f"${{{name}:-}}" for name in ("VERSION", "REVISION", "CREATED", "SOURCE")},
    }
    assert app["ports"] == [f"${{HOST_PORT:-{expected['port']}}}:{expected['port']}"]
    assert app["restart"] == "unless-stopped"
    assert app["read_only"] is True
    # The long tmpfs syntax: Swarm ignores the short `tmpfs:` key.
    assert app["volumes"] == [{"type": "tmpfs", "target": "/tmp"}]
    assert "tmpfs" not in app
    assert app["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in app["security_opt"]
    assert "healthcheck" not in app, "the image's HEALTHCHECK is the one to use"
    assert app["networks"] == ["backend"] and "backend" in compose_file["networks"]
    # No decorative volumes: a named volume needs a service that keeps data, and a test that the
    # data survives re-creating the container.
    assert "volumes" not in compose_file
    deploy = app["deploy"]
    assert deploy["replicas"] >= 2
    assert deploy["update_config"]["order"] == "stop-first"  # keeps the replicas spread over nodes
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["rollback_config"]["order"] == "stop-first"
    limits, reservations = deploy["resources"]["limits"], deploy["resources"]["reservations"]
    assert float(limits["cpus"]) == expected["workers"]
    assert limits["memory"] == f"{128 * (expected['workers'] + 1)}M"
    assert float(reservations["cpus"]) <= float(limits["cpus"]) and reservations["memory"]


def test_compose_override_holds_what_swarm_rejects(complete):
    root, _ = complete
    override = load_yaml(root / "compose.override.yaml")
    assert "version" not in override
    app = override["services"]["app"]
    assert app["build"]["secrets"] == ["index_url"]
    assert app["build"]["network"] == "${BUILD_NETWORK:-default}"
    assert override["secrets"] == {"index_url": {"environment": "INDEX_URL"}}
    assert app["deploy"] == {"replicas": 1}, "compose publishes a fixed host port: one container"
    assert "develop" not in app, "`up` runs the production image; the dev service has the watch"
    # The dev service: compose.yaml's app (its hardening, port, network: no copy of them), only
    # when named (profile), the dev stage, app/ mounted read-only over the image's copy, one
    # container, no restart (its logs are in view).
    dev = override["services"]["dev"]
    assert dev["extends"] == {"file": "compose.yaml", "service": "app"}
    assert not {"read_only", "cap_drop", "security_opt", "ports", "networks"} & set(dev)
    assert dev["profiles"] == ["dev"] and dev["build"]["target"] == "dev"
    assert dev["build"]["secrets"] == ["index_url"]
    assert dev["volumes"] == [{"type": "bind", "source": "./app", "target": "/app/app", "read_only": True}]
    assert dev["deploy"] == {"replicas": 1} and dev["restart"] == "no"
    watch = {entry["path"]: entry["action"] for entry in dev["develop"]["watch"]}
    assert watch == {"requirements.txt": "rebuild", "requirements-dev.txt": "rebuild"}
    # Every other variable has a default, so plain `docker compose up` needs no environment.
    for name in ("compose.yaml", "compose.override.yaml"):
        for variable in re.findall(r"\$\{([^}]*)\}", (root / name).read_text()):
            assert ":-" in variable, f"{name}: ${{{variable}}} has no default"


# --- docker level -----------------------------------------------------------------------------------


@pytest.mark.docker
def test_compose_config_accepts_the_files_with_and_without_a_mirror(compose_service):
    service = compose_service
    for env in (compose_env(), compose_env(INDEX_URL="https://mirror.example/simple", BUILD_NETWORK="host")):
        result = compose(service, "config", "--format", "json", env=env)
        config = json.loads(result.stdout)
        app = config["services"]["app"]
        assert app["deploy"]["replicas"] == 1 and app["read_only"] is True
        assert app["build"]["network"] == env.get("BUILD_NETWORK", "default")
    # The dev service as Compose resolves it: the app's hardening and port, plus the mount.
    dev = json.loads(compose(service, "--profile", "dev", "config", "--format", "json", env=env).stdout)
    dev = dev["services"]["dev"]
    assert dev["read_only"] is True and dev["cap_drop"] == ["ALL"]
    assert dev["security_opt"] == ["no-new-privileges:true"] and dev["deploy"]["replicas"] == 1
    assert [v["type"] for v in dev["volumes"]] == ["tmpfs", "bind"] and dev["restart"] == "no"
    assert [p["target"] for p in dev["ports"]] == [p["target"] for p in app["ports"]]
    # What Swarm reads: compose.yaml alone, accepted by the docker CLI's own stack parser.
    stack = run(
        ["docker", "stack", "config", "--compose-file", "compose.yaml"], cwd=service, env=compose_env()
    )
    assert stack.returncode == 0, stack.stderr
    assert yaml.safe_load(stack.stdout)["services"]["app"]["deploy"]["replicas"] == 2


@pytest.fixture
def compose_project() -> str:
    """A Compose project name; its containers, networks, volumes and images go afterwards."""
    project = unique("deploytest")
    yield project
    docker("compose", "--project-name", project, "down", "--volumes", "--remove-orphans", check=False)
    remove_images(project)


@pytest.mark.docker
def test_compose_up_serves_hardened_watch_ships_an_edit_and_down_leaves_nothing(
    compose_service, compose_project
):
    """Up and healthy through the published port, hardened; builds without INDEX_URL; the dev
    service's watch ships an edit without building an image; down cleans up."""
    service = compose_service
    project, port = compose_project, free_port()
    env = compose_env(HOST_PORT=str(port), TAG="compose")
    started = time.monotonic()
    compose(service, "--project-name", project, "up", "--build", "--wait", env=env)
    print(f"\ncompose up --build --wait: {time.monotonic() - started:.1f} s")
    assert get_json(f"http://127.0.0.1:{port}/") == {"Hello": "World"}
    (container,) = compose(service, "--project-name", project, "ps", "--quiet", "app", env=env).stdout.split()
    state = json.loads(docker("inspect", container).stdout)[0]
    host = state["HostConfig"]
    assert state["State"]["Health"]["Status"] == "healthy"
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert {m["Destination"]: m["Type"] for m in state["Mounts"]} == {"/tmp": "tmpfs"}
    # INDEX_URL unset must not break a build: the secret is optional, and absent pip uses its
    # default index (the layers are the ones just built).
    unset = {k: v for k, v in env.items() if k != "INDEX_URL"}
    compose(service, "--project-name", project, "build", env=unset)

    # Dev mode as the README runs it (`make dev`): the dev service, its logs in view, on a port
    # of its own; a save under app/ is served by the reloaded process, with no new image.
    dev_port = free_port()
    log = service / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen(
            ["docker", "compose", "--project-name", project, "up", "--build", "--watch", "dev"],
            cwd=service,
            env={**env, "HOST_PORT": str(dev_port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    original = None
    try:
        url = f"http://127.0.0.1:{dev_port}/"
        wait_until(f"dev service answering {url}", lambda: get_json(url), {"Hello": "World"}.__eq__, 600)
        images = images_of(project)
        original = edit_greeting(service, "Dev")
        saved = time.monotonic()
        wait_until(f"GET {url} answering the edit", lambda: get_json(url), {"Hello": "Dev"}.__eq__, 60)
        print(f"dev mode: the edit answered after {time.monotonic() - saved:.1f} s")
        assert images_of(project) == images, "a save built an image"
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
        if original is not None:
            (service / "app" / "main.py").write_text(original)
    output = log.read_text()
    # The app's own lines reach the terminal: the reload, and the new process starting up.
    assert "WatchFiles detected changes in 'app/main.py'" in output, output[-3000:]
    assert output.count("Application startup complete") >= 2, output[-3000:]
    (dev_container,) = compose(
        service, "--project-name", project, "ps", "--all", "--quiet", "dev", env=env
    ).stdout.split()
    dev_host = json.loads(docker("inspect", dev_container).stdout)[0]["HostConfig"]
    assert dev_host["ReadonlyRootfs"] is True and dev_host["CapDrop"] == ["ALL"]

    assert any(project_resources(project).values())
    compose(service, "--project-name", project, "down", "--volumes", env=env)
    assert project_resources(project) == {"containers": [], "networks": [], "volumes": []}
