#!/usr/bin/env python3
"""Benchmark the generated service against the tutorial it grew from, on this machine, in one run.

    python scripts/benchmark.py            # full run: 3 runs per variant, 10 s of load at 64 connections
    python scripts/benchmark.py --smoke    # one short iteration with a small load (what the tests run)
    python scripts/benchmark.py --runs 5 --duration 20 --connections 128 --out /tmp/bench

Variants, each built and run the same way:
  baseline   the tutorial: one stage on the full `python:3.13` image, root, unpinned `pip install fastapi
             uvicorn`, synchronous handlers, uvicorn on port 80 (written below, not part of the template)
  default    this template with the default answers
  quiet      the default image, run with UVICORN_ACCESS_LOG=false (a run-time setting: no build of its own)
  uv         installer=uv
  workers2   workers=2 (two uvicorn processes; under the same CPU quota as the others)

Per variant and run: the image size and what it adds to its base image, next to the installed packages'
own size (measured inside the image); a cold build (`--no-cache`, BuildKit cache mounts pruned first) and a
rebuild after editing only main.py (is every dependency layer cached?); the time from `docker run` to the
first 200 from /health and to Docker's `healthy`; idle memory; GET / under wrk load (requests/s, p50, p99,
errors) with memory under load; and `docker stop`. The containers run with `--network host` (uvicorn binds
a free port in the host's namespace, wrk hits 127.0.0.1 directly, no docker-proxy in the path) and the same
`--cpus` quota. Every variant's port is set where it is defined (the tutorial's `--port 80`, the template's
`port` answer) to a free port, because on the host network the container's port is the host's.
Then the dev loop: the default project's compose dev mode (`docker compose up --watch dev`), app/main.py
saved several times, and the seconds from each save to GET / answering the new text.

Writes results.md (the table, the targets, how it was measured, on what machine), results.json (every
run's numbers), benchmark.png (each variant's ratios to the baseline) and the build logs to --out
(default build/benchmark). Progress goes to stderr, the tables to stdout.

Builds go through a package mirror when FASTAPI_DOCKER_INDEX_URL is set (as in the tests: the template's
Dockerfile gets it as the BuildKit secret `index_url`, the tutorial as the PIP_INDEX_URL build argument),
on the network FASTAPI_DOCKER_BUILD_NETWORK names. Unset, they use PyPI and Docker's default network.

Needs: docker with buildx, wrk, and a Python with cookiecutter and matplotlib (requirements/test.txt).
Every image and container it creates carries a unique name and label and is removed at the end, also on
failure or Ctrl-C. Note: pruning the cache mounts (`docker builder prune --filter type=exec.cachemount`)
empties the pip/uv cache mounts of every build on this Docker engine, not only this benchmark's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INDEX_URL_ENV = "FASTAPI_DOCKER_INDEX_URL"
NETWORK_ENV = "FASTAPI_DOCKER_BUILD_NETWORK"
LABEL_KEY = "org.fastapi-docker.benchmark"
STANDIN_LABEL = "org.fastapi-docker.standin"

# ----------------------------------------------------------------------------------------------------------
# The baseline: the FastAPI tutorial's Docker setup ("FastAPI in Containers - Docker"), reduced to one file.
# The only additions: the PIP_INDEX_URL build argument (the tutorial knows no mirror, let alone build
# secrets; its default is PyPI) and GET /health, so that it can be probed like the generated service.

BASELINE_DOCKERFILE = """\
FROM python:3.13

WORKDIR /code

# Added for the benchmark: the package index (a build argument; the tutorial knows no mirror or secrets).
ARG PIP_INDEX_URL=https://pypi.org/simple

COPY ./requirements.txt /code/requirements.txt

RUN pip install --no-cache-dir --upgrade -r /code/requirements.txt

COPY ./main.py /code/main.py

CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "{port}"]
"""
BASELINE_PORT = "80"  # what the tutorial uses; replaced by a free port here (host network)
BASELINE_REQUIREMENTS = "fastapi\nuvicorn\n"
BASELINE_MAIN = """\
from typing import Union

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def read_root():
    return {"Hello": "World"}


@app.get("/items/{item_id}")
def read_item(item_id: int, q: Union[str, None] = None):
    return {"item_id": item_id, "q": q}


# Added for the benchmark, so that it is probed like the generated service.
@app.get("/health")
def health():
    return {"status": "ok"}
"""


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    answers: dict | None  # cookiecutter answers; None for the tutorial baseline
    about: str
    image_of: str | None = None  # run the image built for that variant (in the same round) instead
    run_env: dict = field(default_factory=dict)  # `docker run --env`


VARIANTS = [
    Variant(
        "baseline",
        "tutorial baseline",
        None,
        "the tutorial: `python:3.13` (full), root, unpinned `pip install fastapi uvicorn`, sync handlers",
    ),
    Variant("default", "template defaults", {}, "the template with the default answers (slim, pip)"),
    Variant(
        "quiet",
        "defaults, no access log",
        {},
        "the template defaults' image, run with `UVICORN_ACCESS_LOG=false` (no log line per request): "
        "a run-time setting, so its build and size figures are those of the defaults",
        image_of="default",
        run_env={"UVICORN_ACCESS_LOG": "false"},
    ),
    Variant("uv", "installer=uv", {"installer": "uv"}, "the template with `installer=uv`"),
    Variant(
        "workers2",
        "workers=2",
        {"workers": "2"},
        "the template with `workers=2`: two uvicorn processes, inside the same CPU quota as the others",
    ),
]

# (key, row label, decimals, direction for the chart: "up" = higher is better, "down" = lower, None = no bar)
METRICS = [
    ("image_mb", "image size (MB)", 1, "down"),
    ("added_mb", "added on top of the base image (MB)", 1, "down"),
    ("packages_mb", "installed packages on disk (MB)", 1, None),
    ("added_ratio", "added / installed packages (x)", 2, None),
    ("cold_build_s", "cold build (s)", 1, "down"),
    ("rebuild_s", "rebuild after a main.py edit (s)", 2, "down"),
    ("rebuild_pct", "rebuild / cold build (%)", 1, None),
    ("run_to_first_ok_s", "docker run -> first 200 from /health (s)", 2, "down"),
    ("start_to_first_ok_s", "process start -> first 200 (s)", 2, None),
    ("run_to_healthy_s", "docker run -> Docker `healthy` (s)", 2, None),
    ("start_to_healthy_s", "process start -> Docker `healthy` (s)", 2, None),
    ("health_interval_s", "steady health check interval (s)", 0, None),
    ("probe_cpu_ms", "CPU time of one health probe (ms)", 0, None),
    ("probe_cpu_s_per_hour", "idle health probes' CPU per hour (s)", 1, None),
    ("stop_s", "docker stop (s)", 2, "down"),
    ("rps", "GET / requests/s", 0, "up"),
    ("p50_ms", "GET / latency p50 (ms)", 1, "down"),
    ("p99_ms", "GET / latency p99 (ms)", 1, "down"),
    ("errors", "errors (non-2xx + socket)", 0, None),
    ("throttled", "CPU-quota-throttled periods during the load", 0, None),
    ("mem_idle_mib", "memory idle (MiB)", 1, "down"),
    ("mem_load_mib", "memory under load (MiB)", 1, "down"),
]
# Properties of the image: a variant that runs another variant's image shows "= that variant" for these.
IMAGE_METRICS = {
    "image_mb",
    "added_mb",
    "packages_mb",
    "added_ratio",
    "cold_build_s",
    "rebuild_s",
    "rebuild_pct",
}
CHART_LABELS = {
    "image_mb": "image size",
    "added_mb": "added size",
    "cold_build_s": "cold build",
    "rebuild_s": "rebuild",
    "run_to_first_ok_s": "run -> 1st OK",
    "stop_s": "docker stop",
    "rps": "requests/s",
    "p50_ms": "p50 latency",
    "p99_ms": "p99 latency",
    "mem_idle_mib": "memory idle",
    "mem_load_mib": "memory loaded",
}

# Run inside an image: the on-disk (apparent) size of every site-/dist-packages directory on the path, each
# file once (as Docker sums a layer), and the versions of the packages that matter here.
SIZE_PROBE = r"""
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


