#!/usr/bin/env python3
"""Measure the generated service against the tutorial it grew from, on this machine, in one run.

    python scripts/benchmark.py [--smoke | --publish] [--out DIR]     (--help: the settings)

Writes results.json (every run's numbers, and the environment they were measured in), results.md (the
tables) and benchmark.png (the ratios to the baseline) to --out, logs under logs/; --publish copies
them to docs/benchmark-results/. What is measured, how, and the targets: docs/benchmark.md. Needs
docker with buildx and compose, wrk, and requirements/benchmark.txt. Builds use the tests' mirror
settings (tests/support/docker.py). Everything it creates is labelled and removed at the end, also on
failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.buildkit import dependency_layers  # noqa: E402
from tests.support.compose import compose_env  # noqa: E402
from tests.support.docker import (  # noqa: E402
    INDEX_URL_ENV,
    SizeAboveBase,
    buildx_build,
    docker,
    image_size,
    probe_packages,
    unique,
)
from tests.support.dockerfile import base_image  # noqa: E402
from tests.support.net import free_ports, port_is_free  # noqa: E402
from tests.support.polling import get_json, get_ok, wait_until  # noqa: E402
from tests.support.project import bake  # noqa: E402

LABEL_KEY = "org.fastapi-docker.benchmark"
STANDIN_LABEL = "org.fastapi-docker.standin"
DOCS = REPO / "docs" / "benchmark-results"
OUTPUTS = ("results.json", "results.md", "benchmark.png")

TUTORIAL = REPO / "scripts" / "benchmark-tutorial"  # the baseline: the FastAPI tutorial's Docker setup


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    answers: dict | None  # cookiecutter answers; None: the tutorial baseline
    image_of: str | None = None  # runs the image of that variant (a run-time setting, no build of its own)
    run_env: dict = field(default_factory=dict)  # `docker run --env`


VARIANTS = [
    Variant("baseline", "tutorial baseline", None),
    Variant("default", "template defaults", {}),
    Variant("quiet", "defaults, no access log", {}, "default", {"UVICORN_ACCESS_LOG": "false"}),
    Variant("uv", "installer=uv", {"installer": "uv"}),
    Variant("workers2", "workers=2", {"workers": "2"}),
]


class Metric(NamedTuple):
    key: str
    label: str
    decimals: int
    chart: str | None = None  # "up": higher is better, "down": lower is better; None: not in the chart
    image: bool = False  # a property of the image (shared by a variant that runs another's image)
    healthcheck: bool = False  # None for an image without a HEALTHCHECK (the baseline)
    cgroup: bool = False  # None where the container's cgroup files cannot be read on this host


METRICS = [
    Metric("image_mb", "image size (MB)", 1, "down", image=True),
    Metric("added_mb", "added on top of the base image (MB)", 1, "down", image=True),
    Metric("packages_mb", "installed packages on disk (MB)", 1, image=True),
    Metric("added_ratio", "added / installed packages (x)", 2, image=True),
    Metric("cold_build_s", "cold build (s)", 1, "down", image=True),
    Metric("rebuild_s", "rebuild after a main.py edit (s)", 2, "down", image=True),
    Metric("rebuild_pct", "rebuild / cold build (%)", 1, image=True),
    Metric("rebuilt_steps", "dependency steps not from the cache on rebuild", 0, image=True),
    Metric("run_to_first_ok_s", "docker run -> first 200 from /health (s)", 2, "down"),
    Metric("start_to_first_ok_s", "process start -> first 200 (s)", 2),
    Metric("run_to_healthy_s", "docker run -> Docker `healthy` (s)", 2, healthcheck=True),
    Metric("start_to_healthy_s", "process start -> Docker `healthy` (s)", 2, healthcheck=True),
    Metric("health_interval_s", "steady health check interval (s)", 0, healthcheck=True),
    Metric("probe_cpu_ms", "CPU time of one health probe (ms)", 0, healthcheck=True, cgroup=True),
    Metric("probe_cpu_s_per_hour", "idle health probes' CPU per hour (s)", 1, healthcheck=True, cgroup=True),
    Metric("stop_s", "docker stop (s)", 2, "down"),
    Metric("rps", "GET / requests/s", 0, "up"),
    Metric("p50_ms", "GET / latency p50 (ms)", 1, "down"),
    Metric("p99_ms", "GET / latency p99 (ms)", 1, "down"),
    Metric("errors", "errors (non-2xx + socket)", 0),
    Metric("throttled", "CPU-quota-throttled periods during the load", 0, cgroup=True),
    Metric("mem_idle_mib", "memory idle (MiB)", 1, "down"),
    Metric("mem_load_mib", "memory under load (MiB)", 1, "down"),
]
DEV_METRICS = [  # the dev loop (compose dev mode of the default project), one value each
    Metric("median_s", "save -> new response served, median (s)", 2),
    Metric("max_s", "save -> new response served, slowest (s)", 2),
    Metric("refused", "refused or reset connections while polling", 0),
    Metric("images_built", "images built by the saves", 0),
    Metric("reloads_in_log", "reloads shown in the dev log", 0),
]


class BenchmarkError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"benchmark: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# Parsers of what the tools print (unit-tested on recorded outputs in tests/data/benchmark/).

TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # wrk's latency units, to ms
SIZE_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
SIZE_UNITS |= {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_wrk(output: str) -> dict:
    """wrk --latency's report: requests/s, p50 and p99 (ms), errors (non-2xx + socket) and requests."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if not match:
            raise BenchmarkError(f"no p{percent} in wrk's output:\n{output}")
        return float(match[1]) * TIME_UNITS[match[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    requests = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if not rps or not requests:
        raise BenchmarkError(f"no Requests/sec in wrk's output:\n{output}")
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = sum(map(int, sockets.groups())) if sockets else 0
    return {
        "rps": float(rps[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": errors + (int(non_2xx[1]) if non_2xx else 0),
        "requests": int(requests[1]),
    }


def parse_size(text: str) -> float:
    """A size as Docker prints it (`35.6MiB`, `512kB`, `0B`), in bytes."""
    match = re.fullmatch(r"([\d.]+)\s*([kKMGT]?i?B)", text.strip())
    if not match:
        raise BenchmarkError(f"not a size: {text!r}")
    return float(match[1]) * SIZE_UNITS[match[2]]


def docker_time(stamp: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z or an offset) as epoch seconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp.strip())
    if not match:
        raise BenchmarkError(f"not a docker timestamp: {stamp!r}")
    zone = "+00:00" if match[3] == "Z" else match[3]
    return dt.datetime.fromisoformat(match[1] + zone).timestamp() + float("0." + (match[2] or "0"))


def cgroup_dir(proc_cgroup: str, mountinfo: str, controller: str) -> tuple[Path, int] | None:
    """(directory, cgroup version) of a process's cgroup for controller, or None.

    The kernel says where: /proc/PID/cgroup gives the process's path in each hierarchy, and
    /proc/self/mountinfo where each hierarchy is mounted (cgroup v1: the one with controller in its
    options; v2: the cgroup2 mount, used only when no v1 hierarchy has the controller).
    """
    mounts: dict[str, str] = {}
    for line in mountinfo.splitlines():
        fields, _, fs = line.partition(" - ")
        fstype, _, options = (fs.split() + ["", "", ""])[:3]
        if fstype == "cgroup" and controller in options.split(","):
            mounts["v1"] = fields.split()[4]
        elif fstype == "cgroup2":
            mounts["v2"] = fields.split()[4]
    paths = {}
    for line in proc_cgroup.splitlines():
        number, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            paths["v1"] = path
        elif number == "0" and not controllers:
            paths["v2"] = path
    for kind, version in (("v1", 1), ("v2", 2)):
        if kind in mounts and kind in paths:
            return Path(mounts[kind], paths[kind].lstrip("/")), version
    return None


def probe_command(healthcheck: dict) -> list[str] | None:
    """The command Docker runs for an image's HEALTHCHECK (`.Config.Healthcheck`), or None without one."""
    test = healthcheck.get("Test") or []
    if test[:1] == ["CMD"]:
        return test[1:]
    return ["/bin/sh", "-c", test[1]] if test[:1] == ["CMD-SHELL"] else None


def parse_keyed(text: str) -> dict[str, int]:
    """A cgroup `key value` file (cpu.stat) as a dict."""
    return {key: int(value) for key, value in (line.split() for line in text.splitlines() if line.strip())}


# ----------------------------------------------------------------------------------------------------------
# Reading a running container.


def cgroup_file(pid: int, controller: str, name: str) -> tuple[str, int] | None:
    """(text, cgroup version) of the file `name` of process pid's cgroup for controller, or None."""
    try:
        found = cgroup_dir(Path(f"/proc/{pid}/cgroup").read_text(), Path("/proc/self/mountinfo").read_text(),
                           controller)  # fmt: skip
        return (found[0].joinpath(name).read_text(), found[1]) if found else None
    except OSError:  # no such process here (a remote engine) or no such file
        return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time of every process in pid's cgroup so far (v1: cpuacct.usage; v2: cpu.stat usage_usec)."""
    found = cgroup_file(pid, "cpuacct", "cpuacct.usage") or cgroup_file(pid, "cpu", "cpu.stat")
    if found is None:
        return None
    text, version = found
    return int(text) / 1e9 if version == 1 else parse_keyed(text)["usage_usec"] / 1e6


def throttled_periods(pid: int) -> int | None:
    """How many CFS periods pid's cgroup spent throttled at its CPU quota so far (cpu.stat)."""
    found = cgroup_file(pid, "cpu", "cpu.stat")
    return None if found is None else parse_keyed(found[0])["nr_throttled"]


def inspect(name: str, what: str = ".State") -> dict:
    return json.loads(docker("inspect", "--format", "{{json " + what + "}}", name).stdout) or {}


def memory_mib(name: str) -> float:
    """The container's memory use as `docker stats` shows it (page cache excluded), in MiB."""
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).stdout
    return parse_size(usage.split("/")[0]) / 2**20


def probe_cpu_s(name: str, pid: int, healthcheck: dict, probes: int = 5) -> float | None:
    """CPU time of one run of the image's HEALTHCHECK, run as Docker runs it (an exec in the idle
    container), averaged over a few runs; None without a HEALTHCHECK or a readable cgroup."""
    command = probe_command(healthcheck)
    if command is None:
        return None
    before = cpu_seconds(pid)
    for _ in range(probes):
        docker("exec", name, *command)
    after = cpu_seconds(pid)
    return None if before is None or after is None else (after - before) / probes


def wrk(url: str, settings: argparse.Namespace, seconds: float, during=None) -> dict:
    """wrk against url; during() is called once, halfway through (memory under load)."""
    command = ["wrk", f"-t{settings.threads}", f"-c{settings.connections}", f"-d{seconds:g}s", "--latency"]
    with subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            sampled = None
            if during:
                time.sleep(seconds / 2)
                sampled = during()
            out, err = proc.communicate(timeout=seconds + 60)
        finally:
            proc.kill()
    if proc.returncode != 0:
        raise BenchmarkError(f"wrk failed ({proc.returncode}): {err.strip()}")
    return parse_wrk(out) | {"during": sampled}


# ----------------------------------------------------------------------------------------------------------
# Preparing, building and running one variant.


@dataclass
class Prepared:
    variant: Variant
    context: Path
    port: int
    main: Path
    main_text: str
    base: str
    build_args: list[str]


@dataclass
class Session:
    """One invocation: what it creates is named fastapi-docker-bench-RUN_ID-... and labelled with its id."""

    run_id: str

    @property
    def label(self) -> str:
        return f"{LABEL_KEY}={self.run_id}"

    def name(self, *parts: str) -> str:
        return "-".join(["fastapi-docker-bench", self.run_id, *parts])

    def cleanup(self) -> None:
        for kind, remove in (("ps --all", "rm"), ("images", "rmi")):
            found = docker(*kind.split(), "--quiet", "--filter", f"label={self.label}", check=False).stdout
            if found.split():
                docker(remove, "--force", *set(found.split()), check=False)


def prepare(variant: Variant, workdir: Path, port: int) -> Prepared:
    if variant.answers is None:
        context = Path(shutil.copytree(TUTORIAL, workdir / "tutorial"))
        dockerfile = context / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text().replace('"--port", "80"', f'"--port", "{port}"'))
        main = context / "main.py"
        index = os.environ.get(INDEX_URL_ENV)
        args = ["--build-arg", f"PIP_INDEX_URL={index}"] if index else []
    else:
        os.environ.setdefault("FASTAPI_DOCKER_PREFLIGHT", "off")
        saved = os.dup(1)  # the hooks print their next steps: stdout carries only the tables
        os.dup2(2, 1)
        try:
            context = bake(workdir / variant.key, **variant.answers, port=str(port))
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        main, args = context / "app" / "main.py", []
    return Prepared(variant, context, port, main, main.read_text(), base_image(context / "Dockerfile"), args)


def build(session: Session, p: Prepared, tag: str, logfile: Path, *extra: str) -> tuple[float, str]:
    result, seconds = buildx_build(
        p.context, tag, *p.build_args, "--label", session.label, *extra, check=False
    )
    logfile.write_text(result.stderr)
    if result.returncode != 0:
        raise BenchmarkError(f"building {tag} failed (log: {logfile}):\n{result.stderr[-3000:]}")
    return seconds, result.stderr


def build_phase(session: Session, p: Prepared, run: int, logs: Path, base: dict) -> tuple[str, dict]:
    """Cold build, sizes, and a rebuild after a main.py edit: (the image's tag, the values)."""
    key, tag = p.variant.key, session.name(p.variant.key, f"r{run}")
    p.main.write_text(p.main_text)
    # Cold: no layer cache, no package cache (the base image is local: no pull is timed).
    docker("builder", "prune", "--all", "--force", "--filter", "type=exec.cachemount", timeout=300)
    cold, _ = build(session, p, tag, logs / f"{key}-r{run}-cold.log", "--no-cache")
    probe = probe_packages(tag)
    size = SizeAboveBase(image_size(tag) - base["size"], probe["bytes"] - base["bytes"])
    p.main.write_text(p.main_text + f"\n# edited by the benchmark, run {run}\n")
    rebuild, progress = build(session, p, f"{tag}-edited", logs / f"{key}-r{run}-rebuild.log")
    p.main.write_text(p.main_text)
    docker("rmi", "--force", f"{tag}-edited", check=False)
    values = {
        "image_mb": image_size(tag) / 1e6,
        "added_mb": size.added_bytes / 1e6,
        "packages_mb": size.packages_bytes / 1e6,
        "added_ratio": size.ratio,
        "cold_build_s": cold,
        "rebuild_s": rebuild,
        "rebuild_pct": 100 * rebuild / cold,
        "rebuilt_steps": len(dependency_layers(progress).rebuilt),
        "versions": probe["versions"],
    }
    return tag, values


def run_phase(session: Session, p: Prepared, tag: str, run: int, settings: argparse.Namespace) -> dict:
    """Start, idle memory, probe cost, load, memory under load and stop of a container of tag."""
    key, url = p.variant.key, f"http://127.0.0.1:{p.port}"
    if not port_is_free(p.port):
        raise BenchmarkError(f"port {p.port} (variant {key}) is taken on this host")
    name = session.name(key, f"r{run}", "run")
    started, started_wall = time.monotonic(), time.time()
    docker(
        "run", "--detach", "--name", name, "--label", session.label, "--network", "host",
        "--cpus", settings.cpus, *(f"--env={k}={v}" for k, v in p.variant.run_env.items()), tag,
    )  # fmt: skip
    try:
        wait_until(f"{key}: a 200 from /health", lambda: get_ok(f"{url}/health"), bool, 60, interval=0.01)
    except AssertionError as error:
        raise BenchmarkError(f"{error}\n{docker('logs', name, check=False).stderr[-2000:]}") from None
    first_ok, first_ok_wall = time.monotonic(), time.time()
    state = inspect(name)
    process_started = docker_time(state["StartedAt"])
    values = {
        "run_to_first_ok_s": first_ok - started,
        "start_to_first_ok_s": first_ok_wall - process_started,
        "process_start_after_run_s": process_started - started_wall,
        "run_to_healthy_s": None,
        "start_to_healthy_s": None,
    }
    healthcheck = inspect(tag, ".Config.Healthcheck")
    interval = healthcheck.get("Interval", 0) / 1e9 or None
    if state.get("Health"):
        state = wait_until(f"{key}: Docker's `healthy`", lambda: inspect(name),
                           lambda s: s["Health"]["Status"] == "healthy", 90, interval=0.1)  # fmt: skip
        values["run_to_healthy_s"] = time.monotonic() - started
        passed = next(entry for entry in state["Health"]["Log"] if entry["ExitCode"] == 0)
        values["start_to_healthy_s"] = docker_time(passed["End"]) - process_started
    values["mem_idle_mib"] = memory_mib(name)
    # What the steady health check costs an idle container: one probe's CPU time, times the probes an
    # hour at the steady interval (the start interval applies only until the first `healthy`).
    probe = probe_cpu_s(name, state["Pid"], healthcheck)
    values["health_interval_s"] = interval
    values["probe_cpu_ms"] = None if probe is None else probe * 1000
    values["probe_cpu_s_per_hour"] = None if probe is None or not interval else probe * 3600 / interval

    if settings.warmup > 0:
        wrk(f"{url}/", settings, settings.warmup)
    before = throttled_periods(state["Pid"])
    load = wrk(f"{url}/", settings, settings.duration, lambda: memory_mib(name))
    after = throttled_periods(state["Pid"])
    values |= {k: load[k] for k in ("rps", "p50_ms", "p99_ms", "errors", "requests")}
    values["mem_load_mib"] = load["during"]
    values["throttled"] = None if before is None or after is None else after - before

    stop = time.monotonic()
    docker("stop", name, timeout=60)
    values["stop_s"] = time.monotonic() - stop
    values["exit_code"] = inspect(name)["ExitCode"]
    docker("rm", "--force", name, check=False)
    return values


def dev_loop(session: Session, p: Prepared, saves: int, workdir: Path, logs: Path) -> dict:
    """Save app/main.py `saves` times under `docker compose up --watch dev`: seconds until each is served,
    connections refused (or reset) while polling, images the saves built, reloads in the log."""
    project, port, logfile = session.name("dev"), free_ports(1, host="0.0.0.0")[0], logs / "dev-loop.log"
    # A third compose file names and labels the dev image as this run's: no clash, and the cleanup finds it.
    names, label = workdir / "benchmark-names.yaml", f"{{{LABEL_KEY}: {session.run_id}}}"
    names.write_text(
        f"services:\n  dev:\n    image: {project}:dev\n    build: {{labels: {label}}}\n    labels: {label}\n"
    )
    files = ["-f", "compose.yaml", "-f", "compose.override.yaml", "-f", str(names)]
    args, env = ["docker", "compose", "--project-name", project, *files], compose_env(HOST_PORT=str(port))
    with logfile.open("w") as out:
        proc = subprocess.Popen([*args, "up", "--build", "--watch", "dev"], cwd=p.context, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    seconds, refused = [], 0

    def answer() -> object:
        nonlocal refused
        if proc.poll() is not None:
            raise BenchmarkError(f"docker compose up exited (log: {logfile}):\n{logfile.read_text()[-3000:]}")
        try:
            return get_json(f"http://127.0.0.1:{port}/", timeout=10)
        except OSError:
            refused += 1
            raise

    images = f"label={session.label}"
    try:
        wait_until(f"the dev service answering (log: {logfile})", answer, lambda seen: True, 600)
        before, refused = set(docker("images", "--quiet", "--filter", images).stdout.split()), 0
        for n in range(saves):
            p.main.write_text(p.main_text.replace('{"Hello": "World"}', f'{{"Hello": "Save{n}"}}'))
            saved = time.monotonic()
            wait_until(f"save {n} served", answer, lambda seen, n=n: seen == {"Hello": f"Save{n}"}, 60, 0.01)
            seconds.append(time.monotonic() - saved)
            time.sleep(1)  # the next save comes to a settled server
        built = set(docker("images", "--quiet", "--filter", images).stdout.split()) - before
    finally:
        p.main.write_text(p.main_text)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in the terminal: compose stops the container
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([*args, "down", "--volumes"], cwd=p.context, env=env, capture_output=True, timeout=120)
    return {
        "saves_s": seconds,
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "refused": refused,
        "images_built": len(built),
        "reloads_in_log": logfile.read_text().count("WatchFiles detected changes"),
    }


# ----------------------------------------------------------------------------------------------------------
# The outputs: results.json, the tables, the chart.


def numbers(runs: list[dict], key: str) -> list[float]:
    return [
        run[key] for run in runs if isinstance(run.get(key), int | float) and not isinstance(run[key], bool)
    ]


def median(runs: list[dict], key: str) -> float | None:
    values = numbers(runs, key)
    return statistics.median(values) if values else None


def cell(values: list[float], decimals: int) -> str:
    """The median, and (min-max) when there is more than one value; n/a for none."""
    if not values:
        return "n/a"
    text = f"{statistics.median(values):.{decimals}f}"
    return text + (f" ({min(values):.{decimals}f}-{max(values):.{decimals}f})" if len(values) > 1 else "")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def results_table(results: dict[str, list[dict]]) -> str:
    """One row per metric, one column per variant: "= <variant>" where a variant runs another's image."""
    labels = {v.key: v.label for v in VARIANTS}

    def shown(m: Metric, v: Variant) -> str:
        return (
            f"= {labels[v.image_of]}"
            if m.image and v.image_of
            else cell(numbers(results[v.key], m.key), m.decimals)
        )

    return markdown_table(
        ["metric", *labels.values()], [[m.label, *(shown(m, v) for v in VARIANTS)] for m in METRICS]
    )


def dev_table(dev: dict) -> str:
    rows = [[m.label, f"{dev[m.key]:.{m.decimals}f}"] for m in DEV_METRICS]
    return markdown_table(
        [f"dev loop ({len(dev['saves_s'])} saves, compose dev mode, defaults)", "value"], rows
    )


def markdown(document: dict) -> str:
    env, runs = document["environment"], document["environment"]["settings"]["runs"]
    return "\n".join([
        "# Benchmark results",
        "",
        f"Generated by `{env['command']}` on {env['date']} (template commit {env['commit']}) in "
        f"{env['wall_s'] / 60:.1f} min: {env['cores']} cores ({env['cpu']}), {env['memory_gib']} GiB, "
        f"{env['os']}, kernel {env['kernel']}, Docker {env['docker']} (cgroup v{env['cgroup_version']}), "
        f"{env['wrk']}; load average {env['loadavg'][0]} at the start, {env['loadavg'][1]} at the end. "
        "What is measured and how, and the targets: [benchmark.md](../benchmark.md); every run's numbers, "
        "the installed versions and the base images: results.json.",
        "",
        f"Median of {runs} run(s){' (min-max)' if runs > 1 else ''}:",
        "",
        results_table({k: v["runs"] for k, v in document["variants"].items()}),
        "",
        dev_table(document["dev_loop"]),
        "",
        "![each variant's medians divided by the baseline's](benchmark.png)",
        "",
    ])  # fmt: skip


def chart(results: dict[str, list[dict]], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if m.chart]
    others = VARIANTS[1:]
    fig, ax = plt.subplots(figsize=(14, 6.4), dpi=110)
    width = 0.8 / len(others)
    for i, v in enumerate(others):
        xs, ys = [], []
        for j, m in enumerate(metrics):
            value, base = median(results[v.key], m.key), median(results["baseline"], m.key)
            if value is not None and base and not (m.image and v.image_of):
                xs.append(j + (i - (len(others) - 1) / 2) * width)
                ys.append(value / base)
        bars = ax.bar(xs, ys, width * 0.95, label=v.label)
        ax.bar_label(bars, labels=[f"{y:.2g}" for y in ys], fontsize=6.5, padding=1)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.6)  # room for the legend above the tallest bar
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}x"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    better = {"up": "higher is better", "down": "lower is better"}
    labels = [f"{textwrap.fill(m.label.split(' (')[0], 16)}\n({better[m.chart]})" for m in metrics]
    ax.set_xticks(range(len(metrics)), labels, fontsize=7)
    ax.set_ylabel("ratio to the tutorial baseline (log scale; baseline = 1)")
    ax.set_title(f"The generated service vs the tutorial baseline (medians)\n{subtitle}", fontsize=10)
    ax.legend(loc="upper center", fontsize=8, ncols=len(others))
    ax.grid(axis="y", which="both", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def environment(settings: argparse.Namespace, argv: list[str]) -> dict:
    """The facts the numbers depend on: the machine, the engine, the tools, the template's commit."""

    def first(path: str, pattern: str) -> str:
        match = re.search(pattern, Path(path).read_text(), re.MULTILINE) if Path(path).exists() else None
        return match[1].strip() if match else "?"

    def output(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO).stdout.strip()

    info = json.loads(docker("info", "--format", "{{json .}}").stdout)
    template = ("cookiecutter.json", "hooks", "{{cookiecutter.__project_dir}}")
    dirty = " with uncommitted template changes" if output("git", "status", "--porcelain", *template) else ""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python scripts/benchmark.py", *argv]),
        "commit": (output("git", "rev-parse", "--short", "HEAD") or "?") + dirty,
        "cpu": first("/proc/cpuinfo", r"^model name\s*:\s*(.+)$"),
        "cores": os.cpu_count(),
        "memory_gib": round(int(first("/proc/meminfo", r"^MemTotal:\s+(\d+)")) / 2**20, 1),
        "os": first("/etc/os-release", r'^PRETTY_NAME="?([^"\n]+)'),
        "kernel": platform.release(),
        "docker": info["ServerVersion"],
        "cgroup_version": info["CgroupVersion"],
        "cgroup_driver": info["CgroupDriver"],
        "storage_driver": info["Driver"],
        "wrk": output("wrk", "--version").split(" [")[0],
        "mirror": bool(os.environ.get(INDEX_URL_ENV)),
        "loadavg": [first("/proc/loadavg", r"^(\S+)")],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
    }


# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--runs", type=int, help="runs per variant (default 3; --smoke: 1)")
    add("--duration", type=float, help="seconds of measured load per run (default 10; --smoke: 2)")
    add("--connections", type=int, help="wrk connections (default 64; --smoke: 8)")
    add("--warmup", type=float, help="seconds of load before each run (default 2; --smoke: 1)")
    add("--threads", type=int, default=2, help="wrk threads (default 2)")
    add("--cpus", default="1.0", help="docker run --cpus of every variant (default 1.0)")
    add("--smoke", action="store_true", help="one short run with a small load")
    add("--publish", action="store_true", help=f"copy the outputs to {DOCS.relative_to(REPO)}/")
    add("--out", type=Path, default=REPO / "build" / "benchmark", help="output directory")
    args = parser.parse_args(argv)
    if args.publish and args.smoke:
        parser.error("--publish: a smoke run's numbers are not published")
    defaults = {"runs": (3, 1), "duration": (10.0, 2.0), "connections": (64, 8), "warmup": (2.0, 1.0)}
    for name, (full, smoke) in defaults.items():
        setattr(
            args,
            name,
            (smoke if args.smoke else full) if getattr(args, name) is None else getattr(args, name),
        )
    if args.runs < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("--runs, --duration and --connections must be positive")
    args.threads = max(1, min(args.threads, args.connections))
    return args


