"""``file:`` URLs, only under ``allowed_local_media_path`` once ``..`` and symlinks are resolved."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from dynamo_media._errors import FetchError, PolicyError, TooLarge
from dynamo_media.fetch._url import shorten_url

__all__ = ["read_local_file"]


def read_local_file(url: str, allowed_root: str | None, max_bytes: int) -> bytes:
    """Reads a ``file:`` URL.

    Args:
        url: ``file:///path`` (or ``file:/path``); a host other than ``localhost`` is refused.
        allowed_root: directory the resolved path must lie under; ``None`` refuses all.
        max_bytes: cap on the file's size, checked before reading.

    Returns:
        The file's bytes.

    Raises:
        PolicyError: ``file:`` not allowed, or the path resolves outside the root.
        TooLarge: the file is over ``max_bytes``.
        FetchError: the file is missing or unreadable.
    """
    if allowed_root is None:
        raise PolicyError(
            "file: URLs are refused; set allowed_local_media_path to read local media"
        )
    shown = shorten_url(url)
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise PolicyError(f"file: URL {shown!r} names a host; only local paths are read")
    root = Path(allowed_root).resolve()
    path = Path(urllib.parse.unquote(parts.path)).resolve()
    if not path.is_relative_to(root):
        raise PolicyError(f"{shown!r} resolves outside allowed_local_media_path ({root})")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise TooLarge(f"{shown!r} is {size} bytes, over max_bytes ({max_bytes})")
            data = f.read(max_bytes + 1)  # one byte past the cap: it may grow after fstat
    except OSError as exc:
        raise FetchError(f"Cannot read {shown!r}: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise TooLarge(f"{shown!r} grew past max_bytes ({max_bytes}) while it was read")
    return data
