"""Tier 2: hostile answers, given on the real `cookiecutter` command line as a user would.

Each ends either in a clean refusal (exit 1, one `ERROR:` line from our hook naming the field, the
value and what is allowed, and no directory left behind) or in a project that renders correctly
(the render tier's checks run on those through test_render.VARIANTS; here we check the values
made it through intact).
"""

import pytest
from conftest import cookiecutter_cli

REFUSED = [
    ("project_slug", "My-Service"),
    ("project_slug", "1service"),
    ("project_slug", "my_service"),
    ("project_slug", "../escape"),
    ("project_slug", "a--b"),
    ("project_slug", "x" * 64),
    ("project_slug", ""),
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
    # A slug is derived from the name; the name's own tests keep the default slug valid.
    extra = ["project_slug=ok"] if field == "project_name" else []
    result = cookiecutter_cli(tmp_path, f"{field}={value}", *extra, FASTAPI_DOCKER_PREFLIGHT="off")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    ours = errors[0]
    assert ours.startswith(f"ERROR: {field} "), result.stderr
    assert "is not valid: " in ours
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
    ],
)
def test_unusual_names_render_with_a_derived_slug(tmp_path, name, slug):
    result = cookiecutter_cli(tmp_path, f"project_name={name}", FASTAPI_DOCKER_PREFLIGHT="off")
    assert result.returncode == 0, result.stderr
    main = (tmp_path / "out" / slug / "app" / "main.py").read_text()
    assert f'title="{name}"' in main
