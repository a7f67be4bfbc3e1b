"""A cap on the size of any one block FFmpeg allocates, set from the limits.

# Note [ffmpeg allocations]
FFmpeg's stream probe (``avformat_find_stream_info``, run when torchcodec opens a file) decodes
a first frame of every stream at the size its bitstream declares, before we can read that size
and refuse it: a 4.4 KB WebM whose VP9 frame header claims 4096x61488 made it allocate 409 MiB
before our resolution limit refused the file (tests/fuzz found it). The size lives in each
codec's bitstream (VP9 frame headers, H.264/HEVC parameter sets, ...), and the container's
declared size need not agree with it, so reading headers ourselves would leave a parser
difference for the next attacker. Instead, FFmpeg's ``av_max_alloc`` refuses every single
allocation over a cap: a frame plane of the largest size the limits allow, at 3 bytes per pixel
(packed RGB, the widest common decoder output; planar formats up to 16 bits per sample take 2),
with FFmpeg's row padding. The bitstream's oversized frame then fails to allocate, the probe
reports the size anyway, and ``probe_video`` refuses it by name. The costs: a video codec that
outputs packed RGBA (animated GIF, PNG in MOV) is refused above 3/4 of the pixel limit; and a
frame over the limits whose planes each fit the cap (up to 3x the pixel limit, 8-bit planar) is
still allocated once in the probe before the refusal: bounded, not zero.

The cap is never below ``MIN_ALLOCATION`` (64 MiB), which the rest of FFmpeg's needs stay under
(the probe buffer grows to 5 MB; a packet index takes 24 bytes a frame, 64 MiB for 13 hours at
60 fps), so small limits refuse no file for its length. It is process-wide (FFmpeg has one), so
it only ever rises: it holds the largest limits any call in the process has used. Audio calls
set the floor, since a stream probe opens every stream of a file, video tracks included. It
applies to the FFmpeg that torchcodec loaded, found among the process's mapped libraries; where
there is no ``/proc/self/maps`` (not Linux) it is not set.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

from dynamo_media.config import MiB

__all__ = ["MIN_ALLOCATION", "cap_ffmpeg_allocations", "frame_allocation"]

MIN_ALLOCATION = 64 * MiB
_BYTES_PER_PIXEL = 3
_PAD_COLUMNS, _PAD_ROWS = 64, 128  # FFmpeg's frame pools pad each row and add rows below

_lock = threading.Lock()
_cap = 0


def frame_allocation(width: int, height: int) -> int:
    """The cap that admits every frame plane of ``width x height`` (Note [ffmpeg allocations])."""
    plane = _BYTES_PER_PIXEL * (width + _PAD_COLUMNS) * (height + _PAD_ROWS)
    return max(MIN_ALLOCATION, plane)


def _libavutil() -> list[ctypes.CDLL]:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "/libavutil" in line}
    return [ctypes.CDLL(p) for p in sorted(paths)]


def cap_ffmpeg_allocations(max_bytes: int) -> None:
    """Raises FFmpeg's cap on one allocation to ``max_bytes``, if it is lower.

    See Note [ffmpeg allocations]. Call it after torchcodec is imported (its FFmpeg is loaded).
    """
    global _cap
    with _lock:
        if max_bytes <= _cap:
            return
        for library in _libavutil():
            library.av_max_alloc.argtypes = [ctypes.c_size_t]
            library.av_max_alloc(max_bytes)
        _cap = max_bytes