class BenchmarkError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"benchmark: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# Docker plumbing, with everything created recorded for the cleanup.


@dataclass
class Session:
    run_id: str
    containers: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)
    procs: list[subprocess.Popen] = field(default_factory=list)
    compose: list[tuple[Path, str, list[str]]] = field(default_factory=list)  # (dir, project, -f files)

    @property
    def label(self) -> str:
        return f"{LABEL_KEY}={self.run_id}"

    def name(self, *parts: str) -> str:
        return "-".join(["fastapi-docker-bench", self.run_id, *parts])

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for directory, project, files in self.compose:
            down = subprocess.run(
                ["docker", "compose", "--project-name", project, *files, "down", "--volumes"],
                cwd=directory, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if down.returncode != 0:
                log(f"docker compose down of {project} failed: {down.stderr[-1000:]}")
        self.compose.clear()
        labelled = [
            docker("ps", "--all", "--quiet", "--filter", f"label={self.label}", check=False).stdout.split(),
            docker("images", "--quiet", "--filter", f"label={self.label}", check=False).stdout.split(),
        ]
        containers = sorted(self.containers | set(labelled[0]))
        if containers:
            docker("rm", "--force", *containers, check=False)
        images = sorted(self.images | set(labelled[1]))
        if images:
            docker("rmi", "--force", *images, check=False)
        self.containers.clear()
        self.images.clear()


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(
            f"docker {' '.join(args[:3])} ... did not finish within {timeout:.0f} s"
        ) from error
    if check and result.returncode != 0:
        raise BenchmarkError(f"docker {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def build(session: Session, context: Path, tag: str, extra: list[str], logfile: Path) -> tuple[float, str]:
    """`docker buildx build` of context as tag; (seconds, plain progress log)."""
    session.images.add(tag)
    network = ["--network", os.environ[NETWORK_ENV]] if os.environ.get(NETWORK_ENV) else []
    # --load: into the engine's image store, whichever builder driver is the default.
    command = ["buildx", "build", "--load", *network, *extra, "--progress", "plain", "--label", session.label]
    started = time.monotonic()
    result = docker(*command, "--tag", tag, str(context), timeout=1200, check=False)
    seconds = time.monotonic() - started
    logfile.write_text(result.stderr)
    if result.returncode != 0:
        raise BenchmarkError(f"building {tag} failed (log: {logfile}):\n{result.stderr[-3000:]}")
    return seconds, result.stderr


def prune_cache_mounts() -> None:
    """Empty BuildKit's cache mounts (pip's and uv's caches), so that a --no-cache build is really cold."""
    docker("builder", "prune", "--all", "--force", "--filter", "type=exec.cachemount", timeout=300)


def dependency_layers_cached(progress: str) -> tuple[bool, list[str]]:
    """From a rebuild's plain progress: (every step before `COPY main.py` was CACHED, the ones that were not).

    Steps are `#ID [STAGE N/M] TEXT` (the stage name is absent in some BuildKit versions); the dependency
    steps are every step of every stage except FROM, and in main.py's stage only those before its COPY.
    """
    steps = {}
    for step_id, stage, index, text in re.findall(
        r"^#(\d+) \[(?:(\S+) )?(\d+)/\d+\] (.+)$", progress, re.MULTILINE
    ):
        steps.setdefault(step_id, (stage, int(index), text.strip()))
    code = [
        (stage, index) for stage, index, text in steps.values() if re.match(r"COPY\b.*(main\.py|app/)", text)
    ]
    if not code:
        raise BenchmarkError("no `COPY ... main.py` or `COPY app/` step in the rebuild's log")
    code_stage, code_index = code[0]
    dependencies = [
        (step_id, text)
        for step_id, (stage, index, text) in steps.items()
        if not text.startswith("FROM") and not (stage == code_stage and index >= code_index)
    ]
    cached = set(re.findall(r"^#(\d+) CACHED$", progress, re.MULTILINE))
    rebuilt = [text for step_id, text in dependencies if step_id not in cached]
    return bool(dependencies) and not rebuilt, rebuilt


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)


def probe_packages(image: str) -> dict:
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", SIZE_PROBE)
    return json.loads(result.stdout.strip().splitlines()[-1])


def final_base_image(dockerfile: Path) -> str:
    """The image the last stage is built on, following `FROM <stage>` back to a real image."""
    froms = re.findall(
        r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile.read_text(), re.MULTILINE | re.IGNORECASE
    )
    stages = {name.lower(): image for image, name in froms if name}
    image = froms[-1][0]
    while image.lower() in stages:
        image = stages[image.lower()]
    return image


def docker_time(stamp: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z or offset) as epoch seconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp.strip())
    if not match:
        raise BenchmarkError(f"unexpected timestamp from docker: {stamp!r}")
    zone = "+00:00" if match[3] == "Z" else match[3]
    whole = dt.datetime.fromisoformat(match[1] + zone).timestamp()
    return whole + float("0." + (match[2] or "0"))


