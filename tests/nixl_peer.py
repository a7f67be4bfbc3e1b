"""A backend in its own process: reads descriptors (JSON lines on stdin) over NIXL, answers with
what arrived (JSON lines on stdout). Started by tests and benchmarks as a real second process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from dynamo_media import tensor_sha256
from dynamo_media.nixl import read


class Peer:
    """The parent's handle on a peer process: one JSON line in, one JSON line out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.nixl_peer"],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read(self, descriptor: dict, *, sha256: bool = True) -> dict:
        """The peer's answer: ``sha256`` (unless not asked for), ``shape``, ``dtype`` and
        ``seconds`` of the read, or ``error``."""
        assert self.proc.stdin and self.proc.stdout
        request = {"descriptor": descriptor, "sha256": sha256}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            start = time.perf_counter()
            tensor = read(request["descriptor"])
            seconds = time.perf_counter() - start
            answer = {"shape": list(tensor.shape), "dtype": str(tensor.dtype), "seconds": seconds}
            if request.get("sha256", True):
                answer["sha256"] = tensor_sha256(tensor)
        except Exception as exc:  # the test reads the error's type and message
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
