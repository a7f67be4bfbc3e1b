"""The fuzzing worker: runs inputs one after another for the harness, over length-prefixed frames.

Started as ``python -m tests.fuzz.worker TARGET`` (``module:function``, called as
``function(modality, data)``). It says ``{"ready": true, "rss": ...}`` once its imports are
done, so that startup does not count against an input's time cap (and the parent knows the RSS
it starts from). Then each request is two frames on stdin, a
JSON header ``{"modality": ...}`` and the input's bytes, and each answer one JSON frame:
``{"outcome", "error", "peak_growth", "rss"}``: ``peak_growth`` is how far the peak RSS rose
above the RSS before the input (``/proc/self/clear_refs`` resets the peak per input), ``rss``
the RSS after it, in bytes.

The worker exits at the end of stdin, and is killed with its parent. The frames travel on a
private copy of stdout; what FFmpeg and Python print goes to stderr.
"""

from __future__ import annotations

import ctypes
import faulthandler
import importlib
import json
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any

from dynamo_media import MediaError
from tests.fuzz.protocol import FRAME, frame
from tests.fuzz.target import ContractError

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's payload; ``None`` at the end of the stream."""
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (n,) = FRAME.unpack(head)
    return stream.read(n)


def _status_bytes(key: str) -> int:
    """A ``kB`` line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _describe(exc: BaseException, *, frames: int) -> dict[str, str]:
    kind, module = type(exc), type(exc).__module__
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    described = {"type": name, "message": str(exc)[:1000]}
    if frames:
        described["traceback"] = "".join(traceback.format_tb(exc.__traceback__)[-frames:])
    return described


def _run(target: Callable[[str, bytes], None], modality: str, data: bytes) -> dict[str, Any]:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current RSS
    before = _status_bytes("VmRSS")
    outcome, error = "ok", None
    try:
        target(modality, data)
    except MediaError as exc:
        outcome, error = "media_error", _describe(exc, frames=0)
    except ContractError as exc:
        outcome, error = "contract", _describe(exc, frames=0)
    except Exception as exc:
        outcome, error = "raw_exception", _describe(exc, frames=4)
    peak_growth, rss = _status_bytes("VmHWM") - before, _status_bytes("VmRSS")
    return {"outcome": outcome, "error": error, "peak_growth": peak_growth, "rss": rss}


def _load(spec: str) -> Callable[[str, bytes], None]:
    module, _, name = spec.partition(":")
    target: Callable[[str, bytes], None] = getattr(importlib.import_module(module), name)
    return target


def main() -> None:
    """Serves requests on stdin until it ends."""
    # The kernel kills this process when the thread that started it exits (it may hang in a
    # decoder, where it would never see its stdin close).
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # crashes and hangs leave no core files
    faulthandler.enable()  # a crash prints the Python stack to stderr, which the parent keeps
    target = _load(sys.argv[1])
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def answer(message: dict[str, Any]) -> None:
        out.write(frame(json.dumps(message).encode()))
        out.flush()

    answer({"ready": True, "rss": _status_bytes("VmRSS")})
    while (header := _read_frame(sys.stdin.buffer)) is not None:
        data = _read_frame(sys.stdin.buffer) or b""
        answer(_run(target, json.loads(header)["modality"], data))


if __name__ == "__main__":
    main()
