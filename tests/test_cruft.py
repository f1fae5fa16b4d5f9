"""Tier 2: the update path a generated service takes with cruft.

A service is created with `cruft create` from one commit of a git copy of the template; the template
then changes (an edited Dockerfile line, a new file, a changed default) while the team edits a file of
its own; `cruft update` brings the template's change and keeps the team's edit.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.project import TEMPLATE, tool

PROJECT_DIR = "{{cookiecutter.__project_dir}}"


def run(*command: str, cwd: Path, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(
        HOME=str(home),
        FASTAPI_DOCKER_PREFLIGHT="off",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        GIT_CONFIG_GLOBAL=str(home / "gitconfig"),
    )
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def commit_all(repo: Path, home: Path, message: str) -> None:
    run("git", "add", "-A", cwd=repo, home=home)
    run("git", "commit", "-q", "-m", message, cwd=repo, home=home)


@pytest.fixture
def template_repo(tmp_path) -> tuple[Path, Path]:
    """(a git repository holding the template's current files, an isolated HOME)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    repo = tmp_path / "template"
    listed = run("git", "ls-files", "-co", "--exclude-standard", cwd=TEMPLATE, home=home).stdout.split("\n")
    for name in filter(None, listed):
        if (TEMPLATE / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TEMPLATE / name, repo / name)
    run("git", "init", "-q", cwd=repo, home=home)
    commit_all(repo, home, "template v1")
    run("git", "tag", "v1.0.0", cwd=repo, home=home)
    return repo, home


def test_create_check_diff_and_update(template_repo, tmp_path):
    repo, home = template_repo
    cruft = tool("cruft")
    out = tmp_path / "out"
    run(
        cruft,
        "create",
        "--no-input",
        "--checkout",
        "v1.0.0",
        "--output-dir",
        str(out),
        str(repo),
        cwd=tmp_path,
        home=home,
    )
    service = out / "my-service"
    assert (service / ".cruft.json").is_file() and (service / "Dockerfile").is_file()
    run("git", "init", "-q", cwd=service, home=home)
    commit_all(service, home, "generated")
    run(cruft, "check", cwd=service, home=home)
    run(cruft, "diff", "--exit-code", cwd=service, home=home)

    # The template changes: a Dockerfile line, a new file, a changed default.
    dockerfile = repo / PROJECT_DIR / "Dockerfile"
    first = dockerfile.read_text().splitlines()[0]
    dockerfile.write_text(dockerfile.read_text().replace(first, first + " (template v2)", 1))
    (repo / PROJECT_DIR / "CHANGELOG.md").write_text("# {{ cookiecutter.project_name }}\n")
    cookiecutter_json = repo / "cookiecutter.json"
    cookiecutter_json.write_text(cookiecutter_json.read_text().replace('"workers": "1"', '"workers": "2"'))
    commit_all(repo, home, "template v2")
    assert run(cruft, "check", cwd=service, home=home, check=False).returncode != 0

    # Meanwhile the team edits its own app.
    main = service / "app" / "main.py"
    main.write_text(main.read_text() + "\n\n# team edit\n")
    commit_all(service, home, "team edit")

    run(cruft, "update", "--skip-apply-ask", "--checkout", "main", cwd=service, home=home)
    assert (service / "Dockerfile").read_text().splitlines()[0].endswith("here. (template v2)")
    assert (service / "CHANGELOG.md").read_text() == "# My Service\n"
    assert main.read_text().endswith("# team edit\n")
    # The service keeps its answer; the new default is for new services.
    assert "WEB_CONCURRENCY=1" in (service / "Dockerfile").read_text()
    # Pruned option files stay pruned (the post-gen hook re-runs on the update's renders).
    assert not (service / "k8s").exists() and not (service / ".gitlab-ci.yml").exists()
    run(cruft, "check", "--checkout", "main", cwd=service, home=home)
    assert not list(service.rglob("*.rej"))
