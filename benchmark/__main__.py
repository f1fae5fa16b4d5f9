"""The generated service measured against the tutorial it grew from, side by side, in one run:
`python -m benchmark [--smoke | --publish] [--out DIR]` from the repository root (docs/benchmark.md).

Writes results.json (every run's numbers, and where) and results.md (every metric, the targets met or
not) to --out; --publish copies both to docs/benchmark-results/. What it creates is labelled and
removed at the end, also on failure."""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from benchmark.measure import build, dev_loop, otlp_collector, serve
from benchmark.parse import BenchmarkError
from benchmark.report import markdown
from tests.support.compose import remove_images
from tests.support.docker import INDEX_URL_ENV, docker, unique
from tests.support.net import free_ports
from tests.support.project import cookiecutter_cli

REPO = Path(__file__).resolve().parent.parent
LABEL = "org.fastapi-docker.benchmark"
LOAD = {  # the settings of the load: type, default, default with --smoke, what it is
    "runs": (int, 3, 1, "runs per variant"),
    "duration": (float, 10, 2, "seconds of measured load per run"),
    "connections": (int, 64, 8, "wrk connections"),
    "warmup": (float, 2, 1, "seconds of load before each run"),
}


class Variant(NamedTuple):
    key: str
    label: str
    answers: dict | None  # cookiecutter answers; None: the tutorial (benchmark/tutorial/)
    image_of: str | None = None  # runs that variant's image with other settings: no build of its own
    env: dict = {}  # `docker run --env`
    command: tuple = ()  # instead of the image's CMD; the port is its last argument


