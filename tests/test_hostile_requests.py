"""Hostile requests to the running containers (marker `docker`), as a client or a scanner sends them.

Each service the suite builds (conftest's service_stack: the default image, and the `postgresql`
one with its database) gets well-formed HTTP carrying odd content: malformed JSON, wrong types,
NUL and lone surrogates in strings, ids beyond 32 and 64 bits, negative ids, odd paths, methods,
headers and query strings. None answers 5xx; every answer carries an X-Request-ID and a small
body that does not echo a large input. HEAD answers wherever GET does, and a refused method
names the real ones in Allow.
"""

import json

import pytest

from tests.support.polling import request

pytestmark = pytest.mark.docker

JSON = {"Content-Type": "application/json"}
BIG = "y" * 100_000  # under the body limit, far over any field's: must not come back
SMALL_BODY = 2048  # bytes: an error's JSON, never an echo of BIG

# (method, path, body, headers): for every service.
ANY_SERVICE = [
    ("GET", "/does-not-exist", None, {}),
    ("GET", "/%00", None, {}),
    ("GET", "/%ff%fe", None, {}),
    ("GET", "/" + "a" * 4000, None, {}),
    ("GET", "/?q=" + "%00" * 2000, None, {}),
    ("GET", "/health?x=%ed%a0%80&y=%ff", None, {}),
    ("PATCH", "/", None, {}),
    ("DELETE", "/health", None, {}),
    ("POST", "/", b"{}", JSON),
    ("POST", "/health", BIG.encode(), JSON),
    ("OPTIONS", "/", None, {}),
    ("GET", "/", None, {"X-Request-ID": "é" * 10}),
    ("GET", "/", None, {"X-Request-ID": "a" * 10_000}),
    ("GET", "/", None, {"Accept": "application/xml"}),
    ("GET", "/", None, {"Content-Type": "application/json", "Content-Length": "0"}),
    ("GET", "/openapi.json", None, {"Accept-Encoding": "gzip, deflate, br, zstd, *"}),
]
# The database service's resource.
ITEMS = [
    ("POST", "/items", b'{"name":', JSON),
    ("POST", "/items", b"not json", JSON),
    ("POST", "/items", b"", JSON),
    ("POST", "/items", b"null", JSON),
    ("POST", "/items", b"[]", JSON),
    ("POST", "/items", b'"name"', JSON),
    ("POST", "/items", b"{}", JSON),
    ("POST", "/items", b'{"name": 5}', JSON),
    ("POST", "/items", b'{"name": ["a"]}', JSON),
    ("POST", "/items", b'{"name": {"a": 1}}', JSON),
    ("POST", "/items", b'{"name": "a\\u0000b"}', JSON),
    ("POST", "/items", b'{"name": "\\ud800"}', JSON),
    ("POST", "/items", b'{"name": "\\udfff\\ud800"}', JSON),
    ("POST", "/items", b'{"name": "\xff\xfe"}', JSON),
    ("POST", "/items", b'{"name": "' + b"\xed\xa0\x80" + b'"}', JSON),
    ("POST", "/items", json.dumps({"name": BIG}).encode(), JSON),
    ("POST", "/items", json.dumps({"name": "x", "id": 2**63}).encode(), JSON),
    ("POST", "/items", b"[" * 100_000 + b"]" * 100_000, JSON),
    ("POST", "/items", b'{"name": "x"}', {"Content-Type": "text/plain"}),
    ("POST", "/items", b"name=x", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("GET", "/items/2147483648", None, {}),
    ("GET", "/items/9223372036854775808", None, {}),
    ("GET", "/items/99999999999999999999", None, {}),
    ("GET", "/items/-1", None, {}),
    ("GET", "/items/-2147483649", None, {}),
    ("GET", "/items/0", None, {}),
    ("GET", "/items/1.5", None, {}),
    ("GET", "/items/1e3", None, {}),
    ("GET", "/items/%00", None, {}),
    ("GET", "/items/" + "9" * 5000, None, {}),
    ("HEAD", "/items/2147483648", None, {}),
    ("DELETE", "/items/1", None, {}),
    ("GET", "/items?limit=-1", None, {}),
    ("GET", "/items?limit=99999999999999999999", None, {}),
    ("GET", "/items?limit=0", None, {}),
    ("GET", "/items?after=2147483648", None, {}),
    ("GET", "/items?after=9223372036854775808", None, {}),
    ("GET", "/items?after=-1", None, {}),
    ("GET", "/items?limit=abc&after=%00", None, {}),
    ("GET", "/items?after=1&after=2&limit=1&limit=" + "9" * 5000, None, {}),
]


def hostile_requests(stack) -> list[tuple]:
    return ANY_SERVICE + (ITEMS if stack.answer_set == "postgresql" else [])


def test_no_hostile_request_gets_a_server_error_a_large_echo_or_no_request_id(service_stack):
    problems = []
    for method, path, body, headers in hostile_requests(service_stack):
        answer = request(service_stack.port, method, path, body, headers)
        shown = f"{method} {path[:60]!r} {(body or b'')[:60]!r} {str(headers)[:60]}"
        if answer.status >= 500:
            problems.append(f"{shown}: {answer.status} {answer.body[:300]!r}")
        if not answer.headers.get("X-Request-ID"):
            problems.append(f"{shown}: no X-Request-ID")
        if (answer.status >= 400 and len(answer.body) > SMALL_BODY) or BIG.encode()[:1000] in answer.body:
            problems.append(f"{shown}: a body of {len(answer.body)} B")
        if answer.status != 204 and method != "HEAD" and answer.body:
            try:
                json.loads(answer.body)
            except ValueError:
                problems.append(f"{shown}: not JSON: {answer.body[:200]!r}")
    assert not problems, "\n".join(problems)


def test_a_request_id_that_is_not_a_plain_token_is_replaced_not_echoed(service_stack):
    # Sent as bytes (http.client sends a str header as Latin-1): é as Latin-1 and as UTF-8, ...
    utf8 = "ｉｄé".encode().decode("latin-1")
    for given in ("é" * 10, utf8, "a" * 10_000, "a b", "<script>"):
        answer = request(service_stack.port, "GET", "/", headers={"X-Request-ID": given})
        returned = answer.headers.get("X-Request-ID", "")
        assert returned and returned != given and returned.isascii() and len(returned) <= 128, returned
    answer = request(service_stack.port, "GET", "/", headers={"X-Request-ID": "trace-1234"})
    assert answer.headers.get("X-Request-ID") == "trace-1234"


def test_head_answers_wherever_get_does_and_allow_names_the_real_methods(service_stack):
    schema = request(service_stack.port, "GET", "/openapi.json").json()
    item = request(service_stack.port, "POST", "/items", b'{"name": "head"}', JSON)
    item_id = item.json()["id"] if item.status == 201 else 1
    for template, operations in schema["paths"].items():
        path = template.replace("{item_id}", str(item_id))
        methods = {m.upper() for m in operations} | ({"HEAD"} if "get" in operations else set())
        if "GET" in methods:
            get, head = request(service_stack.port, "GET", path), request(service_stack.port, "HEAD", path)
            assert (head.status, head.body) == (get.status, b""), (path, head, get)
        refused = request(service_stack.port, "PUT" if "PUT" not in methods else "TRACE", path)
        assert refused.status == 405, (path, refused)
        allowed = {m.strip() for m in refused.headers.get("Allow", "").split(",")}
        assert allowed >= methods - {"OPTIONS"} and allowed <= methods | {"OPTIONS"}, (path, allowed)
