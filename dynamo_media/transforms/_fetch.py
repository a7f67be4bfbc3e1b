"""``FetchURL``: a URL to ``EncodedMedia``, under a ``MediaFetcher``'s policy."""

from __future__ import annotations

from typing import Any

from dynamo_media._media import EncodedMedia
from dynamo_media._options import format_bytes
from dynamo_media.config import FetchPolicy
from dynamo_media.fetch import MediaFetcher
from dynamo_media.transforms._transform import Transform

__all__ = ["FetchURL"]

_DEFAULT_POLICY = FetchPolicy()


class FetchURL(Transform):
    """Fetches a URL (``http(s):``, ``data:``, ``file:``); passes ``EncodedMedia`` through.

    Functional twin: ``MediaFetcher.fetch``.

    Args:
        fetcher: the fetcher and its policy. Default: ``MediaFetcher()``.
    """

    stage = "fetch"

    def __init__(self, fetcher: MediaFetcher | None = None) -> None:
        self.fetcher = fetcher or MediaFetcher()

    def forward(self, inpt: str | EncodedMedia) -> EncodedMedia:
        if isinstance(inpt, EncodedMedia):
            return inpt
        return self.fetcher.fetch(inpt)

    async def aforward(self, inpt: str | EncodedMedia) -> EncodedMedia:
        """``forward`` without blocking the event loop."""
        if isinstance(inpt, EncodedMedia):
            return inpt
        return await self.fetcher.afetch(inpt)

    def repr_options(self) -> dict[str, Any]:
        policy = self.fetcher.policy
        shown: dict[str, Any] = {
            "timeout_ms": policy.timeout_ms,
            "max_bytes": format_bytes(policy.max_bytes),
        }
        for name in ("allowed_media_domains", "allow_direct_ip", "allow_private_ips"):
            if getattr(policy, name) != getattr(_DEFAULT_POLICY, name):
                shown[name] = getattr(policy, name)
        return shown
