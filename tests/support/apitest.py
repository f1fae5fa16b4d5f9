"""schemathesis, the ecosystem's API tester, run against a running service as its CLI runs it.

Every check, every phase (examples, coverage, fuzzing, stateful); seeded, so a failure replays
with the same command, and bounded: examples per operation, a deadline per request and per run.
"""

import subprocess
from pathlib import Path

from tests.support.project import tool

SEED = 20  # any fixed seed: the same cases on every run
MAX_EXAMPLES = 40  # per operation and phase: a few hundred requests for the database service
REQUEST_TIMEOUT = 10  # seconds: far above any answer the service gives; a hang fails the run
RUN_DEADLINE = 600  # seconds, for the whole run (subprocess.TimeoutExpired past it)


def schemathesis(schema_url: str, work_dir: Path) -> subprocess.CompletedProcess:
    """`schemathesis run schema_url --checks all`, its reports and replay files in work_dir."""
    command = [
        tool("schemathesis"), "run", schema_url,
        "--checks", "all",
        "--seed", str(SEED),
        "--max-examples", str(MAX_EXAMPLES),
        "--request-timeout", str(REQUEST_TIMEOUT),
        "--workers", "1",  # the seed then fixes the order of the requests too
        "--generation-database", "none",  # no examples replayed from earlier runs
        "--report", "junit", "--report-dir", str(work_dir),
        "--no-color",
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_DEADLINE, cwd=work_dir)


def failure_report(result: subprocess.CompletedProcess) -> str:
    """The command and the end of its output, for an assertion message."""
    return f"{' '.join(result.args)}\n{(result.stdout + result.stderr)[-8000:]}"
