"""``python -m tests.fuzz``: a fuzzing campaign against the decoders, or a replay of reproducers.

    python -m tests.fuzz --count 3000 --seed 0 --workers 2 --out .cache/fuzz
    python -m tests.fuzz --replay .cache/fuzz/raw_exception-animated-1234.gif

A campaign prints a table of outcomes per format and the inputs per second, then the distinct
findings. Each finding's input is saved under ``--out`` as ``OUTCOME-SEED-MUTATIONSEED.EXT``,
with a line in ``findings.jsonl`` (seed, mutation seed, operations, error). The exit status is 1
when there are findings.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path
from typing import IO, Any

from tests.fuzz.harness import DEFAULT_CAPS, FINDINGS, OUTCOMES, Caps, Result, Worker, campaign
from tests.fuzz.mutate import Mutant
from tests.fuzz.seeds import SEEDS

_MODALITY_OF_SUFFIX = {Path(seed.name).suffix: seed.modality for seed in SEEDS}
_PROGRESS_S = 10.0


class _Tally:
    """Counts outcomes per format, saves findings as they come, and prints progress."""

    def __init__(self, count: int, out: Path, log: IO[str]) -> None:
        self.count = count
        self.out = out
        self.log = log
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.findings: list[dict[str, Any]] = []
        self.start = self.last_progress = time.monotonic()

    @property
    def done(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def __call__(self, mutant: Mutant, result: Result) -> None:
        self.counts[mutant.seed.format][result.outcome] += 1
        if result.outcome in FINDINGS:
            self._save(mutant, result)
        now = time.monotonic()
        if now - self.last_progress > _PROGRESS_S:
            self.last_progress = now
            rate = self.done / (now - self.start)
            print(
                f"{self.done}/{self.count} inputs, {rate:.0f}/s, {len(self.findings)} findings",
                file=sys.stderr,
            )

    def _save(self, mutant: Mutant, result: Result) -> None:
        stem, suffix = Path(mutant.seed.name).stem, Path(mutant.seed.name).suffix
        path = self.out / f"{result.outcome}-{stem}-{mutant.mutation_seed}{suffix}"
        path.write_bytes(mutant.data)
        finding = {
            "outcome": result.outcome,
            "format": mutant.seed.format,
            "seed": mutant.seed.name,
            "mutation_seed": mutant.mutation_seed,
            "ops": mutant.ops,
            "file": str(path),
            "error": result.error,
            "seconds": round(result.seconds, 4),
            "peak_growth_mib": result.peak_growth_mib,
        }
        self.findings.append(finding)
        self.log.write(json.dumps(finding) + "\n")
        self.log.flush()

    def print_summary(self, workers: int) -> None:
        elapsed = time.monotonic() - self.start
        print(f"{'format':8}{'inputs':>8}" + "".join(f"{o:>15}" for o in OUTCOMES))
        total: collections.Counter[str] = collections.Counter()
        for fmt in sorted(self.counts):
            total.update(self.counts[fmt])
            print(self._row(fmt, self.counts[fmt]))
        print(self._row("all", total))
        print(
            f"{self.done} inputs in {elapsed:.1f} s: {self.done / elapsed:.0f} inputs/s with "
            f"{workers} workers; {len(self.findings)} findings"
            + (f" in {self.out / 'findings.jsonl'}" if self.findings else "")
        )
        for (outcome, fmt, kind, message), group in self._distinct().items():
            print(f"  {len(group):4} x {outcome} {fmt}: {kind}: {message}\n       {group[0]}")

    @staticmethod
    def _row(name: str, counts: collections.Counter[str]) -> str:
        return f"{name:8}{sum(counts.values()):8}" + "".join(f"{counts[o]:15}" for o in OUTCOMES)

    def _distinct(self) -> dict[tuple[str, ...], list[str]]:
        """Findings grouped by outcome, format, error type and message (numbers blurred)."""
        groups: dict[tuple[str, ...], list[str]] = collections.defaultdict(list)
        for f in self.findings:
            error = f["error"] or {}
            message = re.sub(r"\d+", "N", error.get("message", "").splitlines()[0])[:120]
            groups[(f["outcome"], f["format"], error.get("type", ""), message)].append(f["file"])
        return groups


def _replay(paths: list[Path], caps: Caps) -> int:
    findings = 0
    with Worker(caps=caps) as worker:
        for path in paths:
            result = worker.run(_MODALITY_OF_SUFFIX[path.suffix], path.read_bytes())
            findings += result.outcome in FINDINGS
            peak = result.peak_growth_mib
            grew = "" if peak is None else f", peak RSS +{peak:.0f} MiB"
            print(f"{path}: {result.outcome} in {result.seconds:.3f} s{grew}")
            for key, value in (result.error or {}).items():
                print(f"  {key}: {value}")
    return int(findings > 0)


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=3000, help="inputs to run (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="mutation seed of input 0")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", type=Path, default=Path(".cache/fuzz"), help="findings go here")
    all_formats = ",".join(dict.fromkeys(seed.format for seed in SEEDS))
    parser.add_argument("--formats", help=f"a comma-separated subset of {all_formats}")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_CAPS.timeout_s)
    parser.add_argument("--peak-growth-mib", type=int, default=DEFAULT_CAPS.peak_growth_mib)
    parser.add_argument("--rss-growth-mib", type=int, default=DEFAULT_CAPS.rss_growth_mib)
    parser.add_argument("--replay", type=Path, nargs="+", help="run saved inputs instead")
    args = parser.parse_args(argv)
    caps = Caps(args.timeout_s, args.peak_growth_mib, args.rss_growth_mib)
    if args.replay:
        return _replay(args.replay, caps)
    formats = set(args.formats.split(",")) if args.formats else {s.format for s in SEEDS}
    seeds = [seed for seed in SEEDS if seed.format in formats]
    if not seeds:
        parser.error(f"no seeds of the formats {args.formats}")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "findings.jsonl", "w") as log:
        tally = _Tally(args.count, args.out, log)
        campaign(
            args.count, tally, first_seed=args.seed, workers=args.workers, seeds=seeds, caps=caps
        )
    tally.print_summary(args.workers)
    return int(bool(tally.findings))


if __name__ == "__main__":
    sys.exit(main())
