"""The benchmark (scripts/benchmark.py): its parsers on recorded outputs, and a smoke run end to end.

The parsers read what wrk, docker and the kernel print; tests/data/benchmark/ holds outputs recorded
on a Docker host (cgroup v1: separate cpu and cpuacct hierarchies, and the unified one). The smoke run
(marker `docker`, `--smoke`: one short run, a small load) of every variant asserts only that it
produces what it promises: results.json with a number for every metric of every variant, the same
numbers in the Markdown table, the dev loop, a chart, and nothing left behind on the engine. Never
timings: the benchmark shows speed; this only keeps it from rotting. The metrics and variants are the
benchmark's own lists, so that a metric it adds is checked here too.
"""

import datetime as dt
import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docker import docker
from tests.support.project import TEMPLATE

DATA = TEMPLATE / "tests" / "data" / "benchmark"
LOCK = TEMPLATE / "requirements" / "benchmark.txt"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", TEMPLATE / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# ----------------------------------------------------------------------------------------------------------
# Parsers, on recorded outputs.


def test_wrk_report_gives_requests_per_second_latency_percentiles_and_request_count():
    assert bench.parse_wrk(recorded("wrk.txt")) == {
        "rps": 743.39,
        "p50_ms": 4.34,
        "p99_ms": 417.98,
        "errors": 0,
        "requests": 2302,
    }


def test_wrk_errors_are_non_2xx_responses_plus_socket_errors():
    report = bench.parse_wrk(recorded("wrk-errors.txt"))  # 1321 responses 404, 3 socket timeouts
    assert report["errors"] == 1321 + 3 and report["requests"] == 1321 and report["p99_ms"] == 221.26


def test_wrk_latency_units_convert_to_milliseconds_and_a_truncated_report_is_an_error():
    report = recorded("wrk.txt").replace("4.34ms", "870.00us").replace("417.98ms", "1.20s")
    assert bench.parse_wrk(report)["p50_ms"] == pytest.approx(0.87)
    assert bench.parse_wrk(report)["p99_ms"] == pytest.approx(1200)
    with pytest.raises(bench.BenchmarkError, match="Requests/sec"):
        bench.parse_wrk(recorded("wrk.txt").split("Requests/sec")[0])


def test_docker_stats_memory_and_docker_sizes_in_bytes():
    usage = recorded("docker-stats-memusage.txt")  # "10.36MiB / 23.54GiB"
    assert bench.parse_size(usage.split("/")[0]) == pytest.approx(10.36 * 2**20)
    assert bench.parse_size(usage.split("/")[1]) == pytest.approx(23.54 * 2**30)
    assert [bench.parse_size(s) for s in ("0B", "512kB", "1.5GB", "2KiB")] == [0, 512e3, 1.5e9, 2048]
    with pytest.raises(bench.BenchmarkError, match="not a size"):
        bench.parse_size("--")


def test_docker_timestamps_keep_their_nanoseconds():
    state = json.loads(recorded("docker-inspect-state.json"))
    started = bench.docker_time(state["StartedAt"])  # 2026-12-02T17:49:02.432310767Z
    whole = dt.datetime(2026, 12, 2, 17, 49, 2, tzinfo=dt.UTC).timestamp()
    assert started == pytest.approx(whole + 0.432310767, abs=1e-6)
    healthy = bench.docker_time(state["Health"]["Log"][0]["End"])
    assert 0 < healthy - started < 5
    assert bench.docker_time("2026-12-02T18:49:02+01:00") == whole
    with pytest.raises(bench.BenchmarkError):
        bench.docker_time("0001-01-01")


def test_cgroup_directory_is_where_proc_cgroup_and_mountinfo_place_it():
    proc, mounts = recorded("proc-pid-cgroup-v1.txt"), recorded("mountinfo.txt")
    container = re.search(r"^1:cpu:/docker/([0-9a-f]{64})$", proc, re.MULTILINE)[1]
    assert bench.cgroup_dir(proc, mounts, "cpu") == (Path("/sys/fs/cgroup/cpu/docker", container), 1)
    assert bench.cgroup_dir(proc, mounts, "cpuacct") == (Path("/sys/fs/cgroup/cpuacct/docker", container), 1)
    # A controller no v1 hierarchy has is the unified (cgroup v2) hierarchy's: mounted, on this
    # host, at /sys/fs/cgroup/unified.
    unified = "\n".join(line for line in proc.splitlines() if line.startswith("0::"))
    assert bench.cgroup_dir(unified, mounts, "cpu") == (Path("/sys/fs/cgroup/unified/docker", container), 2)
    assert bench.cgroup_dir(proc, "", "cpu") is None


def test_cgroup_cpu_stat_gives_throttled_periods_and_cpuacct_the_cpu_time():
    assert bench.parse_keyed(recorded("cpu.stat-throttled-v1.txt"))["nr_throttled"] == 29
    assert bench.parse_keyed(recorded("cpu.stat-v1.txt"))["nr_throttled"] == 0
    assert int(recorded("cpuacct.usage-v1.txt")) / 1e9 == pytest.approx(0.193, abs=1e-3)


def test_health_probe_command_is_run_as_docker_runs_it():
    healthcheck = json.loads(recorded("docker-inspect-healthcheck.json"))  # CMD-SHELL, from --health-cmd
    assert bench.probe_command(healthcheck) == ["/bin/sh", "-c", healthcheck["Test"][1]]
    assert bench.probe_command({"Test": ["CMD", "python", "-c", "pass"]}) == ["python", "-c", "pass"]
    assert bench.probe_command({"Test": ["NONE"]}) is None and bench.probe_command({}) is None


