"""The external linters over rendered projects, in one table.

Each row is a tool, the files it checks, its command line and what "clean" means for it; it runs on
the render tier's answer sets (RENDER_ANSWER_SETS) or on the complete projects (COMPLETE, and with
the database option DATABASE_ANSWER_SETS) whose files it checks. Every generated Python file passes
ruff, every Dockerfile hadolint; every Kubernetes manifest passes kubernetes-validate --strict for
the newest Kubernetes it knows; the GitHub workflow passes actionlint (with shellcheck), zizmor and
its schema, Dependabot's file zizmor and its schema, the GitLab pipeline its schema and shellcheck
(each job's script), Renovate's file its schema; checkov finds nothing in the manifests, the
pipelines and the Dockerfile (four justified Kubernetes skips below, and those a manifest annotates
with its reason); yamllint passes on every generated YAML file.
"""

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.generated import K8S_MANIFESTS, k8s_objects, load_yaml, newest_kubernetes
from tests.support.project import (
    COMPLETE,
    DATABASE_ANSWER_SETS,
    OBSERVABILITY_ANSWER_SETS,
    RENDER_ANSWER_SETS,
    case_id,
    run,
    tool,
)

# Checks that do not fit a kustomize *base*, each with the reason; an overlay satisfies them.
CHECKOV_K8S_SKIPS = {
    # The base is namespace-agnostic: `kubectl apply -k k8s/ -n NAMESPACE` or an overlay sets it.
    "CKV_K8S_21": "the default namespace should not be used",
    # The base names a tag; the overlay that deploys pins the image, by digest, under `images:`.
    "CKV_K8S_43": "image should use a digest",
    # The Deployment names the image only; its tag is kustomization.yaml's `images:` (the version).
    "CKV_K8S_14": "image tag should be fixed, not latest or blank",
    # IfNotPresent: a release tag never moves, and Always breaks images loaded into local clusters.
    "CKV_K8S_15": "image pull policy should be Always",
}
# yamllint's defaults, less three conventions of these files: Compose, Kubernetes and CI files are
# single documents without `---`, GitHub's `on:` key, and Dependabot's `uses: x@sha # vN` comments.
YAMLLINT_CONFIG = """\
extends: default
rules:
  document-start: disable
  line-length: {max: 100}
  truthy: {check-keys: false}
  comments: {min-spaces-from-content: 1}
"""


def exits_zero(result: subprocess.CompletedProcess, root: Path) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def says_nothing(result: subprocess.CompletedProcess, root: Path) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def validates_every_manifest(result: subprocess.CompletedProcess, root: Path) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(K8S_MANIFESTS), result.stdout


def zizmor_finds_nothing(result: subprocess.CompletedProcess, root: Path) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout, result.stdout


def annotated_skips(root: Path) -> set[str]:
    """The checks a manifest skips itself, in a `checkov.io/skipN: CHECK_ID=reason` annotation."""
    return {
        value.split("=", 1)[0]
        for manifest in k8s_objects(root).values()
        for key, value in manifest["metadata"].get("annotations", {}).items()
        if key.startswith("checkov.io/skip")
    }


def checkov_finds_nothing(result: subprocess.CompletedProcess, root: Path) -> None:
    """Every framework asked for was checked, passed something and failed nothing; only the
    justified skips were skipped, and every skip a manifest annotates was; the pipeline file was
    parsed (checkov drops files it cannot)."""
    pipeline = "github_actions" if (root / ".github").exists() else "gitlab_ci"
    frameworks = ["kubernetes", "dockerfile", pipeline]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    reports = {report["check_type"]: report for report in reports if "check_type" in report}
    assert sorted(reports) == sorted(frameworks), (
        f"checkov checked nothing for {set(frameworks) - set(reports)}"
    )
    for framework, report in reports.items():
        failed = [
            f"{c['check_id']} {c['check_name']}: {c['file_path']} {c['resource']}"
            for c in report["results"]["failed_checks"]
        ]
        assert not failed, f"{framework}:\n" + "\n".join(failed)
        assert report["summary"]["passed"] > 0, framework
        skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
        annotated = annotated_skips(root) if framework == "kubernetes" else set()
        assert skipped - set(CHECKOV_K8S_SKIPS) == annotated, skipped
    checked = {c["file_path"] for c in reports[pipeline]["results"]["passed_checks"]}
    expected = "/.github/workflows/ci.yml" if pipeline == "github_actions" else "/.gitlab-ci.yml"
    assert expected in checked, f"checkov skipped {expected} (it drops files it cannot parse)"


def checkov(root: Path, tmp: Path) -> list[str]:
    """Checkov's JSON results for the manifests, the Dockerfile and the pipeline (offline)."""
    pipeline = "github_actions" if (root / ".github").exists() else "gitlab_ci"
    return [
        tool("checkov"), "--directory", str(root), "--framework", "kubernetes", "dockerfile", pipeline,
        "--output", "json", "--skip-download", "--skip-check", ",".join(CHECKOV_K8S_SKIPS),
    ]  # fmt: skip


