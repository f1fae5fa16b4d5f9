"""The generated service's JSON logs (LOG_FORMAT=json): one object per line."""

import json


def json_lines(output: str) -> list[dict]:
    """Every line of output parsed as one JSON object (a line that is not one fails: ValueError)."""
    return [json.loads(line) for line in output.splitlines()]


def access_log(lines: list[dict]) -> list[tuple[str, str]]:
    """(request line, request id) of every access log line (the app's, app.access), in order."""
    return [
        (line["message"].split('"')[1], line["request_id"]) for line in lines if line["logger"] == "app.access"
    ]
