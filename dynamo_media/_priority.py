"""CPU priority of the threads that decode and read media, shared by the frontend and backends.

# Note [decode priority]
Decoding is CPU-bound and runs beside the event loop. Worker threads lower their own priority
(Linux applies setpriority to a thread id, and the FFmpeg threads they start inherit it), so
that the event loop, health checks and text-only requests get a core first when all are busy.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading

__all__ = ["DECODE_NICENESS", "low_priority_pool", "lower_thread_priority"]

DECODE_NICENESS = 10


def lower_thread_priority() -> None:
    """Lowers the calling thread's CPU priority (Note [decode priority]); best effort."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)


def low_priority_pool(name: str, max_workers: int | None = None) -> concurrent.futures.Executor:
    """A thread pool whose threads lower their priority as they start (Note [decode priority]).

    Args:
        name: the threads' name prefix.
        max_workers: threads. Default: one per core.
    """
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=max_workers or os.cpu_count() or 2,
        thread_name_prefix=name,
        initializer=lower_thread_priority,
    )
