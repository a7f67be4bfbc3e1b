"""What the decode functions accept as their source, reduced to bytes."""

from __future__ import annotations

import io
import os
from typing import IO, TypeVar

from dynamo_media._media import EncodedMedia

__all__ = ["Source", "attached_probe", "read_source"]

ProbeT = TypeVar("ProbeT")

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | EncodedMedia


def read_source(source: Source) -> bytes:
    """The bytes of a source: encoded bytes, a path, a binary file object, or ``EncodedMedia``."""
    if isinstance(source, EncodedMedia):
        return source.data
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read()
    if isinstance(source, io.IOBase) or hasattr(source, "read"):
        return source.read()
    raise TypeError(
        f"source must be bytes, a path, a binary file or EncodedMedia, got {type(source).__name__}"
    )


def attached_probe(source: Source, kind: type[ProbeT]) -> ProbeT | None:
    """The probe a ``Check*Limits`` transform attached to ``source``, if it is of ``kind``."""
    probe = source.probe if isinstance(source, EncodedMedia) else None
    return probe if isinstance(probe, kind) else None
