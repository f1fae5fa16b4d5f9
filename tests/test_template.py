"""The template's own files: cookiecutter.json is complete, and the template's code is lint-clean."""

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.project import COOKIECUTTER_JSON, TEMPLATE, tool


def test_every_question_has_a_prompt():
    questions = {k for k in COOKIECUTTER_JSON if not k.startswith("_")}
    prompts = COOKIECUTTER_JSON["__prompts__"]
    assert questions == set(prompts)
    for key, value in COOKIECUTTER_JSON.items():
        if isinstance(value, list) and not key.startswith("_"):  # every choice is explained
            assert set(prompts[key]) - {"__prompt__"} == set(value), key


def test_python_versions_are_strings_and_default_to_3_13():
    versions = COOKIECUTTER_JSON["python_version"]
    assert versions[0] == "3.13" and all(isinstance(v, str) for v in versions)


def test_template_python_is_ruff_clean():
    for command in (["check", "--no-cache"], ["format", "--no-cache", "--check"]):
        result = subprocess.run(
            [tool("ruff"), *command, "hooks", "tests", "scripts", "benchmark"],
            cwd=TEMPLATE,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_parse_and_pass_shellcheck():
    """Every bash script and sourced bash part: .ci/run and all of scripts/ (the build environment too)."""
    scripts = [
        path
        for path in [TEMPLATE / ".ci" / "run", *sorted(Path(TEMPLATE, "scripts").rglob("*"))]
        if path.is_file()
        and path.suffix in {"", ".sh"}
        and path.read_text().startswith(("#!/usr/bin/env bash", "# shellcheck shell=bash"))
    ]
    buildenv = TEMPLATE / "scripts" / "buildenv"
    assert set(buildenv.rglob("*.sh")) <= set(scripts)  # the parts and the entrypoints they copy into images
    assert {"env.sh", "lib.sh", "engine.sh", "mirror.sh", "images.sh", "multiplatform.sh"} <= {
        path.name for path in scripts
    }
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"
    result = subprocess.run([tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def buildenv(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the build environment's entry point with the given arguments and environment changes."""
    environ = {k: v for k, v in os.environ.items() if k not in env} | {k: v for k, v in env.items() if v}
    return subprocess.run(
        ["bash", str(TEMPLATE / "scripts" / "buildenv" / "env.sh"), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_buildenv_print_env_exports_only_the_mirror_network_and_ca_bundle_unless_one_is_set():
    result = buildenv("--print-env", SSL_CERT_FILE="")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(re.fullmatch(r"export [A-Z][A-Z0-9_]*=\S+", line) for line in lines), lines
    exported = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    assert exported["FASTAPI_DOCKER_INDEX_URL"] == "http://127.0.0.1:3141/root/pypi/+simple/"
    assert exported["FASTAPI_DOCKER_BUILD_NETWORK"] == "host"
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    assert ("SSL_CERT_FILE" in exported) == os.access(bundle, os.R_OK)
    multiplatform = {"FASTAPI_DOCKER_MULTIPLATFORM_CONTEXT", "FASTAPI_DOCKER_MULTIPLATFORM_REGISTRY"}
    assert multiplatform <= exported.keys() or not multiplatform & exported.keys()  # both or neither
    assert "SSL_CERT_FILE" not in dict(
        line.removeprefix("export ").split("=", 1)
        for line in buildenv("--print-env", SSL_CERT_FILE="/x.pem").stdout.splitlines()
    )  # a CA bundle the caller chose is kept


def test_buildenv_help_goes_to_stdout_and_an_unknown_argument_fails_on_stderr_only():
    usage = buildenv("--help")
    assert usage.returncode == 0 and "--print-env" in usage.stdout and not usage.stdout.startswith("export")
    wrong = buildenv("--check")
    assert wrong.returncode != 0 and wrong.stdout == ""
    assert "unknown argument '--check'" in wrong.stderr


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
