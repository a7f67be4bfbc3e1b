"""Fetching media under a policy: http(s) with SSRF checks, base64 ``data:`` and local ``file:``."""

from dynamo_media.fetch._fetcher import MediaFetcher

__all__ = ["MediaFetcher"]
