"""The cache's file tier: reading a spilled entry back against decoding it again, per size, so
that the crossover (Note [spill crossover] in ``dynamo_media/_spill.py``) is measured.

For each input: decode again (what a dropped entry costs on its next hit), and read back from
the file (``SpillDir.take``: the read and its CRC-32) through NIXL's POSIX backend and through
plain ``readv``, each warm (the file still in the page cache, as right after a spill) and cold
(``fsync`` and ``POSIX_FADV_DONTNEED`` first: the page cache gave it up, as it does under the
memory pressure that made the cache spill). The write (``SpillDir.put``) is timed beside them:
it is paid off the request path, on the spill thread. Inputs: images from a 64x64 icon to 1080p,
and 32 frames of a 720p and of a 1080p video.

    python -m benchmarks.spill [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Literal

from benchmarks._common import Row, machine, report, table, versions
from benchmarks.clips import h264
from dynamo_media import DecodedMedia, decode_image, decode_video
from dynamo_media._options import format_bytes
from dynamo_media._spill import SpillDir
from tests.media import ffmpeg

IO: tuple[Literal["nixl", "file"], ...] = ("nixl", "file")


def image(name: str, size: str) -> Callable[[], DecodedMedia]:
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}", "-frames:v", "1"]
    data = ffmpeg(name, *args).read_bytes()
    return lambda: decode_image(data)


def video(name: str, size: str) -> Callable[[], DecodedMedia]:
    data = h264(name, size, 10, 30).read_bytes()
    return lambda: decode_video(data, num_frames=32)


CASES: dict[str, Callable[[], Callable[[], DecodedMedia]]] = {
    "image PNG 64x64": lambda: image("icon64.png", "64x64"),
    "image JPEG 256x256": lambda: image("b256.jpg", "256x256"),
    "image JPEG 1920x1080": lambda: image("b1080.jpg", "1920x1080"),
    "video 720p, 32 frames": lambda: video("b720short.mp4", "1280x720"),
    "video 1080p, 32 frames": lambda: video("b1080short.mp4", "1920x1080"),
}


def _drop_page_cache(spill: SpillDir) -> None:
    for path in spill.path.glob("*.bin"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(
    decode: Callable[[], DecodedMedia], spills: dict[str, SpillDir], repeats: int
) -> dict[str, list[float]]:
    """Seconds per method over ``repeats`` rounds, the methods taking turns."""
    media = decode()  # warm-up, and the entry
    times: dict[str, list[float]] = {"decode again": []}
    for _ in range(repeats):
        start = time.perf_counter()
        decode()
        times["decode again"].append(time.perf_counter() - start)
        for io, spill in spills.items():
            for cold in (False, True):
                start = time.perf_counter()
                # every input is written, to find where decoding again wins
                assert spill.put("k", media, decode_seconds=math.inf)
                times.setdefault(f"write ({io})", []).append(time.perf_counter() - start)
                if cold:
                    _drop_page_cache(spill)
                start = time.perf_counter()
                back = spill.take("k")
                times.setdefault(f"read {'cold' if cold else 'warm'} ({io})", []).append(
                    time.perf_counter() - start
                )
                assert back is not None and back[0].tensor.equal(media.tensor)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="three rounds instead of seven")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("SPILL_BENCH_DIR")) as root:
        spills = {io: SpillDir(root, 1 << 30, io=io) for io in IO}
        try:
            for case, make in CASES.items():
                decode = make()
                nbytes = decode().tensor.untyped_storage().nbytes()
                times = measure(decode, spills, repeats)
                seconds = {k: statistics.median(v) for k, v in times.items()}
                cold = min(v for k, v in seconds.items() if k.startswith("read cold"))
                note = f"decode again / best cold read = {seconds['decode again'] / cold:.2f}"
                rows.append(Row(f"{case} ({format_bytes(nbytes)})", seconds, note))
        finally:
            for spill in spills.values():
                spill.close()
    text = (
        f"Machine: {machine()}; {versions('torch', 'torchcodec', 'nixl')}; "
        f"median of {repeats}; spill files under {root}\n\n"
        + table("Read a spilled entry back vs decode it again", rows, ours="read")
    )
    report("spill", text)


if __name__ == "__main__":
    main()
