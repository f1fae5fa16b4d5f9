"""The `database` option under Docker Compose (marker `docker`): the data path for real.

`docker compose up --wait` brings up the app, the migrations and the database; the example resource
writes and reads back on the migrated schema (and Alembic finds the models match it); the app
reaches the database by its service name on the project network, and the host does not reach it;
the password is in no container's configuration; the database server runs unprivileged. The data
survives `down` and `up` (the named volume outlives the containers) and goes with `down --volumes`.
With the database down the app starts, is live and not ready, and becomes ready when the database
is back. Dev mode (`make dev`'s service) uses the same database and applies the working copy's
migrations; the README's next-migration commands write, tidy and apply one. Migrations started
together (Kubernetes' init containers) run one at a time: both succeed, the second waits for the
first and finds nothing to do; an image without the database's revision (a rollback past a
migration) stops at its migrations. The image is built once (database_service); the tests rely on
the official postgres image's documented contract only.
"""

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.compose import Stack
from tests.support.docker import docker
from tests.support.polling import request_json, wait_until
from tests.support.project import run

pytestmark = pytest.mark.docker


@pytest.fixture
def stack(database_service) -> Iterator[Stack]:
    """A Compose project, not started; everything it made goes afterwards."""
    stack = Stack(database_service, "db")
    try:
        yield stack
    finally:
        stack.remove()


@pytest.fixture(scope="module")
def running(database_service) -> Iterator[Stack]:
    """A Compose project up and healthy (`up --wait`), shared by the tests that only look at it."""
    started = time.monotonic()
    with Stack(database_service, "db").up() as stack:
        print(f"\ncompose up --wait with the database: {time.monotonic() - started:.1f} s")
        yield stack


def test_the_app_writes_and_reads_items_on_a_schema_that_matches_the_models(running):
    assert request_json("GET", running.url("/ready")) == (200, {"status": "ok"})
    status, item = request_json("POST", running.url("/items"), {"name": "first"})
    assert status == 201 and item["name"] == "first", item
    assert request_json("GET", running.url(f"/items/{item['id']}")) == (200, item)
    # The migrations match the models: Alembic finds nothing to add.
    check = running.compose("run", "--rm", "migrate", "alembic", "-c", "app/alembic.ini", "check")
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_the_app_reaches_the_database_by_name_on_the_project_network_and_the_host_does_not(running):
    # One network of the project's own holds both; the database publishes nothing on the host.
    network = json.loads(docker("network", "inspect", f"{running.project}_backend").stdout)[0]
    on_network = {c["Name"] for c in network["Containers"].values()}
    app, db = running.container("app"), running.container("db")
    assert {app["Name"].lstrip("/"), db["Name"].lstrip("/")} <= on_network
    assert not db["HostConfig"]["PortBindings"]
    ports = db["NetworkSettings"]["Ports"]
    assert all(not bindings for bindings in ports.values()), ports
    # `docker compose port` answers ":0" (or fails) for a port published nowhere.
    published = run(
        ["docker", "compose", "--project-name", running.project, "port", "db", "5432"],
        cwd=running.root,
        env=running.env,
    )
    assert published.returncode != 0 or published.stdout.strip() in {"", ":0"}, published.stdout
    # The app's DATABASE_URL names the host `db`: the service's name on that network.
    names = db["NetworkSettings"]["Networks"][f"{running.project}_backend"]
    assert "db" in (names.get("DNSNames") or []) + (names.get("Aliases") or []), names


def test_the_password_is_in_no_container_configuration(running):
    """Only in the secret's file."""
    password = (running.root / "db-password.txt").read_text().strip()
    for service in ("app", "db"):
        container = running.container(service)
        assert password not in json.dumps(container["Config"]), container["Name"]


def test_the_database_server_runs_unprivileged(running):
    """Every process of the db container as the image's `postgres` user, not root."""
    db = running.container("db")
    postgres_uid = docker("exec", db["Id"], "id", "-u", "postgres").stdout.strip()
    uids = [line.split()[1] for line in docker("top", db["Id"], "-o", "pid,uid").stdout.splitlines()[1:]]
    assert postgres_uid != "0" and uids and set(uids) == {postgres_uid}, (postgres_uid, uids)


