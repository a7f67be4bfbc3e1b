"""Fetching media under a policy: http(s) with SSRF checks, base64 ``data:`` and local ``file:``."""

from dynamo_media.fetch._fetch import fetch_executor, fetch_url
from dynamo_media.fetch._fetcher import MediaFetcher
from dynamo_media.fetch._http import HttpClient
from dynamo_media.fetch._policy import address_refusal, domain_allowed
from dynamo_media.fetch._url import ParsedURL, parse_http_url, shorten_url

__all__ = [
    "HttpClient",
    "MediaFetcher",
    "ParsedURL",
    "address_refusal",
    "domain_allowed",
    "fetch_executor",
    "fetch_url",
    "parse_http_url",
    "shorten_url",
]