def benchmark(settings: argparse.Namespace, argv: list[str], session: Session, workdir: Path) -> dict:
    started = time.monotonic()
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed (Debian: apt-get install wrk)")
    import matplotlib  # noqa: F401  (missing: fail before the measuring, not after)

    env, logs = environment(settings, argv), settings.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"run {session.run_id}: {len(VARIANTS)} variants x {settings.runs} run(s), {settings.duration:g} s "
        f"of load at {settings.connections} connections, --cpus {settings.cpus}")  # fmt: skip
    prepared: dict[str, Prepared] = {}
    for variant, port in zip(VARIANTS, free_ports(len(VARIANTS), host="0.0.0.0"), strict=True):
        source = prepared.get(variant.image_of)
        prepared[variant.key] = (
            Prepared(**{**vars(source), "variant": variant}) if source else prepare(variant, workdir, port)
        )
    bases = {}  # a base image missing here fails now: no pull is ever timed
    for image in sorted({p.base for p in prepared.values()}):
        standin = STANDIN_LABEL in inspect(image, ".Config.Labels")
        bases[image] = probe_packages(image) | {"size": image_size(image), "standin": standin}
    results: dict[str, list[dict]] = {v.key: [] for v in VARIANTS}
    order = list(prepared.values())
    for run in range(1, settings.runs + 1):
        # Every build of the round first, then the loads in an order that rotates from round to round: no
        # load in a build's wake, no variant always first or after the same neighbour.
        built = {
            k: build_phase(session, p, run, logs, bases[p.base])
            for k, p in prepared.items()
            if not p.variant.image_of
        }
        for p in order[(run - 1) % len(order) :] + order[: (run - 1) % len(order)]:
            tag, values = built[p.variant.image_of or p.variant.key]
            results[p.variant.key].append(
                ({} if p.variant.image_of else values) | run_phase(session, p, tag, run, settings)
            )
            log(f"run {run}/{settings.runs} {p.variant.label}: {results[p.variant.key][-1]['rps']:.0f} req/s")
        for tag, _ in built.values():
            docker("rmi", "--force", tag, check=False)
    log("dev loop: app/main.py saved under `docker compose up --watch dev`")
    dev = dev_loop(session, prepared["default"], 3 if settings.smoke else 10, workdir, logs)
    env["loadavg"].append(Path("/proc/loadavg").read_text().split()[0])
    env["wall_s"], env["ports"] = time.monotonic() - started, {k: p.port for k, p in prepared.items()}
    env["base_images"] = {image: {k: v for k, v in b.items() if k != "dirs"} for image, b in bases.items()}
    variants = {v.key: {"label": v.label, "image_of": v.image_of, "runs": results[v.key]} for v in VARIANTS}
    document = {"environment": env, "metrics": {m.key: m.label for m in METRICS}}
    document |= {"variants": variants, "dev_loop": dev}
    (settings.out / "results.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (settings.out / "results.md").write_text(markdown(document))
    load = f"wrk {settings.connections} connections, {settings.duration:g} s; --cpus {settings.cpus}"
    chart(results, settings.out / "benchmark.png", f"{settings.runs} run(s); {load}; Docker {env['docker']}")
    print(results_table(results), dev_table(dev), sep="\n\n")
    for name in OUTPUTS if settings.publish else ():
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(settings.out / name, DOCS / name)
    log(f"done in {env['wall_s']:.0f} s: {settings.out}/{{{','.join(OUTPUTS)}}}")
    return document


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings, session = parse_args(argv), Session(unique("r").removeprefix("r-"))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: the cleanup below runs
    workdir = Path(tempfile.mkdtemp(prefix="fastapi-docker-bench-"))
    try:
        benchmark(settings, argv, session, workdir)
        return 0
    except (BenchmarkError, AssertionError, ValueError, ImportError) as error:  # DockerError too
        log(f"FAILED: {type(error).__name__}: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("cleaning up the benchmark's containers and images")
        session.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
