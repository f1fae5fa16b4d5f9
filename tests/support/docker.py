"""The docker CLI, as the tests and the benchmark drive it.

Builds go through a package mirror when FASTAPI_DOCKER_INDEX_URL is set: the URL reaches the build
as the BuildKit secret `index_url`, exactly as a team behind Artifactory or devpi passes theirs,
and on the network FASTAPI_DOCKER_BUILD_NETWORK names, if set.
"""

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INDEX_URL_ENV = "FASTAPI_DOCKER_INDEX_URL"
NETWORK_ENV = "FASTAPI_DOCKER_BUILD_NETWORK"


class DockerError(AssertionError):
    """A docker command failed or did not finish in time (an AssertionError: a test fails with it)."""


def docker(*args: str, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run `docker ARGS` with output captured as text; DockerError if check and it fails.

    kwargs go to subprocess.run (env=, cwd=, input=).
    """
    try:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as error:
        raise DockerError(f"docker {' '.join(args[:4])} ... did not finish within {timeout:g} s") from error
    if check and result.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result


def unique(prefix: str) -> str:
    """prefix plus a random suffix: a name no other run on the same engine uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def build_flags() -> list[str]:
    """`docker build` flags for the package mirror and the build network, where configured."""
    flags = []
    if os.environ.get(NETWORK_ENV):
        flags += ["--network", os.environ[NETWORK_ENV]]
    if os.environ.get(INDEX_URL_ENV):
        flags += ["--secret", f"id=index_url,env={INDEX_URL_ENV}"]
    return flags


@contextlib.contextmanager
def build_slot(no_cache: bool) -> Iterator[None]:
    """Held around a build: a `--no-cache` build alone, any other builds together.

    BuildKit runs a step that concurrent builds share once, and while a `--no-cache` build runs that
    step, a build of it that could come from the layer cache runs it too: its rebuild is not cached.
    The lock is the machine's (the engine's), so parallel workers and the benchmark keep to it.
    """
    with open(Path(tempfile.gettempdir()) / "fastapi-docker-builds.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if no_cache else fcntl.LOCK_SH)
        yield


def buildx_build(
    context: Path, tag: str, *extra: str, timeout: float = 1200, check: bool = True
) -> tuple[subprocess.CompletedProcess, float]:
    """`docker buildx build --load` of context as tag with build_flags() and plain progress.

    Returns (the result, whose stderr is the progress log, and the seconds it took).
    """
    with build_slot("--no-cache" in extra):
        started = time.monotonic()
        result = docker(
            "buildx", "build",
            "--load",  # into the engine's image store, whichever builder driver is the default
            *build_flags(), "--progress", "plain", *extra, "--tag", tag, str(context),
            timeout=timeout, check=check,
        )  # fmt: skip
        return result, time.monotonic() - started


def docker_problem() -> str | None:
    """Why Docker-tier work cannot run here (no CLI, no daemon, no buildx, no compose v2), or None."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    probes = {
        "the Docker daemon": ["docker", "info", "--format", "{{.ServerVersion}}"],
        "docker buildx": ["docker", "buildx", "version"],
        "docker compose v2": ["docker", "compose", "version"],
    }
    for what, command in probes.items():
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return f"{what} did not answer within 20 s"
        if result.returncode != 0:
            return f"{what} is not usable: {result.stderr.strip()[-300:]}"
    return None


def health(container: str) -> str:
    """The container's health status (starting, healthy, unhealthy)."""
    return docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()


def layers(image: str) -> list[str]:
    """The image's layer digests, base first."""
    return json.loads(docker("inspect", "--format", "{{json .RootFS.Layers}}", image).stdout)


def image_size(image: str) -> int:
    """The image's size in bytes, as `docker image inspect` reports it (its layers, uncompressed)."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)


# Run inside an image: the on-disk (apparent) size of every site-/dist-packages directory on the path,
# each file once (as Docker sums a layer), and the versions of the packages that matter here.
PACKAGES_PROBE = r"""
import json, os, site, sys
from importlib import metadata
dirs = set()
for p in sys.path + site.getsitepackages():
    p = os.path.realpath(p)
    if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p):
        dirs.add(p)
seen, total = set(), 0
for d in sorted(dirs):
    for root, _, files in os.walk(d):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
versions = {}
for name in ("fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools"):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps({"bytes": total, "dirs": sorted(dirs), "versions": versions,
                  "python": sys.version.split()[0]}))
"""


def probe_packages(image: str) -> dict:
    """PACKAGES_PROBE run in image (no network): {"bytes", "dirs", "versions", "python"}."""
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", PACKAGES_PROBE)
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class SizeAboveBase:
    """What an image adds to the image it is built on."""

    added_bytes: int  # image size minus base image size
    packages_bytes: int  # site-packages bytes in the image minus those in the base image

    @property
    def ratio(self) -> float | None:
        """added / packages (1.0: the image adds its packages and nothing else of weight)."""
        return self.added_bytes / self.packages_bytes if self.packages_bytes > 0 else None


def size_above_base(image: str, base: str, base_packages: dict | None = None) -> SizeAboveBase:
    """How much image adds to base, overall and in installed packages.

    base_packages: probe_packages(base), when the caller has it already.
    """
    base_packages = base_packages or probe_packages(base)
    return SizeAboveBase(
        added_bytes=image_size(image) - image_size(base),
        packages_bytes=probe_packages(image)["bytes"] - base_packages["bytes"],
    )