def container_state(name: str) -> dict:
    return json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)


def cgroup_value(container_id: str, filename: str, pattern: str) -> float | None:
    """A number from one of the container's cgroup files (cgroup v1 or v2), or None where unreadable."""
    directories = [
        f"/sys/fs/cgroup/{controller}/{parent}"
        for controller in ("cpu", "cpuacct", "cpu,cpuacct")
        for parent in (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")
    ]
    directories += [
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope",
        f"/sys/fs/cgroup/docker/{container_id}",
    ]
    for directory in directories:
        with contextlib.suppress(OSError):
            match = re.search(pattern, Path(directory, filename).read_text(), re.MULTILINE)
            if match:
                return float(match[1])
    return None


def cpu_throttled(container_id: str) -> int | None:
    """How many CFS periods the container's cgroup was throttled in so far, or None."""
    value = cgroup_value(container_id, "cpu.stat", r"^nr_throttled (\d+)$")
    return None if value is None else int(value)


def cpu_seconds(container_id: str) -> float | None:
    """CPU time used by every process of the container so far (cgroup v2 usage_usec, v1 cpuacct.usage)."""
    usec = cgroup_value(container_id, "cpu.stat", r"^usage_usec (\d+)$")
    if usec is not None:
        return usec / 1e6
    nsec = cgroup_value(container_id, "cpuacct.usage", r"^(\d+)$")
    return None if nsec is None else nsec / 1e9


def probe_cpu_s(name: str, container_id: str, healthcheck: dict, probes: int = 5) -> float | None:
    """CPU time of one run of the image's HEALTHCHECK command, run as Docker runs it (an exec in the
    container), averaged over a few runs of the idle container; None without a HEALTHCHECK."""
    test = (healthcheck or {}).get("Test") or []
    if not test or test[0] not in {"CMD", "CMD-SHELL"}:
        return None
    command = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    before = cpu_seconds(container_id)
    for _ in range(probes):
        docker("exec", name, *command)
    after = cpu_seconds(container_id)
    return None if before is None or after is None else (after - before) / probes


def memory_mib(name: str) -> float:
    """The container's memory use as `docker stats` shows it (page cache excluded), in MiB."""
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).stdout.split("/")[0].strip()
    match = re.fullmatch(r"([\d.]+)\s*([KMGT]?i?B)", usage)
    if not match:
        raise BenchmarkError(f"unexpected `docker stats` memory figure: {usage!r}")
    scale = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
    scale |= {"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    return float(match[1]) * scale[match[2].replace("k", "K")] / 2**20


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if port not in ports:
            ports.append(port)
    return ports


def get_ok(port: int, path: str) -> bool:
    """One GET to 127.0.0.1 (http.client: no proxy from the environment can be involved)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


# ----------------------------------------------------------------------------------------------------------
# Load: wrk.

WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(output: str) -> dict:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if not match:
            raise BenchmarkError(f"no p{percent} in wrk's output:\n{output}")
        return float(match[1]) * WRK_UNITS[match[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if not rps:
        raise BenchmarkError(f"no Requests/sec in wrk's output:\n{output}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    errors += int(non_2xx[1]) if non_2xx else 0
    requests = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    return {
        "rps": float(rps[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": errors,
        "requests": int(requests[1]) if requests else None,
    }


def wrk(session: Session, url: str, seconds: float, connections: int, threads: int, during=None) -> dict:
    """Run wrk against url; `during()` is called once, in the middle of the run (memory under load)."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    session.procs.append(proc)
    sampled = None
    try:
        if during:
            time.sleep(seconds / 2)
            sampled = during()
        out, err = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        session.procs.remove(proc)
    if proc.returncode != 0:
        raise BenchmarkError(f"wrk failed ({proc.returncode}): {err.strip()}")
    return parse_wrk(out) | {"during": sampled}


# ----------------------------------------------------------------------------------------------------------
# The variants' build contexts.


@dataclass
class Prepared:
    variant: Variant
    context: Path
    port: int
    build_extra: list[str]
    main: Path
    main_text: str
    base: str


@contextlib.contextmanager
def stdout_to_stderr():
    """Send file descriptor 1 (also a subprocess's, such as cookiecutter's hooks) to stderr for a while."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def prepare(variant: Variant, workdir: Path, port: int) -> Prepared:
    if variant.answers is None:
        context = workdir / "tutorial"
        context.mkdir(parents=True)
        (context / "Dockerfile").write_text(BASELINE_DOCKERFILE.replace("{port}", str(port)))
        (context / "requirements.txt").write_text(BASELINE_REQUIREMENTS)
        (context / "main.py").write_text(BASELINE_MAIN)
        index = os.environ.get(INDEX_URL_ENV)
        extra = ["--build-arg", f"PIP_INDEX_URL={index}"] if index else []
    else:
        try:
            from cookiecutter.main import cookiecutter
        except ImportError as error:
            raise BenchmarkError("cookiecutter is not installed: install requirements/test.txt") from error
        os.environ.setdefault("FASTAPI_DOCKER_PREFLIGHT", "off")
        answers = {**variant.answers, "port": str(port)}
        out = workdir / variant.key
        with stdout_to_stderr():  # the template's hooks print their hints: stdout carries only the tables
            context = Path(cookiecutter(str(REPO), no_input=True, extra_context=answers, output_dir=str(out)))
        extra = ["--secret", f"id=index_url,env={INDEX_URL_ENV}"] if os.environ.get(INDEX_URL_ENV) else []
    main = context / "main.py" if variant.answers is None else context / "app" / "main.py"
    return Prepared(
        variant, context, port, extra, main, main.read_text(), final_base_image(context / "Dockerfile")
    )


# ----------------------------------------------------------------------------------------------------------
# The dev loop: compose's dev mode of the default project (`make dev`), save -> new response.


def dev_loop(session: Session, prepared: Prepared, saves: int, workdir: Path, logdir: Path) -> dict:
    """Save app/main.py `saves` times under `docker compose up --watch dev`; seconds until each is served.

    Also counts the connections refused (or reset) while polling and the images the saves built.
    """
    project = session.name("dev")
    port = free_ports(1)[0]
    # A third compose file names and labels the dev image and container, so that they clash with
    # nothing on this engine and the cleanup finds them.
    labels = workdir / "benchmark-labels.yaml"
    labels.write_text(
        f"services:\n  dev:\n    image: {project}:dev\n"
        f"    build:\n      labels: {{{LABEL_KEY}: {session.run_id}}}\n"
        f"    labels: {{{LABEL_KEY}: {session.run_id}}}\n"
    )
    files = ["-f", "compose.yaml", "-f", "compose.override.yaml", "-f", str(labels)]
    compose = ["docker", "compose", "--project-name", project, *files]
    env = {k: v for k, v in os.environ.items() if k not in {"INDEX_URL", "BUILD_NETWORK", "TAG"}}
    env["HOST_PORT"] = str(port)
    if os.environ.get(INDEX_URL_ENV):
        env["INDEX_URL"] = os.environ[INDEX_URL_ENV]
        env["BUILD_NETWORK"] = os.environ.get(NETWORK_ENV) or "default"
    session.compose.append((prepared.context, project, files))
    main = prepared.main
    logfile = logdir / "dev-loop.log"
    with logfile.open("w") as out:
        proc = subprocess.Popen(
            [*compose, "up", "--build", "--watch", "dev"],
            cwd=prepared.context, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    session.procs.append(proc)

    def answer() -> str | None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/")
            body = conn.getresponse().read().decode()
            conn.close()
            return body
        except OSError:
            return None

    deadline = time.monotonic() + 600
    while answer() is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchmarkError(
                f"the dev service did not answer (log: {logfile}):\n{logfile.read_text()[-3000:]}"
            )
        time.sleep(0.2)
    images = docker("images", "--quiet", "--filter", f"label={session.label}").stdout.split()
    seconds, refused = [], 0
    try:
        for n in range(saves):
            word = f"Save{n}"
            main.write_text(prepared.main_text.replace('{"Hello": "World"}', f'{{"Hello": "{word}"}}'))
            started = time.monotonic()
            while True:
                body = answer()
                if body is None:
                    refused += 1
                elif word in body:
                    break
                if time.monotonic() - started > 60:
                    raise BenchmarkError(f"save {n} was not served within 60 s; last answer: {body!r}")
                time.sleep(0.01)
            seconds.append(time.monotonic() - started)
            time.sleep(1)  # the next save comes to a settled server
        after = docker("images", "--quiet", "--filter", f"label={session.label}").stdout.split()
    finally:
        main.write_text(prepared.main_text)
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in the terminal: compose stops the container
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    reloads = logfile.read_text().count("WatchFiles detected changes")
    return {
        "saves_s": seconds,
        "median_s": statistics.median(seconds),
        "refused": refused,
        "images_built": len(set(after) - set(images)),
        "reloads_in_log": reloads,
    }


def dev_loop_table(dev: dict) -> str:
    saves = dev["saves_s"]
    rows = [
        ["save -> new response served (s)", f"{dev['median_s']:.2f} ({min(saves):.2f}-{max(saves):.2f})"],
        ["saves", str(len(saves))],
        ["refused or reset connections while polling", str(dev["refused"])],
        ["images built by the saves", str(dev["images_built"])],
        ["reloads shown in the dev log", str(dev["reloads_in_log"])],
    ]
    return markdown_table(["dev loop (compose dev mode, default answers)", "median (min-max)"], rows)


# ----------------------------------------------------------------------------------------------------------
# One run of one variant.


@dataclass
class Settings:
    runs: int
    duration: float
    connections: int
    threads: int
    warmup: float
    cpus: str
    out: Path
    smoke: bool
    argv: list[str]


def build_phase(
    session: Session, prepared: Prepared, run: int, settings: Settings, base_packages: dict
) -> tuple[str, dict]:
    """Cold build, sizes, rebuild after a main.py edit: (the cold-built image's tag, values)."""
    key = prepared.variant.key
    logs = settings.out / "logs"
    prepared.main.write_text(prepared.main_text)
    tag = session.name(key, f"r{run}")
    values: dict = {}

    # Cold build: no layer cache, no package cache (the base image is local: no pull is timed).
    prune_cache_mounts()
    values["cold_build_s"], _ = build(
        session, prepared.context, tag, [*prepared.build_extra, "--no-cache"], logs / f"{key}-r{run}-cold.log"
    )
    size = image_size(tag)
    base_size = image_size(prepared.base)
    probe = probe_packages(tag)
    values["image_mb"] = size / 1e6
    values["added_mb"] = (size - base_size) / 1e6
    values["packages_mb"] = (probe["bytes"] - base_packages["bytes"]) / 1e6
    values["added_ratio"] = values["added_mb"] / values["packages_mb"] if values["packages_mb"] > 0 else None
    values["versions"] = probe["versions"]
    values["python"] = probe["python"]

    # Rebuild after editing only main.py.
    prepared.main.write_text(prepared.main_text + f"\n# edited by the benchmark, run {run}\n")
    edited = f"{tag}-edited"
    values["rebuild_s"], progress = build(
        session, prepared.context, edited, prepared.build_extra, logs / f"{key}-r{run}-rebuild.log"
    )
    values["deps_cached"], values["rebuilt_steps"] = dependency_layers_cached(progress)
    values["rebuild_pct"] = 100 * values["rebuild_s"] / values["cold_build_s"]
    docker("rmi", "--force", edited, check=False)
    session.images.discard(edited)
    prepared.main.write_text(prepared.main_text)
    return tag, values


def run_phase(session: Session, prepared: Prepared, tag: str, run: int, settings: Settings) -> dict:
    """Start, idle memory, load, memory under load, stop, of a container of image tag."""
    key, port = prepared.variant.key, prepared.port
    values: dict = {}

    # Start: docker run -> first 200 from /health -> Docker's `healthy`.
    if not port_is_free(port):
        raise BenchmarkError(f"port {port} (variant {key}) is taken on this host")
    name = session.name(key, f"r{run}", "run")
    session.containers.add(name)
    run_started, run_started_wall = time.monotonic(), time.time()
    docker(
        "run", "--detach", "--name", name, "--label", session.label,
        "--network", "host", "--cpus", settings.cpus,
        *(f"--env={k}={v}" for k, v in prepared.variant.run_env.items()), tag,
    )  # fmt: skip
    checked = time.monotonic()
    while not get_ok(port, "/health"):
        now = time.monotonic()
        if now - run_started > 60:
            raise BenchmarkError(
                f"{key}: no 200 from /health within 60 s:\n{docker('logs', name).stderr[-2000:]}"
            )
        if now - checked > 1:
            checked = now
            if not container_state(name)["Running"]:
                raise BenchmarkError(f"{key}: the container exited:\n{docker('logs', name).stderr[-2000:]}")
        time.sleep(0.01)
    first_ok, first_ok_wall = time.monotonic(), time.time()
    state = container_state(name)
    process_started = docker_time(state["StartedAt"])
    values["run_to_first_ok_s"] = first_ok - run_started
    values["start_to_first_ok_s"] = first_ok_wall - process_started
    values["process_start_after_run_s"] = process_started - run_started_wall
    healthcheck = json.loads(
        docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", tag).stdout
    )
    values["health_interval_s"] = (healthcheck or {}).get("Interval", 0) / 1e9 or None
    if state.get("Health"):
        while True:
            state = container_state(name)
            status = state["Health"]["Status"]
            if status == "healthy":
                values["run_to_healthy_s"] = time.monotonic() - run_started
                break
            if status == "unhealthy" or not state["Running"] or time.monotonic() - run_started > 90:
                raise BenchmarkError(f"{key}: not healthy ({status}): {state['Health'].get('Log')}")
            time.sleep(0.1)
        passed = [entry for entry in state["Health"]["Log"] if entry["ExitCode"] == 0]
        values["start_to_healthy_s"] = docker_time(passed[0]["End"]) - process_started
    else:
        values["run_to_healthy_s"] = values["start_to_healthy_s"] = None  # no HEALTHCHECK in the image
    values["mem_idle_mib"] = memory_mib(name)
    container_id = docker("inspect", "--format", "{{.Id}}", name).stdout.strip()
    # What the steady health check costs an idle container: one probe's CPU time, times the probes
    # an hour at the steady interval (the start interval applies only until the first `healthy`).
    probe = probe_cpu_s(name, container_id, healthcheck)
    values["probe_cpu_ms"] = None if probe is None else probe * 1000
    interval = values["health_interval_s"]
    values["probe_cpu_s_per_hour"] = None if probe is None or not interval else probe * 3600 / interval

    # Load: GET / with wrk, after a short warm-up; memory sampled in the middle of the measured run.
    url = f"http://127.0.0.1:{port}/"
    if settings.warmup > 0:
        wrk(session, url, settings.warmup, settings.connections, settings.threads)
    throttled = cpu_throttled(container_id)
    result = wrk(
        session, url, settings.duration, settings.connections, settings.threads, lambda: memory_mib(name)
    )
    values.update({k: result[k] for k in ("rps", "p50_ms", "p99_ms", "errors", "requests")})
    values["mem_load_mib"] = result["during"]
    after = cpu_throttled(container_id)
    values["throttled"] = after - throttled if throttled is not None and after is not None else None

    # Stop.
    started = time.monotonic()
    docker("stop", name, timeout=60)
    values["stop_s"] = time.monotonic() - started
    values["exit_code"] = container_state(name)["ExitCode"]
    docker("rm", "--force", name, check=False)
    session.containers.discard(name)
    return values


# ----------------------------------------------------------------------------------------------------------
# Summaries, tables, targets, chart.


def numbers(runs: list[dict], key: str) -> list[float]:
    return [
        run[key] for run in runs if isinstance(run.get(key), int | float) and not isinstance(run[key], bool)
    ]


def median(runs: list[dict], key: str) -> float | None:
    values = numbers(runs, key)
    return statistics.median(values) if values else None


def cell(runs: list[dict], key: str, decimals: int) -> str:
    values = numbers(runs, key)
    if not values:
        return "n/a"
    fmt = f"{{:.{decimals}f}}"
    text = fmt.format(statistics.median(values))
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}-{fmt.format(max(values))})"
    return text


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def same_image(variant: Variant) -> str:
    return "= " + next(v.label for v in VARIANTS if v.key == variant.image_of)