def test_the_data_survives_down_and_up_and_goes_with_down_volumes(stack):
    stack.compose("up", "--wait")
    status, item = request_json("POST", stack.url("/items"), {"name": "first"})
    assert status == 201, item
    item_url = stack.url(f"/items/{item['id']}")
    assert request_json("GET", item_url) == (200, item)
    # `down` keeps the named volume, so the data outlives the containers...
    stack.compose("down")
    assert stack.volume_exists() and not stack.compose("ps", "--all", "--quiet").stdout.split()
    stack.compose("up", "--wait")
    assert request_json("GET", item_url) == (200, item), "the data did not survive down/up"
    # ...and `down --volumes` removes it, and the data with it.
    stack.compose("down", "--volumes")
    assert not stack.volume_exists()
    stack.compose("up", "--wait")
    assert request_json("GET", item_url)[0] == 404


def test_the_app_started_without_its_database_is_live_not_ready_then_ready_and_writes(stack):
    stack.compose("up", "--wait")
    stack.compose("stop", "db")
    # The app (re)started while the database is down: it starts and its health check passes.
    stack.compose("up", "--detach", "--no-deps", "--force-recreate", "--wait", "app")
    assert stack.container("db")["State"]["Running"] is False
    assert request_json("GET", stack.url("/health")) == (200, {"status": "ok"})
    assert request_json("GET", stack.url("/ready")) == (503, {"status": "unavailable"})
    assert stack.container("app")["State"]["Health"]["Status"] == "healthy"
    stack.compose("start", "db")
    ready = (200, {"status": "ok"})
    wait_until(
        "/ready once the database is back", lambda: request_json("GET", stack.url("/ready")), ready.__eq__, 60
    )
    status, item = request_json("POST", stack.url("/items"), {"name": "after the outage"})
    assert status == 201, item


# A migration a developer adds to the working copy while dev mode runs.
ADDED_MIGRATION = """\
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
"""


def test_dev_mode_serves_on_the_database_with_the_working_copy_s_migrations(stack):
    """`make dev`'s service (`up --watch` less the watch): it starts after the database alone (no
    `app`, no `migrate`, no production image), serves /items, and a restart applies a migration
    added to the mounted app/ after its image was built."""

    def ready() -> tuple[int, object]:
        return request_json("GET", stack.url("/ready"))

    stack.compose("--profile", "dev", "up", "--build", "--wait", "dev")
    wait_until("dev's /ready", ready, (200, {"status": "ok"}).__eq__, 120)
    services = stack.compose("--profile", "dev", "ps", "--all", "--format", "{{.Service}}").stdout.split()
    assert sorted(services) == ["db", "dev"]
    status, item = request_json("POST", stack.url("/items"), {"name": "in dev mode"})
    assert status == 201 and request_json("GET", stack.url(f"/items/{item['id']}")) == (200, item)
    added = stack.root / "app" / "alembic" / "versions" / "20260301_0003_dev_mode.py"
    added.write_text(ADDED_MIGRATION)
    try:
        stack.compose("restart", "dev")
        wait_until("dev's /ready after the restart", ready, (200, {"status": "ok"}).__eq__, 120)
        current = stack.compose("exec", "dev", "alembic", "-c", "app/alembic.ini", "current")
        assert "0003 (head)" in current.stdout, current.stdout + current.stderr
    finally:
        added.unlink()


