"""The benchmark inputs, made by FFmpeg from fixed commands (cached under .cache/media)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import ROOT  # noqa: F401 - puts the project on sys.path
from tests.media import ffmpeg


def h264(name: str, size: str, seconds: int, gop: int, rate: int = 30) -> Path:
    """``testsrc2`` encoded with libx264 (veryfast, yuv420p) at a fixed GOP."""
    return ffmpeg(
        name,
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        str(gop),
        "-pix_fmt",
        "yuv420p",
    )


VIDEO_CLIPS = {
    "720p 10 s GOP 30": lambda: h264("b720short.mp4", "1280x720", 10, 30),
    "720p 60 s GOP 250": lambda: h264("b720.mp4", "1280x720", 60, 250),
    "1080p 60 s GOP 250": lambda: h264("b1080.mp4", "1920x1080", 60, 250),
    "360p 10 min GOP 250 (sparse)": lambda: h264("b360long.mp4", "640x360", 600, 250),
}
