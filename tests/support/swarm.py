"""The generated compose.yaml deployed as a Docker Swarm stack, and what a stack leaves behind; where
its tasks run (nodes(), tasks(), endpoints()) and a client balancing requests over them."""

import collections
import contextlib
import json
import re
import threading
import time
from pathlib import Path

import yaml

from tests.support.docker import docker
from tests.support.polling import request_json, wait_until


def host_mode_stack_file(compose_file: Path, stack_file: Path) -> dict:
    """Write stack_file: compose_file with the app's port published in host mode; returns its content.

    In host mode each task publishes the port on a free host port of its own, so every task can be
    probed by itself (the routing mesh would answer from any one of them). A second `-c` file cannot
    replace compose.yaml's port (the docker CLI merges ports by published port and would keep the
    ingress one), hence a copy whose only change is the app's ports list.
    """
    content = yaml.safe_load(compose_file.read_text())
    target = int(content["services"]["app"]["ports"][0].rsplit(":", 1)[1])
    content["services"]["app"]["ports"] = [{"target": target, "mode": "host"}]
    stack_file.write_text(yaml.safe_dump(content, sort_keys=False))
    return content


def healthy_task_ports(service: str) -> list[int]:
    """Host ports of the service's healthy task containers (host-mode publishing)."""
    listing = docker(
        "ps",
        "--filter",
        f"label=com.docker.swarm.service.name={service}",
        "--filter",
        "health=healthy",
        "--format",
        "{{.Ports}}",
    ).stdout
    return sorted({int(p) for p in re.findall(r"0\.0\.0\.0:(\d+)->", listing)})


def replicas(stack: str) -> dict[str, str]:
    """{service: "running/declared"} of the stack's services, as `docker stack services` counts them."""
    listing = docker("stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}").stdout
    return dict(line.split(" ", 1) for line in listing.splitlines())


def remove_stack(stack: str) -> None:
    """Remove the stack, and its containers, networks and volumes once Swarm has let them go."""
    docker("stack", "rm", stack, check=False)
    label = f"label=com.docker.stack.namespace={stack}"

    def left() -> list[str]:
        return (
            docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
            + docker("network", "ls", "--quiet", "--filter", label).stdout.split()
        )

    with contextlib.suppress(AssertionError):
        wait_until(f"stack {stack} removed", left, lambda seen: not seen, 90, interval=1)
    containers = docker("ps", "--all", "--quiet", "--filter", label).stdout.split()
    if containers:
        docker("rm", "--force", *containers, check=False)
    volumes = docker("volume", "ls", "--quiet", "--filter", label).stdout.split()
    if volumes:
        docker("volume", "rm", "--force", *volumes, check=False)


def nodes() -> dict[str, dict[str, str]]:
    """{node id: {"name": hostname, "addr": the address the swarm reaches it at, "availability": ...}}."""
    ids = docker("node", "ls", "--quiet").stdout.split()
    found = json.loads(docker("node", "inspect", *ids).stdout)
    return {
        n["ID"]: {
            "name": n["Description"]["Hostname"],
            "addr": n["Status"]["Addr"],
            "availability": n["Spec"]["Availability"],
        }
        for n in found
    }


def tasks(service: str) -> list[dict]:
    """The service's tasks Swarm wants running: [{"node": hostname, "addr": node address, "state":
    the task's state ("running" once healthy), "port": its host-mode published port or None}]."""
    ids = docker("service", "ps", "--quiet", "--filter", "desired-state=running", service).stdout.split()
    if not ids:
        return []
    where = nodes()
    found = []
    for task in json.loads(docker("inspect", *ids).stdout):
        ports = (task["Status"].get("PortStatus") or {}).get("Ports") or [{}]
        node = where.get(task.get("NodeID", ""), {"name": "", "addr": ""})
        found.append(
            {
                "node": node["name"],
                "addr": node["addr"],
                "state": task["Status"]["State"],
                "port": ports[0].get("PublishedPort"),
            }
        )
    return sorted(found, key=lambda t: (t["node"], t["port"] or 0))


def endpoints(service: str) -> list[tuple[str, int]]:
    """(node address, host port) of each running task: what a DNS load balancer would send to."""
    return [(t["addr"], t["port"]) for t in tasks(service) if t["state"] == "running" and t["port"]]


class BalancingClient:
    """Requests to a service's tasks, in turn, from a thread, as a load balancer resolving the tasks
    by DNS does: the set of endpoints refreshed every refresh seconds (a short TTL; None: never,
    the endpoints of the start only, as a client configured with each published port), each GET sent to
    the next endpoint, and on a connection error (the task stopping: the request never reached an
    app) tried once on each other endpoint, as proxies do for idempotent requests.

    requests, failed (no endpoint answered 200), errors (connection errors, retried: what a client
    without retries would have failed), seen (the last status or error of a failed request),
    answered ({node address: requests it answered}).
    """

    def __init__(self, service: str, path: str, refresh: float | None = 0.5) -> None:
        self.service, self.path, self.refresh = service, path, refresh
        self.requests = self.failed = self.errors = 0
        self.seen: list[str] = []
        self.answered: collections.Counter[str] = collections.Counter()
        self._endpoints = endpoints(service)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._resolve), threading.Thread(target=self._send)]

    def __enter__(self) -> "BalancingClient":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _resolve(self) -> None:
        while self.refresh and not self._stop.wait(self.refresh):
            with contextlib.suppress(AssertionError):
                self._endpoints = endpoints(self.service)

    def _send(self) -> None:
        turn = 0
        while not self._stop.is_set():
            targets = list(self._endpoints)
            if not targets:
                self.requests += 1
                self.failed += 1
                self.seen.append("no endpoint")
                time.sleep(0.05)
                continue
            turn += 1
            self.requests += 1
            for i in range(len(targets)):
                addr, port = targets[(turn + i) % len(targets)]
                try:
                    status, _ = request_json("GET", f"http://{addr}:{port}{self.path}", timeout=5)
                except OSError as error:
                    self.errors += 1
                    last = f"{addr}:{port} {error!r}"
                    continue
                last = f"{addr}:{port} {status}"
                self.answered[addr] += 1
                if status != 200:
                    self.failed += 1
                    self.seen.append(last)
                break
            else:
                self.failed += 1
                self.seen.append(last)
            time.sleep(0.02)
