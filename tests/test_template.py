"""The template's own files: cookiecutter.json is complete, and the template's code is lint-clean."""

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.project import COOKIECUTTER_JSON, TEMPLATE, tool


def test_every_question_has_a_prompt():
    questions = {k for k in COOKIECUTTER_JSON if not k.startswith("_")}
    prompts = COOKIECUTTER_JSON["__prompts__"]
    assert questions == set(prompts)
    for key, value in COOKIECUTTER_JSON.items():
        if isinstance(value, list):  # every choice is explained
            assert set(prompts[key]) - {"__prompt__"} == set(value), key


def test_python_versions_are_strings_and_default_to_3_13():
    versions = COOKIECUTTER_JSON["python_version"]
    assert versions[0] == "3.13" and all(isinstance(v, str) for v in versions)


def test_template_python_is_ruff_clean():
    for command in (["check", "--no-cache"], ["format", "--no-cache", "--check"]):
        result = subprocess.run(
            [tool("ruff"), *command, "hooks", "tests", "scripts"],
            cwd=TEMPLATE,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_parse_and_pass_shellcheck():
    scripts = [
        path
        for path in [TEMPLATE / ".ci" / "run", *sorted(Path(TEMPLATE, "scripts").rglob("*"))]
        if path.is_file()
        and path.suffix in {"", ".sh"}
        and path.read_text().startswith("#!/usr/bin/env bash")
    ]
    assert TEMPLATE / "scripts" / "buildenv" / "multiplatform.sh" in scripts
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
    result = subprocess.run([tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_workflow_passes_actionlint():
    result = subprocess.run(
        [tool("actionlint"), ".github/workflows/ci.yml"], cwd=TEMPLATE, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_workflow_passes_zizmor():
    """Actions pinned to commits, no persisted credentials: the generated workflow's rules apply here too."""
    result = subprocess.run(
        [tool("zizmor"), "--offline", "--no-progress", ".github"],
        cwd=TEMPLATE,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_generate_command_works_from_a_clone(tmp_path):
    """The README's first command, run as written in a copy of this repository."""
    readme = (TEMPLATE / "README.md").read_text()
    block = readme.split("## The two commands", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    [command] = [line.split("   #")[0].strip() for line in block.splitlines() if "cookiecutter" in line]
    clone = tmp_path / "clone"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=TEMPLATE, capture_output=True, text=True
    ).stdout.splitlines()
    for name in listed:
        if (TEMPLATE / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TEMPLATE / name, clone / name)
    env = {k: v for k, v in os.environ.items() if k not in {"COOKIECUTTER_CONFIG", "VIRTUAL_ENV"}}
    env.update(HOME=str(tmp_path), FASTAPI_DOCKER_PREFLIGHT="off")
    result = subprocess.run(
        ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "my-service" / "Dockerfile").is_file()
