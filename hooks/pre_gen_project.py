"""Validate every answer before cookiecutter writes anything.

Standard library only: it runs under whatever Python runs cookiecutter. Every bad answer prints
one `ERROR:` line naming the field, the value and what is allowed (all of them in one run), and the
hook exits 1; cookiecutter then removes the project directory. The logic lives in small functions
that the template's tests import.

It needs nothing that only cookiecutter's CLI passes: cruft, pytest-cookies, the API and --replay
render it the same way. The project directory is named by cookiecutter.json's __project_dir, which
is the slug when the slug is valid and a throw-away name otherwise, so this hook always runs.
"""

import json
import re
import sys
from pathlib import Path

# The answers, rendered by cookiecutter as a JSON literal; a raw string keeps its escapes intact.
CONTEXT_JSON = r"""{{ cookiecutter | tojson }}"""
# The template's directory, where cookiecutter.json offers the choices. cookiecutter (CLI, API,
# --replay) passes it; cruft does not, but there cookiecutter itself has refused any answer that
# is not offered before rendering this hook.
REPO_DIR_JSON = r""" {{ cookiecutter.get("_repo_dir", "") | tojson }} """  # spaces: not a 4th quote
# The questions in cookiecutter.json's order (tojson sorts a mapping's keys, a list keeps its order).
QUESTIONS_JSON = r"""{{ cookiecutter._options | list | tojson }}"""
# Whether cookiecutter's slugify finds anything in the name to derive the default slug from.
NAME_HAS_SLUG_JSON = r"""{{ (cookiecutter.project_name | string | slugify != "") | tojson }}"""

# Lowercase letters, digits and single dashes, starting with a letter: at once a directory name, a
# Docker image and compose project name, and a Kubernetes (RFC 1035) name, which caps it at 63.
SLUG_RE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
SLUG_MAX = 63
# A registry host (with an optional port) and optional path, as it precedes "python:<tag>".
REGISTRY_RE = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
# Free text lands inside double-quoted strings of Python, YAML, TOML and Dockerfile LABELs:
# these characters would end or escape such a string, expand a variable, or start Jinja
# (the Jinja openers are spelled in two halves because cookiecutter renders this file).
FORBIDDEN_TEXT = ('"', "\\", "$", "`", *("{" + c for c in ("{", "%", "#")))
TEXT_MAX = 200


