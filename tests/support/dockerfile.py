"""A small Dockerfile reader for property tests: instructions with their preceding comments."""

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # continuation lines joined, flags included
    comment: str  # the comment lines right above it, joined

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT (after any flags)."""
        return json.loads(self.args[self.args.index("[") :])


def parse(path: Path) -> list[Instruction]:
    instructions, comment, pending = [], [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
            continue
        if not stripped:
            if not pending:
                comment = []
            continue
        pending += (
            " " + stripped.removesuffix("\\").strip() if pending else stripped.removesuffix("\\").strip()
        )
        if stripped.endswith("\\"):
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), " ".join(comment)))
        pending, comment = "", []
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each list starts with its FROM)."""
    groups: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            groups.append([])
        groups[-1].append(instruction)
    return groups


def from_image(instruction: Instruction) -> str:
    """The image (or stage) a FROM instruction names, after any --flags."""
    return next(word for word in re.split(r"\s+", instruction.args) if not word.startswith("--"))


def lineage(instructions: list[Instruction], target: str | None = None) -> list[Instruction]:
    """The instructions that make the image of stage `target` (default: the last one), parents first.

    A stage FROM another stage's name inherits that stage's instructions.
    """
    groups = stages(instructions)
    names = {re.split(r"\s+", g[0].args)[-1].lower(): g for g in groups if " as " in g[0].args.lower()}
    group = names[target] if target else groups[-1]
    parent = from_image(group[0]).lower()
    return [*lineage(instructions, parent), *group] if parent in names else group


def base_image(path: Path, target: str | None = None) -> str:
    """The image stage `target` (default: the last one) is built on: its lineage's first FROM."""
    return from_image(lineage(parse(path), target)[0])
