"""The benchmark (`python -m benchmark`): its parsers on recorded outputs, its judging of the targets, and a
smoke run end to end.

The parsers read what wrk, docker and the kernel print; tests/data/benchmark/ holds outputs recorded on a
Docker host (cgroup v1: separate cpu and cpuacct hierarchies, and the unified one). The smoke run (marker
`docker`, `--smoke`: one short run, a small load) asserts only that the benchmark produces what it
promises: results.json with a number for every metric of every variant, the same numbers in the tables,
every target judged, the dev loop, and nothing left behind on the engine. Never a timing: the benchmark
shows speed; this keeps it from rotting. The metrics and variants are the benchmark's own lists, so a
metric it adds is checked here too.
"""

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import parse
from benchmark.__main__ import LABEL, VARIANTS, parse_args
from benchmark.parse import BenchmarkError
from benchmark.report import METRICS, targets
from tests.support.docker import docker
from tests.support.project import TEMPLATE

DATA = TEMPLATE / "tests" / "data" / "benchmark"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def test_wrk_report_gives_requests_per_second_latency_percentiles_and_request_count():
    assert parse.wrk_report(recorded("wrk.txt")) == {
        "rps": 743.39,
        "p50_ms": 4.34,
        "p99_ms": 417.98,
        "errors": 0,
        "requests": 2302,
    }


def test_wrk_errors_are_non_2xx_responses_plus_socket_errors():
    report = parse.wrk_report(recorded("wrk-errors.txt"))  # 1321 responses 404, 3 socket timeouts
    assert report["errors"] == 1321 + 3 and report["requests"] == 1321 and report["p99_ms"] == 221.26


def test_wrk_latency_units_convert_to_milliseconds_and_a_truncated_report_is_an_error():
    report = recorded("wrk.txt").replace("4.34ms", "870.00us").replace("417.98ms", "1.20s")
    assert parse.wrk_report(report)["p50_ms"] == pytest.approx(0.87)
    assert parse.wrk_report(report)["p99_ms"] == pytest.approx(1200)
    with pytest.raises(BenchmarkError, match="Requests/sec"):
        parse.wrk_report(recorded("wrk.txt").split("Requests/sec")[0])


def test_docker_timestamps_keep_their_nanoseconds():
    state = json.loads(recorded("docker-inspect-state.json"))
    started = parse.docker_time(state["StartedAt"])  # 2026-12-02T17:49:02.432310767Z
    whole = dt.datetime(2026, 12, 2, 17, 49, 2, tzinfo=dt.UTC).timestamp()
    assert started == pytest.approx(whole + 0.432310767, abs=1e-6)
    assert 0 < parse.docker_time(state["Health"]["Log"][0]["End"]) - started < 5
    assert parse.docker_time("2026-12-02T18:49:02+01:00") == whole
    with pytest.raises(BenchmarkError):
        parse.docker_time("0001-01-01")


def test_cgroup_directory_is_where_proc_cgroup_and_mountinfo_place_it():
    proc, mounts = recorded("proc-pid-cgroup-v1.txt"), recorded("mountinfo.txt")
    container = re.search(r"^1:cpu:/docker/([0-9a-f]{64})$", proc, re.MULTILINE)[1]
    assert parse.cgroup_dir(proc, mounts, "cpu") == (Path("/sys/fs/cgroup/cpu/docker", container), 1)
    assert parse.cgroup_dir(proc, mounts, "cpuacct") == (Path("/sys/fs/cgroup/cpuacct/docker", container), 1)
    # A controller no v1 hierarchy has is the unified (cgroup v2) hierarchy's: mounted, on this
    # host, at /sys/fs/cgroup/unified.
    unified = "\n".join(line for line in proc.splitlines() if line.startswith("0::"))
    assert parse.cgroup_dir(unified, mounts, "cpuacct") == (
        Path("/sys/fs/cgroup/unified/docker", container),
        2,
    )
    assert parse.cgroup_dir(proc, "", "cpuacct") is None


def test_cgroup_cpu_time_from_v1_cpuacct_usage_and_v2_cpu_stat():
    assert parse.cpu_usage(recorded("cpuacct.usage-v1.txt"), 1) == pytest.approx(0.193422351)
    # cgroup v2's cpu.stat as the kernel documents it (Documentation/admin-guide/cgroup-v2.rst).
    assert parse.cpu_usage("usage_usec 193422\nuser_usec 150000\nsystem_usec 43422\n", 2) == pytest.approx(
        0.193422
    )


def test_health_probe_command_is_run_as_docker_runs_it():
    healthcheck = json.loads(recorded("docker-inspect-healthcheck.json"))  # CMD-SHELL, from --health-cmd
    assert parse.probe_command(healthcheck) == ["/bin/sh", "-c", healthcheck["Test"][1]]
    assert parse.probe_command({"Test": ["CMD", "python", "-c", "pass"]}) == ["python", "-c", "pass"]
    assert parse.probe_command({"Test": ["NONE"]}) is None and parse.probe_command({}) is None


def test_a_smoke_run_cannot_be_published():
    with pytest.raises(SystemExit):
        parse_args(["--smoke", "--publish"])
    assert parse_args(["--smoke"]).runs == 1 and parse_args([]).runs == 3