def test_a_smoke_run_cannot_be_published():
    with pytest.raises(SystemExit):
        bench.parse_args(["--smoke", "--publish"])
    assert bench.parse_args(["--smoke"]).runs == 1 and bench.parse_args([]).runs == 3


def test_the_chart_library_is_in_the_benchmark_lock_only():
    pins = {
        path.stem: re.findall(r"^([a-z0-9_.-]+)==", path.read_text(), re.MULTILINE)
        for path in (LOCK, TEMPLATE / "requirements" / "test.txt")
    }
    assert "matplotlib" in pins["benchmark"] and "matplotlib" not in pins["test"]
    assert "cookiecutter" in pins["benchmark"]


# ----------------------------------------------------------------------------------------------------------
# The smoke run.

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@pytest.fixture(scope="session")
def benchmark_python() -> Path:
    """A venv with requirements/benchmark.txt (the chart's extra), cached under build/ by the lock's hash."""
    venv = TEMPLATE / "build" / f"benchmark-venv-{hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--require-hashes", "-r", str(LOCK)], check=True)
        (venv / ".installed").touch()
    return python


def leftovers(run_id: str) -> dict[str, list[str]]:
    label, name = f"label={bench.LABEL_KEY}={run_id}", f"name=fastapi-docker-bench-{run_id}"
    return {
        "containers": docker("ps", "--all", "--quiet", "--filter", name).stdout.split()
        + docker("ps", "--all", "--quiet", "--filter", label).stdout.split(),
        "images": docker("images", "--quiet", "--filter", label).stdout.split(),
        "networks": docker("network", "ls", "--quiet", "--filter", name).stdout.split(),
    }


def table(text: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The Markdown table whose header starts with first_header: (header cells, data rows)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    start = next(i for i, line in enumerate(lines) if line.split("|")[1].strip().startswith(first_header))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        rows.append(cells)
    return header, rows


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_smoke_run_writes_every_metric_of_every_variant_to_results_json_the_table_and_a_chart(
    request, tmp_path, benchmark_python
):
    if shutil.which("wrk") is None:
        message = "the benchmark needs wrk (apt-get install wrk)"
        if request.config.getoption("--require-docker"):
            pytest.fail(message + "; the docker tests are required")
        pytest.skip(message)
    out = tmp_path / "benchmark"
    command = [
        str(benchmark_python),
        str(TEMPLATE / "scripts" / "benchmark.py"),
        "--smoke",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    run_id = re.search(r"^benchmark: run ([0-9a-f]+):", result.stderr, re.MULTILINE)[1]
    assert leftovers(run_id) == {"containers": [], "images": [], "networks": []}

    # results.json: one run per variant, a number for every metric, None only where the benchmark
    # says a metric may have none (no HEALTHCHECK in the tutorial's image, no readable cgroup).
    data = json.loads((out / "results.json").read_text())
    variants = {v.key: v for v in bench.VARIANTS}
    assert list(data["variants"]) == list(variants)
    # The cgroup files are read on this host: a local engine's containers have them; a remote one's not.
    cgroup_readable = not os.environ.get("DOCKER_HOST", "unix://").startswith(("tcp://", "ssh://"))
    expected: dict[tuple[str, str], str] = {}  # (metric label, variant label) -> the table's cell
    for key, variant in data["variants"].items():
        assert len(variant["runs"]) == 1, key
        run = variant["runs"][0]
        for m in bench.METRICS:
            if m.image and variants[key].image_of:
                assert m.key not in run, (key, m.key)  # measured with the variant that built the image
                source = next(v.label for v in bench.VARIANTS if v.key == variants[key].image_of)
                expected[m.label, variant["label"]] = f"= {source}"
            elif (m.healthcheck and key == "baseline") or (m.cgroup and not cgroup_readable):
                assert run[m.key] is None, (key, m.key, run[m.key])
                expected[m.label, variant["label"]] = "n/a"
            else:
                value = run[m.key]
                assert isinstance(value, int | float) and not isinstance(value, bool), (key, m.key, value)
                assert value >= 0 and (value > 0 or m.key in {"errors", "throttled", "rebuilt_steps"}), (
                    key,
                    m.key,
                )
                expected[m.label, variant["label"]] = f"{value:.{m.decimals}f}"
        assert run["exit_code"] == 0, key
    env = data["environment"]
    for fact in ("docker", "cgroup_version", "kernel", "cores", "commit", "wrk", "settings", "base_images"):
        assert env[fact] not in (None, "", "?"), fact

    # The table, on stdout and in results.md: the same numbers, every metric in the benchmark's order.
    markdown = (out / "results.md").read_text()
    for text in (result.stdout, markdown):
        header, rows = table(text, "metric")
        assert header == ["metric", *(v.label for v in bench.VARIANTS)]
        assert [row[0] for row in rows] == [m.label for m in bench.METRICS]
        cells = {
            (row[0], label): cell for row in rows for label, cell in zip(header[1:], row[1:], strict=True)
        }
        assert cells == expected

    # The dev loop: every save served, no image built by a save, every reload in the log.
    dev = data["dev_loop"]
    assert len(dev["saves_s"]) == 3 and all(isinstance(s, float) and s > 0 for s in dev["saves_s"])
    assert dev["images_built"] == 0 and dev["reloads_in_log"] >= 3, dev
    header, rows = table(markdown, "dev loop")
    assert [row[0] for row in rows] == [m.label for m in bench.DEV_METRICS]
    assert all(NUMBER.fullmatch(row[1]) for row in rows), rows

    # The chart, drawn at its size, linked from the table.
    assert "(benchmark.png)" in markdown
    data = (out / "benchmark.png").read_bytes()
    assert png_size(data) == (14 * 110, round(6.4 * 110)) and len(data) > 10_000
