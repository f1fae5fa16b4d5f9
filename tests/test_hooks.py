"""Tier 1: the hooks' functions, imported from the rendered hooks, and the post-gen hook's Docker
preflight in hostile environments (no docker, a docker that hangs, a daemon that is down, CI)."""

import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.hooks import default_context, load_hook
from tests.support.net import free_port
from tests.support.project import COOKIECUTTER_JSON, TEMPLATE, cookiecutter_cli, run


@pytest.fixture
def pre(tmp_path):
    return load_hook("pre_gen_project", tmp_path)


@pytest.fixture
def post(tmp_path):
    return load_hook("post_gen_project", tmp_path)


# ---- pre_gen_project: validation -------------------------------------------------------------


@pytest.mark.parametrize("slug", ["my-service", "a", "api2", "x" * 63, "a-1-b"])
def test_valid_slugs(pre, slug):
    pre.check_slug(slug)


@pytest.mark.parametrize(
    "slug", ["", "My-Service", "1api", "-a", "a-", "a--b", "a_b", "a.b", "a b", "../a", "x" * 64, "é"]
)
def test_invalid_slugs_name_the_field_and_the_rule(pre, slug):
    with pytest.raises(pre.InvalidAnswer, match=r"^project_slug .* lowercase letters"):
        pre.check_slug(slug)


@pytest.mark.parametrize("value", ["1", "80", "8000", "65535"])
def test_valid_ports(pre, value):
    pre.check_int("port", value, 1, 65535)


@pytest.mark.parametrize("value", ["0", "65536", "70000", "abc", "-1", "80.0", " 80", "", "８０"])
def test_invalid_ports(pre, value):
    with pytest.raises(pre.InvalidAnswer, match=r"^port .* a whole number from 1 to 65535"):
        pre.check_int("port", value, 1, 65535)


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "registry.example.com",
        "registry.example.com:5000",
        "127.0.0.1:5000/mirror",
        "localhost",
        "artifactory.example.com/docker-remote/library",
        "10.0.0.1:443/a_b",
    ],
)
def test_valid_registry_prefixes(pre, prefix):
    pre.check_registry_prefix(prefix)


@pytest.mark.parametrize(
    "prefix",
    [
        "https://registry.example.com",
        "registry.example.com/",
        "Registry.example.com",
        "a b",
        "registry.example.com:port",
        "/mirror",
        "registry.example.com//x",
        "r.example.com/python:3",
        "localhost:5000/mirror",
    ],
)
def test_invalid_registry_prefixes(pre, prefix):
    """Each is refused with the rule (not a Docker reference prefix, or one hadolint misparses)."""
    with pytest.raises(pre.InvalidAnswer, match=r"^registry_prefix .* (registry host|127.0.0.1:PORT)"):
        pre.check_registry_prefix(prefix)


@pytest.mark.parametrize(
    "text",
    [
        'say "hi"',
        "back\\slash",
        "two\nlines",
        "tab\there",
        "$HOME",
        "`id`",
        "{{ x }}",
        "{% if %}",
        "{# c #}",
        " padded",
        "x" * 201,
    ],
)
def test_text_that_would_break_generated_files_is_refused(pre, text):
    with pytest.raises(pre.InvalidAnswer, match=r"^project_name "):
        pre.check_text("project_name", text)


@pytest.mark.parametrize("text", ["O'Reilly <API> & co: #1", "Café Ünïcode", "Emoji 🚀 API", "a: b"])
def test_text_that_is_safe_passes(pre, text):
    pre.check_text("project_name", text)


def test_choices_are_checked_against_what_cookiecutter_json_offers(pre):
    answers = default_context()["cookiecutter"]
    offered = pre.offered_choices(str(TEMPLATE))
    assert offered["python_version"] == COOKIECUTTER_JSON["python_version"]
    assert pre.validate(answers, offered) == []
    [error] = pre.validate(dict(answers, python_version="2.7"), offered)
    assert str(error).startswith("python_version '2.7' is not valid: one of 3.13, ")


