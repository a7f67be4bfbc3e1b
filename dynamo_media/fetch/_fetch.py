"""``fetch_url``: one URL to ``EncodedMedia``, by scheme; and the thread pool of ``afetch``."""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from dynamo_media._errors import PolicyError
from dynamo_media._media import EncodedMedia
from dynamo_media._sniff import sniff_mime
from dynamo_media.fetch._data import decode_data_url
from dynamo_media.fetch._local import read_local_file
from dynamo_media.fetch._url import shorten_url

if TYPE_CHECKING:
    from dynamo_media.config import FetchPolicy
    from dynamo_media.fetch._http import HttpClient

__all__ = ["fetch_executor", "fetch_url"]

_FETCH_THREADS = 32
_GENERIC_MIME = {None, "application/octet-stream", "binary/octet-stream"}


@functools.cache
def fetch_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide pool that ``afetch`` runs downloads on (I/O bound, so wide)."""
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=_FETCH_THREADS, thread_name_prefix="dynamo-media-fetch"
    )


def fetch_url(url: str, policy: FetchPolicy, http: Callable[[], HttpClient]) -> EncodedMedia:
    """Fetches ``http(s):``, ``data:`` or ``file:`` URLs under ``policy``.

    Args:
        url: the URL.
        policy: the fetch policy.
        http: gives the pooled HTTP client (made on first use).

    Returns:
        The bytes, MIME type (declared, or sniffed when missing or generic), shortened source
        and sha256.

    Raises:
        PolicyError, FetchError, DecodeError: see ``MediaFetcher.fetch``.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    scheme = url.partition(":")[0].lower()
    if scheme == "data":
        data, mime = decode_data_url(url, policy.max_bytes)
    elif scheme == "file":
        data, mime = read_local_file(url, policy.allowed_local_media_path, policy.max_bytes), None
    elif scheme in ("http", "https"):
        data, mime = http().get(url)
    else:
        raise PolicyError(
            f"Unsupported URL scheme {scheme!r} in {shorten_url(url)!r}; use http, https, "
            "data (base64) or file (under allowed_local_media_path)"
        )
    if mime in _GENERIC_MIME:
        mime = sniff_mime(data)
    return EncodedMedia(data, mime, shorten_url(url), hashlib.sha256(data).hexdigest())
