"""Shared pieces of the benchmarks: interleaved timing, ratios, the machine, markdown tables."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


@dataclasses.dataclass
class Row:
    """One input's timings: method -> median seconds (``None`` when the method failed)."""

    case: str
    seconds: dict[str, float | None]
    note: str = ""

    def ratios(self) -> dict[str, float | None]:
        done = [s for s in self.seconds.values() if s is not None]
        best = min(done) if done else 1.0
        return {k: (None if s is None else s / best) for k, s in self.seconds.items()}


def interleaved(
    methods: dict[str, Callable[[], object]], *, repeats: int, warmup: bool = True
) -> dict[str, float | None]:
    """Runs each method ``repeats`` times, taking turns, and returns the median of each.

    A method that raises is reported as ``None`` (and its error printed), not retried.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    failed: set[str] = set()
    for r in range(repeats + int(warmup)):
        for name, fn in methods.items():
            if name in failed:
                continue
            start = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # a peer's failure is a result, not a crash
                print(f"  {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed.add(name)
                continue
            if r >= int(warmup):
                times[name].append(time.perf_counter() - start)
    return {k: (statistics.median(v) if v and k not in failed else None) for k, v in times.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def versions(*modules: str) -> str:
    import importlib
    import importlib.metadata

    out = []
    for name in modules:
        try:
            module = importlib.import_module(name)
            version = getattr(module, "__version__", None) or importlib.metadata.version(name)
            out.append(f"{name} {version}")
        except Exception:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def _cell(seconds: float | None, ratio: float | None, unit: str) -> str:
    if seconds is None or ratio is None:
        return "failed"
    value = seconds * 1000 if unit == "ms" else seconds
    return f"{value:.3g} {unit} x{ratio:.2f}"


def table(title: str, rows: list[Row], *, unit: str = "ms", ours: str = "dynamo-media") -> str:
    """A markdown table: a row per case, a column per method, ``time xratio-to-fastest``."""
    methods = list(rows[0].seconds)
    lines = [f"### {title}", "", "| case | " + " | ".join(methods) + " | note |"]
    lines.append("|---" * (len(methods) + 2) + "|")
    for row in rows:
        ratios = row.ratios()
        cells = [_cell(row.seconds[m], ratios[m], unit) for m in methods]
        lines.append(f"| {row.case} | " + " | ".join(cells) + f" | {row.note} |")
    lines.append("")
    lines.append(f"Ratio = time / fastest in the same row; {ours} is ours.")
    return "\n".join(lines) + "\n"


def report(name: str, text: str) -> None:
    """Prints a benchmark's table and keeps it under benchmarks/results/."""
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
