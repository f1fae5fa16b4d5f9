"""The suite's own parsers and helpers (tests/support), on recorded outputs and small inputs.

The BuildKit log reader is checked on real plain-progress logs (tests/data/buildkit/), with and
without stage names, cached and not; the Dockerfile reader finds the base image through stages;
answer-set names are unique; the pairwise generator covers every pair; request_json sends JSON and
takes error statuses as answers; wait_until fails saying what it last saw.
"""

import http.server
import itertools
import json
import socket
import threading
from pathlib import Path

import pytest

from tests.support.applog import access_log, json_lines
from tests.support.buildkit import dependency_layers, steps
from tests.support.dockerfile import base_image
from tests.support.net import free_port, free_ports, port_is_free
from tests.support.polling import request_json, wait_until
from tests.support.project import (
    COMPLETE,
    DATABASE_ANSWER_SETS,
    RENDER_ANSWER_SETS,
    case_id,
    choices,
    leftover_jinja,
    pairwise,
)

DATA = Path(__file__).parent / "data" / "buildkit"


def log(name: str) -> str:
    return (DATA / f"{name}.log").read_text()


def test_buildkit_steps_are_read_with_their_stage_index_and_cache_state():
    found = {
        step.text.split()[0] + " " + step.text.split()[1]: step for step in steps(log("template-rebuild"))
    }
    copy = found["COPY app/"]
    assert (copy.stage, copy.index, copy.cached) == ("stage-2", 1, False)
    install = next(
        step
        for step in steps(log("template-rebuild"))
        if "requirements.txt" in step.text and step.text.startswith("RUN")
    )
    assert (install.stage, install.index, install.cached) == ("runtime", 5, True)
    # Each step once, though BuildKit prints its id on several lines.
    ids = [step.id for step in steps(log("template-first"))]
    assert len(ids) == len(set(ids)) >= 6


def test_buildkit_steps_without_a_stage_name_have_an_empty_stage():
    found = steps(log("single-stage-rebuild"))
    assert [step.stage for step in found] == [""] * len(found)
    assert [step.index for step in found] == [1, 3, 2, 4, 5]  # as shown: BuildKit runs steps in parallel


@pytest.mark.parametrize(
    ("name", "code", "cached", "rebuilt"),
    [
        ("template-rebuild", "COPY app/ ./app/", True, []),
        ("single-stage-rebuild", "COPY ./main.py /code/main.py", True, []),
        (
            "template-first",
            "COPY app/ ./app/",
            False,
            ["RUN groupadd", "WORKDIR /app", "COPY requirements.txt ./", "RUN --mount=type=cache"],
        ),
        (
            "single-stage-cold",
            "COPY ./main.py /code/main.py",
            False,
            ["WORKDIR /code", "COPY ./requirements.txt", "RUN pip install"],
        ),
    ],
)
def test_dependency_layers_cached_in_recorded_logs(name, code, cached, rebuilt):
    found = dependency_layers(log(name))
    assert [step.text for step in found.code_steps] == [code]
    assert found.cached is cached
    assert len(found.rebuilt) == len(rebuilt), found.rebuilt
    assert all(text.startswith(prefix) for text, prefix in zip(found.rebuilt, rebuilt, strict=True)), (
        found.rebuilt
    )
    # The FROM and the code copy are never dependency steps; the install always is.
    texts = [step.text for step in found.dependency_steps]
    assert not any(text.startswith("FROM") or text == code for text in texts), texts
    assert any(text.startswith("RUN") and "requirements.txt" in text for text in texts), texts


def test_a_log_without_a_code_copy_is_an_error_not_a_verdict():
    header = "".join(line + "\n" for line in log("template-rebuild").splitlines() if "COPY app/" not in line)
    with pytest.raises(ValueError, match="no `COPY"):
        dependency_layers(header)
    with pytest.raises(ValueError):
        dependency_layers("")


