"""Import the hooks as modules, rendered the way cookiecutter renders them before running them."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from cookiecutter.environment import StrictEnvironment
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config

from tests.support.project import TEMPLATE


def default_context(**answers: object) -> dict:
    """The full rendering context of `cookiecutter --no-input` with these answers."""
    context = generate_context(context_file=str(TEMPLATE / "cookiecutter.json"), extra_context=answers)
    context["cookiecutter"] = prompt_for_config(context, no_input=True)
    return context


def load_hook(name: str, tmp_path: Path, **answers: object) -> ModuleType:
    """hooks/<name>.py rendered with these answers into tmp_path and imported (as hook_<name>)."""
    context = default_context(**answers)
    source = (TEMPLATE / "hooks" / f"{name}.py").read_text()
    rendered = StrictEnvironment(context=context).from_string(source).render(**context)
    path = tmp_path / f"{name}.py"
    path.write_text(rendered)
    spec = importlib.util.spec_from_file_location(f"hook_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