def results_table(results: dict[str, list[dict]]) -> str:
    header = ["metric", *(v.label for v in VARIANTS)]
    rows = []
    for key, label, decimals, _ in METRICS:
        cells = [
            same_image(v) if v.image_of and key in IMAGE_METRICS else cell(results[v.key], key, decimals)
            for v in VARIANTS
        ]
        rows.append([label, *cells])
        if key == "rebuild_pct":
            cached = []
            for v in VARIANTS:
                flags = [run["deps_cached"] for run in results[v.key] if "deps_cached" in run]
                summary = f"{'yes' if all(flags) else 'NO'} ({sum(flags)}/{len(flags)} runs)"
                cached.append(same_image(v) if v.image_of else summary)
            rows.append(["every dependency layer cached on rebuild", *cached])
    versions = []
    for v in VARIANTS:
        found = results[v.image_of or v.key][0]["versions"]
        extras = "".join(f" +{name}" for name in ("uvloop", "httptools") if name in found)
        versions.append(f"{found.get('fastapi', '?')} / {found.get('uvicorn', '?')}{extras}")
    rows.append(["installed fastapi / uvicorn", *versions])
    return markdown_table(header, rows)


def evaluate_targets(results: dict[str, list[dict]]) -> list[dict]:
    """The targets for the generated service, evaluated on medians, for every template variant."""
    base = results["baseline"]
    base_rps, base_p99 = median(base, "rps"), median(base, "p99_ms")
    targets = []

    def add(goal: str, check, image: bool = False) -> None:
        row = {"goal": goal, "variants": {}}
        for v in VARIANTS[1:]:
            if image and v.image_of:  # a property of the image, measured with the variant that built it
                row["variants"][v.key] = {"met": None, "measured": same_image(v)}
                continue
            met, shown = check(results[v.key])
            row["variants"][v.key] = {"met": met, "measured": shown}
        targets.append(row)

    add(
        ">= 2x the baseline's requests/s",
        lambda r: (median(r, "rps") >= 2 * base_rps, f"{median(r, 'rps') / base_rps:.2f}x"),
    )
    add(
        "p99 latency no worse than the baseline's",
        lambda r: (
            median(r, "p99_ms") <= base_p99,
            f"{median(r, 'p99_ms'):.1f} ms vs {base_p99:.1f} ms",
        ),
    )
    add(
        "zero errors under load (every run)",
        lambda r: (sum(numbers(r, "errors")) == 0, f"{sum(numbers(r, 'errors')):.0f}"),
    )
    add(
        "added size <= 1.15x the installed packages",
        lambda r: (median(r, "added_ratio") <= 1.15, f"{median(r, 'added_ratio'):.2f}x"),
        image=True,
    )
    add(
        "rebuild after a main.py edit <= 10% of the cold build, every dependency layer cached",
        lambda r: (
            median(r, "rebuild_pct") <= 10 and all(run["deps_cached"] for run in r),
            f"{median(r, 'rebuild_pct'):.1f}%, "
            f"cached in {sum(run['deps_cached'] for run in r)}/{len(r)} runs",
        ),
        image=True,
    )
    add(
        "first 200 from /health < 1 s after the process start",
        lambda r: (median(r, "start_to_first_ok_s") < 1, f"{median(r, 'start_to_first_ok_s'):.2f} s"),
    )
    add(
        "Docker `healthy` < 1 s after the process start",
        lambda r: (median(r, "start_to_healthy_s") < 1, f"{median(r, 'start_to_healthy_s'):.2f} s"),
    )
    add("docker stop < 1 s", lambda r: (median(r, "stop_s") < 1, f"{median(r, 'stop_s'):.2f} s"))
    return targets


