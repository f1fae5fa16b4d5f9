"""Tier 4 (marker `docker`): the default project builds for linux/amd64 and linux/arm64 at once.

The publish job ships one multi-platform image; this builds the default project for both
platforms with `docker buildx build --platform linux/amd64,linux/arm64 --push` on a builder that
can (BuildKit with QEMU user emulation for arm64), then checks the pushed index lists exactly
those two platforms and that each one's interpreter runs with the locked packages importable.

The builder is the docker context named by FASTAPI_DOCKER_MULTIPLATFORM_CONTEXT, and the registry
it pushes to FASTAPI_DOCKER_MULTIPLATFORM_REGISTRY (host:port); without them the test skips with
the reason, or fails with REQUIRE_MULTIPLATFORM=1 (.ci/run sets it; the template's GitHub workflow,
on hosted runners without such a builder, does not).
"""

import json
import os
import urllib.request

import pytest
from conftest import bake, build_flags, docker, unique

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

CONTEXT_ENV = "FASTAPI_DOCKER_MULTIPLATFORM_CONTEXT"
REGISTRY_ENV = "FASTAPI_DOCKER_MULTIPLATFORM_REGISTRY"
PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
INDEX_TYPES = ", ".join(
    ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]
)


@pytest.fixture
def builder(request: pytest.FixtureRequest) -> tuple[str, str]:
    context, registry = os.environ.get(CONTEXT_ENV), os.environ.get(REGISTRY_ENV)
    if not (context and registry):
        message = (
            "no buildx builder that can build linux/arm64 is configured "
            f"({CONTEXT_ENV} and {REGISTRY_ENV} unset; scripts/buildenv/env.sh provides one)"
        )
        if os.environ.get("REQUIRE_MULTIPLATFORM") == "1":
            pytest.fail(message + "; it is required (REQUIRE_MULTIPLATFORM=1)")
        pytest.skip(message)
    return context, registry


def delete_from_registry(registry: str, repository: str, tag: str) -> None:
    """Remove a pushed index from the registry (by its digest, as the registry API wants)."""
    url = f"http://{registry}/v2/{repository}/manifests/"
    head = urllib.request.Request(url + tag, method="HEAD", headers={"Accept": INDEX_TYPES})
    try:
        with urllib.request.urlopen(head, timeout=10) as response:
            digest = response.headers["Docker-Content-Digest"]
        urllib.request.urlopen(urllib.request.Request(url + digest, method="DELETE"), timeout=10).close()
    except OSError:
        pass  # never pushed, or already gone


def test_default_project_builds_and_runs_for_amd64_and_arm64(builder, tmp_path, cleanup, request):
    context, registry = builder
    project = bake(tmp_path)
    repository = f"fd-test/{unique('multiplatform')}"
    ref = f"{registry}/{repository}:test"
    request.addfinalizer(lambda: delete_from_registry(registry, repository, "test"))
    cleanup.append(["--context", context, "image", "rm", "-f", ref])

    docker(
        "--context", context, "buildx", "build", "--platform", ",".join(PLATFORMS),
        *build_flags(), "--tag", ref, "--push", str(project),
        timeout=1800,
    )  # fmt: skip

    index = json.loads(docker("buildx", "imagetools", "inspect", "--raw", ref).stdout)
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}"
        for m in index["manifests"]
        if m["platform"]["os"] != "unknown"  # attestation manifests (provenance) say unknown/unknown
    }
    assert platforms == set(PLATFORMS), index

    for platform, machine in PLATFORMS.items():
        ran = docker(
            "--context", context, "run", "--rm", "--pull", "always", "--platform", platform,
            "--network", "none", "--entrypoint", "python", ref,
            "-c", "import platform, fastapi, uvicorn; print(platform.machine())",
        )  # fmt: skip
        assert ran.stdout.split() == [machine], (platform, ran.stdout, ran.stderr)
