"""What wrk, docker and the kernel print, read as numbers (tested on recordings in tests/data/benchmark/)."""

import datetime as dt
import re
from pathlib import Path

CPU_FILES = {1: "cpuacct.usage", 2: "cpu.stat"}  # a cgroup's CPU time so far, by cgroup version
TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # wrk's latency units, to ms


class BenchmarkError(RuntimeError):
    pass


def wrk_report(output: str) -> dict:
    """wrk --latency's report: requests/s, p50 and p99 (ms), errors (non-2xx + socket) and requests."""

    def find(pattern: str) -> re.Match:
        if match := re.search(pattern, output, re.MULTILINE):
            return match
        raise BenchmarkError(f"no {pattern!r} in wrk's output:\n{output}")

    p50, p99 = (find(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$") for percent in (50, 99))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(find(r"^Requests/sec:\s+([\d.]+)")[1]),
        "p50_ms": float(p50[1]) * TIME_UNITS[p50[2]],
        "p99_ms": float(p99[1]) * TIME_UNITS[p99[2]],
        "errors": sum(map(int, sockets.groups() if sockets else ())) + int(non_2xx[1] if non_2xx else 0),
        "requests": int(find(r"^\s*(\d+) requests in")[1]),
    }


def docker_time(stamp: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, Z or an offset) as epoch seconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp.strip())
    if not match:
        raise BenchmarkError(f"not a docker timestamp: {stamp!r}")
    zone = "+00:00" if match[3] == "Z" else match[3]
    return dt.datetime.fromisoformat(match[1] + zone).timestamp() + float("0." + (match[2] or "0"))


def cgroup_dir(proc_cgroup: str, mountinfo: str, controller: str) -> tuple[Path, int] | None:
    """(directory, cgroup version) of a process's cgroup for controller, or None: where /proc/PID/cgroup
    places the process in each hierarchy, and /proc/self/mountinfo mounts that hierarchy (cgroup v1:
    the one with controller in its options; v2: the unified one, when no v1 hierarchy has it)."""
    mounts: dict[int, str] = {}
    for line in mountinfo.splitlines():
        fields, _, fs = line.partition(" - ")
        fstype, _, options = (fs.split() + ["", "", ""])[:3]
        if fstype == "cgroup2" or (fstype == "cgroup" and controller in options.split(",")):
            mounts[2 if fstype == "cgroup2" else 1] = fields.split()[4]
    paths: dict[int, str] = {}
    for line in proc_cgroup.splitlines():
        number, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (number == "0" and not controllers):
            paths[1 if controllers else 2] = path
    version = next((v for v in (1, 2) if v in mounts and v in paths), None)
    return version and (Path(mounts[version], paths[version].lstrip("/")), version)


def cpu_usage(text: str, version: int) -> float:
    """A cgroup's CPU time so far in seconds: v1's cpuacct.usage (ns), v2's cpu.stat (usage_usec)."""
    if version == 1:
        return int(text) / 1e9
    return int(dict(line.split() for line in text.splitlines() if line.strip())["usage_usec"]) / 1e6


def probe_command(healthcheck: dict) -> list[str] | None:
    """The command Docker runs for an image's HEALTHCHECK (`.Config.Healthcheck`), or None without one."""
    test = healthcheck.get("Test") or []
    if test[:1] == ["CMD"]:
        return test[1:]
    return ["/bin/sh", "-c", test[1]] if test[:1] == ["CMD-SHELL"] else None