def verdict(result: dict) -> str:
    if result["met"] is None:
        return result["measured"]
    return f"{'met' if result['met'] else 'MISSED'}: {result['measured']}"


def targets_table(targets: list[dict]) -> str:
    header = ["target (medians)", *(v.label for v in VARIANTS[1:])]
    rows = [
        [
            t["goal"],
            *(verdict(t["variants"][v.key]) for v in VARIANTS[1:]),
        ]
        for t in targets
    ]
    return markdown_table(header, rows)


def chart(results: dict[str, list[dict]], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    keys = [key for key, _, _, direction in METRICS if direction]
    base = {key: median(results["baseline"], key) for key in keys}
    others = VARIANTS[1:]
    fig, ax = plt.subplots(figsize=(14, 6.4), dpi=110)
    width = 0.8 / len(others)
    colours = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd"]
    top = 1.0
    for i, v in enumerate(others):
        xs, ys = [], []
        for j, key in enumerate(keys):
            value = median(results[v.key], key)
            if value is not None and base[key]:
                xs.append(j + (i - (len(others) - 1) / 2) * width)
                ys.append(value / base[key])
        top = max([top, *ys])
        bars = ax.bar(xs, ys, width * 0.95, label=v.label, color=colours[i % len(colours)])
        ax.bar_label(bars, labels=[f"{y:.2g}" for y in ys], fontsize=6.5, padding=1)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.text(-0.55, 1.0, "baseline = 1", va="bottom", ha="left", fontsize=8)
    ax.set_yscale("log")
    bottom = min(0.5, *(bar.get_height() for bar in ax.patches)) / 1.6
    ax.set_ylim(bottom, top * 1.7)
    ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if bottom <= t <= top * 1.7]
    ax.set_yticks(ticks, [f"{t:g}x" for t in ticks])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    arrows = {key: ("higher is better" if d == "up" else "lower is better") for key, _, _, d in METRICS if d}
    ax.set_xticks(range(len(keys)), [f"{CHART_LABELS[k]}\n({arrows[k]})" for k in keys], fontsize=8)
    ax.set_ylabel("ratio to the tutorial baseline (log scale)")
    ax.set_title(f"Generated service vs the tutorial baseline (medians)\n{subtitle}", fontsize=10)
    ax.legend(loc="upper center", fontsize=8, ncols=len(others))
    ax.grid(axis="y", which="both", alpha=0.25)
    shared = [v.label for v in others if v.image_of]
    if shared:
        note = ", ".join(shared) + ": the image of another variant, so no size or build bars of its own"
        ax.set_xlabel(note, fontsize=8, loc="right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def machine() -> dict:
    def first(path: str, pattern: str) -> str:
        with contextlib.suppress(OSError):
            match = re.search(pattern, Path(path).read_text(), re.MULTILINE)
            if match:
                return match[1].strip()
        return "?"

    info = (
        docker(
            "info",
            "--format",
            "{{.ServerVersion}}|{{.CgroupVersion}}|{{.Driver}}|{{.OperatingSystem}}",
            check=False,
        )
        .stdout.strip()
        .split("|")
    )
    mem = first("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    return {
        "cpu": first("/proc/cpuinfo", r"^model name\s*:\s*(.+)$"),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem) / 2**20, 1) if mem.isdigit() else None,
        "os": first("/etc/os-release", r'^PRETTY_NAME="?([^"\n]+)'),
        "kernel": platform.release(),
        "docker": info[0] if info else "?",
        "cgroup": info[1] if len(info) > 1 else "?",
        "storage": info[2] if len(info) > 2 else "?",
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0],
    }


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"


