"""CPU priority of the threads that decode and read media, shared by the frontend and backends.

# Note [decode priority]
Decoding is CPU-bound and runs beside the event loop. Worker threads lower their own priority
(Linux applies setpriority to a thread id, and the FFmpeg threads they start inherit it), so
that the event loop, health checks and text-only requests get a core first when all are busy.
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["DECODE_NICENESS", "lower_thread_priority"]

DECODE_NICENESS = 10


def lower_thread_priority() -> None:
    """Lowers the calling thread's CPU priority (Note [decode priority]); best effort."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)
