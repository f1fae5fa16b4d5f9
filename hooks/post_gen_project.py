"""Finish the generated project: assemble its locks from the fragments of its answers, prune the
files of the answers not chosen, check Docker, say what next.

Standard library only, and idempotent: cruft re-runs it on every template update, so it touches
nothing outside the generated directory and removing an already-removed file is not an error.

The Docker preflight never fails generation (teams generate on laptops without Docker, and in CI)
unless FASTAPI_DOCKER_PREFLIGHT=strict. FASTAPI_DOCKER_PREFLIGHT=off skips it, and so does a CI
environment (CI=true) unless strict is asked for.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

CONTEXT_JSON = r"""{{ cookiecutter | tojson }}"""

DOCKER_TIMEOUT = 5  # seconds per docker call: a hung daemon must not hang generation
INSTALL_DOCS = "https://docs.docker.com/engine/install/"
# The oldest Docker Engine the generated Dockerfile works on: HEALTHCHECK --start-interval (fast
# `healthy` while starting, rare probes afterwards) arrived in Engine 25.0; older engines refuse it.
ENGINE_FLOOR = (25, 0)


def answer_key(value: object) -> str:
    """An answer as cookiecutter.json's `_options` names it: true/false for yes/no questions."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def unused_paths(context: dict) -> list[str]:
    """The files and folders of the answers not chosen (cookiecutter.json's `_options`: the
    files each answer keeps), and the lock fragments, relative to the project root."""
    paths = []
    for field, rule in context["_options"].items():
        kept = rule.get("files", {}).get(answer_key(context[field]), [])
        paths += [p for files in rule.get("files", {}).values() for p in files if p not in kept + paths]
    return [*paths, FRAGMENTS]


# The template's locks come in fragments of one resolution (scripts/relock): `base`, and one per
# answer whose packages add to it (`_options`' "locks"), e.g. database-postgresql/requirements.txt.
# Each project lock is their union, which is what its `make lock` writes, so the locks grow with
# the options and not with their combinations.
FRAGMENTS = "lock-fragments"


def lock_fragments(context: dict) -> list[str]:
    """The fragments of the chosen answers, `base` first."""
    chosen = [(field, answer_key(context[field])) for field in context["_options"]]
    return [
        "base",
        *(
            f"{field}-{answer}"
            for field, answer in chosen
            if answer in context["_options"][field].get("locks", [])
        ),
    ]


def read_lock(text: str) -> tuple[list[str], dict[str, list]]:
    """A uv lock's header and {first line: [its requirement lines, its `via` sources in order]}."""
    header, entries, key = [], {}, ""
    for line in text.splitlines():
        if not line.startswith(" ") and not entries and line.startswith("#"):
            header.append(line)
        elif not line.startswith(" "):
            key = line
            entries[key] = [[line], {}]
        elif line.startswith(("    # via", "    #   ")):
            source = line.removeprefix("    # via").removeprefix("    #   ").strip()
            entries[key][1].update({source: None} if source else {})
        else:
            entries[key][0].append(line)
    return header, entries


def write_lock(header: list[str], entries: dict[str, list]) -> str:
    """The lock's text as uv writes it: entries by name, each with its sources: the input files
    in the order met (constraints first), then the packages by name."""
    lines = list(header)
    for key in sorted(entries, key=lambda line: re.split(r"[=; ]", line, maxsplit=1)[0]):
        requirement, sources = entries[key]
        via = sorted(sources, key=lambda s: (not s.startswith("-"), "" if s.startswith("-") else s))
        lines += [
            *requirement,
            *([f"    # via {via[0]}"] if len(via) == 1 else ["    # via", *(f"    #   {s}" for s in via)]),
        ]
    return "\n".join(lines) + "\n"


def merge_locks(header: list[str], parts: list[dict[str, list]]) -> str:
    """One lock of the parts (read_lock's entries) under header: an entry's sources add up."""
    merged: dict[str, list] = {}
    for entries in parts:
        for key, (requirement, sources) in entries.items():
            merged.setdefault(key, [requirement, {}])[1].update(sources)
    return write_lock(header, merged)


def constraint_locks(root: Path, lock: str) -> list[str]:
    """The locks that lock's input constrains it by (`-c requirements.txt` in requirements-dev.in)."""
    source = root / lock.replace(".txt", ".in")
    return [
        line.split()[1] for line in source.read_text(encoding="utf-8").splitlines() if line.startswith("-c ")
    ]


def assemble_locks(root: Path, context: dict) -> None:
    """Write each lock of the project from the fragments of its answers (once: cruft re-runs this
    hook where the fragments are gone, and the locks are already there)."""
    base = root / FRAGMENTS / "base"
    if not base.is_dir():
        return
    for lock in sorted((p.name for p in base.iterdir()), key=lambda n: len(constraint_locks(root, n))):
        header, _ = read_lock((base / lock).read_text(encoding="utf-8"))
        parts = []
        for constraint in constraint_locks(root, lock):
            # Every pin of a constraining lock is in this one too, constrained (`-c`) by it.
            _, entries = read_lock((root / constraint).read_text(encoding="utf-8"))
            parts.append(
                {key: [req, {f"-c {constraint}": None, **src}] for key, (req, src) in entries.items()}
            )
        for name in lock_fragments(context):
            if (path := root / FRAGMENTS / name / lock).is_file():
                parts.append(read_lock(path.read_text(encoding="utf-8"))[1])
        (root / lock).write_text(merge_locks(header, parts), encoding="utf-8")


