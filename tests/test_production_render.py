"""Tier 2: the rendered files hold the service's production timings and probe together.

Every render answer set: the image's keep-alive outlasts a load balancer's idle window, and each
grace period from the server's graceful shutdown up to compose's stop_grace_period and Kubernetes'
terminationGracePeriodSeconds leaves the one inside it time to finish. The image's HEALTHCHECK is
run for real against a local server: healthy on 200 only.
"""

import http.server
import re
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.dockerfile import lineage, parse
from tests.support.generated import k8s_objects, load_yaml
from tests.support.project import RENDER_ANSWER_SETS, answers_of, case_id

# AWS ALB's default idle timeout, the shortest of the common balancers' (GCP's is 600 s).
BALANCER_IDLE = 60


@pytest.fixture(scope="module", params=RENDER_ANSWER_SETS, ids=case_id)
def project(request, rendered) -> tuple[Path, dict]:
    return rendered(request.param), answers_of(request.param)


def image_env(root: Path) -> dict[str, str]:
    """The ENV of the production image (its last stage, with what it inherits from runtime)."""
    env = {}
    for instruction in lineage(parse(root / "Dockerfile")):
        if instruction.keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", instruction.args))
    return env


def seconds(duration: str) -> float:
    """A compose duration (25s, 1m30s) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|h|m|s)", duration))


def test_keep_alive_outlasts_balancers_and_grace_periods_nest(project):
    root, answers = project
    env = image_env(root)
    assert int(env["UVICORN_TIMEOUT_KEEP_ALIVE"]) > BALANCER_IDLE
    graceful = int(env["UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN"])
    assert graceful >= 5, "in-flight requests get some seconds to finish"
    if answers["use_compose"]:
        app = load_yaml(root / "compose.yaml")["services"]["app"]
        assert seconds(app["stop_grace_period"]) > graceful
        assert "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN" not in str(app.get("environment", ""))
    if answers["use_kubernetes"]:
        pod = k8s_objects(root)["Deployment"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        overrides = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert overrides.get("UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN", str(graceful)) == str(graceful)
        # The kubelet's SIGKILL comes after the pause and the graceful shutdown, with a margin.
        assert pod["terminationGracePeriodSeconds"] >= pause + graceful + 1


class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # uvicorn's
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def probe_exit_code(command: list[str], status: int | None) -> int:
    """The exit code of the HEALTHCHECK command against a server answering status (None: no server),
    with UVICORN_PORT naming that server's port as the image's ENV names the app's."""
    handler = type("Handler", (Answer,), {"status": status or 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    environment = {"UVICORN_PORT": str(server.server_address[1])}
    if status is None:
        server.server_close()
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return subprocess.run(command, env=environment, timeout=10).returncode
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()


def test_the_health_probe_is_healthy_on_200_only_and_starts_no_python(rendered):
    root = rendered({})
    (health,) = [i for i in lineage(parse(root / "Dockerfile")) if i.keyword == "HEALTHCHECK"]
    command = health.exec_form()
    assert command[:2] == ["bash", "-c"]  # no Python started: several times bash's start
    assert "/health" in command[-1]
    assert probe_exit_code(command, 200) == 0
    assert probe_exit_code(command, 503) != 0
    assert probe_exit_code(command, None) != 0
