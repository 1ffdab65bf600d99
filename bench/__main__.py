"""``python -m bench [--quick] [--only NAME[,NAME]] [--reps N] [--json PATH]``.

Runs the benchmarks (each one: every server it measures fresh, the same
client, medians over ``--reps`` repetitions) and prints one table, metric |
baseline | durable | runyard | vs baseline | vs durable, where "vs X" is
runyard / X (above 1 is better for rates, below 1 is better for latencies
and memory) and ``-`` means not measured, then the goals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import (
    concurrency,
    cross_node,
    event_cost,
    fanout,
    first_event,
    live_sse,
    persistence,
    replay,
    resume,
    stalled_readers,
    start_rate,
)
from bench.common import (
    FULL,
    KINDS,
    QUICK,
    ROOT,
    Benchmark,
    Outcome,
    Sizes,
    raise_fd_limit,
    run_benchmark,
)

BENCHMARKS: list[Benchmark] = [
    start_rate.BENCH,
    live_sse.BENCH,
    first_event.BENCH,
    replay.BENCH,
    resume.BENCH,
    fanout.BENCH,
    concurrency.BENCH,
    persistence.BENCH,
    event_cost.BENCH,
    stalled_readers.BENCH,
    cross_node.BENCH,
]
BY_NAME = {b.name: b for b in BENCHMARKS}


def fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "nan"
    return spec.format(value)


def table(outcomes: Sequence[Outcome]) -> str:
    """metric | baseline | durable | runyard | vs baseline | vs durable (``-``: not measured)."""
    rows = [("metric", *KINDS, *(f"vs {k}" for k in REFERENCES))]
    for o in outcomes:
        notes = {n.split(": ", 1)[0]: n.split(": ", 1)[1] for n in o.notes}
        for m in o.bench.metrics:
            values = {kind: o.value(kind, m.key) for kind in KINDS}
            if all(v is None for v in values.values()):
                if notes:
                    rows.append(
                        (f"{m.label} ({m.unit})", "-", "-", notes.get("runyard", "n/a"), "-", "-")
                    )
                continue
            label = f"{m.label} ({m.unit})" if m.unit else m.label
            if m.better == "lower":
                label += " [lower is better]"
            ours = values["runyard"]
            ratios = []
            for ref in REFERENCES:
                base = values[ref]
                if m.better in ("higher", "lower") and base and ours is not None:
                    ratios.append(f"{ours / base:.2f}x")
                else:
                    ratios.append("-")
            cells = [fmt(values[k], m.fmt) if k in o.bench.kinds else "-" for k in KINDS]
            rows.append((label, *cells, *ratios))
    ncol = len(rows[0])
    widths = [max(len(r[i]) for r in rows) for i in range(ncol)]
    lines = []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if k == 0:
            lines.append(
                "|"
                + "|".join("-" * (w + 2) for w in widths[:1])
                + "|"
                + "|".join("-" * (w + 1) + ":" for w in widths[1:])
                + "|"
            )
    return "\n".join(lines)


REFERENCES = ("baseline", "durable")
"""The kinds runyard is compared with, one ratio column each."""

_GOAL = re.compile(r"(\w+)(>=|<=|<|==)(\+?)([\d.]+)(x?)(?:@(\w+))?")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}


def goals(outcomes: Sequence[Outcome]) -> list[tuple[str, str, bool | None]]:
    """``(benchmark, goal text, met)`` with ``met`` None when it could not be measured.

    Goal syntax in :class:`bench.common.Benchmark`: ``key OP target`` absolute,
    ``key OP 0.9x@kind`` as a ratio to ``kind`` (default ``baseline``),
    ``key OP +10@kind`` as a margin over it (in the metric's unit).
    """
    out: list[tuple[str, str, bool | None]] = []
    for o in outcomes:
        for goal in o.bench.goals:
            match = _GOAL.fullmatch(goal)
            assert match, goal
            key, op, plus, target, relative, ref = match.groups()
            ref = ref or "baseline"
            metric = next(m for m in o.bench.metrics if m.key == key)
            ours = o.value("runyard", key)
            base = o.value(ref, key) if (relative or plus) else None
            if ours is None or ((relative or plus) and base is None):
                out.append((o.bench.name, f"{metric.label}: {goal}", None))
                continue
            if relative:
                assert base is not None
                if not base:
                    out.append((o.bench.name, f"{metric.label}: {goal}", None))
                    continue
                ratio = ours / base
                shown = f"{goal} (runyard/{ref} = {ratio:.2f})"
                met = _OPS[op](ratio, float(target))
            elif plus:
                assert base is not None
                limit = base + float(target)
                shown = (
                    f"{goal} (runyard = {fmt(ours, metric.fmt)}, {ref} = {fmt(base, metric.fmt)}, "
                    f"limit {fmt(limit, metric.fmt)})"
                )
                met = _OPS[op](ours, limit)
            else:
                shown = f"{goal} (runyard = {fmt(ours, metric.fmt)})"
                met = _OPS[op](ours, float(target))
            out.append((o.bench.name, f"{metric.label}: {shown}", met))
    return out


def machine() -> dict[str, str]:
    cpu = mem = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(x for x in lines if x.startswith("model name")).split(":", 1)[1].strip()
        lines = Path("/proc/meminfo").read_text().splitlines()
        mem = next(x for x in lines if x.startswith("MemTotal")).split(":", 1)[1].strip()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "commit": commit,
    }


async def main_async(selected: list[Benchmark], sizes: Sizes, reps: int) -> list[Outcome]:
    outcomes = []
    for bench in selected:
        t0 = time.perf_counter()
        print(f"-- {bench.name}: {bench.title} ...", file=sys.stderr, flush=True)
        outcome = await run_benchmark(bench, sizes, reps)
        print(f"   done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        outcomes.append(outcome)
    return outcomes


def report(outcomes: Sequence[Outcome]) -> None:
    print(table(outcomes))
    print()
    for name, text, met in goals(outcomes):
        mark = {True: "MET ", False: "MISS", None: "n/a "}[met]
        print(f"  [{mark}] {name}: {text}")
    for o in outcomes:
        for note in o.notes:
            print(f"  note ({o.bench.name}) {note}")


def reprint(path: str) -> int:
    raw = json.loads(Path(path).read_text())
    outcomes = [
        Outcome(BY_NAME[name], values, raw.get("notes", {}).get(name, []))
        for name, values in raw["results"].items()
    ]
    info = raw["machine"]
    print(
        f"runyard benchmarks · commit {info['commit']} · {info['cpus']} CPUs ({info['cpu']}) · "
        f"{info['memory']} · Python {info['python']} · "
        f"{'--quick' if raw['quick'] else 'full'} · reps {raw['reps']}\n"
    )
    report(outcomes)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run in about a minute"
    )
    parser.add_argument(
        "--only", help=f"comma-separated benchmarks: {', '.join(BY_NAME)}", default=None
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions per side (median)")
    parser.add_argument("--json", help="also write the raw values to this file")
    parser.add_argument(
        "--from-json", metavar="PATH", help="print the table of an earlier --json run; run nothing"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        return reprint(args.from_json)
    selected = BENCHMARKS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BY_NAME)}")
        selected = [BY_NAME[n] for n in names]
    sizes = QUICK if args.quick else FULL
    raise_fd_limit()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    t0 = time.perf_counter()
    with runner:
        outcomes = runner.run(main_async(selected, sizes, args.reps))
    info = machine()
    print()
    print(
        f"runyard benchmarks · commit {info['commit']} · {info['cpus']} CPUs ({info['cpu']}) · "
        f"{info['memory']} · Python {info['python']} · "
        f"{'--quick' if args.quick else 'full'} · reps {args.reps} · "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print()
    report(outcomes)
    if args.json:
        raw: dict[str, Any] = {
            "machine": info,
            "quick": args.quick,
            "reps": args.reps,
            "results": {o.bench.name: o.values for o in outcomes},
            "notes": {o.bench.name: o.notes for o in outcomes},
        }
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
