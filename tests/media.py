"""Test and benchmark media, made by FFmpeg from recorded commands and cached by command."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "media"


def ffmpeg(name: str, *args: str) -> Path:
    """Runs ``ffmpeg -y <args> OUT`` once per distinct command; returns OUT.

    Args:
        name: the output's file name (its extension picks the container).
        args: FFmpeg arguments before the output, e.g. ``-f lavfi -i testsrc2=...``.
    """
    key = hashlib.sha256(repr((name, args)).encode()).hexdigest()[:16]
    out = CACHE / f"{key}-{name}"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"tmp-{out.name}")
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(tmp)]
        subprocess.run(cmd, check=True)
        shutil.move(tmp, out)
    return out


def numbered_video(
    name: str,
    *,
    seconds: float = 2.0,
    fps: int = 25,
    size: str = "320x240",
    codec: list[str] | None = None,
) -> Path:
    """A clip whose frame ``i`` shows ``i`` in binary as 16 black/white bars across the top.

    ``read_frame_number`` recovers the index from a decoded frame, so a test can check which
    frames came back, whatever the codec did to the pixels.
    """
    w, h = (int(v) for v in size.split("x"))
    bar = w // 16
    bars = "+".join(
        f"(floor(mod(N/{1 << b},2))*lt(abs(X-{bar * (15 - b) + bar // 2}),{bar // 3}))"
        for b in range(16)
    )
    expr = f"if(lt(Y,{h // 4}),255*({bars}),128)"
    return ffmpeg(
        name,
        "-f",
        "lavfi",
        "-i",
        f"nullsrc=size={size}:rate={fps}:duration={seconds}",
        "-vf",
        f"geq=lum='{expr}':cb=128:cr=128,format=yuv420p",
        *(codec or ["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p"]),
    )


def read_frame_number(frame_chw) -> int:
    """The index drawn by ``numbered_video`` into a decoded ``CHW`` uint8 frame."""
    _, h, w = frame_chw.shape
    bar = w // 16
    row = frame_chw[0, h // 8].float()
    bits = [int(row[bar * (15 - b) + bar // 2] > 128) for b in range(16)]
    return sum(bit << b for b, bit in enumerate(bits))
