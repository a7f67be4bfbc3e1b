"""Test images: FFmpeg-made pictures and the hostile files the guards must refuse."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

from tests.media import ffmpeg

TESTSRC = ["-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1"]


def picture(name: str, *extra: str) -> Path:
    """``testsrc2`` at 320x240 saved as ``name`` (the extension picks the format)."""
    return ffmpeg(name, *TESTSRC, *extra)


def pillow_bytes(img: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A few kilobytes of PNG that declare ``width x height`` RGB pixels (7.5 GB at 50000^2)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width * 3 + 1) * 4, 9)  # the first rows only
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")
    )


def png_bad_crc() -> bytes:
    data = bytearray(picture("crc.png").read_bytes())
    idat = data.find(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    data[idat + 4 + length] ^= 0xFF  # flip a byte of the IDAT chunk's CRC
    return bytes(data)
