"""The parent's side: worker processes under time and memory caps, outcomes, and campaigns.

A ``Worker`` owns one worker process (``worker.py``) and starts a new one when it dies. It sends
one input at a time and, while it waits for the answer, polls the process's ``VmRSS``. Outcomes:

    ok             the target returned
    media_error    it raised a dynamo_media ``MediaError``: the expected answer to bad input
    raw_exception  it raised anything else
    contract       it returned an output that breaks the contract (``target.ContractError``)
    crash          the worker died (by a signal, or an exit of its own)
    hang           no answer within ``Caps.timeout_s``: stopped with SIGABRT (faulthandler
                   prints where it was), then killed
    memory         the peak RSS grew more than ``Caps.peak_growth_mib`` during the input, or the
                   RSS grew ``Caps.rss_growth_mib`` past the worker's RSS at startup (torch
                   alone is most of a GB) and the worker was killed on the spot

The last five are findings.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.fuzz.mutate import Mutant, mutate
from tests.fuzz.protocol import FRAME, frame
from tests.fuzz.seeds import SEEDS, Seed, make_all

__all__ = ["DEFAULT_CAPS", "DEFAULT_TARGET", "FINDINGS", "OUTCOMES", "Caps", "Result", "Worker"]

ROOT = Path(__file__).resolve().parents[2]
OUTCOMES = ("ok", "media_error", "raw_exception", "contract", "crash", "hang", "memory")
FINDINGS = OUTCOMES[2:]
DEFAULT_TARGET = "tests.fuzz.target:decode"
MiB = 1 << 20
_POLL_S = 0.01
_STDERR_TAIL = 3000


@dataclasses.dataclass(frozen=True)
class Caps:
    """What an input may take.

    Attributes:
        timeout_s: time for one input, from sending it to the answer. Default: 5.
        peak_growth_mib: growth of the worker's peak RSS during one input. Default: 256.
        rss_growth_mib: growth of the worker's RSS above its RSS at startup, at which it is
            killed on the spot. Default: 1024.
        start_timeout_s: time for a worker to start (imports included). Default: 120.
    """

    timeout_s: float = 5.0
    peak_growth_mib: int = 256
    rss_growth_mib: int = 1024
    start_timeout_s: float = 120.0


DEFAULT_CAPS = Caps()


@dataclasses.dataclass(frozen=True)
class Result:
    """How one input went.

    Attributes:
        outcome: one of ``OUTCOMES``.
        error: ``type`` and ``message`` (and ``traceback`` or ``stderr`` where there is one);
            ``None`` when ok.
        seconds: from sending the input to the answer.
        peak_growth_mib: the peak RSS growth, or ``None`` when the worker did not answer.
    """

    outcome: str
    error: dict[str, str] | None
    seconds: float
    peak_growth_mib: float | None


def _rss_bytes(pid: int) -> int:
    """A process's ``VmRSS`` in bytes; 0 once it has exited (a zombie has none)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Worker:
    """One worker process at a time, running inputs under the caps; a context manager.

    Args:
        target: the function the worker runs per input, ``"module:function"``.
            Default: the public decoders and their contract (``target.decode``).
        caps: the caps. Default: ``Caps()``.
    """

    def __init__(self, target: str = DEFAULT_TARGET, caps: Caps = DEFAULT_CAPS) -> None:
        self.target = target
        self.caps = caps
        self._proc: subprocess.Popen[bytes] | None = None
        self._start_rss = 0  # the worker's RSS once its imports are done, in bytes
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
        # Appending, so that the worker keeps writing at the end after the parent truncates it.
        flags = fcntl.fcntl(self._stderr, fcntl.F_GETFL)
        fcntl.fcntl(self._stderr, fcntl.F_SETFL, flags | os.O_APPEND)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self._stderr.close()

    def run(self, modality: str, data: bytes) -> Result:
        """Runs one input, starting a worker process first if none is alive.

        Args:
            modality: ``"image"``, ``"video"`` or ``"audio"``: which decoder gets the input.
            data: the input.
        """
        proc = self._proc or self._start()
        assert proc.stdin is not None
        self._stderr.truncate(0)
        start = time.monotonic()
        with contextlib.suppress(BrokenPipeError):  # it died: the answer says how
            proc.stdin.write(frame(json.dumps({"modality": modality}).encode()) + frame(data))
        rss_cap = self._start_rss + self.caps.rss_growth_mib * MiB
        answer = self._answer(start + self.caps.timeout_s, rss_cap)
        seconds = time.monotonic() - start
        peak = answer.get("peak_growth")
        peak_mib = None if peak is None else peak / MiB
        outcome, error = answer["outcome"], answer["error"]
        if peak_mib is not None and peak_mib > self.caps.peak_growth_mib:
            error = {
                "type": "peak RSS growth",
                "message": f"peak RSS grew {peak_mib:.0f} MiB during the input, over the cap "
                f"({self.caps.peak_growth_mib} MiB); the input then ended as {outcome}"
                + (f": {error['type']}: {error['message']}" if error else ""),
            }
            outcome = "memory"
        if answer.get("rss", 0) - self._start_rss > self.caps.rss_growth_mib * MiB // 2:
            self.close()  # start afresh before what this worker kept is blamed on another input
        return Result(outcome, error, seconds, peak_mib)

    def close(self) -> None:
        """Stops the worker process, if one is alive."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # the worker exits at the end of its stdin
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    def _start(self) -> subprocess.Popen[bytes]:
        self._stderr.truncate(0)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker", self.target],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        ready = self._answer(time.monotonic() + self.caps.start_timeout_s, rss_cap=math.inf)
        if not ready.get("ready"):
            raise RuntimeError(f"the fuzzing worker did not start ({self.target}): {ready}")
        self._start_rss = ready["rss"]
        return self._proc

    def _answer(self, deadline: float, rss_cap: float) -> dict[str, Any]:
        """The worker's next frame, or what happened instead (a crash, a hang, the RSS cap)."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd, buf = proc.stdout.fileno(), b""
        while True:
            if select.select([fd], [], [], _POLL_S)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return self._lost("crash", self._death(proc.wait()))
                buf += chunk
                if len(buf) >= FRAME.size and len(buf) >= FRAME.size + FRAME.unpack_from(buf)[0]:
                    answer: dict[str, Any] = json.loads(buf[FRAME.size :])
                    return answer
            rss = _rss_bytes(proc.pid)
            if rss > rss_cap:
                proc.kill()
                proc.wait()
                grew = (rss - self._start_rss) / MiB
                message = f"RSS grew {grew:.0f} MiB, over the cap ({self.caps.rss_growth_mib} MiB)"
                return self._lost("memory", {"type": "RSS cap", "message": message})
            if time.monotonic() > deadline:
                proc.send_signal(signal.SIGABRT)  # faulthandler prints the stack
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                message = f"no answer within {self.caps.timeout_s} s; killed"
                return self._lost("hang", {"type": "time cap", "message": message})

    @staticmethod
    def _death(returncode: int) -> dict[str, str]:
        if returncode < 0:
            name = signal.Signals(-returncode).name
            return {"type": name, "message": f"the worker died by {name}"}
        return {"type": "exit", "message": f"the worker exited with status {returncode}"}

    def _lost(self, outcome: str, error: dict[str, str]) -> dict[str, Any]:
        """The answer for a worker that is gone: the error, with the tail of its stderr."""
        self.close()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").splitlines(keepends=True)
        # faulthandler ends with a long list of extension modules, which says nothing here
        tail = "".join(line for line in lines if not line.startswith("Extension modules:"))
        return {"outcome": outcome, "error": error | {"stderr": tail[-_STDERR_TAIL:]}}


