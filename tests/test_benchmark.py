"""The benchmark (scripts/benchmark.py, marker `docker`) still runs end to end.

One smoke run (`--smoke`: one short iteration, a small load) of every variant. Only that it completes
and produces what it promises is asserted: a table with every variant, numbers that parse, results.md,
results.json and a PNG, and nothing left behind. Never timings: the benchmark shows speed; this test
only keeps it from rotting.
"""

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.docker import docker
from tests.support.project import TEMPLATE

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

SCRIPT = TEMPLATE / "scripts" / "benchmark.py"
VARIANTS = {
    "baseline": "tutorial baseline",
    "default": "template defaults",
    "quiet": "defaults, no access log",
    "uv": "installer=uv",
    "workers2": "workers=2",
}
NUMBER = r"-?\d+(?:\.\d+)?"
CELL = re.compile(rf"{NUMBER}(?: \({NUMBER}-{NUMBER}\))?")
NUMERIC = [
    "image_mb",
    "added_mb",
    "packages_mb",
    "cold_build_s",
    "rebuild_s",
    "run_to_first_ok_s",
    "start_to_first_ok_s",
    "stop_s",
    "rps",
    "p50_ms",
    "p99_ms",
    "errors",
    "mem_idle_mib",
    "mem_load_mib",
]
# The tutorial's image has no HEALTHCHECK: n/a there, numbers elsewhere.
HEALTH_ROWS = ("Docker `healthy`", "health check", "health probe")
HEALTH_METRICS = ["run_to_healthy_s", "start_to_healthy_s", "probe_cpu_ms", "probe_cpu_s_per_hour"]
OPTIONAL = ("throttled",)  # read from the cgroup on the host where it can be
SAME_IMAGE = "= template defaults"  # the no-access-log variant runs the defaults' image: no build of its own
IMAGE_METRICS = {"image_mb", "added_mb", "packages_mb", "cold_build_s", "rebuild_s"}


def leftovers(run_id: str) -> set[str]:
    label = f"label=org.fastapi-docker.benchmark={run_id}"
    containers = docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
    images = docker("images", "--quiet", "--filter", label).stdout.split()
    return set(containers) | set(images)


def table_rows(text: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The Markdown table whose header starts with first_header: (header cells, data rows)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    start = next(i for i, line in enumerate(lines) if line.split("|")[1].strip() == first_header)
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        rows.append(cells)
    return header, rows


def test_smoke_run_produces_a_table_for_every_variant_markdown_and_a_chart(request, tmp_path):
    if shutil.which("wrk") is None:
        message = "the benchmark needs wrk (apt-get install wrk)"
        if request.config.getoption("--require-docker"):
            pytest.fail(message + "; the docker tests are required")
        pytest.skip(message)
    out = tmp_path / "benchmark"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    run_id = re.search(r"^benchmark: run ([0-9a-f]+):", result.stderr, re.MULTILINE)[1]
    assert not leftovers(run_id), "the benchmark left containers or images behind"

    # The table, on stdout and in results.md: every variant, every cell a number (or n/a where no
    # HEALTHCHECK exists), and the targets with a verdict each.
    markdown = (out / "results.md").read_text()
    for text in (result.stdout, markdown):
        header, rows = table_rows(text, "metric")
        assert header[1:] == list(VARIANTS.values())
        numeric = [
            row
            for row in rows
            if row[0] not in ("every dependency layer cached on rebuild", "installed fastapi / uvicorn")
        ]
        assert len(numeric) >= len(NUMERIC)
        for row in numeric:
            for variant, value in zip(VARIANTS, row[1:], strict=True):
                if value == "n/a" and variant == "baseline" and any(h in row[0] for h in HEALTH_ROWS):
                    continue
                if value == "n/a" and "throttled" in row[0]:
                    continue
                if value == SAME_IMAGE and variant == "quiet":
                    continue
                assert CELL.fullmatch(value), f"{row[0]} / {variant}: {value!r}"
        header, rows = table_rows(text, "target (medians)")
        assert header[1:] == list(VARIANTS.values())[1:]
        verdicts = [cell for row in rows for cell in row[1:]]
        assert rows and all(re.match(r"(met|MISSED): ", c) or c == SAME_IMAGE for c in verdicts), rows
    assert "benchmark.png" in markdown

    # Every run's numbers, machine-readable.
    data = json.loads((out / "results.json").read_text())
    assert set(data["variants"]) == set(VARIANTS)
    for key, variant in data["variants"].items():
        assert len(variant["runs"]) == 1, key
        run = variant["runs"][0]
        for metric in NUMERIC:
            if key == "quiet" and metric in IMAGE_METRICS:
                continue
            assert isinstance(run[metric], int | float) and run[metric] >= 0, (key, metric, run[metric])
        assert key == "quiet" or isinstance(run["deps_cached"], bool)
        for metric in HEALTH_METRICS:
            if key == "baseline":
                assert run[metric] is None, (key, metric, run[metric])
            else:
                assert isinstance(run[metric], int | float) and run[metric] > 0, (key, metric, run[metric])

    # The dev loop: every save served (a number each), and no image built by a save.
    dev = data["dev_loop"]
    assert len(dev["saves_s"]) == 3 and all(isinstance(s, float) and s > 0 for s in dev["saves_s"])
    assert dev["images_built"] == 0 and dev["reloads_in_log"] >= 3, dev
    header, rows = table_rows(markdown, "dev loop (compose dev mode, default answers)")
    assert CELL.fullmatch(rows[0][1]), rows

    png = (out / "benchmark.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
