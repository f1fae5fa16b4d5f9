"""Faults injected into the running `postgresql` stack (marker `docker`): what production sends.

One compose stack of the database service (database_service's image, a real PostgreSQL), with a
small pool and short database timeouts set the way a team sets them (environment variables in an
override file), so that the faults show in seconds:

- the database killed under a write load, then started again: every write answered 201 is in the
  database afterwards (by id and in the list), every other answer is 503 with Retry-After (never
  500), the app logs the failures with no traceback, at most one line per failed request and none
  of the request data; the recovery time (database start to first 201) is printed;
- a saturated pool (the `items` table locked by another session, more concurrent writes than the
  pool holds): each answers 503 with Retry-After within a bound derived from the settings, and
  /ready answers 200 meanwhile (it does not borrow from that pool);
- an oversized body (50 MB, with and without Content-Length): 413, and the process's peak memory
  (VmHWM: what a body read whole would raise) does not grow by anything like the body; the 413 is
  a small JSON answer with its request id, as every error answer;
- a keep-alive connection idle for longer than a load balancer's window is still open and reused.
"""

import http.client
import json
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.support.compose import Stack
from tests.support.docker import docker
from tests.support.polling import Answer, post_streamed, request, wait_until

pytestmark = pytest.mark.docker

POOL_SIZE, MAX_OVERFLOW = 2, 0
# Seconds. The statements wait on a lock longer than requests wait for the pool: the pool stays
# saturated while the others time out.
POOL_TIMEOUT, CONNECT_TIMEOUT, STATEMENT_TIMEOUT = 2, 2, 5
MAX_BODY_SIZE = 1024 * 1024
SETTINGS = {
    "LOG_FORMAT": "json",  # one object per line: the access lines are told apart by their logger
    "DATABASE_POOL_SIZE": str(POOL_SIZE),
    "DATABASE_MAX_OVERFLOW": str(MAX_OVERFLOW),
    "DATABASE_POOL_TIMEOUT": str(POOL_TIMEOUT),
    "DATABASE_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
    "DATABASE_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
    "MAX_BODY_SIZE": str(MAX_BODY_SIZE),
}
# The longest a request may wait on the database by these settings (a pooled connection, then a
# new connection to the server, then its statement), plus slack for a busy machine: far from the
# 30 s and more of SQLAlchemy's and the driver's defaults.
WAIT_BOUND = POOL_TIMEOUT + CONNECT_TIMEOUT + STATEMENT_TIMEOUT + 5
WRITERS = 8  # concurrent writers of the outage's load: more than the pool holds
OUTAGE = 5  # seconds the database stays down, at least
BALANCER_IDLE = 60  # seconds: AWS ALB's default idle timeout (it reuses idle upstream connections)


@pytest.fixture(scope="module")
def stack(database_service) -> Iterator[Stack]:
    with Stack(database_service, "db", SETTINGS).up() as stack:
        yield stack


def ready(stack: Stack) -> Answer:
    return request(stack.port, "GET", "/ready")


def wait_ready(stack: Stack, what: str, timeout: float = 120) -> None:
    wait_until(what, lambda: ready(stack), lambda answer: answer.status == 200, timeout)


def psql(stack: Stack, sql: str) -> str:
    """One statement run by psql in the db container (local socket, as the image's superuser)."""
    db = stack.container("db")["Id"]
    return docker("exec", db, "psql", "-U", "app", "-d", "app", "-tAc", sql).stdout.strip()


@dataclass
class Write:
    name: str
    status: int | None = None  # None: no answer (the error says why)
    retry_after: str | None = None
    body: bytes = b""
    error: str = ""
    finished: float = 0.0  # time.monotonic()


def write(stack: Stack, name: str) -> Write:
    record = Write(name)
    try:
        answer = request(
            stack.port,
            "POST",
            "/items",
            json.dumps({"name": name}).encode(),
            {"Content-Type": "application/json"},
            timeout=30,
        )
        record.status, record.body = answer.status, answer.body
        record.retry_after = answer.headers.get("Retry-After")
    except OSError as error:
        record.error = repr(error)
    record.finished = time.monotonic()
    return record