def test_the_readme_s_next_migration_is_written_tidied_and_applied_as_it_says(stack, postgresql_venv):
    """After a model change: the README's `revision --autogenerate` line, run as written, writes a
    migration that adds the column, owned by the caller; the README's ruff line leaves it lint-clean;
    `up --build` (what `make up` runs) applies it and Alembic finds the schema matches the models."""
    readme = (stack.root / "README.md").read_text().splitlines()
    (command,) = [line for line in readme if line.startswith("docker compose") and "--autogenerate" in line]
    (tidy,) = {m for line in readme for m in re.findall(r"`(\.venv/bin/ruff check --fix app[^`]*)`", line)}
    items, versions = stack.root / "app" / "items.py", stack.root / "app" / "alembic" / "versions"
    model, before = items.read_text(), set(versions.iterdir())
    field = "    name: Mapped[str] = mapped_column(String(200))\n"
    assert field in model
    stack.compose("up", "--wait")
    try:
        column = "    note: Mapped[str | None] = mapped_column(String(200))\n"
        items.write_text(model.replace(field, field + column))
        env = {**stack.env, "COMPOSE_PROJECT_NAME": stack.project}
        written = run(["bash", "-c", command], cwd=stack.root, env=env, timeout=300)
        assert written.returncode == 0, written.stdout + written.stderr[-3000:]
        (added,) = [path for path in set(versions.iterdir()) - before if path.suffix == ".py"]
        assert "add_column" in added.read_text() and "note" in added.read_text()
        assert added.stat().st_uid == os.getuid()
        tidy = tidy.replace(".venv/bin/", f"{postgresql_venv}/bin/")
        tidied = run(["bash", "-c", f"{tidy} && {postgresql_venv}/bin/ruff check app"], cwd=stack.root)
        assert tidied.returncode == 0, tidied.stdout + tidied.stderr
        stack.env["TAG"] = "db-next"  # the rebuilt image: its own tag, removed with the project's images
        stack.compose("up", "--build", "--wait")
        check = stack.compose("run", "--rm", "migrate", "alembic", "-c", "app/alembic.ini", "check")
        assert "No new upgrade operations detected" in check.stdout + check.stderr
    finally:
        items.write_text(model)
        for path in set(versions.iterdir()) - before:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def test_migrations_started_together_run_one_at_a_time_and_both_succeed(running):
    """Two `alembic upgrade head` at once on an empty database, as the init containers of pods
    started together run them: both wait for env.py's advisory lock (held here first, so that they
    overlap for sure), then one migrates while the other waits, and finds the schema at head."""
    env_py = (running.root / "app" / "alembic" / "env.py").read_text()
    (key,) = re.findall(r"^MIGRATIONS_LOCK = (0x[0-9a-fA-F]+|\d+)$", env_py, re.M)
    db = running.container("db")["Id"]

    def sql(statement: str, database: str = "app") -> str:
        return docker("exec", db, "psql", "-U", "app", "-d", database, "-qAtc", statement).stdout.strip()

    sql("CREATE DATABASE race")
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    holder = subprocess.Popen(
        ["docker", "exec", "-i", db, "psql", "-U", "app", "-d", "race", "-qAt"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    migrate = [
        "docker", "compose", "--project-name", running.project, "run", "--rm", "--no-deps",
        "--env", "DATABASE_URL=postgresql+psycopg://app@db:5432/race", "migrate",
    ]  # fmt: skip
    upgrades = []
    try:
        holder.stdin.write(f"SELECT pg_advisory_lock({key}); SELECT 'held';\n")
        holder.stdin.flush()
        while (line := holder.stdout.readline()) and line.strip() != "held":
            pass
        assert line.strip() == "held", "psql ended before it held the lock"
        output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        for _ in range(2):
            upgrades.append(subprocess.Popen(migrate, cwd=running.root, env=running.env, **output))
        # (waiting for the lock, each migration's exit code or None while it runs)
        seen = wait_until(
            "both migrations waiting for the lock",
            lambda: (sql(waiting), [upgrade.poll() for upgrade in upgrades]),
            lambda seen: seen[0] == "2" or seen[1] != [None, None],
            60,
        )
        assert seen == ("2", [None, None]), "\n".join(upgrade.communicate()[0] for upgrade in upgrades)
        holder.stdin.write(f"SELECT pg_advisory_unlock({key});\n\\q\n")
        holder.stdin.close()
        outputs = [upgrade.communicate(timeout=120)[0] for upgrade in upgrades]
    finally:
        for process in (holder, *upgrades):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert [upgrade.returncode for upgrade in upgrades] == [0, 0], outputs
    # One ran the migrations, the other found them done.
    assert sorted("Running upgrade" in output for output in outputs) == [False, True], outputs
    alembic = ["alembic", "-c", "app/alembic.ini"]
    heads = running.compose("run", "--rm", "--no-deps", "migrate", *alembic, "heads")
    assert sql("SELECT version_num FROM alembic_version", "race") == heads.stdout.split()[0]
    sql("DROP DATABASE race")


def test_an_image_without_the_database_s_revision_stops_at_its_migrations(running):
    """A rollback past a migration: the older image's `alembic upgrade head` fails with Alembic's
    "Can't locate revision" (the README's Kubernetes section says what to do), rather than serve."""
    db = running.container("db")["Id"]

    def sql(statement: str, database: str = "app") -> str:
        return docker("exec", db, "psql", "-U", "app", "-d", database, "-qAtc", statement).stdout.strip()

    migrate = ["run", "--rm", "--no-deps", "--env", "DATABASE_URL=postgresql+psycopg://app@db:5432/ahead"]
    sql("CREATE DATABASE ahead")
    running.compose(*migrate, "migrate")
    # The database as a newer image left it: at a revision this image does not have.
    sql("UPDATE alembic_version SET version_num = 'newer'", "ahead")
    command = ["docker", "compose", "--project-name", running.project, *migrate, "migrate"]
    older = run(command, cwd=running.root, env=running.env, timeout=120)
    output = older.stdout + older.stderr
    assert older.returncode != 0, output[-3000:]
    assert "Can't locate revision identified by 'newer'" in output, output[-3000:]
    sql("DROP DATABASE ahead")