def gitlab_job_scripts(root: Path, tmp: Path) -> list[str]:
    """Each GitLab job's shell, as its runner runs it: the extended jobs' before_script, its own
    before_script and script, under `set -e`; written to tmp/<job>.sh."""
    pipeline = load_yaml(root / ".gitlab-ci.yml")
    scripts = []
    for name, job in pipeline.items():
        if isinstance(job, dict) and "script" in job:
            parents = job.get("extends", [])
            parents = [parents] if isinstance(parents, str) else parents
            before = [line for parent in parents for line in pipeline[parent].get("before_script", [])]
            lines = [*before, *job.get("before_script", []), *job["script"]]
            script = tmp / f"{name}.sh"
            script.write_text("#!/bin/sh\nset -e\n" + "\n".join(lines) + "\n")
            scripts.append(str(script))
    assert scripts, "no job with a script"
    return scripts


def yaml_files(root: Path) -> list[str]:
    paths = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in {".yaml", ".yml"})
    assert len(paths) >= 8, paths
    return paths


def yamllint(root: Path, tmp: Path) -> list[str]:
    config = tmp / "yamllint.yaml"
    config.write_text(YAMLLINT_CONFIG)
    return [tool("yamllint"), "--strict", "--config-file", str(config), *yaml_files(root)]


def schema(name: str, path: str) -> Callable[[Path, Path], list[str]]:
    return lambda root, tmp: [tool("check-jsonschema"), "--builtin-schema", name, path]


@dataclass(frozen=True)
class Lint:
    name: str
    on: list[str]  # case ids: of RENDER_ANSWER_SETS, or keys of COMPLETE or DATABASE_ANSWER_SETS
    files: str  # what it checks, for the reader
    command: Callable[[Path, Path], list[str]]  # (project root, a scratch directory) -> argv, run in root
    clean: Callable[[subprocess.CompletedProcess, Path], None] = exits_zero
    cwd: str = "."
    timeout: float = 300


EVERY = [case_id(answer_set) for answer_set in RENDER_ANSWER_SETS]
ANSWER_SETS = (
    {case_id(a): a for a in RENDER_ANSWER_SETS} | COMPLETE | DATABASE_ANSWER_SETS | OBSERVABILITY_ANSWER_SETS
)
# Every deployment file, with and without the database, and with the observability option.
DEPLOYED = [*COMPLETE, *DATABASE_ANSWER_SETS, *OBSERVABILITY_ANSWER_SETS]
LINTS = [
    Lint("ruff-check", EVERY, "*.py", lambda root, tmp: [tool("ruff"), "check", "--no-cache", "."]),
    Lint(
        "ruff-format", EVERY, "*.py", lambda root, tmp: [tool("ruff"), "format", "--no-cache", "--check", "."]
    ),
    Lint("hadolint", EVERY, "Dockerfile", lambda root, tmp: [tool("hadolint"), "Dockerfile"], says_nothing),
    Lint(
        "kubernetes-validate",
        DEPLOYED,
        "k8s/*.yaml but kustomization.yaml",
        lambda root, tmp: [
            tool("kubernetes-validate"),
            "--strict",
            "--kubernetes-version",
            newest_kubernetes(),
            *K8S_MANIFESTS,
        ],  # fmt: skip
        validates_every_manifest,
        cwd="k8s",
    ),
    Lint(
        "actionlint",
        ["github"],
        ".github/workflows/ci.yml, its run: steps with shellcheck",
        lambda root, tmp: [
            tool("actionlint"),
            "-shellcheck",
            tool("shellcheck"),
            "-no-color",
            ".github/workflows/ci.yml",
        ],  # fmt: skip
    ),
    Lint(
        "schema-github-workflow",
        ["github"],
        ".github/workflows/ci.yml",
        schema("vendor.github-workflows", ".github/workflows/ci.yml"),
    ),
    Lint(
        "schema-dependabot",
        ["github", "postgresql"],  # the database adds compose.yaml's image to Dependabot's updates
        ".github/dependabot.yml",
        schema("vendor.dependabot", ".github/dependabot.yml"),
    ),
    # GitHub Actions' security linter at its default persona, without its online audits.
    Lint(
        "zizmor",
        ["github"],
        ".github/ (the workflow and Dependabot's file)",
        lambda root, tmp: [tool("zizmor"), "--offline", "--no-progress", ".github"],
        zizmor_finds_nothing,
    ),
    Lint(
        "schema-gitlab-ci",
        ["gitlab-9090-2workers"],
        ".gitlab-ci.yml",
        schema("vendor.gitlab-ci", ".gitlab-ci.yml"),
    ),
    Lint(
        "shellcheck-gitlab-jobs",
        ["gitlab-9090-2workers"],
        ".gitlab-ci.yml's job scripts",
        lambda root, tmp: [tool("shellcheck"), "--shell", "sh", *gitlab_job_scripts(root, tmp)],
    ),
    Lint(
        "schema-renovate",
        ["gitlab-9090-2workers"],
        "renovate.json",
        schema("vendor.renovate", "renovate.json"),
    ),
    Lint(
        "checkov",
        DEPLOYED,
        "k8s/, Dockerfile, the pipeline",
        checkov,
        checkov_finds_nothing,
        timeout=600,
    ),
    Lint("yamllint", DEPLOYED, "every *.yaml and *.yml", yamllint),
]
RUNS = [pytest.param(lint, where, id=f"{lint.name}-{where}") for lint in LINTS for where in lint.on]


@pytest.mark.parametrize(("lint", "where"), RUNS)
def test_linter_reports_nothing(lint, where, rendered, tmp_path):
    root = rendered(ANSWER_SETS[where])
    result = run(lint.command(root, tmp_path), cwd=root / lint.cwd, timeout=lint.timeout)
    lint.clean(result, root)
