"""results.md: every metric of every variant, then the targets of docs/benchmark.md, met or not."""

import operator
import statistics

METRICS = {  # key: (label, decimals); None stands for not measured: no HEALTHCHECK, no cgroup readable here
    "image_mb": ("image size (MB)", 1),
    "cold_build_s": ("cold build (s)", 1),
    "start_to_first_ok_s": ("process start -> first 200 from /health (s)", 2),
    "start_to_healthy_s": ("process start -> Docker `healthy` (s)", 2),
    "probe_cpu_ms": ("CPU time of one health probe (ms)", 1),
    "rps": ("GET / requests/s", 0),
    "p50_ms": ("GET / latency p50 (ms)", 1),
    "p99_ms": ("GET / latency p99 (ms)", 1),
    "errors": ("errors (non-2xx + socket)", 0),
    "cpu_us_per_request": ("CPU time per request (us)", 0),
    "log_lines_per_request": ("log lines per request", 2),
    "stop_s": ("docker stop (s)", 2),
}
OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def numbers(runs: list[dict], key: str) -> list[float]:
    return [run[key] for run in runs if isinstance(run.get(key), int | float)]


def cell(values: list[float], decimals: int) -> str:
    """The median, and (min-max) when there is more than one value; n/a for none."""
    if not values:
        return "n/a"
    spread = f" ({min(values):.{decimals}f}-{max(values):.{decimals}f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.{decimals}f}{spread}"


def table(rows: list[list[str]]) -> str:
    """A Markdown table: the header row first."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(f"| {line} |" for line in [lines[0], " | ".join("-" * w for w in widths), *lines[1:]])


def targets(variants: dict[str, dict], dev: dict) -> dict[str, tuple[float | None, str, str]]:
    """what: (measured, target, met: yes, NO or n/a), from the medians; a row without a target is shown, not
    judged (met: "")."""

    def med(key: str, variant: str = "default") -> float | None:
        values = numbers(variants[variant]["runs"], key)
        return statistics.median(values) if values else None

    def ratio(key: str, variant: str, to: str = "default") -> float | None:
        value, base = med(key, variant), med(key, to)
        return None if value is None or not base else value / base

    def share(low: str, high: str) -> float | None:
        """The CPU time per request from variant low to high, in % of the defaults'."""
        a, b, base = med(cpu, low), med(cpu, high), med(cpu)
        return None if a is None or b is None or not base else 100 * (b - a) / base

    cpu = "cpu_us_per_request"
    # The collector down against up, every request traced in both.
    down_rps, down_p99 = ratio("rps", "otel_down", "otel_export"), ratio("p99_ms", "otel_down", "otel_export")
    errors = [numbers(v["runs"], "errors") for v in variants.values()]
    rows = [
        ("requests/s: defaults (log on) / tutorial (x)", ratio("rps", "default", "baseline"), ">=", 2.5),
        ("GET / latency p99: defaults / tutorial (x)", ratio("p99_ms", "default", "baseline"), "<=", 0.5),
        ("CPU time per request: JSON logs / text (x)", ratio(cpu, "json_logs"), "<=", 1.1),
        ("CPU time of one health probe (ms)", med("probe_cpu_ms"), "<=", 30),
        ("access log off: log lines per request", med("log_lines_per_request", "no_access_log"), "<=", 0),
        ("access log: its share of the CPU time per request (%)", share("no_access_log", "default"), "", 0),
        ("request ids and the app's other layers: their share (%)", share("bare", "no_access_log"), "", 0),
        ("requests/s: access log off / on (x)", ratio("rps", "no_access_log"), "", 0),
        ("CPU time per request: defaults / tutorial (x)", ratio(cpu, "default", "baseline"), "", 0),
        ("requests/s: OpenTelemetry, default sampling / defaults (x)", ratio("rps", "otel"), ">=", 0.85),
        ("CPU time per request: OpenTelemetry, default sampling / defaults (x)", ratio(cpu, "otel"), "", 0),
        ("requests/s: OpenTelemetry, all traced / defaults (x)", ratio("rps", "otel_traced"), "", 0),
        ("requests/s: OpenTelemetry, exporting / defaults (x)", ratio("rps", "otel_export"), "", 0),
        ("requests/s: OpenTelemetry, collector down / exporting (x)", down_rps, ">=", 0.9),
        ("p99: OpenTelemetry, collector down / exporting (x)", down_p99, "", 0),
        ("errors under load, every variant", sum(map(sum, errors)), "<=", 0),
        ("process start -> first 200 (s)", med("start_to_first_ok_s"), "<", 1),
        ("process start -> Docker `healthy` (s)", med("start_to_healthy_s"), "<", 1),
        ("docker stop (s)", med("stop_s"), "<", 1),
        ("dev loop: save -> new response served, median (s)", statistics.median(dev["saves_s"]), "<", 1),
        ("dev loop: save -> new response served, slowest (s)", max(dev["saves_s"]), "", 0),
        ("dev loop: connections refused or reset while polling", dev["refused"], "<=", 0),
    ]
    return {
        what: (
            value,
            f"{op} {limit:g}" if op else "",
            op and ("n/a" if value is None else "yes" if OPS[op](value, limit) else "NO"),
        )
        for what, value, op, limit in rows
    }


def markdown(document: dict) -> str:
    env, variants = document["environment"], document["variants"]
    runs = env["settings"]["runs"]
    results = [["metric", *(v["label"] for v in variants.values())]]
    for key, (label, decimals) in METRICS.items():
        results.append([label, *(cell(numbers(v["runs"], key), decimals) for v in variants.values())])
    judged = [["target (template defaults unless named)", "measured", "target", "met"]]
    for what, (value, target, met) in targets(variants, document["dev_loop"]).items():
        judged.append([what, "n/a" if value is None else f"{value:.3g}", target, met])
    return "\n\n".join([
        "# Benchmark results",
        f"`{env['command']}` on {env['date']} (commit {env['commit']}), {env['wall_s'] / 60:.1f} min; "
        f"{env['machine']}; Docker {env['docker']}; {env['wrk']}; load {env['loadavg'][0]:.2f} at the "
        f"start, {env['loadavg'][1]:.2f} at the end. What is measured, how, and why these targets: "
        "[benchmark.md](../benchmark.md); every run's numbers and the package versions: results.json.",
        f"Median of {runs} run(s){' (min-max)' if runs > 1 else ''}:",
        table(results),
        table(judged),
    ]) + "\n"  # fmt: skip