def test_choices_unchecked_where_the_template_directory_is_unknown(pre, tmp_path):
    # cruft passes no _repo_dir; cookiecutter itself refused unoffered answers before the hook.
    assert pre.offered_choices("") == {} == pre.offered_choices(str(tmp_path))


def test_every_question_has_a_rule(pre):
    """cookiecutter.json's `_options` has a rule for each question, in the questions' order."""
    questions = [key for key in COOKIECUTTER_JSON if not key.startswith("_")]
    assert list(COOKIECUTTER_JSON["_options"]) == questions
    assert pre.validate(default_context()["cookiecutter"], pre.offered_choices(str(TEMPLATE))) == []


def test_a_rule_the_hook_does_not_know_is_an_error(pre):
    answers = default_context()["cookiecutter"]
    answers["_options"] = {**answers["_options"], "workers": {"check": "even"}}
    [error] = pre.validate(answers, {})
    assert (
        str(error)
        == "workers '1' is not valid: cookiecutter.json's _options has no known check for it ('even')"
    )


@pytest.mark.parametrize(
    "question", [k for k, v in COOKIECUTTER_JSON.items() if isinstance(v, list) and k[0] != "_"]
)
def test_every_choice_question_is_checked(pre, question):
    """Each one, `database` too (the hook's own list of choice questions once left it out)."""
    answers = default_context()["cookiecutter"]
    [error] = pre.validate(dict(answers, **{question: "nonsense"}), pre.offered_choices(str(TEMPLATE)))
    assert str(error).startswith(f"{question} 'nonsense' is not valid: one of "), error


def test_booleans_must_be_booleans(pre):
    answers = default_context()["cookiecutter"]
    [error] = pre.validate(dict(answers, use_compose="maybe"), {})
    assert str(error) == "use_compose 'maybe' is not valid: true or false"


def test_every_wrong_answer_is_reported_at_once(pre):
    answers = default_context()["cookiecutter"]
    bad = dict(answers, project_slug="Bad", port="0", workers="x", use_kubernetes="yes", author='"')
    fields = [str(e).split()[0] for e in pre.validate(bad, pre.offered_choices(str(TEMPLATE)))]
    assert fields == ["project_slug", "author", "port", "workers", "use_kubernetes"]


@pytest.mark.parametrize("value", [8000, None, ["a"], {"a": 1}, 1.5, True])
def test_answers_of_the_wrong_type_are_refused_not_crashed(pre, value):
    # API callers (pytest-cookies, cruft's extra context) can pass any JSON type.
    answers = default_context()["cookiecutter"]
    for field in ("project_name", "project_slug", "description", "registry_prefix"):
        [error] = pre.validate(dict(answers, **{field: value}), {})
        assert str(error).startswith(f"{field} "), error


def test_a_name_without_a_slug_is_the_names_error(pre):
    answers = dict(default_context()["cookiecutter"], project_name="🚀", project_slug="")
    [error] = pre.validate(answers, {}, name_has_slug=False)
    assert str(error).startswith("project_name '🚀' is not valid: it needs a letter or digit")
    [error] = pre.validate(dict(answers, project_name="ok"), {}, name_has_slug=True)
    assert str(error).startswith("project_slug '' is not valid")


# ---- post_gen_project: pruning -----------------------------------------------------------------


def test_unused_paths_are_the_files_of_the_answers_not_chosen(post):
    options = {
        "flag": {"check": "bool", "files": {"true": ["on.yaml", "on"]}},
        "kind": {"check": "choice", "files": {"a": ["a.txt", "shared"], "b": ["shared"], "c": ["c"]}},
        "name": {"check": "text"},
    }
    context = {"_options": options, "flag": False, "kind": "b", "name": "x"}
    assert post.unused_paths(context) == ["on.yaml", "on", "a.txt", "c", post.FRAGMENTS]
    context = {"_options": options, "flag": True, "kind": "a", "name": "x"}
    assert post.unused_paths(context) == ["c", post.FRAGMENTS]


