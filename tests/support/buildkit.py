"""BuildKit's plain progress output (`docker buildx build --progress plain`), read.

A step is `#ID [STAGE N/M] TEXT`; BuildKit leaves the stage out (`#ID [N/M] TEXT`) for a Dockerfile
with a single unnamed stage, and a step that came from the layer cache has a line `#ID CACHED`.
"""

import re
from dataclasses import dataclass

STEP = re.compile(r"^#(\d+) \[(?:(\S+) )?(\d+)/\d+\] (.+)$", re.MULTILINE)
CACHED = re.compile(r"^#(\d+) CACHED$", re.MULTILINE)
# The step that copies the application code: the generated service's package, or a single main.py.
CODE_COPY = re.compile(r"^COPY\b.*(main\.py|app/)")


@dataclass(frozen=True)
class Step:
    id: str
    stage: str  # "" where BuildKit printed no stage name
    index: int  # N of N/M within its stage (1 is the FROM)
    text: str  # the instruction as BuildKit shows it: `RUN ...`, `COPY app/ ./app/`
    cached: bool


def steps(progress: str) -> list[Step]:
    """Every Dockerfile step in a build's plain progress log, in the order first shown."""
    cached = set(CACHED.findall(progress))
    found: dict[str, Step] = {}
    for step_id, stage, index, text in STEP.findall(progress):
        if step_id not in found:
            found[step_id] = Step(step_id, stage or "", int(index), text.strip(), step_id in cached)
    return list(found.values())


@dataclass(frozen=True)
class DependencyLayers:
    """A rebuild's steps before the code copy: the ones a code-only change must take from cache."""

    code_steps: list[Step]  # the `COPY app/` (or `COPY main.py`) steps
    dependency_steps: list[Step]  # every non-FROM step of every stage, but in the code's stage only
    # those before its code copy

    @property
    def rebuilt(self) -> list[str]:
        """The dependency steps that did not come from the cache (their text)."""
        return [step.text for step in self.dependency_steps if not step.cached]

    @property
    def cached(self) -> bool:
        """There are dependency steps, and every one of them came from the cache."""
        return bool(self.dependency_steps) and not self.rebuilt


def dependency_layers(progress: str) -> DependencyLayers:
    """The dependency steps of a rebuild after a code-only change, from its plain progress log.

    ValueError if the log shows no code copy step (not a build of such a Dockerfile, or no plain log).
    """
    all_steps = steps(progress)
    code = [step for step in all_steps if CODE_COPY.match(step.text)]
    if not code:
        raise ValueError("no `COPY ... main.py` or `COPY app/` step in the build log")
    code_stage, code_index = code[0].stage, code[0].index
    dependencies = [
        step
        for step in all_steps
        if not step.text.startswith("FROM") and not (step.stage == code_stage and step.index >= code_index)
    ]
    return DependencyLayers(code, dependencies)
