"""HTTP requests to a service under test, and waiting for a condition with a deadline.

Every URL here is the service's own (loopback): requests never go through a proxy that the
environment may name, whatever http_proxy says. request() and post_streamed() speak HTTP
themselves (http.client, a socket), for what urllib hides: every header, the status of any
method, a body that the server refuses while it is being sent.
"""

import http.client
import json
import select
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import NamedTuple, TypeVar

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def urlopen(request: str | urllib.request.Request, timeout: float = 5):
    """urllib.request.urlopen without proxies (a context manager, raises OSError / HTTPError)."""
    return _OPENER.open(request, timeout=timeout)


def get_json(url: str, timeout: float = 2) -> object:
    """The JSON body of one GET of url (raises OSError when it does not answer)."""
    with urlopen(url, timeout=timeout) as response:
        return json.load(response)


def get(url: str, deadline: float, timeout: float = 2) -> tuple[int, object]:
    """(status, JSON body) of GET url, retried until it answers or time.monotonic() passes deadline."""
    while True:
        try:
            with urlopen(url, timeout=timeout) as response:
                return response.status, json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def request_json(method: str, url: str, body: object = None, timeout: float = 3) -> tuple[int, object]:
    """(status, body) of one request, body sent as JSON if given; an error status is an answer too.

    The reply's body is parsed as JSON, or kept as text when it is not JSON (raises OSError when
    nothing answers).
    """
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    call = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urlopen(call, timeout=timeout) as response:
            status, text = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def get_ok(url: str, timeout: float = 1) -> bool:
    """Whether one GET of url answers 200 (False for any error: refused, timeout, non-2xx)."""
    try:
        with urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status == 200
    except OSError:
        return False


class Answer(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout=10
) -> Answer:
    """One request on a new connection to 127.0.0.1:port, sent as given (raises OSError if unanswered)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def post_streamed(port: int, path: str, size: int, chunked: bool = False, timeout: float = 30) -> Answer:
    """POST a body of size bytes (`{"name": "xxx...`) to 127.0.0.1:port, sent in pieces, with a
    Content-Length or (chunked) without one; sending stops as soon as the server answers.

    The answer's headers gain X-Sent-Bytes: how much of the body went out before it.
    """
    piece = 64 * 1024
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sent = 0
    try:
        sock.sendall(f"{head}Connection: close\r\n\r\n".encode())
        while sent < size and not select.select([sock], [], [], 0)[0]:
            data = ((b"" if sent else b'{"name": "') + b"x" * piece)[: min(piece, size - sent)]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: its answer is read below
            sent += len(data)
        else:
            if chunked and sent >= size:
                sock.sendall(b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        answer = Answer(response.status, response.headers, response.read())
        answer.headers["X-Sent-Bytes"] = str(sent)
        return answer
    finally:
        sock.close()


Seen = TypeVar("Seen")


def wait_until(
    what: str,
    probe: Callable[[], Seen],
    done: Callable[[Seen], bool],
    timeout: float,
    interval: float = 0.2,
) -> Seen:
    """What probe() returns once done() holds for it, polled every interval seconds.

    A probe raising OSError (not answering yet) counts as not done. After timeout seconds this
    raises AssertionError with what, and the last thing the probe saw.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = probe()
        except OSError as error:
            seen = error
        else:
            if done(seen):
                return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; last seen: {seen!r}"[-4000:])
        time.sleep(interval)
