"""Runs every benchmark, each in its own process, and writes benchmarks/results/README.md (the
tables) and one PNG of ratios per benchmark.

    python -m benchmarks.run [--quick] [--only images,video,...]

``--quick`` (under two minutes) runs each on its smallest inputs once; the full run takes longer
(the 60 s and 10 min videos dominate).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

from benchmarks._common import RESULTS, ROOT, machine

BENCHMARKS = ["images", "video", "audio", "fetch", "nixl", "spill", "server", "processor"]


def plot(name: str, markdown: str) -> None:
    """A bar chart of each table's ratios (lower is better; 1.0 is the row's fastest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [line for line in markdown.splitlines() if line.startswith("| ") and " x" in line]
    header = next((line for line in markdown.splitlines() if line.startswith("| case")), None)
    if header is None or not rows:
        return  # not a table of ratios (the server load test)
    methods = [m.strip() for m in header.strip("|").split("|")[1:-1]]
    fig, ax = plt.subplots(figsize=(10, 1 + 0.6 * len(rows) * len(methods) / 3))
    width = 0.8 / len(methods)
    for r, line in enumerate(rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        for m, cell in enumerate(cells[1 : 1 + len(methods)]):
            found = re.search(r"x(\d+\.\d+)", cell)
            if found:
                ax.barh(
                    r + m * width,
                    float(found.group(1)),
                    width,
                    color=f"C{m}",
                    label=methods[m] if r == 0 else None,
                )
    ax.set_yticks([r + 0.4 - width / 2 for r in range(len(rows))])
    ax.set_yticklabels([line.strip("|").split("|")[0].strip() for line in rows])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("time / fastest in the row (lower is better)")
    ax.set_title(name)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHMARKS))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else BENCHMARKS
    failed = []
    for name in names:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
        print(f"== {name}", flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
            continue
        print(f"== {name} took {time.perf_counter() - start:.0f} s", flush=True)
        plot(name, (RESULTS / f"{name}.md").read_text())
    # The summary holds the latest result of every benchmark, run now or before.
    sections = [
        f"# Benchmark results\n\nMachine: {machine()}. Made by `python -m benchmarks.run` "
        "(each section from its latest run; `--quick` runs use the smallest inputs only).\n"
    ]
    for name in BENCHMARKS:
        if (RESULTS / f"{name}.md").exists():
            sections.append(f"## {name}\n\n{(RESULTS / f'{name}.md').read_text()}")
    (RESULTS / "README.md").write_text("\n".join(sections))
    print(f"wrote {RESULTS / 'README.md'}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
