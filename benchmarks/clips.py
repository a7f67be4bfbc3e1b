"""The benchmark inputs, made by FFmpeg from fixed commands (cached under .cache/media)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import ROOT  # noqa: F401 - puts the project on sys.path
from tests.media import ffmpeg


def encoded(name: str, size: str, seconds: int, *codec: str, rate: int = 30) -> Path:
    """``testsrc2`` at ``size`` for ``seconds``, encoded with ``codec`` (FFmpeg arguments)."""
    source = f"testsrc2=size={size}:rate={rate}:duration={seconds}"
    return ffmpeg(name, "-f", "lavfi", "-i", source, *codec, "-pix_fmt", "yuv420p")


def h264(name: str, size: str, seconds: int, gop: int, *extra: str) -> Path:
    """libx264 (veryfast unless ``extra`` says otherwise) at a fixed GOP."""
    return encoded(
        name, size, seconds, "-c:v", "libx264", "-preset", "veryfast", "-g", str(gop), *extra
    )


VIDEO_CLIPS = {
    "720p 10 s GOP 30": lambda: h264("b720short.mp4", "1280x720", 10, 30),
    "720p 60 s GOP 250": lambda: h264("b720.mp4", "1280x720", 60, 250),
    "1080p 60 s GOP 250": lambda: h264("b1080.mp4", "1920x1080", 60, 250),
    "360p 10 min GOP 250 (sparse)": lambda: h264("b360long.mp4", "640x360", 600, 250),
    "1080p 60 s B-pyramid (x264 medium)": lambda: h264(
        "b1080medium.mp4", "1920x1080", 60, 250, "-preset", "medium"
    ),
    "1080p 60 s no B-frames": lambda: h264("b1080nob.mp4", "1920x1080", 60, 250, "-bf", "0"),
    "1080p 60 s HEVC": lambda: encoded(
        "b1080hevc.mp4",
        "1920x1080",
        60,
        *("-c:v", "libx265", "-preset", "veryfast", "-x265-params", "log-level=error:keyint=250"),
        *("-tag:v", "hvc1"),
    ),
    "1080p 60 s VP9": lambda: encoded(
        "b1080vp9.webm",
        "1920x1080",
        60,
        *("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "4M"),
        *("-g", "250"),
    ),
}