def test_targets_are_judged_on_the_medians_ratios():
    """The medians of the runs, divided variant by variant as docs/benchmark.md states the targets; n/a where
    a number is missing, never met."""
    runs = {"baseline": [{"rps": 100, "p99_ms": 40}, {"rps": 300, "p99_ms": 60}, {"rps": 110, "p99_ms": 50}]}
    runs |= {"default": [{"rps": 275, "p99_ms": 26, "cpu_us_per_request": 200, "probe_cpu_ms": 31}]}
    runs |= {
        "no_access_log": [{"cpu_us_per_request": 150, "rps": 330}],
        "json_logs": [{"cpu_us_per_request": 222}],
        "bare": [{"cpu_us_per_request": 100}],
        "otel": [{"rps": 250}],
        "otel_traced": [{"rps": 200}],
        "otel_export": [{"rps": 220, "p99_ms": 30, "cpu_us_per_request": 250}],
        "otel_down": [{"rps": 190, "p99_ms": 27}],
    }
    dev = {"refused": 0, "saves_s": [0.5, 1.2, 0.4]}
    judged = targets({key: {"runs": value} for key, value in runs.items()}, dev)
    assert judged["requests/s: defaults (log on) / tutorial (x)"] == (2.5, ">= 2.5", "yes")  # 275 / 110
    assert judged["GET / latency p99: defaults / tutorial (x)"] == (0.52, "<= 0.5", "NO")  # 26 / 50
    assert judged["CPU time per request: JSON logs / text (x)"] == (pytest.approx(1.11), "<= 1.1", "NO")
    assert judged["CPU time of one health probe (ms)"] == (31, "<= 30", "NO")
    assert judged["access log: its share of the CPU time per request (%)"] == (
        25,
        "",
        "",
    )  # (200 - 150) / 200
    assert judged["request ids and the app's other layers: their share (%)"] == (
        25,
        "",
        "",
    )  # (150 - 100) / 200
    assert judged["requests/s: OpenTelemetry, exporting / defaults (x)"] == (0.8, "", "")  # 220 / 275
    assert judged["requests/s: OpenTelemetry, default sampling / defaults (x)"] == (
        pytest.approx(250 / 275),
        ">= 0.85",
        "yes",
    )
    assert judged["requests/s: OpenTelemetry, collector down / exporting (x)"] == (
        pytest.approx(190 / 220),
        ">= 0.9",
        "NO",
    )
    assert judged["p99: OpenTelemetry, collector down / exporting (x)"] == (0.9, "", "")  # 27 / 30
    assert judged["dev loop: save -> new response served, median (s)"] == (0.5, "< 1", "yes")
    assert judged["process start -> first 200 (s)"] == (None, "< 1", "n/a")  # not measured


# ----------------------------------------------------------------------------------------------------------
# The smoke run.


def leftovers(name: str) -> dict[str, list[str]]:
    label, named = f"label={LABEL}={name}", f"name={name}"
    return {
        "containers": docker("ps", "--all", "--quiet", "--filter", named).stdout.split()
        + docker("ps", "--all", "--quiet", "--filter", label).stdout.split(),
        "images": docker("images", "--quiet", "--filter", label).stdout.split()
        + docker("images", "--quiet", "--filter", f"reference={name}*").stdout.split(),
        "networks": docker("network", "ls", "--quiet", "--filter", named).stdout.split(),
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


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_smoke_run_writes_every_metric_of_every_variant_and_every_target_to_results_json_and_the_tables(
    request, tmp_path
):
    if shutil.which("wrk") is None:
        message = "the benchmark needs wrk (apt-get install wrk)"
        if request.config.getoption("--require-docker"):
            pytest.fail(message + "; the docker tests are required")
        pytest.skip(message)
    out = tmp_path / "benchmark"
    command = [sys.executable, "-m", "benchmark", "--smoke", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=TEMPLATE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    name = re.search(r"^benchmark: (fastapi-docker-bench-[0-9a-f]+):", result.stderr, re.MULTILINE)[1]
    assert leftovers(name) == {"containers": [], "images": [], "networks": []}

    # results.json: one run per variant, a number for every metric, None only where the benchmark
    # says a metric may have none (no HEALTHCHECK in the tutorial's image, no readable cgroup).
    data = json.loads((out / "results.json").read_text())
    assert list(data["variants"]) == [v.key for v in VARIANTS]
    # The cgroup files are read on this host: a local engine's containers have them; a remote one's not.
    local = not os.environ.get("DOCKER_HOST", "unix://").startswith(("tcp://", "ssh://"))
    no_healthcheck = {
        ("baseline", "start_to_healthy_s"),
        ("baseline", "probe_cpu_ms"),
    }  # the tutorial's image
    cgroup = {"probe_cpu_ms", "cpu_us_per_request"}
    expected: dict[tuple[str, str], str] = {}  # (metric label, variant label) -> the table's cell
    for key, variant in data["variants"].items():
        (run,) = variant["runs"]
        assert run["exit_code"] == 0, key
        for metric, (label, decimals) in METRICS.items():
            if (key, metric) in no_healthcheck or (metric in cgroup and not local):
                assert run[metric] is None, (key, metric)
                expected[label, variant["label"]] = "n/a"
            else:
                assert isinstance(run[metric], int | float) and run[metric] >= 0, (key, metric, run[metric])
                expected[label, variant["label"]] = f"{run[metric]:.{decimals}f}"
    assert data["dev_loop"]["refused"] >= 0 and len(data["dev_loop"]["saves_s"]) == 3

    # The tables, on stdout and in results.md: the same numbers, every metric and target in order.
    markdown = (out / "results.md").read_text()
    judged = targets(data["variants"], data["dev_loop"])
    for text in (result.stdout, markdown):
        header, rows = table(text, "metric")
        assert header == ["metric", *(v.label for v in VARIANTS)]
        assert [row[0] for row in rows] == [label for label, _ in METRICS.values()]
        assert {
            (row[0], label): cell for row in rows for label, cell in zip(header[1:], row[1:], strict=True)
        } == (expected)
        header, rows = table(text, "target")
        assert [row[0] for row in rows] == list(judged)
        assert all(row[3] in ({"yes", "NO", "n/a"} if row[2] else {""}) for row in rows), rows
