"""What wrk, docker and the kernel print, read as numbers (tested on recordings in tests/data/benchmark/)."""

import datetime as dt
import re
from pathlib import Path

TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # wrk's latency units, to ms
SIZE_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
SIZE_UNITS |= {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


class BenchmarkError(RuntimeError):
    pass


def parse_wrk(output: str) -> dict:
    """wrk --latency's report: requests/s, p50 and p99 (ms), errors (non-2xx + socket) and requests."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if not match:
            raise BenchmarkError(f"no p{percent} in wrk's output:\n{output}")
        return float(match[1]) * TIME_UNITS[match[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    requests = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if not rps or not requests:
        raise BenchmarkError(f"no Requests/sec in wrk's output:\n{output}")
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = sum(map(int, sockets.groups())) if sockets else 0
    return {
        "rps": float(rps[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": errors + (int(non_2xx[1]) if non_2xx else 0),
        "requests": int(requests[1]),
    }


def parse_size(text: str) -> float:
    """A size as Docker prints it (`35.6MiB`, `512kB`, `0B`), in bytes."""
    match = re.fullmatch(r"([\d.]+)\s*([kKMGT]?i?B)", text.strip())
    if not match:
        raise BenchmarkError(f"not a size: {text!r}")
    return float(match[1]) * SIZE_UNITS[match[2]]


def docker_time(stamp: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z or an offset) as epoch seconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp.strip())
    if not match:
        raise BenchmarkError(f"not a docker timestamp: {stamp!r}")
    zone = "+00:00" if match[3] == "Z" else match[3]
    return dt.datetime.fromisoformat(match[1] + zone).timestamp() + float("0." + (match[2] or "0"))


def cgroup_dir(proc_cgroup: str, mountinfo: str, controller: str) -> tuple[Path, int] | None:
    """(directory, cgroup version) of a process's cgroup for controller, or None.

    The kernel says where: /proc/PID/cgroup gives the process's path in each hierarchy, and
    /proc/self/mountinfo where each hierarchy is mounted (cgroup v1: the one with controller in its
    options; v2: the cgroup2 mount, used only when no v1 hierarchy has the controller).
    """
    mounts: dict[str, str] = {}
    for line in mountinfo.splitlines():
        fields, _, fs = line.partition(" - ")
        fstype, _, options = (fs.split() + ["", "", ""])[:3]
        if fstype == "cgroup" and controller in options.split(","):
            mounts["v1"] = fields.split()[4]
        elif fstype == "cgroup2":
            mounts["v2"] = fields.split()[4]
    paths = {}
    for line in proc_cgroup.splitlines():
        number, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            paths["v1"] = path
        elif number == "0" and not controllers:
            paths["v2"] = path
    for kind, version in (("v1", 1), ("v2", 2)):
        if kind in mounts and kind in paths:
            return Path(mounts[kind], paths[kind].lstrip("/")), version
    return None


def cpu_usage(text: str, version: int) -> float:
    """A cgroup's CPU time so far in seconds: v1's cpuacct.usage (ns), v2's cpu.stat (usage_usec)."""
    if version == 1:
        return int(text) / 1e9
    stat = dict(line.split() for line in text.splitlines() if line.strip())
    return int(stat["usage_usec"]) / 1e6


def probe_command(healthcheck: dict) -> list[str] | None:
    """The command Docker runs for an image's HEALTHCHECK (`.Config.Healthcheck`), or None without one."""
    test = healthcheck.get("Test") or []
    if test[:1] == ["CMD"]:
        return test[1:]
    return ["/bin/sh", "-c", test[1]] if test[:1] == ["CMD-SHELL"] else None
