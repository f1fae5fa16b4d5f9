"""The ecosystem's API tester against the running containers (marker `docker`): schemathesis.

`schemathesis run URL/openapi.json --checks all` (support.apitest) against each service the suite
builds, up as compose runs it (conftest's service_stack): the default image, and the `postgresql`
one with its real database. No failure: no 500, every answer documented in the OpenAPI document
and conforming to it, HEAD, OPTIONS and Allow as HTTP says, invalid input refused, valid input
accepted, a created resource readable at once. (test_image.py runs it against the image of each
of its answer sets too.)
"""

import time

import pytest

from tests.support.apitest import failure_report, schemathesis

pytestmark = pytest.mark.docker


def test_schemathesis_finds_no_failure_with_every_check(service_stack, tmp_path):
    started = time.monotonic()
    result = schemathesis(service_stack.url("/openapi.json"), tmp_path)
    summary = [line.strip() for line in result.stdout.splitlines() if " generated, " in line]
    print(f"\nschemathesis ({service_stack.answer_set}): {summary} in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, failure_report(result)