def campaign(
    count: int,
    report: Callable[[Mutant, Result], None],
    *,
    first_seed: int = 0,
    workers: int = 2,
    seeds: Sequence[Seed] = SEEDS,
    target: str = DEFAULT_TARGET,
    caps: Caps = DEFAULT_CAPS,
) -> None:
    """Runs ``count`` mutants through ``workers`` worker processes.

    Input ``i`` is ``mutate(seeds[i % len(seeds)], first_seed + i)``; worker ``k`` runs the
    inputs ``i % workers == k`` in order. ``report`` is called once per input, under a lock.

    Args:
        count: how many inputs.
        report: called with each mutant and its result.
        first_seed: the mutation seed of input 0. Default: 0.
        workers: worker processes, each driven by a thread. Default: 2.
        seeds: the seed files, taken in turn. Default: all of ``SEEDS``.
        target: the function the workers run. Default: the public decoders.
        caps: the caps. Default: ``Caps()``.
    """
    make_all(seeds)  # before the threads, which would otherwise race to make the same file
    lock = threading.Lock()

    def drive(k: int) -> None:
        with Worker(target, caps) as worker:
            for i in range(k, count, workers):
                mutant = mutate(seeds[i % len(seeds)], first_seed + i)
                result = worker.run(mutant.seed.modality, mutant.data)
                with lock:
                    report(mutant, result)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(drive, range(workers)))
