"""Reading a generated project's files."""

import re
from pathlib import Path

import yaml

K8S_MANIFESTS = [
    "deployment.yaml",
    "service.yaml",
    "poddisruptionbudget.yaml",
    "horizontalpodautoscaler.yaml",
    "networkpolicy.yaml",
]


def load_yaml(path: Path) -> dict:
    """The single YAML document in path."""
    return yaml.safe_load(path.read_text())


def app_version(root: Path) -> str:
    """The version the project declares in app/__init__.py."""
    return re.search(r'^__version__ = "(.+)"$', (root / "app" / "__init__.py").read_text(), re.M)[1]


def k8s_objects(root: Path) -> dict[str, dict]:
    """{kind: object} of the project's Kubernetes manifests (k8s/, one object each)."""
    return {load_yaml(root / "k8s" / name)["kind"]: load_yaml(root / "k8s" / name) for name in K8S_MANIFESTS}


def github_workflow(root: Path) -> dict:
    """.github/workflows/ci.yml, with its `on:` key as the string YAML 1.1 reads as a boolean."""
    data = load_yaml(root / ".github" / "workflows" / "ci.yml")
    data["on"] = data.pop(True)
    return data


def pins(lock: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{package: (version, hashes)} of a hash-pinned requirements file's text."""
    found = {}
    for entry in re.split(r"\n(?=[a-z])", lock):
        if "==" in entry:
            name, _, rest = entry.partition("==")
            found[name] = (re.split(r"[ ;]", rest)[0], frozenset(re.findall(r"sha256:(\w+)", entry)))
    return found


def newest_kubernetes() -> str:
    """The newest Kubernetes version kubernetes-validate knows the schemas of."""
    from kubernetes_validate.utils import latest_version

    return latest_version()
