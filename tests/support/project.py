"""The template, its questions, and generating projects from it.

An *answer set* is a dict of answers to cookiecutter.json's questions; the defaults fill in the
rest. `case_id()` names one for test ids and directories.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2]  # the repository root: cookiecutter.json, hooks/, ...
SERVICE = TEMPLATE / "{{cookiecutter.__project_dir}}"  # the generated service's template tree
COOKIECUTTER_JSON: dict = json.loads((TEMPLATE / "cookiecutter.json").read_text())
# Each question's rule: its check, the files each answer keeps, the answers with lock fragments.
OPTIONS: dict = COOKIECUTTER_JSON["_options"]
# The generated service's lock fragments, which the post-gen hook assembles into its locks.
LOCK_FRAGMENTS = SERVICE / "lock-fragments"
BIN = Path(sys.executable).parent  # the running venv's tools: ruff, hadolint, checkov, ...
# Jinja that survived rendering; GitHub's ${{ expr }} and Go's {{.Field}} templates are legitimate.
LEFTOVER_JINJA = re.compile(r"(?<!\$)\{\{\s*[A-Za-z_]|\{%|\{#|cookiecutter")


def tool(name: str) -> str:
    """The path of an installed command-line tool, the venv's first (AssertionError if missing)."""
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: install requirements/test.txt (bash scripts/test does)"
    return found


def choices() -> dict[str, list]:
    """Every question with a fixed set of answers (choice lists and booleans), default first."""
    return {
        key: value if isinstance(value, list) else [value, not value]
        for key, value in COOKIECUTTER_JSON.items()
        if not key.startswith("_") and isinstance(value, list | bool)
    }


def defaults() -> dict:
    """The default answer of every question that has a literal default (not a derived one)."""
    return {
        k: (v[0] if isinstance(v, list) else v)
        for k, v in COOKIECUTTER_JSON.items()
        if not k.startswith("_") and "{{" not in str(v) and "{%" not in str(v)
    }


def answers_of(answer_set: dict) -> dict:
    """The full answers of an answer set: cookiecutter.json's defaults overridden by it."""
    return {**defaults(), **answer_set}


def option_files(answers: dict) -> dict[str, bool]:
    """{path: whether a project of these full answers has it} of every path an answer keeps (OPTIONS).

    A path named by several questions is kept only if each of them keeps it (compose's Prometheus
    configuration: with compose and with observability), and only in a folder that is kept."""
    found: dict[str, bool] = {}
    for question, rule in OPTIONS.items():
        value = answers.get(question)
        answer = json.dumps(value) if isinstance(value, bool) else str(value)
        for paths in rule.get("files", {}).values():
            for path in paths:
                found[path] = found.get(path, True) and path in rule["files"].get(answer, [])
    # And none is in a folder that is dropped (k8s/monitoring without k8s).
    return {p: kept and all(found[f] for f in found if p.startswith(f + "/")) for p, kept in found.items()}


def case_id(answer_set: dict) -> str:
    """A short, stable name of an answer set: its non-default answers as k=v, or `defaults`."""
    default = defaults()
    named = "-".join(f"{k}={v}" for k, v in answer_set.items() if k not in default or default[k] != v)
    return named[:80] or "defaults"


def pairwise(options: dict[str, list]) -> list[dict]:
    """A small list of answer sets in which every pair of values of two questions occurs.

    Greedy all-pairs: deterministic, and it starts from the defaults (the first value of each).
    """
    keys = list(options)
    uncovered = {
        (a, va, b, vb)
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
        for va in options[a]
        for vb in options[b]
    }
    rows = [{k: options[k][0] for k in keys}]
    while True:
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                uncovered.discard((a, rows[-1][a], b, rows[-1][b]))
        if not uncovered:
            return rows
        a, va, b, vb = min(uncovered, key=repr)
        row = {a: va, b: vb}
        for k in keys:
            if k not in row:
                row[k] = max(
                    options[k],
                    key=lambda v, k=k: sum(
                        (k2, row[k2], k, v) in uncovered or (k, v, k2, row[k2]) in uncovered for k2 in row
                    ),
                )
        rows.append({k: row[k] for k in keys})


