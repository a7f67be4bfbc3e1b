"""What the decode functions accept as their source, reduced to bytes."""

from __future__ import annotations

import io
import os
from typing import IO

from dynamo_media._media import EncodedMedia

__all__ = ["Source", "read_source"]

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | EncodedMedia


def read_source(source: Source) -> tuple[bytes, str | None]:
    """The bytes of a source, and its MIME type when known.

    Args:
        source: encoded bytes, a path, a binary file object, or ``EncodedMedia``.

    Returns:
        ``(data, mime)``.
    """
    if isinstance(source, EncodedMedia):
        return source.data, source.mime
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read(), None
    if isinstance(source, io.IOBase) or hasattr(source, "read"):
        return source.read(), None
    raise TypeError(
        f"source must be bytes, a path, a binary file or EncodedMedia, got {type(source).__name__}"
    )
