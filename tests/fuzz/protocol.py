"""The frames between the harness and its workers: a 4-byte big-endian length, then the payload."""

from __future__ import annotations

import struct

__all__ = ["FRAME", "frame"]

FRAME = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """``payload`` with its length in front."""
    return FRAME.pack(len(payload)) + payload
