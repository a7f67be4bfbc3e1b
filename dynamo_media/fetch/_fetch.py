"""``fetch_url``: one URL to ``EncodedMedia``, by scheme; and the thread pool of ``afetch``."""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dynamo_media._errors import FetchTimeout, PolicyError
from dynamo_media._media import EncodedMedia
from dynamo_media._sniff import sniff_mime
from dynamo_media.fetch._data import decode_data_url
from dynamo_media.fetch._deadline import Deadline
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
    """The process-wide pool that ``afetch`` runs downloads on (I/O bound, so wide); a fetch
    that waited there past its ``timeout_ms`` fails without starting (``fetch_url``'s
    ``start``)."""
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=_FETCH_THREADS, thread_name_prefix="dynamo-media-fetch"
    )


def fetch_url(
    url: str,
    policy: FetchPolicy,
    http: Callable[[], HttpClient],
    *,
    start: float | None = None,
) -> EncodedMedia:
    """Fetches ``http(s):``, ``data:`` or ``file:`` URLs under ``policy``.

    Args:
        url: the URL.
        policy: the fetch policy.
        http: gives the pooled HTTP client (made on first use).
        start: when the fetch was asked for (``time.monotonic()``), where ``timeout_ms`` counts
            from: ``afetch`` passes its call time, so the wait for a thread counts. Default:
            ``None``, now.

    Returns:
        The bytes, MIME type (declared, or sniffed when missing or generic), shortened source
        and sha256.

    Raises:
        PolicyError, FetchError, DecodeError: see ``MediaFetcher.fetch``.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    now = time.monotonic()
    start = now if start is None else start
    if (now - start) * 1000 >= policy.timeout_ms:
        raise FetchTimeout(
            f"{shorten_url(url)} waited {(now - start) * 1000:.0f} ms for a fetch thread (all "
            f"{_FETCH_THREADS} busy), over timeout_ms ({policy.timeout_ms}); raise timeout_ms or "
            "send fewer URLs at once"
        )
    scheme = url.partition(":")[0].lower()
    if scheme == "data":
        data, mime = decode_data_url(url, policy.max_bytes)
    elif scheme == "file":
        data, mime = read_local_file(url, policy.allowed_local_media_path, policy.max_bytes), None
    elif scheme in ("http", "https"):
        data, mime = http().get(url, Deadline(policy.timeout_ms, url, start=start))
    else:
        raise PolicyError(
            f"Unsupported URL scheme {shorten_url(scheme)!r} in {shorten_url(url)!r}; use http, "
            "https, data (base64) or file (under allowed_local_media_path)"
        )
    if mime in _GENERIC_MIME:
        mime = sniff_mime(data)
    return EncodedMedia(data, mime, shorten_url(url), hashlib.sha256(data).hexdigest())
