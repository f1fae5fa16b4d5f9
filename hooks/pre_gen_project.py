"""Validate every answer before cookiecutter writes anything.

Standard library only: it runs under whatever Python runs cookiecutter. A bad answer prints one
`ERROR:` line naming the field, the value and what is allowed, and exits 1; cookiecutter then
writes nothing. The logic lives in small functions that the template's tests import.
"""

import json
import re
import sys

# The answers, and cookiecutter.json as offered (its choice lists), rendered by cookiecutter as JSON
# literals; a raw string keeps their escapes intact.
CONTEXT_JSON = r"""{{ cookiecutter | tojson }}"""
OFFERED_JSON = r"""{{ _cookiecutter | tojson }}"""

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
MAX_WORKERS = 64


class InvalidAnswer(ValueError):
    """An answer that cannot be used; str() is the one-line message for the user."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        super().__init__(f"{field} {value!r} is not valid: {allowed}")


def check_text(field: str, value: str, *, required: bool = True) -> None:
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


def check_slug(value: str) -> None:
    if not SLUG_RE.fullmatch(value) or len(value) > SLUG_MAX:
        raise InvalidAnswer(
            "project_slug",
            value,
            "lowercase letters, digits and single dashes, starting with a letter, "
            f"at most {SLUG_MAX} characters",
        )


def check_int(field: str, value: str, low: int, high: int) -> None:
    if not re.fullmatch(r"[0-9]+", str(value)) or not low <= int(value) <= high:
        raise InvalidAnswer(field, value, f"a whole number from {low} to {high}")


def check_choice(field: str, value: object, offered: list) -> None:
    if value not in offered:
        raise InvalidAnswer(field, value, "one of " + ", ".join(map(str, offered)))


def check_registry_prefix(value: str) -> None:
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


def validate(context: dict, offered: dict) -> None:
    """Raise InvalidAnswer for the first answer in context that cannot be used.

    offered is cookiecutter.json as the user was asked it: a list for each choice question.
    """
    check_text("project_name", context["project_name"])
    check_slug(context["project_slug"])
    check_text("description", context["description"], required=False)
    check_text("author", context["author"], required=False)
    for field in ("python_version", "base_image_flavour", "debian_release", "installer", "ci"):
        check_choice(field, context[field], offered[field])
    check_registry_prefix(context["registry_prefix"])
    check_int("port", context["port"], 1, 65535)
    check_int("workers", context["workers"], 1, MAX_WORKERS)
    for field in ("use_compose", "use_kubernetes"):
        check_bool(field, context[field])


def main() -> int:
    try:
        validate(json.loads(CONTEXT_JSON), json.loads(OFFERED_JSON))
    except InvalidAnswer as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