class Load:
    """WRITERS threads posting items with unique names, back to back, until stop()."""

    def __init__(self, stack: Stack, writers: int) -> None:
        self.writes: list[Write] = []
        self.token = uuid.uuid4().hex[:12]  # in every name: searched for in the logs
        self._stop = threading.Event()
        self._lock = threading.Lock()

        def writer(index: int) -> None:
            count = 0
            while not self._stop.is_set():
                count += 1
                done = write(stack, f"{self.token}-w{index}-{count}")
                with self._lock:
                    self.writes.append(done)

        self._threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(writers)]
        for thread in self._threads:
            thread.start()

    def snapshot(self) -> list[Write]:
        with self._lock:
            return list(self.writes)

    def stop(self) -> list[Write]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.snapshot()


def item_list(stack: Stack) -> dict[int, str]:
    """{id: name} of every item, read page by page through GET /items (`after` the last page's `next`)."""
    items: dict[int, str] = {}
    after = 0
    while True:
        answer = request(stack.port, "GET", f"/items?after={after}&limit=100")
        assert answer.status == 200, answer
        page = answer.json()
        items.update((item["id"], item["name"]) for item in page["items"])
        if page["next"] is None:
            return items
        after = page["next"]


def app_lines(stack: Stack, since: str) -> list[str]:
    return stack.logs("app", since=since).splitlines()


def is_access_line(line: str) -> bool:
    try:
        return "access" in json.loads(line).get("logger", "")
    except ValueError:
        return False  # not JSON: a traceback's lines, for one


def test_the_database_killed_under_a_write_load_loses_no_acknowledged_write_and_never_answers_500(stack):
    wait_ready(stack, "/ready before the outage")
    since = datetime.now(UTC).isoformat()
    load = Load(stack, WRITERS)
    try:
        acknowledged = lambda: sum(w.status == 201 for w in load.snapshot())  # noqa: E731
        wait_until("201s of the load before the outage", acknowledged, lambda n: n >= 2 * WRITERS, 60)
        stack.compose("kill", "db")
        killed = time.monotonic()
        # The outage lasts OUTAGE seconds at least, and until the load has met it: failed answers
        # to writes sent after the kill.
        wait_until(
            f"{OUTAGE} s of outage and failed writes in it (seconds, failed writes)",
            lambda: (
                time.monotonic() - killed,
                sum(w.finished > killed + 1 and w.status != 201 for w in load.snapshot()),
            ),
            lambda seen: seen[0] >= OUTAGE and seen[1] >= 3 * WRITERS,
            60,
        )
        assert stack.container("db")["State"]["Running"] is False, "the database came back by itself"
        outage = time.monotonic() - killed
        started = time.monotonic()
        stack.compose("start", "db")
        recovered = wait_until(
            "a 201 after the database's start",
            lambda: [w.finished for w in load.snapshot() if w.status == 201 and w.finished > started],
            bool,
            120,
        )
        recovery = min(recovered) - started
        wait_until(
            "more 201s after the recovery",
            lambda: sum(w.status == 201 and w.finished > started for w in load.snapshot()),
            lambda n: n >= 2 * WRITERS,
            60,
        )
    finally:
        writes = load.stop()
    statuses = {s: sum(w.status == s for w in writes) for s in {w.status for w in writes}}
    print(
        f"\ndatabase killed for {outage:.1f} s under {WRITERS} writers: {len(writes)} writes, "
        f"answers {statuses}; recovery (database start to first 201): {recovery:.2f} s"
    )
    unanswered = [w for w in writes if w.status not in {201, 503}]
    assert not unanswered, f"{len(unanswered)} answers neither 201 nor 503: {unanswered[:5]}"
    no_retry_after = [w for w in writes if w.status == 503 and not (w.retry_after or "").isdigit()]
    assert not no_retry_after, f"503 without a Retry-After in seconds: {no_retry_after[:5]}"

    # Every acknowledged write is there: by its id, and in the list.
    acknowledged_items = {
        item["id"]: item["name"] for item in (json.loads(w.body) for w in writes if w.status == 201)
    }
    assert {w.name for w in writes if w.status == 201} == set(acknowledged_items.values())
    for item_id, name in acknowledged_items.items():
        answer = request(stack.port, "GET", f"/items/{item_id}")
        assert (answer.status, answer.json()) == (200, {"id": item_id, "name": name}), answer
    listed = item_list(stack)
    missing = {i: n for i, n in acknowledged_items.items() if listed.get(i) != n}
    assert not missing, f"acknowledged writes missing from GET /items: {list(missing.items())[:5]}"

    # The app's logs: the failures said (one line at most per failed request), no traceback, no
    # request data.
    lines = app_lines(stack, since)
    text = "\n".join(lines)
    other = [line for line in lines if not is_access_line(line)]
    failures = len(writes) - statuses.get(201, 0)
    assert "Traceback" not in text, text[text.index("Traceback") - 200 :][:3000]
    assert load.token not in text, [line for line in lines if load.token in line][:3]
    assert 0 < len(other) <= failures, f"{len(other)} lines for {failures} failed requests:\n" + "\n".join(
        other[:20]
    )