def describe_bases(bases: dict[str, dict]) -> list[str]:
    lines = []
    for image, data in sorted(bases.items()):
        kind = (
            f"stand-in built by scripts/buildenv/images.sh (debootstrap, Debian's Python {data['python']})"
            if data["standin"]
            else f"Python {data['python']}"
        )
        lines.append(f"- `{image}`: {data['size'] / 1e6:.0f} MB, {kind}")
    return lines


def report(
    results: dict[str, list[dict]],
    targets: list[dict],
    settings: Settings,
    meta: dict,
    dev: dict,
) -> str:
    m = meta["machine"]
    interval = median(results["default"], "health_interval_s")
    interval = f"{interval:g} s" if interval else "?"
    runs = len(results["baseline"])
    spread = " (min-max in brackets)" if runs > 1 else ""
    source = "a local package mirror (FASTAPI_DOCKER_INDEX_URL)" if meta["mirror"] else "PyPI"
    lines = [
        "# Benchmark: the generated service vs the tutorial it grew from",
        "",
        f"Measured {meta['date']} with `{meta['command']}` (template commit {meta['commit']}), in "
        f"{meta['wall_s'] / 60:.1f} min, on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"{m['os']}, kernel {m['kernel']}, Docker {m['docker']} (cgroup v{m['cgroup']}, {m['storage']}), "
        f"{m['wrk']}. Packages came from {source}. Load average (1 min) at the start and the end: "
        f"{meta['loadavg'][0]} and {meta['loadavg'][1]}: anything else running on the machine shows in "
        f"these numbers.",
        "",
        f"## Results: median of {runs} run{'s' if runs > 1 else ''}{spread}",
        "",
        results_table(results),
        "",
        "## Targets for the generated service",
        "",
        "Evaluated on the medians above; the benchmark reports them, it does not enforce them.",
        "",
        targets_table(targets),
        "",
        "## Dev loop",
        "",
        "The default project's compose dev mode (`make dev`: `docker compose up --build --watch dev`): "
        "app/main.py is saved with a new greeting, and GET / is polled every 10 ms until it answers it "
        "(target: under a second, median). Connections refused while polling and images built by the "
        "saves are counted (both should be 0).",
        "",
        dev_loop_table(dev),
        "",
        "## Ratios to the baseline",
        "",
        "![each variant's medians divided by the baseline's](benchmark.png)",
        "",
        "## Variants",
        "",
        *(f"- **{v.label}**: {v.about}" for v in VARIANTS),
        "",
        "Base images:",
        "",
        *describe_bases(meta["bases"]),
        "",
        "The baseline, written from the FastAPI tutorial (its only additions: the index as a build "
        "argument, and `/health`):",
        "",
        "```dockerfile",
        BASELINE_DOCKERFILE.replace("{port}", BASELINE_PORT).rstrip(),
        "```",
        "",
        "```python",
        BASELINE_MAIN.rstrip(),
        "```",
        "",
        "## How it was measured",
        "",
        f"- Every variant is built and run on this machine in the same invocation, round-robin "
        f"({runs} round{'s' if runs > 1 else ''}), one at a time: each round builds every image first, "
        "then runs them in an order that rotates from round to round (no load right after a build, no "
        "variant always in the same place).",
        "- **Sizes**: `docker image inspect .Size` of the image and of its base image (both uncompressed, "
        "as Docker sums a layer: each file's apparent size once); *installed packages* is the growth of "
        "every `site-packages`/`dist-packages` directory on `sys.path`, summed the same way inside the image "
        "and inside its base image: the floor any image with these packages carries.",
        "- **Cold build**: `docker builder prune --all --filter type=exec.cachemount` (empties the pip/uv "
        "cache mounts), then `docker buildx build --no-cache`; the base image is already local (no pull is "
        "timed). **Rebuild**: a comment appended to main.py, then `docker buildx build` with the cache; "
        "its plain progress log says whether every step before `COPY main.py` was `CACHED`.",
        f"- **Start**: from the `docker run --detach` call to the first 200 from `GET /health` (polled every "
        f"10 ms from the host), and to `docker inspect`'s `healthy`; *process start* is Docker's "
        f"`StartedAt`, "
        f"and for `healthy` the end of the first passing probe in the health log. The template's "
        f"HEALTHCHECK probes every `--start-interval` while the container is starting and every "
        f"{interval} once it is healthy. The baseline has no HEALTHCHECK.",
        "- **Health probe cost**: the image's HEALTHCHECK command run 5 times with `docker exec` in the "
        "idle container (as Docker runs it), the container cgroup's CPU time (`cpuacct.usage` or "
        "`usage_usec`) before and after, divided by 5; per hour: that times 3600 / the steady interval.",
        f"- **Load**: `wrk -t{settings.threads} -c{settings.connections} -d{settings.duration:g}s --latency` "
        f"against `GET /` after a {settings.warmup:g} s warm-up at the same load; errors are non-2xx "
        f"responses plus socket errors (connect, read, write, timeout). Containers run with "
        f"`--network host --cpus {settings.cpus}` (uvicorn binds a free port in the host's network "
        f"namespace; wrk hits 127.0.0.1 directly, without Docker's userland proxy) so every variant gets "
        f"the same CPU quota and wrk keeps the rest of the machine. Each variant's port is set where it is "
        f"defined (the tutorial's `--port 80`, the template's `port` answer) to a free one, as the host "
        f"network requires; nothing else differs from the defaults.",
        "- **Memory**: `docker stats --no-stream` (the cgroup's usage without page cache), idle after the "
        "container turned healthy (the baseline: after its first 200), and under load in the middle of the "
        "measured wrk run.",
        "- **CPU throttling**: how many CFS periods (100 ms each) the container's cgroup spent throttled "
        "at its `--cpus` quota during the measured load (`nr_throttled` of its `cpu.stat`, read on the "
        "host; n/a where it cannot be read). Every process in the container shares the quota, including "
        "the HEALTHCHECK's probe (a Python interpreter started at each interval).",
        "- **Stop**: `docker stop` (SIGTERM, 10 s grace) of the idle container after the load.",
        f"- **workers=2** runs two uvicorn worker processes inside the same `--cpus {settings.cpus}` quota: "
        "they share one CPU's worth of time, so they cannot add throughput here. Running on two cores at "
        "once, they use up the quota early in each period and wait out the rest (the throttling row), and "
        "the supervisor and the second worker cost two more interpreters' memory. A second worker pays "
        "off only when the container may use a second core (and, here, wrk needs the machine's other one).",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Build and load-test the generated service against the tutorial baseline.",
        epilog="Full run: --runs 3 --duration 10 --connections 64; --smoke: 1 run, 2 s, 8 connections.",
    )
    parser.add_argument("--runs", type=int, help="runs per variant (default 3; --smoke: 1)")
    parser.add_argument(
        "--duration", type=float, help="seconds of measured load per run (default 10; --smoke: 2)"
    )
    parser.add_argument("--connections", type=int, help="wrk connections (default 64; --smoke: 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up load before each run (default 2; --smoke: 1)"
    )
    parser.add_argument("--cpus", default="1.0", help="docker run --cpus for every variant (default 1.0)")
    parser.add_argument("--smoke", action="store_true", help="one short iteration with a small load")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "benchmark", help="output directory")
    args = parser.parse_args(argv)
    smoke = args.smoke

    def pick(value, full, quick):
        return value if value is not None else (quick if smoke else full)

    settings = Settings(
        runs=pick(args.runs, 3, 1),
        duration=pick(args.duration, 10.0, 2.0),
        connections=pick(args.connections, 64, 8),
        threads=args.threads,
        warmup=pick(args.warmup, 2.0, 1.0),
        cpus=args.cpus,
        out=args.out,
        smoke=smoke,
        argv=list(sys.argv[1:] if argv is None else argv),
    )
    settings.threads = max(1, min(settings.threads, settings.connections))
    if settings.runs < 1 or settings.duration <= 0 or settings.connections < 1:
        parser.error("--runs, --duration and --connections must be positive")
    return settings


