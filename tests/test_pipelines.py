"""CI pipelines and update bots: the generated GitHub workflow and GitLab pipeline, and the
Dependabot and Renovate configurations, read for what they do.

Both pipelines test, smoke-test and publish the image the way `make` builds it; they publish both
platforms with an SBOM and provenance after a scan that fails on fixable critical findings; every
action is pinned to a commit; the bots keep every lock (by its header command), the actions and the
base image current. The pipelines' linters (actionlint, zizmor, schemas, shellcheck, checkov) are
in test_linters.py.
"""

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.support.generated import github_workflow, load_yaml
from tests.support.project import COMPLETE


def test_github_workflow_steps_and_permissions(github_project):
    data = github_workflow(github_project)
    assert data["permissions"] == {"contents": "read"}
    assert data["on"]["push"]["branches"] == ["main"] and "pull_request" in data["on"]
    test, publish = data["jobs"]["test"], data["jobs"]["publish"]
    runs = [step.get("run", "") for step in test["steps"]]
    assert "make install lint test" in runs and "make smoke" in runs
    assert any(step.get("uses", "").startswith("hadolint/hadolint-action@") for step in test["steps"])
    assert publish["needs"] == "test" and publish["if"] == "github.event_name == 'push'"
    assert publish["permissions"] == {"contents": "read", "packages": "write"}
    uses = {step["uses"].split("@")[0]: step for step in publish["steps"] if "uses" in step}
    assert {"docker/metadata-action", "docker/login-action", "docker/build-push-action"} <= set(uses)
    meta = uses["docker/metadata-action"]["with"]
    assert meta["images"] == "ghcr.io/${{ github.repository }}"
    assert "type=sha" in meta["tags"] and "type=match,pattern=^v(" in meta["tags"]
    assert uses["docker/build-push-action"]["with"]["push"] is True
    # The OCI labels as `make build` sets them (metadata-action's labels would replace the version
    # with the git ref), and a release tag that is not v<app/__init__.py's version> fails the job.
    build = uses["docker/build-push-action"]["with"]
    assert "labels" not in build
    args = dict(line.split("=", 1) for line in build["build-args"].splitlines())
    assert sorted(args) == ["CREATED", "REVISION", "SOURCE", "VERSION"]
    assert args["VERSION"] == "${{ steps.build.outputs.version }}"
    [version_step] = [step for step in publish["steps"] if step.get("id") == "build"]
    assert "app/__init__.py" in version_step["run"] and '!= "v$version"' in version_step["run"]
    text = (github_project / ".github" / "workflows" / "ci.yml").read_text()
    # Every action is pinned to a full commit SHA, its release named in the comment (the form that
    # Dependabot updates); actionlint (above) rejects releases that run on a removed runtime.
    uses_lines = re.findall(r"uses: (.*)", text)
    steps = [step for job in data["jobs"].values() for step in job["steps"] if "uses" in step]
    assert len(uses_lines) == len(steps), uses_lines
    for line in uses_lines:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line), f"{line}: not pinned"


