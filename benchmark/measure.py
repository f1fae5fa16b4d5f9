"""Building and running one variant's image under load, and the dev loop: each returns what it measured."""

import contextlib
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchmark import parse
from benchmark.parse import BenchmarkError, docker_time
from tests.support.compose import compose_env
from tests.support.docker import buildx_build, docker, image_size, probe_packages
from tests.support.polling import get_json, get_ok, wait_until

PROBES = 5  # health probes run to measure one's CPU time


def inspect(name: str, what: str = ".State") -> dict:
    return json.loads(docker("inspect", "--format", "{{json " + what + "}}", name).stdout) or {}


def log_lines(name: str) -> int:
    logs = docker("logs", name, timeout=300)
    return len(logs.stdout.splitlines()) + len(logs.stderr.splitlines())


def cpu_seconds(pid: int) -> float | None:
    """CPU time of every process in pid's cgroup so far; None where this host cannot read it."""
    try:
        proc, mounts = Path(f"/proc/{pid}/cgroup").read_text(), Path("/proc/self/mountinfo").read_text()
        if found := parse.cgroup_dir(proc, mounts, "cpuacct"):  # v2: the unified hierarchy
            return parse.cpu_usage((found[0] / parse.CPU_FILES[found[1]]).read_text(), found[1])
    except OSError:  # not a local engine's process, or no such file
        pass
    return None


def wrk(url: str, settings, seconds: float) -> dict:
    """wrk against url at the settings' load."""
    load = [f"-t{settings.threads}", f"-c{settings.connections}", f"-d{seconds:g}s", "--latency"]
    result = subprocess.run(["wrk", *load, url], capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        raise BenchmarkError(f"wrk failed ({result.returncode}): {result.stderr.strip()}")
    return parse.wrk_report(result.stdout)


@contextlib.contextmanager
def otlp_collector() -> Iterator[int]:
    """A stand-in OTLP/HTTP collector on the host (every port): it takes each export and answers 200,
    as a collector does; yields its port."""

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def build(context: Path, tag: str, log: Path, *args: str) -> dict:
    """A cold build: no layer cache, no package cache (BuildKit's cache mounts emptied, every build's on
    this engine), the base image local (no pull is timed)."""
    docker("builder", "prune", "--all", "--force", "--filter", "type=exec.cachemount", timeout=300)
    result, seconds = buildx_build(context, tag, "--no-cache", *args, check=False)
    log.write_text(result.stderr)
    if result.returncode != 0:
        raise BenchmarkError(f"building {tag} failed (log: {log}):\n{result.stderr[-3000:]}")
    return {
        "cold_build_s": seconds,
        "image_mb": image_size(tag) / 1e6,
        "versions": probe_packages(tag)["versions"],
    }


def serve(image: str, name: str, port: int, variant, settings, label: str) -> dict:
    """A container of image with variant's settings: its start, one health probe's CPU time, the load
    (with the CPU time and the log lines per request) and its stop."""
    url, command = f"http://127.0.0.1:{port}", (*variant.command, str(port)) if variant.command else ()
    docker("run", "--detach", "--name", name, "--label", label, "--network", "host", "--cpus", settings.cpus,
           *(f"--env={k}={v}" for k, v in variant.env.items()), image, *command)  # fmt: skip
    try:
        wait_until(f"{name}: a 200 from /health", lambda: get_ok(f"{url}/health"), bool, 60, interval=0.01)
    except AssertionError as error:
        raise BenchmarkError(f"{error}\n{docker('logs', name, check=False).stderr[-2000:]}") from None
    first_ok, state = time.time(), inspect(name)
    started, pid = docker_time(state["StartedAt"]), state["Pid"]
    values = {"start_to_first_ok_s": first_ok - started, "start_to_healthy_s": None, "probe_cpu_ms": None}
    if state.get("Health"):
        healthy = lambda s: s["Health"]["Status"] == "healthy"  # noqa: E731
        state = wait_until(f"{name}: Docker's `healthy`", lambda: inspect(name), healthy, 90, interval=0.1)
        passed = next(entry for entry in state["Health"]["Log"] if entry["ExitCode"] == 0)
        values["start_to_healthy_s"] = docker_time(passed["End"]) - started
    probe, before = parse.probe_command(inspect(image, ".Config.Healthcheck")), cpu_seconds(pid)
    if probe and before is not None:  # the HEALTHCHECK as Docker runs it: an exec in the container
        for _ in range(PROBES):
            docker("exec", name, *probe)
        values["probe_cpu_ms"] = (cpu_seconds(pid) - before) / PROBES * 1e3
    wrk(f"{url}/", settings, settings.warmup)
    lines, cpu = log_lines(name), cpu_seconds(pid)
    load = wrk(f"{url}/", settings, settings.duration)
    values |= {key: load[key] for key in ("rps", "p50_ms", "p99_ms", "errors", "requests")}
    values["cpu_us_per_request"] = None if cpu is None else (cpu_seconds(pid) - cpu) * 1e6 / load["requests"]
    values["log_lines_per_request"] = (log_lines(name) - lines) / load["requests"]
    stop = time.monotonic()
    docker("stop", name, timeout=60)
    values |= {"stop_s": time.monotonic() - stop, "exit_code": inspect(name)["ExitCode"]}
    docker("rm", name)
    return values


def dev_loop(project: Path, name: str, port: int, saves: int, log: Path) -> dict:
    """app/main.py saved under `docker compose up --watch dev` (`make dev`): the seconds until each save
    is served, and the connections refused (or reset) while polling."""
    (project / "benchmark.yaml").write_text(f"services:\n  dev:\n    image: {name}:dev\n")  # this run's own
    files = ["-f", "compose.yaml", "-f", "compose.override.yaml", "-f", "benchmark.yaml"]
    compose = ["docker", "compose", "--project-name", name, "--profile", "dev", *files]
    env = compose_env(HOST_PORT=str(port))
    main, seconds, refused = project / "app" / "main.py", [], 0
    text = main.read_text()
    with log.open("w") as out:
        proc = subprocess.Popen([*compose, "up", "--build", "--watch", "dev"], cwd=project, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def answer() -> object:
        nonlocal refused
        if proc.poll() is not None:
            raise BenchmarkError(f"docker compose up exited (log: {log})")
        try:
            return get_json(f"http://127.0.0.1:{port}/", timeout=10)
        except OSError:
            refused += 1
            raise

    try:
        wait_until(f"the dev service answering (log: {log})", answer, bool, 600)
        refused = 0
        for n in range(saves):
            main.write_text(text.replace('{"Hello": "World"}', f'{{"Hello": "Save{n}"}}'))
            saved = time.monotonic()
            wait_until(f"save {n} served", answer, {"Hello": f"Save{n}"}.__eq__, 60, interval=0.01)
            seconds.append(time.monotonic() - saved)
            time.sleep(1)  # the next save comes to a settled server
    finally:
        main.write_text(text)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in the terminal: compose stops the container
        proc.wait(timeout=60)
        subprocess.run([*compose, "down"], cwd=project, env=env, capture_output=True, timeout=120)
    return {"saves_s": seconds, "refused": refused}
