"""Seed files: tiny media of every accepted format, made by FFmpeg from recorded commands.

Each seed decodes in milliseconds, so that a worker runs hundreds of mutated inputs a second.
Every format has two seeds or more (different sizes, pixel formats or codecs), so that
``splice`` finds a partner of the same format.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

from tests.media import ffmpeg

__all__ = ["SEEDS", "Seed", "make_all", "seed_named"]

Modality = Literal["image", "video", "audio"]  # as dynamo_media.config's, which imports torch

_PICTURE = ("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1")
_BARS = ("-f", "lavfi", "-i", "smptebars=size=40x56", "-frames:v", "1")
_CLIP = ("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1.2")
_BARS_CLIP = ("-f", "lavfi", "-i", "smptebars=size=48x32:rate=15:duration=1")
_TONE_TRACK = ("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-shortest")
_H264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "4")
_VP9 = ("-c:v", "libvpx-vp9", "-g", "4")
_TONE = ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050:duration=0.5", "-ac", "2")
_NOISE = ("-f", "lavfi", "-i", "anoisesrc=sample_rate=16000:duration=0.5:amplitude=1")


@dataclasses.dataclass(frozen=True)
class Seed:
    """One seed file.

    Attributes:
        name: the file name, unique among the seeds; its extension picks FFmpeg's container.
        format: the file format, which picks the structure mutations and the splice partners.
        modality: the decoder it is fed to.
        args: the FFmpeg arguments that make it (see ``tests.media.ffmpeg``).
    """

    name: str
    format: str
    modality: Modality
    args: tuple[str, ...]

    @property
    def data(self) -> bytes:
        """The seed's bytes, made on first use and cached under ``.cache/media``."""
        return _read(self)


@functools.cache
def _read(seed: Seed) -> bytes:
    return ffmpeg(seed.name, *seed.args).read_bytes()


SEEDS: tuple[Seed, ...] = (
    Seed("testsrc2.jpg", "jpeg", "image", _PICTURE),
    Seed("gray.jpg", "jpeg", "image", (*_BARS, "-pix_fmt", "gray")),
    Seed("testsrc2.png", "png", "image", _PICTURE),
    Seed("rgba.png", "png", "image", (*_BARS, "-pix_fmt", "rgba")),
    Seed("testsrc2.webp", "webp", "image", _PICTURE),
    Seed("lossless.webp", "webp", "image", (*_BARS, "-lossless", "1")),
    Seed("testsrc2.gif", "gif", "image", _PICTURE),
    Seed("animated.gif", "gif", "image", (*_CLIP, "-frames:v", "8")),
    Seed("testsrc2.bmp", "bmp", "image", _PICTURE),
    Seed("pal8.bmp", "bmp", "image", (*_BARS, "-pix_fmt", "pal8")),
    Seed("testsrc2.tiff", "tiff", "image", _PICTURE),
    Seed("gray16.tiff", "tiff", "image", (*_BARS, "-pix_fmt", "gray16le")),
    Seed("h264.mp4", "mp4", "video", (*_CLIP, *_H264)),
    Seed("h264-aac.mp4", "mp4", "video", (*_BARS_CLIP, *_TONE_TRACK, *_H264, "-c:a", "aac")),
    Seed("vp9.webm", "webm", "video", (*_CLIP, *_VP9)),
    Seed("vp9-opus.webm", "webm", "video", (*_BARS_CLIP, *_TONE_TRACK, *_VP9)),
    Seed("vp8.mkv", "mkv", "video", (*_CLIP, "-c:v", "libvpx", "-g", "4")),
    Seed("h264.mkv", "mkv", "video", (*_BARS_CLIP, *_H264)),
    Seed("h264.mov", "mov", "video", (*_CLIP, *_H264)),
    Seed("mjpeg.mov", "mov", "video", (*_BARS_CLIP, "-c:v", "mjpeg")),
    Seed("mjpeg.avi", "avi", "video", (*_CLIP, "-c:v", "mjpeg")),
    Seed("bars-mjpeg.avi", "avi", "video", (*_BARS_CLIP, "-c:v", "mjpeg")),
    Seed("s16.wav", "wav", "audio", (*_TONE, "-c:a", "pcm_s16le")),
    Seed("f32-mono.wav", "wav", "audio", (*_NOISE, "-c:a", "pcm_f32le")),
    Seed("tone.mp3", "mp3", "audio", (*_TONE, "-c:a", "libmp3lame")),
    Seed("noise.mp3", "mp3", "audio", (*_NOISE, "-c:a", "libmp3lame")),
    Seed("tone.flac", "flac", "audio", (*_TONE, "-c:a", "flac")),
    Seed("noise.flac", "flac", "audio", (*_NOISE, "-c:a", "flac")),
    Seed("tone.ogg", "opus", "audio", (*_TONE, "-c:a", "libopus")),
    Seed("noise.ogg", "opus", "audio", (*_NOISE, "-c:a", "libopus")),
)

_BY_NAME = {seed.name: seed for seed in SEEDS}


def seed_named(name: str) -> Seed:
    """The seed called ``name``.

    Raises:
        KeyError: no seed has that name; the message lists the names.
    """
    if name not in _BY_NAME:
        raise KeyError(f"no seed named {name!r}; seeds are {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def make_all(seeds: Sequence[Seed] = SEEDS) -> None:
    """Makes the seed files that are not cached yet (once, before threads share them)."""
    for seed in seeds:
        _read(seed)