def test_a_path_two_questions_name_is_kept_only_if_both_keep_it(post):
    """observability/ (compose's Prometheus configuration) is kept with compose and observability."""
    options = {
        "compose": {"check": "bool", "files": {"true": ["compose.yaml", "both"]}},
        "signals": {"check": "choice", "files": {"on": ["both"]}},
    }
    for compose, signals, kept in [(True, "on", True), (True, "off", False), (False, "on", False)]:
        unused = post.unused_paths({"_options": options, "compose": compose, "signals": signals})
        assert ("both" not in unused) is kept, (compose, signals, unused)


def test_remove_paths_is_idempotent(post, tmp_path):
    root = tmp_path / "project"
    (root / "k8s").mkdir(parents=True)
    (root / "k8s" / "deployment.yaml").write_text("x")
    (root / "compose.yaml").write_text("x")
    (root / "main.py").write_text("x")
    for _ in range(2):  # cruft re-runs the hook on every update
        post.remove_paths(root, ["k8s", "compose.yaml", ".github"])
    assert [p.name for p in root.iterdir()] == ["main.py"]


@pytest.mark.parametrize(
    ("environ", "mode"),
    [
        ({}, "on"),
        ({"CI": "true"}, "off"),
        ({"CI": "1"}, "off"),
        ({"CI": "false"}, "on"),
        ({"FASTAPI_DOCKER_PREFLIGHT": "off"}, "off"),
        ({"CI": "true", "FASTAPI_DOCKER_PREFLIGHT": "strict"}, "strict"),
        ({"FASTAPI_DOCKER_PREFLIGHT": "STRICT "}, "strict"),
    ],
)
def test_preflight_mode(post, environ, mode):
    assert post.preflight_mode(environ) == mode


# ---- post_gen_project: the preflight through the real cookiecutter CLI ------------------------


