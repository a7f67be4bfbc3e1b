"""A backend in its own process: reads descriptors (JSON lines on stdin) over NIXL, answers with
what arrived (JSON lines on stdout). Started by tests and benchmarks as a real second process."""

from __future__ import annotations

import json
import sys
import time

from dynamo_media import tensor_sha256
from dynamo_media.nixl import read


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            start = time.perf_counter()
            tensor = read(request["descriptor"])
            seconds = time.perf_counter() - start
            answer = {
                "sha256": tensor_sha256(tensor),
                "shape": list(tensor.shape),
                "dtype": str(tensor.dtype),
                "seconds": seconds,
            }
        except Exception as exc:  # the test reads the error's type and message
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
