"""Re-lock the generated service's requirements as fragments of one resolution (`scripts/relock`).

The locks of every answer set are made by the project's own `make lock`, in projects cookiecutter
renders (so requirements*.in are rendered by cookiecutter itself), at the oldest offered Python,
the floor that lets one lock serve every offered version. First the answers that add packages
(cookiecutter.json's `_options`, "locks") all together: the one resolution, whose pins every
other lock starts from. Then no such answer (`base`) and each alone; each answer's fragment is
what its locks add to what the post-gen hook assembles without it. Last, every answer set's
project, assembled by the post-gen hook, must have exactly the locks `make lock` wrote.
"""

import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

from hooks import post_gen_project as post

TEMPLATE = Path(__file__).resolve().parents[1]
SERVICE = TEMPLATE / "{{cookiecutter.__project_dir}}"
COOKIECUTTER_JSON = json.loads((TEMPLATE / "cookiecutter.json").read_text())
FLOOR = min(COOKIECUTTER_JSON["python_version"], key=lambda v: tuple(map(int, v.split("."))))
LOCKS = ["requirements.txt", "requirements-dev.txt"]  # made of fragments, runtime first
# The floor, and uv as installer: its build lock (requirements-build.txt) is locked too.
ANSWERS = {"python_version": FLOOR, "installer": "uv"}


def bake(work: Path, answers: dict) -> Path:
    """The project of these answers, finished by the post-gen hook (its locks assembled)."""
    out = tempfile.mkdtemp(dir=work)
    return Path(
        cookiecutter(str(TEMPLATE), no_input=True, extra_context={**ANSWERS, **answers}, output_dir=out)
    )


def make_lock(work: Path, tools: Path, answers: dict, start: dict | None = None) -> dict[str, str]:
    """{lock: text} after `make lock` in the project of answers, from its pins or those of start."""
    project = bake(work, answers)
    for name, text in (start or {}).items():
        (project / name).write_text(text)
    subprocess.run(["make", "--quiet", "lock", f"VENV={tools}"], cwd=project, check=True)
    return {name: (project / name).read_text() for name in [*LOCKS, "requirements-build.txt"]}


def subtract(lock: str, known: str) -> str | None:
    """The entries and `via` sources of lock that known lacks, as a lock (None: nothing)."""
    header, entries = post.read_lock(lock)
    _, old = post.read_lock(known)
    left = {}
    for key, (requirement, sources) in entries.items():
        new = {s: None for s in sources if s not in old.get(key, [[], {}])[1]}
        if new:
            left[key] = [requirement, new]
    return post.write_lock(header, left) if left else None


def main() -> int:
    os.environ["FASTAPI_DOCKER_PREFLIGHT"] = "off"
    uv = shutil.which(os.environ.get("UV", "uv"))
    if uv is None:
        sys.exit("scripts/relock: no uv on PATH (or set UV=/path/to/uv)")
    fragments = SERVICE / post.FRAGMENTS
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tools = work / "venv"  # the Makefile's $(VENV)/bin/uv
        (tools / "bin").mkdir(parents=True)
        (tools / "bin" / "uv").symlink_to(uv)
        singles = [{q: a} for q, rule in COOKIECUTTER_JSON["_options"].items() for a in rule.get("locks", [])]
        every = {q: a for single in singles for q, a in single.items()}
        full = make_lock(work, tools, every)
        start = {name: full[name] for name in LOCKS}
        locks = {json.dumps(a): make_lock(work, tools, a, start) for a in [{}, *singles]}
        (SERVICE / "requirements-build.txt").write_text(full["requirements-build.txt"])

        shutil.rmtree(fragments, ignore_errors=True)
        base = locks["{}"]
        (fragments / "base").mkdir(parents=True)
        for lock in LOCKS:  # the runtime lock whole; of the dev lock, what its constraint lacks
            empty = post.write_lock(post.read_lock(base[lock])[0], {})
            (fragments / "base" / lock).write_text(empty)
            (fragments / "base" / lock).write_text(
                subtract(base[lock], (bake(work, {}) / lock).read_text()) or empty
            )
        for single in singles:
            [(question, answer)] = single.items()
            for lock in LOCKS:
                part = subtract(locks[json.dumps(single)][lock], (bake(work, single) / lock).read_text())
                if part:
                    (fragments / f"{question}-{answer}").mkdir(exist_ok=True)
                    (fragments / f"{question}-{answer}" / lock).write_text(part)

        failed = False
        for answers, want in [*((json.loads(k), v) for k, v in locks.items()), (every, full)]:
            project = bake(work, answers)
            for lock in LOCKS:
                got = (project / lock).read_text()
                if got != want[lock]:
                    failed = True
                    diff = difflib.unified_diff(
                        want[lock].splitlines(), got.splitlines(), "make lock", "assembled"
                    )
                    print(f"scripts/relock: {answers} {lock}:", *list(diff)[:40], sep="\n", file=sys.stderr)
    sizes = {
        p.relative_to(fragments).as_posix(): len(p.read_text().splitlines()) for p in fragments.rglob("*.txt")
    }
    print(f"relocked the service's fragments (lines): {sizes}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