def preflight() -> None:
    missing = [tool for tool in ("docker", "wrk") if shutil.which(tool) is None]
    if missing:
        raise BenchmarkError(f"not found: {', '.join(missing)} (Debian: apt-get install docker.io wrk)")
    docker("buildx", "version", timeout=30)
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise BenchmarkError("matplotlib is not installed: install requirements/test.txt") from error


def benchmark(settings: Settings, session: Session, workdir: Path) -> dict:
    started = time.monotonic()
    load_start = loadavg()
    preflight()
    (settings.out / "logs").mkdir(parents=True, exist_ok=True)
    ports = free_ports(len(VARIANTS))
    log(
        f"run {session.run_id}: {len(VARIANTS)} variants x {settings.runs} run(s), "
        f"{settings.duration:g} s of load at {settings.connections} connections, --cpus {settings.cpus}"
    )
    prepared: list[Prepared] = []
    for variant, port in zip(VARIANTS, ports, strict=True):
        if variant.image_of:
            source = next(p for p in prepared if p.variant.key == variant.image_of)
            prepared.append(dataclasses.replace(source, variant=variant))
        else:
            prepared.append(prepare(variant, workdir, port))
    bases: dict[str, dict] = {}
    for p in prepared:
        if p.base not in bases:
            if docker("image", "inspect", p.base, check=False).returncode != 0:
                log(f"pulling {p.base}")
                docker("pull", p.base, timeout=1200)
            probe = probe_packages(p.base)
            labels = docker("image", "inspect", "--format", "{{json .Config.Labels}}", p.base).stdout
            standin = bool((json.loads(labels) or {}).get(STANDIN_LABEL))
            bases[p.base] = probe | {"size": image_size(p.base), "standin": standin}
    results: dict[str, list[dict]] = {v.key: [] for v in VARIANTS}
    for run in range(1, settings.runs + 1):
        tags: dict[str, str] = {}
        built: dict[str, tuple[dict, str]] = {}
        # Every build of the round first, then the loads: no load runs in the wake of a build (the
        # engine still writing layers), and the load order rotates per round, so that no variant is
        # always measured first or right after the same neighbour.
        for p in prepared:
            if p.variant.image_of:
                built[p.variant.key] = ({"image_of": p.variant.image_of}, f"image of {p.variant.image_of}")
            else:
                tag, values = build_phase(session, p, run, settings, bases[p.base])
                tags[p.variant.key] = tag
                built[p.variant.key] = (
                    values,
                    f"cold build {values['cold_build_s']:.1f} s, rebuild {values['rebuild_s']:.1f} s",
                )
        shift = (run - 1) % len(prepared)
        for p in prepared[shift:] + prepared[:shift]:
            t0 = time.monotonic()
            values, about = built[p.variant.key]
            tag = tags[p.variant.image_of or p.variant.key]
            values = values | run_phase(session, p, tag, run, settings)
            results[p.variant.key].append(values)
            log(
                f"run {run}/{settings.runs} {p.variant.label}: {about}, "
                f"first OK {values['run_to_first_ok_s']:.2f} s, {values['rps']:.0f} req/s, "
                f"p99 {values['p99_ms']:.1f} ms, {values['errors']} errors, stop {values['stop_s']:.2f} s "
                f"({time.monotonic() - t0:.0f} s)"
            )
        for tag in tags.values():
            docker("rmi", "--force", tag, check=False)
            session.images.discard(tag)
    default = next(p for p in prepared if p.variant.key == "default")
    saves = 3 if settings.smoke else 10
    log(f"dev loop: {saves} saves of app/main.py under `docker compose up --watch dev`")
    dev = dev_loop(session, default, saves, workdir, settings.out / "logs")
    log(f"dev loop: save -> new response, median {dev['median_s']:.2f} s, {dev['refused']} refused")
    wall = time.monotonic() - started
    targets = evaluate_targets(results)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    template_paths = ["cookiecutter.json", "hooks", "{{cookiecutter.__project_dir}}"]
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", *template_paths],
        capture_output=True,
        text=True,
    ).stdout.strip()
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python scripts/benchmark.py", *settings.argv]),
        "commit": (commit or "?") + (" with uncommitted template changes" if dirty else ""),
        "loadavg": [load_start, loadavg()],
        "wall_s": wall,
        "machine": machine(),
        "mirror": bool(os.environ.get(INDEX_URL_ENV)),
        "bases": {image: {k: v for k, v in data.items() if k != "dirs"} for image, data in bases.items()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
        "ports": {p.variant.key: p.port for p in prepared},
    }
    markdown = report(results, targets, settings, meta, dev)
    (settings.out / "results.md").write_text(markdown)
    subtitle = (
        f"{len(results['baseline'])} run(s); wrk {settings.connections} connections, "
        f"{settings.duration:g} s; "
        f"--cpus {settings.cpus}; {meta['machine']['cores']} cores, Docker {meta['machine']['docker']}"
    )
    chart(results, settings.out / "benchmark.png", subtitle)
    document = {
        "meta": meta,
        "variants": {v.key: {"label": v.label, "about": v.about, "runs": results[v.key]} for v in VARIANTS},
        "targets": targets,
        "dev_loop": dev,
    }
    (settings.out / "results.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(results_table(results))
    print()
    print(targets_table(targets))
    print()
    print(dev_loop_table(dev))
    log(f"done in {wall:.0f} s: {settings.out / 'results.md'}, results.json, benchmark.png")
    return document


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    session = Session(uuid.uuid4().hex[:8])

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="fastapi-docker-bench-"))
    try:
        benchmark(settings, session, workdir)
        return 0
    except BenchmarkError as error:
        log(f"FAILED: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        log("cleaning up the benchmark's containers and images")
        session.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