def fake_docker(bin_dir: Path, body: str) -> None:
    """A `docker` executable on PATH that behaves as body (a shell script) says."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "docker"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


# A docker whose every command works, on a current engine.
WORKING_DOCKER = 'if [ "$1" = info ]; then echo 27.5.1; else echo ok; fi\n'


def warnings_of(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]


def test_no_docker_on_path_warns_and_generates(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = cookiecutter_cli(tmp_path, f"port={free_port()}", PATH=str(empty))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "my-service" / "Dockerfile").is_file()
    [warning] = warnings_of(result)
    assert "docker CLI is not on PATH" in warning and "docs.docker.com" in warning
    assert "cd my-service" in result.stdout


def test_hung_docker_is_bounded(tmp_path):
    fake_docker(tmp_path / "bin", "exec /bin/sleep 600\n")
    started = time.monotonic()
    result = cookiecutter_cli(tmp_path, f"port={free_port()}", PATH=str(tmp_path / "bin"))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    [warning] = warnings_of(result)
    assert "did not answer within 5 s" in warning
    assert elapsed < 60, f"generation took {elapsed:.0f} s with a hung docker"


def test_daemon_down_warns_with_the_fix(tmp_path):
    fake_docker(
        tmp_path / "bin",
        'if [ "$1" = info ]; then\n'
        '  echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1\n'
        "fi\necho ok\n",
    )
    result = cookiecutter_cli(tmp_path, f"port={free_port()}", PATH=str(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    [warning] = warnings_of(result)
    assert "Docker daemon is not available (Cannot connect" in warning
    assert "systemctl start docker" in warning


def test_missing_plugins_are_named(tmp_path):
    fake_docker(
        tmp_path / "bin",
        'if [ "$1" = info ]; then echo 27.5.1; exit 0; fi\n'
        'echo "docker: unknown command: docker $1" >&2; exit 1\n',
    )
    result = cookiecutter_cli(tmp_path, f"port={free_port()}", PATH=str(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    warnings = warnings_of(result)
    assert len(warnings) == 2
    assert "buildx" in warnings[0] and "compose v2" in warnings[1]


def test_busy_port_is_reported(tmp_path):
    fake_docker(tmp_path / "bin", WORKING_DOCKER)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cookiecutter_cli(tmp_path, f"port={port}", PATH=str(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    [warning] = warnings_of(result)
    assert f"port {port} is already in use" in warning


def test_all_present_means_no_warnings(tmp_path):
    fake_docker(tmp_path / "bin", WORKING_DOCKER)
    result = cookiecutter_cli(tmp_path, f"port={free_port()}", PATH=str(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == []


def test_ci_skips_the_preflight(tmp_path):
    fake_docker(tmp_path / "bin", "exec /bin/sleep 600\n")
    result = cookiecutter_cli(tmp_path, PATH=str(tmp_path / "bin"), CI="true")
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == []
    assert "Docker preflight skipped" in result.stdout


@pytest.mark.parametrize("ci", ["", "true"])
def test_strict_mode_fails_and_leaves_nothing(tmp_path, ci):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = cookiecutter_cli(tmp_path, PATH=str(empty), CI=ci, FASTAPI_DOCKER_PREFLIGHT="strict")
    assert result.returncode != 0
    assert "ERROR: the docker CLI is not on PATH" in result.stderr
    assert not (tmp_path / "out" / "my-service").exists()


def test_low_port_warns_about_kubernetes(tmp_path):
    result = cookiecutter_cli(tmp_path, "port=80", PATH=str(tmp_path), FASTAPI_DOCKER_PREFLIGHT="off")
    assert result.returncode == 0, result.stderr
    assert "port 80 is below 1024" in result.stderr


@pytest.mark.parametrize(
    ("version", "warned"),
    [
        ("25.0.0", False),
        ("26.1.5+dfsg1", False),
        ("28.2.2", False),
        ("24.0.7", True),
        ("20.10.24+dfsg1", True),
    ],
)
def test_engine_floor(post, version, warned):
    warnings = post.engine_warnings(version)
    assert bool(warnings) == warned, warnings
    if warned:
        assert version in warnings[0] and "25.0" in warnings[0] and "--start-interval" in warnings[0]


def test_unreadable_engine_version_is_said(post):
    [warning] = post.engine_warnings("unknown")
    assert "'unknown'" in warning and "25.0" in warning


def test_old_engine_warns_with_the_fix_and_generates(tmp_path):
    fake_docker(tmp_path / "bin", 'if [ "$1" = info ]; then echo 20.10.24; else echo ok; fi\n')
    result = cookiecutter_cli(tmp_path, f"port={free_port()}", PATH=str(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    [warning] = warnings_of(result)
    assert "Docker Engine 20.10.24 is older than 25.0" in warning and "upgrade" in warning
    assert (tmp_path / "out" / "my-service" / "Dockerfile").is_file()


def test_old_engine_fails_strict_mode_and_leaves_nothing(tmp_path):
    fake_docker(tmp_path / "bin", 'if [ "$1" = info ]; then echo 24.0.7; else echo ok; fi\n')
    result = cookiecutter_cli(
        tmp_path, f"port={free_port()}", PATH=str(tmp_path / "bin"), FASTAPI_DOCKER_PREFLIGHT="strict"
    )
    assert result.returncode != 0
    assert "ERROR: Docker Engine 24.0.7 is older than 25.0" in result.stderr
    assert not (tmp_path / "out" / "my-service").exists()


# ---- post_gen_project: what it prints ----------------------------------------------------------


@pytest.mark.parametrize("database", ["none", "postgresql"])
def test_the_next_steps_name_the_port_and_only_make_targets_the_project_has(tmp_path, database):
    """With the database, `make up` (it makes the password file) instead of a lone `docker run`."""
    result = cookiecutter_cli(tmp_path, "port=8123", f"database={database}", FASTAPI_DOCKER_PREFLIGHT="off")
    assert result.returncode == 0, result.stderr
    steps = result.stdout.split("Next:\n", 1)[1].splitlines()
    assert "  cd my-service" in steps and any("http://localhost:8123/" in step for step in steps), steps
    targets = [step.split("#")[0].split()[1:] for step in steps if step.startswith("  make ")]
    for names in targets:
        dry_run = run(["make", "--dry-run", *names], cwd=tmp_path / "out" / "my-service")
        assert dry_run.returncode == 0, f"make {' '.join(names)}: {dry_run.stderr}"
    assert (["up"] in targets) == (database == "postgresql"), targets