def test_gitlab_pipeline_jobs(gitlab_project):
    pipeline = load_yaml(gitlab_project / ".gitlab-ci.yml")
    assert pipeline["test"]["script"] == ["make install lint test"]
    assert pipeline["test"]["image"].startswith("python:")
    assert pipeline["hadolint"]["script"] == ["hadolint Dockerfile"]
    docker_job = pipeline[".docker"]
    assert any(service.endswith("-dind") for service in docker_job["services"])
    smoke = "\n".join(pipeline["smoke"]["script"])
    assert "docker build" in smoke and "Health.Status" in smoke and "docker stop" in smoke
    assert "127.0.0.1:9090/" in smoke, "the probe uses the chosen port"
    # Publish and scan on the default branch and tags; the version tag only for v1.2.3 tags.
    assert pipeline[".release"]["rules"] == [
        {"if": "$CI_COMMIT_TAG"},
        {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"},
    ]
    assert ".release" in pipeline["publish"]["extends"] and pipeline["scan"]["extends"] == ".release"
    pushed = "\n".join(pipeline["publish"]["script"])
    assert '--tag "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA" --push' in pushed
    release = pipeline["release"]
    assert release["rules"] == [{"if": r"$CI_COMMIT_TAG =~ /^v\d+\.\d+\.\d+$/"}]
    assert '--tag "$CI_REGISTRY_IMAGE:${CI_COMMIT_TAG#v}"' in "\n".join(release["script"])
    stages = pipeline["stages"]
    assert stages.index("publish") < stages.index("scan") < stages.index("release")
    assert "CI_COMMIT_TAG" in pushed and '!= "v$VERSION"' in pushed
    # Both image builds: the mirror (CI/CD variable INDEX_URL) as a build secret, the OCI build facts
    # from the job's environment, set by the shared before_script from app/__init__.py and CI.
    before = "\n".join(docker_job["before_script"])
    assert "app/__init__.py" in before and 'REVISION="$CI_COMMIT_SHA"' in before
    for script in (smoke, pushed):
        build = " ".join(
            line for line in script.splitlines() if "docker build" in line or "buildx build" in line
        )
        assert "--secret id=index_url,env=INDEX_URL" in build, build
        for name in ("VERSION", "REVISION", "CREATED", "SOURCE"):
            assert f"--build-arg {name}" in build, build


def publish_facts(root: Path, ci: str) -> dict:
    """What a pipeline's publishing does, read from the pipeline file, in one shape for both CIs."""
    if ci == "github":
        steps = github_workflow(root)["jobs"]["publish"]["steps"]

        def step(action: str, **where) -> dict:
            return next(
                s
                for s in steps
                if s.get("uses", "").startswith(f"{action}@")
                and all(s["with"].get(k) == v for k, v in where.items())
            )

        push = step("docker/build-push-action", push=True)
        scanned = step("docker/build-push-action", load=True)
        scan = step("aquasecurity/trivy-action")
        return {
            "platforms": sorted(push["with"]["platforms"].split(",")),
            "sbom": push["with"]["sbom"] is True,
            "provenance": push["with"]["provenance"],
            "scan": (
                scan["with"]["severity"],
                scan["with"]["ignore-unfixed"] is True,
                scan["with"]["exit-code"],
            ),
            # The scanned image is the one just built, and the scan comes before the push.
            "scan gates the release": scan["with"]["image-ref"] == scanned["with"]["tags"]
            and steps.index(scanned) < steps.index(scan) < steps.index(push),
            "emulates arm64": any(s.get("uses", "").startswith("docker/setup-qemu-action@") for s in steps),
        }
    pipeline = load_yaml(root / ".gitlab-ci.yml")
    publish, scan = pipeline["publish"], pipeline["scan"]
    build = shlex.split(next(line for line in publish["script"] if "buildx build" in line))
    platforms = build[build.index("--platform") + 1].replace("$PLATFORMS", publish["variables"]["PLATFORMS"])
    provenance = next(arg for arg in build if arg.startswith("--provenance="))
    trivy = shlex.split(" ".join(scan["script"]))
    stages = pipeline["stages"]
    return {
        "platforms": sorted(platforms.split(",")),
        "sbom": "--sbom=true" in build,
        "provenance": provenance.removeprefix("--provenance="),
        "scan": (
            trivy[trivy.index("--severity") + 1],
            "--ignore-unfixed" in trivy,
            trivy[trivy.index("--exit-code") + 1],
        ),
        # The version tag is given in a later stage than the scan of the pushed commit image.
        "scan gates the release": "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA" in trivy
        and stages.index(scan["stage"]) < stages.index(pipeline["release"]["stage"]),
        "emulates arm64": any("tonistiigi/binfmt" in line and "arm64" in line for line in publish["script"]),
    }


@pytest.mark.parametrize("name", list(COMPLETE))
def test_publishing_is_multi_platform_attested_and_scanned(name, github_project, gitlab_project):
    root = github_project if name == "github" else gitlab_project
    assert publish_facts(root, COMPLETE[name]["ci"]) == {
        "platforms": ["linux/amd64", "linux/arm64"],
        "sbom": True,
        "provenance": "mode=max",
        "scan": ("CRITICAL", True, "1"),
        "scan gates the release": True,
        "emulates arm64": True,
    }


LOCK_HEADER = re.compile(r"^#    (uv pip compile .*--output-file (\S+) (\S+\.in))$", re.MULTILINE)


def locks(root: Path) -> dict[str, str]:
    """{lock: the `uv pip compile` command in its header} of every requirements*.txt."""
    found = {}
    for path in sorted(root.glob("requirements*.txt")):
        match = LOCK_HEADER.search(path.read_text())
        assert match, f"{path.name}: no `uv pip compile` command in the header"
        command, output, source = match.groups()
        assert output == path.name and (root / source).is_file(), command
        assert "--universal" in command and "--generate-hashes" in command, command
        found[path.name] = command
    return found


@pytest.mark.parametrize("name", list(COMPLETE))
def test_a_bot_keeps_every_lock_the_actions_and_the_base_image_current(name, github_project, gitlab_project):
    """The bots re-run each lock's header command, so the header must be the real one."""
    root = github_project if name == "github" else gitlab_project
    lock_files = locks(root)
    assert "requirements.txt" in lock_files and "requirements-dev.txt" in lock_files
    assert ("requirements-build.txt" in lock_files) == (COMPLETE[name].get("installer") == "uv")
    if name == "github":
        config = load_yaml(root / ".github" / "dependabot.yml")
        updates = {u["package-ecosystem"]: u for u in config["updates"]}
        assert sorted(updates) == ["docker", "github-actions", "uv"]
        assert all(u["directory"] == "/" and u["cooldown"]["default-days"] >= 7 for u in updates.values())
        return
    config = json.loads((root / "renovate.json").read_text())  # its schema: test_linters.py
    assert "config:recommended" in config["extends"]  # dockerfile and gitlabci managers: FROM, images
    (pattern,) = config["pip-compile"]["managerFilePatterns"]
    regex = re.compile(pattern.strip("/"))
    others = [p.name for p in root.rglob("*.txt") if p.name not in lock_files]
    assert [name for name in lock_files if regex.search(name)] == list(lock_files)
    assert not [name for name in others if regex.search(name)], others
    assert config["pip_requirements"]["enabled"] is False, "the locks are re-locked, not edited"
    assert config["lockFileMaintenance"]["enabled"] is True
    assert config["minimumReleaseAge"] == "7 days"
