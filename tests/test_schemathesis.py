"""The ecosystem's API tester against the running containers (marker `docker`): schemathesis.

`schemathesis run URL/openapi.json --checks all` against each service the suite builds, up as
compose runs it (conftest's service_stack): the default image, and the `postgresql` one with its
real database. Every check, every phase (examples, coverage, fuzzing, stateful), no failure: no
500, every answer documented in the OpenAPI document and conforming to it, HEAD and OPTIONS and
Allow as HTTP says, invalid input refused, valid input accepted. Seeded (a failure reproduces with
the same command) and bounded (examples per operation, a deadline per request and for the run).
"""

import subprocess
import time

import pytest

from tests.support.project import tool

pytestmark = pytest.mark.docker

SEED = 20  # any fixed seed: the same cases on every run, so a failure can be replayed
MAX_EXAMPLES = 40  # per operation and phase: a few hundred requests in all, about a minute
REQUEST_TIMEOUT = 10  # seconds: far above any answer the service gives; a hang fails the run
RUN_DEADLINE = 600  # seconds, for the whole run


def test_schemathesis_finds_no_failure_with_every_check(service_stack, tmp_path):
    command = [
        tool("schemathesis"), "run", service_stack.url("/openapi.json"),
        "--checks", "all",
        "--seed", str(SEED),
        "--max-examples", str(MAX_EXAMPLES),
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--workers", "1",  # the seed then fixes the order of the requests too
        "--generation-database", "none",  # no examples replayed from earlier runs
        "--report", "junit", "--report-dir", str(tmp_path),
        "--no-color",
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_DEADLINE, cwd=tmp_path)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(f"\nschemathesis ({service_stack.project}): exit {result.returncode} in {elapsed:.1f} s")
    print("\n".join(line for line in output.splitlines() if "passed" in line or "failed" in line))
    assert result.returncode == 0, f"{' '.join(command)}\n{output[-8000:]}"
