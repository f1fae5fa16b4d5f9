"""Tier 2: hostile answers, given on the real `cookiecutter` command line as a user would.

Each ends either in a clean refusal (exit 1, one `ERROR:` line from our hook naming the field, the
value and what is allowed, and no directory left behind) or in a project that renders correctly
(the render tier's checks run on those through support.project.FREE_TEXT; here we check the values
made it through intact).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.project import TEMPLATE, cookiecutter_cli

REFUSED = [
    ("project_slug", "My-Service"),
    ("project_slug", "1service"),
    ("project_slug", "my_service"),
    ("project_slug", "../escape"),
    ("project_slug", "a--b"),
    ("project_slug", "x" * 64),
    ("project_slug", ""),
    # Answers that would break the output directory's name itself.
    ("project_slug", "a/b"),
    ("project_slug", "/tmp/x"),
    ("project_slug", ".."),
    ("project_slug", "."),
    ("project_slug", "x" * 300),
    ("project_slug", "-rf"),
    ("project_slug", "ｓｅｒｖｉｃｅ"),
    ("project_slug", " my-service"),
    ("project_slug", "my-service\n"),
    ("project_slug", "{{ 7 * 7 }}"),
    ("project_slug", "café"),
    ("project_name", ""),
    ("project_name", "🚀"),
    ("project_name", "🚀🔥✨"),
    ("project_name", "x" * 300),
    ("project_name", "\t"),
    ("project_name", "a\u202eb"),
    ("port", "８０"),
    ("port", "0x50"),
    ("port", " 80"),
    ("port", "1e3"),
    ("port", ""),
    ("workers", "-4"),
    ("port", "0"),
    ("port", "70000"),
    ("port", "abc"),
    ("port", "-1"),
    ("port", "80.5"),
    ("workers", "0"),
    ("workers", "1000"),
    ("registry_prefix", "https://registry.example.com"),
    ("registry_prefix", "registry.example.com/"),
    ("registry_prefix", "Registry.Example.com"),
    ("project_name", 'Say "hi"'),
    ("project_name", "back\\slash"),
    ("project_name", "two\nlines"),
    ("project_name", "$(rm -rf /)"),
    ("project_name", "`id`"),
    ("project_name", "   "),
    ("description", "{{ cookiecutter.project_slug }} and {% raw %}"),
    ("author", "tab\tseparated"),
]


@pytest.mark.parametrize(("field", "value"), REFUSED, ids=[f"{f}={v!r}"[:40] for f, v in REFUSED])
def test_refused_cleanly(tmp_path, field, value):
    value = value.encode().decode("unicode_escape") if "\\" in value and field != "project_name" else value
    # A slug is derived from the name; the name's own tests keep the default slug valid.
    extra = ["project_slug=ok"] if field == "project_name" and value not in {"", "🚀", "🚀🔥✨"} else []
    result = cookiecutter_cli(tmp_path, f"{field}={value}", *extra, FASTAPI_DOCKER_PREFLIGHT="off")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, result.stderr  # one line for one wrong answer
    assert errors[0].startswith(f"ERROR: {field} "), result.stderr
    assert "is not valid: " in errors[0]
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == [], "a refused answer left files behind"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("python_version=2.7", "2.7 provided for choice variable python_version"),
        ("installer=poetry", "poetry provided for choice variable installer"),
        ("use_compose=maybe", "maybe provided for variable use_compose could not be converted"),
    ],
)
def test_cookiecutter_refuses_unoffered_choices_before_anything_is_written(tmp_path, answer, message):
    # cookiecutter itself checks choice and boolean answers against cookiecutter.json before our
    # hook runs (it ends with its own ValueError); our hook repeats the check for API callers.
    result = cookiecutter_cli(tmp_path, answer, FASTAPI_DOCKER_PREFLIGHT="off")
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Café Ünïcode Service", "cafe-unicode-service"),
        ("O'Reilly <API> & co: #1", "o-reilly-api-co-1"),
        ("Emoji 🚀 Service", "emoji-service"),
        ("UPPER lower 42", "upper-lower-42"),
        ("2FA Service", "svc-2fa-service"),
        ("42", "svc-42"),
        ("  Spaced   Out  ".strip(), "spaced-out"),
        ("Ünïcode " + "long " * 30 + "name", None),
    ],
)
def test_unusual_names_render_with_a_derived_slug(tmp_path, name, slug):
    result = cookiecutter_cli(tmp_path, f"project_name={name}", FASTAPI_DOCKER_PREFLIGHT="off")
    assert result.returncode == 0, result.stderr
    [project] = (tmp_path / "out").iterdir()
    if slug is None:  # long names: the slug is cut at a word boundary, within the 63 the hook allows
        slug = project.name
        assert len(slug) <= 63 and slug.startswith("unicode-long-") and not slug.endswith("-")
    assert project.name == slug
    main = (project / "app" / "main.py").read_text()
    assert f'title="{name}"' in main


def test_every_wrong_answer_gets_its_line_in_one_run(tmp_path):
    result = cookiecutter_cli(
        tmp_path, "project_slug=a/b", "port=0", "workers=many", 'author=a"b', "registry_prefix=https://x"
    )
    assert result.returncode == 1
    ours = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert ours == ["project_slug", "author", "registry_prefix", "port", "workers"]
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_replay_and_replay_file_regenerate_the_same_service(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "COOKIECUTTER_CONFIG"}}
    env.update(HOME=str(tmp_path), FASTAPI_DOCKER_PREFLIGHT="off")

    def generate(out: str, *args: str) -> Path:
        options = [a for a in args if a.startswith("-") or "=" not in a]
        answers = [a for a in args if a not in options]
        command = [sys.executable, "-m", "cookiecutter", "-o", str(tmp_path / out), *options, str(TEMPLATE)]
        command += answers
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        [project] = (tmp_path / out).iterdir()
        return project

    def tree(root: Path) -> dict:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first = generate("first", "--no-input", "project_name=Billing API", "port=8080", "use_kubernetes=yes")
    [replay_file] = (tmp_path / ".cookiecutter_replay").iterdir()
    copied = tmp_path / "answers.json"
    copied.write_bytes(replay_file.read_bytes())
    again = generate("replay", "--replay")
    from_file = generate("replay-file", "--replay-file", str(copied))
    assert first.name == again.name == from_file.name == "billing-api"
    assert tree(first) == tree(again) == tree(from_file)
    assert (first / "k8s").is_dir()