class LockedTable:
    """The `items` table locked (ACCESS EXCLUSIVE) by another session: psql in the db container,
    its transaction kept open until release()."""

    def __init__(self, stack: Stack) -> None:
        command = ["docker", "compose", "--project-name", stack.project, *stack.files]
        command += ["exec", "-T", "db", "psql", "-U", "app", "-d", "app", "-v", "ON_ERROR_STOP=1"]
        self.psql = subprocess.Popen(
            command,
            cwd=stack.root,
            env=stack.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.psql.stdin.write("BEGIN;\nLOCK TABLE items IN ACCESS EXCLUSIVE MODE;\n")
        self.psql.stdin.flush()
        held = (
            "SELECT count(*) FROM pg_locks JOIN pg_class ON pg_class.oid = pg_locks.relation"
            " WHERE relname = 'items' AND mode = 'AccessExclusiveLock' AND granted"
        )
        wait_until("the lock on items", lambda: psql(stack, held), "1".__eq__, 60)

    def release(self) -> None:
        try:
            self.psql.communicate("ROLLBACK;\n\\q\n", timeout=30)
        except subprocess.TimeoutExpired:
            self.psql.kill()
            self.psql.communicate()


def test_a_saturated_pool_answers_503_within_the_set_timeouts_and_ready_answers_meanwhile(stack):
    wait_ready(stack, "/ready before the lock")
    count = POOL_SIZE + MAX_OVERFLOW + 6
    results: list[tuple[Write, float]] = []
    lock = LockedTable(stack)
    try:
        gate = threading.Barrier(count + 1)

        def timed_write(index: int) -> None:
            gate.wait()
            started = time.monotonic()
            results.append((write(stack, f"saturated-{index}"), started))

        threads = [threading.Thread(target=timed_write, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        gate.wait()
        # Every connection of the pool taken, its statement waiting on the lock: the probe's not.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND wait_event_type = 'Lock'"
        )
        saturated = str(POOL_SIZE + MAX_OVERFLOW)
        wait_until(
            "the pool's statements waiting on the lock", lambda: psql(stack, waiting), saturated.__eq__, 5
        )
        probe = ready(stack)
        in_flight = count - len(results)
        for thread in threads:
            thread.join(timeout=WAIT_BOUND + 30)
    finally:
        lock.release()
    assert probe.status == 200 and in_flight > 0, (probe, f"{in_flight} writes in flight")
    seconds = sorted(round(w.finished - started, 2) for w, started in results)
    print(f"\n{count} writes on a pool of {POOL_SIZE}+{MAX_OVERFLOW} with the table locked: {seconds} s")
    assert len(results) == count
    for done, started in results:
        assert done.status == 503 and (done.retry_after or "").isdigit(), done
        assert done.finished - started <= WAIT_BOUND, (done, done.finished - started)
    # Once the lock goes, the pool serves again.
    wait_until(
        "a 201 after the lock's release",
        lambda: write(stack, "after the lock"),
        lambda w: w.status == 201,
        60,
    )


def peak_memory(stack: Stack) -> int:
    """The largest peak resident set (VmHWM, bytes) of the app container's processes."""
    (cid,) = stack.compose("ps", "--quiet", "app").stdout.split()
    result = subprocess.run(
        ["docker", "exec", cid, "sh", "-c", "cat /proc/[0-9]*/status"], capture_output=True, text=True
    )
    peaks = [int(line.split()[1]) * 1024 for line in result.stdout.splitlines() if line.startswith("VmHWM:")]
    assert peaks, result.stdout + result.stderr
    return max(peaks)


def test_an_oversized_body_gets_413_before_it_is_read_whole(stack):
    # Warm up the paths a body takes (first imports, first validation), small and too large.
    assert write(stack, "warm-up").status == 201
    assert post_streamed(stack.port, "/items", 2 * MAX_BODY_SIZE).status == 413
    before = peak_memory(stack)
    restarts = stack.container("app")["RestartCount"]
    size = 50 * 1000 * 1000
    answers = {chunked: post_streamed(stack.port, "/items", size, chunked) for chunked in (False, True)}
    after = peak_memory(stack)
    sent = {chunked: int(a.headers["X-Sent-Bytes"]) for chunked, a in answers.items()}
    print(
        f"\n{size} B bodies: peak RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB;"
        f" sent before the 413: {sent[False]} B with Content-Length, {sent[True]} B chunked"
    )
    for chunked, answer in answers.items():
        assert answer.status == 413 and len(answer.body) < 1024, (f"chunked={chunked}", answer)
    # Bounded: the process holds at most a few limits' worth of a body, never the body itself.
    assert after - before < 8 * MAX_BODY_SIZE, (before, after)
    app = stack.container("app")
    assert app["State"]["OOMKilled"] is False and app["RestartCount"] == restarts
    # compose.yaml's memory limit, which a body read whole would have come close to.
    assert 0 < after < app["HostConfig"]["Memory"], (after, app["HostConfig"]["Memory"])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_413_is_a_small_json_answer_with_its_request_id(stack, chunked):
    """Like every other error answer: JSON a client can read, and the request id to quote."""
    answer = post_streamed(stack.port, "/items", 2 * MAX_BODY_SIZE, chunked)
    seen = (
        answer.status,
        answer.headers.get("Content-Type"),
        answer.headers.get("X-Request-ID"),
        answer.body,
    )
    assert answer.status == 413 and len(answer.body) < 1024, seen
    assert answer.headers.get("Content-Type") == "application/json" and answer.json(), seen
    assert answer.headers.get("X-Request-ID"), seen


@pytest.mark.slow
def test_an_idle_keep_alive_connection_is_reused_after_a_load_balancer_s_window(stack):
    """A balancer (AWS ALB: 60 s idle) reuses its idle connection to the app: the app must not
    have closed it first, or the balancer's next request through it gets a 502."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        connection.request("GET", "/health")
        first = connection.getresponse()
        assert first.status == 200 and first.read()
        sock: socket.socket = connection.sock
        local = sock.getsockname()
        time.sleep(BALANCER_IDLE + 1)  # the scenario itself: a connection idle past the window
        # Closed by the server, the socket would be readable (its EOF) before we send anything.
        closed = select.select([sock], [], [], 0)[0] and sock.recv(1, socket.MSG_PEEK) == b""
        assert not closed, f"the server closed the connection idle for {BALANCER_IDLE + 1} s"
        connection.request("GET", "/health")
        second = connection.getresponse()
        assert second.status == 200 and second.read()
        assert connection.sock is sock and sock.getsockname() == local, "not the same connection"
    finally:
        connection.close()