def bake(output_dir: Path, **answers: object) -> Path:
    """Generate a project with the cookiecutter API, as `cookiecutter --no-input k=v` would.

    Where its replay file and clones go is cookiecutter's COOKIECUTTER_CONFIG (the suite points it
    at a directory of its own).
    """
    from cookiecutter.main import cookiecutter  # imported here: scripts use this module without it

    project = cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers, output_dir=str(output_dir))
    return Path(project)


def run(
    command: list[str], cwd: Path | None = None, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """subprocess.run with output captured as text and a timeout (kwargs: env=, input=, ...)."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


def make(project: Path, venv: Path, *targets: str, **env: str) -> subprocess.CompletedProcess:
    """The generated Makefile's targets with the dev tools of venv (its VENV), env added to ours."""
    return run(["make", *targets, f"VENV={venv}"], cwd=project, timeout=600, env={**os.environ, **env})


def cookiecutter_cli(tmp_path: Path, *answers: str, **env: str) -> subprocess.CompletedProcess:
    """The real `cookiecutter --no-input` command line, as a user runs it, writing to tmp_path/out.

    The environment is the caller's, less CI and FASTAPI_DOCKER_PREFLIGHT, plus HOME=tmp_path and env.
    """
    environ = {k: v for k, v in os.environ.items() if k not in {"CI", "FASTAPI_DOCKER_PREFLIGHT"}}
    environ.update(HOME=str(tmp_path), **env)
    command = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path / "out")]
    return subprocess.run(
        [*command, str(TEMPLATE), *answers], env=environ, capture_output=True, text=True, timeout=120
    )


def leftover_jinja(text: str) -> str | None:
    """The text around the first unrendered Jinja in text, or None."""
    match = LEFTOVER_JINJA.search(text)
    return None if match is None else text[max(0, match.start() - 60) : match.end() + 60]


# Complete answer sets: every deployment option on (compose, Kubernetes, a CI), checked in depth by
# the compose, Kubernetes, pipeline and linter modules. The defaults, and non-default answers that
# the files derive values from (port, workers, CI flavour, installer).
COMPLETE: dict[str, dict] = {
    "github": {"use_compose": True, "use_kubernetes": True, "ci": "github"},
    "gitlab-9090-2workers": {
        "use_compose": True,
        "use_kubernetes": True,
        "ci": "gitlab",
        "port": "9090",
        "workers": "2",
        "installer": "uv",
    },
}
# The database option on a complete answer set: the database modules and the linters check it.
DATABASE_ANSWER_SETS: dict[str, dict] = {"postgresql": {**COMPLETE["github"], "database": "postgresql"}}
# The observability option on it too: its compose, Prometheus and Kubernetes files are linted.
OBSERVABILITY_ANSWER_SETS: dict[str, dict] = {
    "opentelemetry": {**DATABASE_ANSWER_SETS["postgresql"], "observability": "opentelemetry"}
}
# The render tier's answer sets: every pair of values of any two choice questions occurs in one of
# PAIRWISE (the full product is several hundred projects), and FREE_TEXT tries hostile but valid
# free-text answers.
PAIRWISE: list[dict] = pairwise(choices())
FREE_TEXT: list[dict] = [
    {"port": "8080", "workers": "4", "registry_prefix": "registry.example.com:5000/dockerhub"},
    {"port": "1", "project_name": "O'Reilly <API> & co: #1", "description": "Quotes ' and <tags> & more"},
    {"port": "65535", "project_name": "Café Ünïcode 🚀", "author": "Zoë <zoe@example.com>"},
    {"project_name": "x", "project_slug": "a" * 63, "installer": "uv", "registry_prefix": "127.0.0.1:5000"},
]
RENDER_ANSWER_SETS: list[dict] = [*PAIRWISE, *FREE_TEXT]