def test_base_image_follows_the_stages_to_the_image(tmp_path):
    single = DATA / "single-stage.Dockerfile"
    assert base_image(single) == "python:3.13"
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "# tools\nFROM --platform=$BUILDPLATFORM example.com/uv:1 AS uv\n"
        "# runtime\nFROM python:3.13-slim AS runtime\n# deps\nRUN true\n"
        "# dev\nFROM runtime AS dev\n# code\nFROM runtime\n# code\nCOPY app/ ./app/\n"
    )
    assert base_image(dockerfile) == "python:3.13-slim"
    assert base_image(dockerfile, "uv") == "example.com/uv:1"


def test_answer_set_names_are_unique_and_name_the_non_defaults():
    assert case_id({}) == "defaults" == case_id({"port": "8000"})
    assert case_id({"port": "9090", "ci": "github"}) == "port=9090"
    names = [case_id(answer_set) for answer_set in RENDER_ANSWER_SETS]
    assert len(names) == len(set(names)), names
    assert not set(names) & set(COMPLETE)
    assert not set(names) & set(DATABASE_ANSWER_SETS) and not set(COMPLETE) & set(DATABASE_ANSWER_SETS)


def test_pairwise_covers_every_pair_of_values():
    options = choices()
    rows = pairwise(options)
    assert rows[0] == {key: values[0] for key, values in options.items()}
    for a, b in itertools.combinations(options, 2):
        seen = {(row[a], row[b]) for row in rows}
        assert seen == set(itertools.product(options[a], options[b])), (a, b)
    assert len(rows) < 30  # far fewer than the product


def test_leftover_jinja_is_found_but_github_and_go_templates_are_not():
    assert leftover_jinja("image: ${{ github.repository }} {{.State.Health.Status}}") is None
    assert "{{ cookiecutter" in leftover_jinja("a {{ cookiecutter.port }} b")
    assert leftover_jinja("{% if x %}") is not None


def test_json_log_lines_and_access_entries():
    output = "\n".join(
        json.dumps(line)
        for line in [
            {"logger": "uvicorn.error", "message": "Started"},
            {"logger": "app.access", "message": '127.0.0.1:1 - "GET / HTTP/1.1" 200 1.0ms', "request_id": "r1"},
        ]
    )
    lines = json_lines(output)
    assert access_log(lines) == [("GET / HTTP/1.1", "r1")]
    with pytest.raises(ValueError):
        json_lines(output + "\nnot json")


def test_free_ports_are_free_and_distinct():
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(port_is_free(port, "127.0.0.1") for port in ports)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port()))
        busy.listen()
        assert not port_is_free(busy.getsockname()[1], "127.0.0.1")


def test_wait_until_returns_what_it_saw_or_fails_saying_it():
    seen = iter(range(100))
    assert wait_until("three", lambda: next(seen), lambda n: n == 3, 5, interval=0) == 3
    with pytest.raises(AssertionError, match=r"never: not within 0.2 s; last seen: \d+"):
        wait_until("never", lambda: next(seen), lambda n: False, 0.2, interval=0.01)


class Replies(http.server.BaseHTTPRequestHandler):
    """POST echoes its JSON body and content type (201); GET /missing is a JSON 404, GET /text a 500."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reply(201, json.dumps({"got": body, "type": self.headers["Content-Type"]}))

    def do_GET(self) -> None:
        if self.path == "/missing":
            self.reply(404, json.dumps({"detail": "Not Found"}))
        else:
            self.reply(500, "oops")

    def reply(self, status: int, text: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args) -> None:
        pass


def test_request_json_sends_json_and_takes_error_statuses_as_answers():
    server = http.server.HTTPServer(("127.0.0.1", 0), Replies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        sent = request_json("POST", f"{base}/items", {"name": "x"})
        assert sent == (201, {"got": {"name": "x"}, "type": "application/json"})
        assert request_json("GET", f"{base}/missing") == (404, {"detail": "Not Found"})
        assert request_json("GET", f"{base}/text") == (500, "oops")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(OSError):
        request_json("GET", base, timeout=1)