class InvalidAnswer(ValueError):
    """An answer that cannot be used; str() is the one-line message for the user."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        super().__init__(f"{field} {value!r} is not valid: {allowed}")


def check_text(field: str, value: object, *, required: bool = True) -> None:
    if not isinstance(value, str):
        raise InvalidAnswer(field, value, "text")
    if required and not value.strip():
        raise InvalidAnswer(field, value, "it must not be empty")
    if len(value) > TEXT_MAX:
        raise InvalidAnswer(field, value, f"at most {TEXT_MAX} characters")
    if value != value.strip():
        raise InvalidAnswer(field, value, "no leading or trailing spaces")
    if any(not ch.isprintable() for ch in value):
        raise InvalidAnswer(
            field, value, "one line of printable text (no newlines, tabs or control characters)"
        )
    for token in FORBIDDEN_TEXT:
        if token in value:
            raise InvalidAnswer(field, value, "text without " + " ".join(FORBIDDEN_TEXT))


def check_slug(value: object, name_has_slug: bool = True) -> None:
    if value == "" and not name_has_slug:
        return  # reported as the name's error (check_text or check_name_has_slug)
    if not isinstance(value, str) or not SLUG_RE.fullmatch(value) or len(value) > SLUG_MAX:
        raise InvalidAnswer(
            "project_slug",
            value,
            "lowercase letters, digits and single dashes, starting with a letter, "
            f"at most {SLUG_MAX} characters",
        )


def check_name_has_slug(name: object, slug: object, name_has_slug: bool) -> None:
    if slug == "" and not name_has_slug and isinstance(name, str) and name.strip():
        raise InvalidAnswer(
            "project_name",
            name,
            "it needs a letter or digit to derive project_slug from (or answer project_slug)",
        )


def check_int(field: str, value: object, low: int, high: int) -> None:
    if not re.fullmatch(r"[0-9]+", str(value)) or not low <= int(value) <= high:
        raise InvalidAnswer(field, value, f"a whole number from {low} to {high}")


def check_choice(field: str, value: object, offered: list) -> None:
    if value not in offered:
        raise InvalidAnswer(field, value, "one of " + ", ".join(map(str, offered)))


def check_registry_prefix(value: object) -> None:
    if not isinstance(value, str):
        raise InvalidAnswer("registry_prefix", value, "text")
    if value.split("/")[0].startswith("localhost:"):
        # Docker accepts it, but hadolint (2.x) cannot parse the FROM line, failing the lint.
        raise InvalidAnswer("registry_prefix", value, "write localhost:PORT as 127.0.0.1:PORT")
    if value and not REGISTRY_RE.fullmatch(value):
        raise InvalidAnswer(
            "registry_prefix",
            value,
            "empty, or a registry host with optional :port and /path, lowercase, no scheme and no "
            "trailing slash (e.g. registry.example.com/dockerhub)",
        )


def check_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidAnswer(field, value, "true or false")


def offered_choices(repo_dir: str) -> dict:
    """cookiecutter.json's choice lists, or {} when the template's directory is not known."""
    path = Path(repo_dir, "cookiecutter.json") if repo_dir else None
    if path is None or not path.is_file():
        return {}
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if isinstance(v, list)}


def check_answer(field: str, context: dict, offered: dict, name_has_slug: bool) -> None:
    """The check that cookiecutter.json's `_options` names for field, on its answer in context."""
    rule, value = context["_options"][field], context[field]
    kind = rule.get("check")
    if kind == "text":
        check_text(field, value, required=not rule.get("optional", False))
    elif kind == "slug":
        check_name_has_slug(context["project_name"], value, name_has_slug)
        check_slug(value, name_has_slug)
    elif kind == "choice":
        if field in offered:
            check_choice(field, value, offered[field])
    elif kind == "registry_prefix":
        check_registry_prefix(value)
    elif kind == "whole_number":
        check_int(field, value, rule["min"], rule["max"])
    elif kind == "bool":
        check_bool(field, value)
    else:
        raise InvalidAnswer(
            field, value, f"cookiecutter.json's _options has no known check for it ({kind!r})"
        )
    check_requires(field, context)


def check_requires(field: str, context: dict) -> None:
    """An answer that holds only with another question's answer (`_options`' "requires")."""
    value = context[field]
    key = json.dumps(value) if isinstance(value, bool) else str(value)
    needed = context["_options"][field].get("requires", {}).get(key)
    if needed and str(context[needed["field"]]) != needed["value"]:
        other = needed["field"]
        raise InvalidAnswer(
            field,
            value,
            f"it needs {other} {needed['value']!r}, not {context[other]!r} ({needed['why']})",
        )


def validate(context: dict, offered: dict, name_has_slug: bool = True) -> list[InvalidAnswer]:
    """Every answer in context that cannot be used, in cookiecutter.json's order.

    Each question has its rule in cookiecutter.json's `_options` (a test fails for a question
    without one); offered is cookiecutter.json's choice lists ({}: already enforced by cookiecutter).
    """
    errors = []
    for field in context["_options"]:
        try:
            check_answer(field, context, offered, name_has_slug)
        except InvalidAnswer as error:
            errors.append(error)
    return errors


def main() -> int:
    context = json.loads(CONTEXT_JSON)
    context["_options"] = {question: context["_options"][question] for question in json.loads(QUESTIONS_JSON)}
    errors = validate(context, offered_choices(json.loads(REPO_DIR_JSON)), json.loads(NAME_HAS_SLUG_JSON))
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