def remove_paths(root: Path, paths: list[str]) -> None:
    for relative in paths:
        path = root / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_bounded(command: list[str], timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess | None:
    """Run command; None if it is still running after timeout (it and its children are killed)."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def docker_warnings(port: int) -> list[str]:
    """What is missing for building and running the image here, each with its fix."""
    docker = shutil.which("docker")
    if docker is None:
        return [f"the docker CLI is not on PATH: install Docker Engine or Desktop ({INSTALL_DOCS})"]
    checks = [
        (
            [docker, "info", "--format", "{% raw %}{{.ServerVersion}}{% endraw %}"],
            "the Docker daemon",
            "start it (`sudo systemctl start docker`, or open Docker Desktop) and check `docker info`",
        ),
        (
            [docker, "buildx", "version"],
            "docker buildx",
            "install the buildx plugin (package docker-buildx-plugin or docker-buildx)",
        ),
        (
            [docker, "compose", "version"],
            "docker compose v2",
            "install the compose plugin (package docker-compose-plugin or docker-compose)",
        ),
    ]
    warnings = []
    for command, what, fix in checks:
        result = run_bounded(command)
        if result is None:
            warnings.append(
                f"{what} did not answer within {DOCKER_TIMEOUT} s (`{' '.join(command[1:3])}` hangs): {fix}"
            )
            break  # a hung docker would hang every further call too
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            warnings.append(f"{what} is not available ({detail[-1] if detail else 'no output'}): {fix}")
        elif command[1] == "info":
            warnings += engine_warnings(result.stdout.strip())
    if port_in_use(port):
        warnings.append(f"port {port} is already in use here: publish another host port, e.g. -p 8080:{port}")
    return warnings


def engine_warnings(server_version: str) -> list[str]:
    """A warning with the fix if the engine (`docker info` ServerVersion) is older than the floor."""
    found = re.match(r"(\d+)\.(\d+)", server_version)
    floor = ".".join(map(str, ENGINE_FLOOR))
    if found is None:
        return [f"cannot tell the Docker Engine version from {server_version!r}: this project needs {floor}+"]
    if (int(found[1]), int(found[2])) >= ENGINE_FLOOR:
        return []
    return [
        f"Docker Engine {server_version} is older than {floor}, which the Dockerfile needs "
        f"(HEALTHCHECK --start-interval): upgrade Docker Engine or Desktop ({INSTALL_DOCS})"
    ]


def preflight_mode(environ: dict) -> str:
    """strict, on or off, from FASTAPI_DOCKER_PREFLIGHT and CI."""
    mode = environ.get("FASTAPI_DOCKER_PREFLIGHT", "").strip().lower()
    if mode in {"strict", "off"}:
        return mode
    if environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        return "off"
    return "on"


def next_steps(context: dict) -> str:
    slug, port = context["project_slug"], context["port"]
    steps = [
        f"Created {slug}/. Next:",
        f"  cd {slug}",
        "  make install test                  # locked dependencies in .venv, unit tests",
    ]
    if context["database"] == "postgresql" and context["use_compose"]:
        steps.append("  make up                            # the app, its migrations and its database")
        steps.append(f"  curl http://localhost:{port}/ready")
    else:
        steps.append(f"  docker build -t {slug} .")
        steps.append(f"  docker run -d --name {slug} -p {port}:{port} {slug}")
        steps.append(f"  curl http://localhost:{port}/health")
    return "\n".join([*steps, "README.md walks through the rest."])


def main() -> int:
    context = json.loads(CONTEXT_JSON)
    assemble_locks(Path.cwd(), context)
    remove_paths(Path.cwd(), unused_paths(context))
    port = int(context["port"])
    if port < 1024:
        print(
            f"WARNING: port {port} is below 1024: a non-root pod cannot bind it in Kubernetes",
            file=sys.stderr,
        )
    mode = preflight_mode(dict(os.environ))
    if mode == "off":
        print("Docker preflight skipped (CI or FASTAPI_DOCKER_PREFLIGHT=off).")
    else:
        warnings = docker_warnings(port)
        label = "ERROR" if mode == "strict" else "WARNING"
        for warning in warnings:
            print(f"{label}: {warning}", file=sys.stderr)
        if warnings and mode == "strict":
            print(
                "ERROR: FASTAPI_DOCKER_PREFLIGHT=strict and Docker is not ready; nothing was generated",
                file=sys.stderr,
            )
            return 1
    print(next_steps(context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
