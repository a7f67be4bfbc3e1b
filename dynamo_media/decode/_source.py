"""What the decode functions accept as their source, reduced to bytes."""

from __future__ import annotations

import io
import os
from typing import IO, Any, TypeVar

from dynamo_media._errors import InvalidOptions
from dynamo_media._media import EncodedMedia, ProbedMedia

__all__ = ["Source", "attached_probe", "content_hash_of", "read_source"]

ProbeT = TypeVar("ProbeT")

Source = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | EncodedMedia | ProbedMedia
)


def read_source(source: Source) -> bytes:
    """The bytes of a source: encoded bytes, a path, a binary file object, or ``EncodedMedia``."""
    if isinstance(source, ProbedMedia):
        return source.media.data
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


def content_hash_of(source: Source) -> str | None:
    """The fetched bytes' hash, when the source is fetched media."""
    if isinstance(source, ProbedMedia):
        return source.media.content_hash
    return source.content_hash if isinstance(source, EncodedMedia) else None


def attached_probe(source: Source, kind: type[ProbeT], **options: Any) -> ProbeT | None:
    """The probe a ``Check*Limits`` step attached to ``source``, if any.

    Args:
        source: the decode function's source.
        kind: the probe's type.
        options: the decode call's options that shape the probe.

    Raises:
        InvalidOptions: the probe was made under other options than these.
    """
    if not isinstance(source, ProbedMedia):
        return None
    if source.options != options or not isinstance(source.probe, kind):
        differ = sorted(k for k in options if source.options.get(k) != options[k])
        shown = ", ".join(f"{k}={source.options.get(k)!r} vs {options[k]!r}" for k in differ)
        raise InvalidOptions(
            f"the check step probed {source.media.source} under other options than the decode "
            f"step's ({shown or kind.__name__}); build both from the same options, as "
            "MediaDecoder.pipeline does"
        )
    return source.probe