# The floor under the template's layers (request ids, access log): FastAPI and uvicorn of the same image
# serving the same answers, with nothing else.
BARE_APP = """import sys, fastapi, uvicorn
app = fastapi.FastAPI()
async def hello(): return {"Hello": "World"}
async def health(): return {"status": "ok"}
app.get("/")(hello), app.get("/health")(health)
uvicorn.run(app, host="0.0.0.0", port=int(sys.argv[1]), access_log=False)
"""
OTEL = {"observability": "opentelemetry"}
METRICS_PORT = {"OTEL_EXPORTER_PROMETHEUS_PORT": "{metrics_port}"}  # the containers share the host's ports
# Metrics exported every second (the default is a minute): their cost shows within a run.
EXPORT = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:{collector}",
    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
}
TRACED = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}  # every request traced, not only the callers'
# TEST-NET-1 (RFC 5737): never routed, a collector whose packets vanish (the worst case: no refusal).
DOWN = {**EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://192.0.2.1:4318"}
VARIANTS = [
    Variant("baseline", "tutorial baseline", None),
    Variant("default", "template defaults", {}),
    Variant("no_access_log", "defaults, access log off", {}, "default", {"UVICORN_ACCESS_LOG": "false"}),
    Variant("json_logs", "defaults, JSON logs", {}, "default", {"LOG_FORMAT": "json"}),
    Variant("bare", "defaults' image, bare FastAPI", {}, "default", command=("python", "-c", BARE_APP)),
    # observability=opentelemetry at its default sampling (a request is traced when its caller sampled
    # it; wrk's requests have no traceparent): the metrics of every request, kept for a scrape. Then
    # every request traced: alone, exporting to a collector, and with its collector unreachable.
    Variant("otel", "OpenTelemetry, default sampling", OTEL, env=METRICS_PORT),
    Variant("otel_traced", "OpenTelemetry, all traced", OTEL, "otel", {**METRICS_PORT, **TRACED}),
    Variant(
        "otel_export",
        "OpenTelemetry, all traced, exporting",
        OTEL,
        "otel",
        {**METRICS_PORT, **TRACED, **EXPORT},
    ),
    Variant(
        "otel_down",
        "OpenTelemetry, all traced, collector down",
        OTEL,
        "otel",
        {**METRICS_PORT, **TRACED, **DOWN},
    ),
]


def log(message: str) -> None:
    print(f"benchmark: {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.split("\n")[0])
    add = parser.add_argument
    for name, (kind, full, smoke, what) in LOAD.items():
        add(f"--{name}", type=kind, help=f"{what} (default {full}; --smoke: {smoke})")
    add("--threads", type=int, default=2, help="wrk threads (default 2)")
    add("--cpus", default="1.0", help="docker run --cpus of every variant (default 1.0)")
    add("--smoke", action="store_true", help="one short run, a small load: it works, numbers mean nothing")
    add("--publish", action="store_true", help="copy the outputs to docs/benchmark-results/")
    add("--out", type=Path, default=REPO / "build" / "benchmark", help="output directory")
    args = parser.parse_args(argv)
    if args.publish and args.smoke:
        parser.error("--publish: a smoke run's numbers are not published")
    for name, (_, full, smoke, _) in LOAD.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    if min(args.runs, args.duration, args.connections) <= 0:
        parser.error("--runs, --duration and --connections must be positive")
    args.threads = max(1, min(args.threads, args.connections))
    return args


def environment(settings: argparse.Namespace, argv: list[str]) -> dict:
    """The facts the numbers depend on: the machine, the engine, the tools, the template's commit."""

    def output(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO).stdout.strip()

    info = json.loads(docker("info", "--format", "{{json .}}").stdout)
    return {
        "command": " ".join(["python -m benchmark", *argv]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": output("git", "describe", "--always", "--dirty"),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "docker": f"{info['ServerVersion']} (cgroup v{info['CgroupVersion']})",
        "wrk": output("wrk", "--version").split(" [")[0],
        "loadavg": [os.getloadavg()[0]],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
    }


def prepare(variant: Variant, workdir: Path, port: int) -> tuple[Path, list[str]]:
    """A variant's build context, listening on port (the containers share the host's network), and its
    build arguments."""
    if variant.answers is None:  # the tutorial: its port (80) changed, the mirror as a build argument
        context = Path(shutil.copytree(REPO / "benchmark" / "tutorial", workdir / "tutorial"))
        (context / "Dockerfile").write_text((context / "Dockerfile").read_text().replace('"80"', f'"{port}"'))
        index = os.environ.get(INDEX_URL_ENV)
        return context, ["--build-arg", f"PIP_INDEX_URL={index}"] if index else []
    answers = [f"{question}={answer}" for question, answer in {**variant.answers, "port": port}.items()]
    made = cookiecutter_cli(workdir / variant.key, *answers, FASTAPI_DOCKER_PREFLIGHT="off")
    if made.returncode != 0:
        raise BenchmarkError(f"cookiecutter {' '.join(answers)} failed:\n{made.stderr[-3000:]}")
    return next((workdir / variant.key / "out").iterdir()), []


def benchmark(
    settings: argparse.Namespace, argv: list[str], name: str, workdir: Path, collector: int
) -> None:
    if shutil.which("wrk") is None:
        raise BenchmarkError("wrk is not installed (Debian: apt-get install wrk)")
    started, env = time.monotonic(), environment(settings, argv)
    logs, label = settings.out / "logs", f"{LABEL}={name}"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"{name}: {len(VARIANTS)} variants x {settings.runs} run(s), {settings.duration:g} s of load each")
    built = [v.key for v in VARIANTS if not v.image_of]
    ports = dict(zip([*built, "dev"], free_ports(len(built) + 1, host="0.0.0.0"), strict=True))
    fill = {"metrics_port": free_ports(1, host="0.0.0.0")[0], "collector": collector}
    planned = [v._replace(env={k: value.format(**fill) for k, value in v.env.items()}) for v in VARIANTS]
    contexts = {v.key: prepare(v, workdir, ports[v.key]) for v in VARIANTS if v.key in built}
    runs: dict[str, list[dict]] = {v.key: [] for v in VARIANTS}
    for run in range(settings.runs):
        # Every build of the round first, then the loads in an order that rotates from round to round:
        # no load in a build's wake, no variant always first or after the same neighbour.
        tags = {key: f"{name}-{key}-r{run}" for key in built}
        images = {
            key: build(context, tags[key], logs / f"{tags[key]}.log", "--label", label, *args)
            for key, (context, args) in contexts.items()
        }
        for v in planned[run % len(planned) :] + planned[: run % len(planned)]:
            image = v.image_of or v.key
            values = serve(tags[image], f"{name}-{v.key}-r{run}", ports[image], v, settings, label)
            runs[v.key].append(images[image] | values)
            log(f"run {run + 1} {v.label}: {values['rps']:.0f} requests/s")
        docker("rmi", "--force", *tags.values(), check=False)
    saves = 3 if settings.smoke else 10
    dev = dev_loop(contexts["default"][0], f"{name}-dev", ports["dev"], saves, logs / "dev.log")
    env |= {"wall_s": time.monotonic() - started, "loadavg": [*env["loadavg"], os.getloadavg()[0]]}
    variants = {v.key: v._asdict() | {"runs": runs[v.key]} for v in planned}
    document = {"environment": env, "variants": variants, "dev_loop": dev}
    (settings.out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (settings.out / "results.md").write_text(markdown(document))
    print(markdown(document).split("\n\n", 2)[2])  # the tables
    for file in ("results.json", "results.md") if settings.publish else ():
        shutil.copy(settings.out / file, REPO / "docs" / "benchmark-results" / file)


def main(argv: list[str]) -> int:
    settings, name = parse_args(argv), unique("fastapi-docker-bench")
    workdir = Path(tempfile.mkdtemp(prefix="fastapi-docker-bench-"))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: the cleanup below runs
    try:
        with otlp_collector() as collector:  # the OpenTelemetry variants' (EXPORT)
            benchmark(settings, argv, name, workdir, collector)
        return 0
    except (BenchmarkError, AssertionError, ValueError) as error:  # DockerError too
        log(f"FAILED: {type(error).__name__}: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for kind, remove in ((["ps", "--all"], "rm"), (["images"], "rmi")):
            found = docker(*kind, "--quiet", "--filter", f"label={LABEL}={name}", check=False).stdout.split()
            if found:
                docker(remove, "--force", *set(found), check=False)
        remove_images(f"{name}-dev")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
