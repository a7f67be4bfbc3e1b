"""The fetcher's HTTP cache (``FetchPolicy.http_cache_bytes``, Note [HTTP cache]), against the
real test server on 127.0.0.1, counting the requests that reach it."""

import itertools
import json

import pytest

from dynamo_media import (
    FetchPolicy,
    InvalidOptions,
    MediaFetcher,
    PolicyError,
    TooLarge,
    UpstreamStatus,
)
from tests.media_server import MediaServer

_NAMES = itertools.count()
ETAG = {"ETag": '"v1"'}
LAST_MODIFIED = {"Last-Modified": "Wed, 25 Nov 2026 16:00:00 GMT"}


@pytest.fixture
def cached(fetcher: MediaFetcher) -> MediaFetcher:
    return fetcher.http_cache_bytes(1 << 20)


def add(server: MediaServer, body: bytes, headers: dict[str, str]) -> tuple[str, str]:
    """A body under a new name; returns its path and URL."""
    path = server.add(f"cache{next(_NAMES)}.bin", body, "image/png", headers)
    return path, server.url(path)


class TestHttpCache:
    def test_off_by_default(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        assert FetchPolicy().http_cache_bytes == 0
        path, url = add(server, b"a" * 100, {"Cache-Control": "max-age=60", **ETAG})
        assert fetcher.fetch(url).data == fetcher.fetch(url).data == b"a" * 100
        assert (server.hits[path], server.not_modified[path]) == (2, 0)

    def test_fresh_entry_makes_no_request(self, server: MediaServer, cached: MediaFetcher) -> None:
        path, url = add(server, b"fresh", {"Cache-Control": "max-age=60"})
        first = cached.fetch(url)
        again = [cached.fetch(url) for _ in range(3)]
        assert server.hits[path] == 1
        assert all(
            (e.data, e.mime, e.content_hash) == (first.data, "image/png", first.content_hash)
            for e in again
        )

    @pytest.mark.parametrize(
        "headers",
        [
            {"Cache-Control": "max-age=0", **ETAG},
            {"Cache-Control": "max-age=60", "Age": "60", **ETAG},
            {"Cache-Control": "max-age=60, s-maxage=0", **ETAG},
            {"Cache-Control": "no-cache, max-age=60", **ETAG},
            ETAG,
            LAST_MODIFIED,
        ],
    )
    def test_stale_entry_is_revalidated(
        self, server: MediaServer, cached: MediaFetcher, headers: dict[str, str]
    ) -> None:
        path, url = add(server, b"stale", headers)
        assert [cached.fetch(url).data for _ in range(3)] == [b"stale"] * 3
        assert (server.hits[path], server.not_modified[path]) == (3, 2)

    def test_304_refreshes_the_entry(self, server: MediaServer, cached: MediaFetcher) -> None:
        path, url = add(server, b"refresh", {"Cache-Control": "max-age=0", **ETAG})
        cached.fetch(url)
        server.file_headers[path.rpartition("/")[2]]["Cache-Control"] = "max-age=60"
        assert cached.fetch(url).data == b"refresh"  # a 304 that says max-age=60
        assert cached.fetch(url).data == b"refresh"  # fresh now: no request
        assert (server.hits[path], server.not_modified[path]) == (2, 1)

    def test_changed_body_is_fetched(self, server: MediaServer, cached: MediaFetcher) -> None:
        path, url = add(server, b"old", {"Cache-Control": "no-cache", **ETAG})
        assert cached.fetch(url).data == b"old"
        server.add(path.rpartition("/")[2], b"new", "image/png", {"ETag": '"v2"'})
        changed = cached.fetch(url)
        assert changed.data == b"new"
        assert cached.fetch(url).data == b"new"  # the new body was stored: 304
        assert (server.hits[path], server.not_modified[path]) == (3, 1)

    def test_failed_revalidation_fails(self, server: MediaServer, cached: MediaFetcher) -> None:
        path, url = add(server, b"gone", ETAG)
        cached.fetch(url)
        del server.files[path.rpartition("/")[2]]
        with pytest.raises(UpstreamStatus, match="HTTP 404"):
            cached.fetch(url)

    @pytest.mark.parametrize(
        "headers",
        [
            {"Cache-Control": "no-store", **ETAG},
            {"Cache-Control": "max-age=60, private", **ETAG},
            {"Cache-Control": "max-age=60", "Vary": "*"},
            {"Cache-Control": "max-age=0"},  # stale at once, and nothing to revalidate with
            {},
        ],
    )
    def test_not_stored(
        self, server: MediaServer, cached: MediaFetcher, headers: dict[str, str]
    ) -> None:
        path, url = add(server, b"never", headers)
        assert [cached.fetch(url).data for _ in range(2)] == [b"never"] * 2
        assert (server.hits[path], server.not_modified[path]) == (2, 0)

    def test_policy_checks_every_fetch(self, server: MediaServer, cached: MediaFetcher) -> None:
        path, url = add(server, b"policy", {"Cache-Control": "max-age=60"})
        cached.allowed_media_domains(["media.test"]).fetch(url)
        cached.fetch(url)
        with pytest.raises(PolicyError, match="not in allowed_media_domains"):
            cached.allowed_media_domains(["other.test"]).fetch(url)
        cached.allowed_media_domains(["media.test"]).fetch(url)  # a new policy, an empty cache
        assert server.hits[path] == 2

    def test_max_bytes_applies(self, server: MediaServer, cached: MediaFetcher) -> None:
        path, url = add(server, b"x" * 1000, {"Cache-Control": "max-age=60"})
        cached.fetch(url)
        with pytest.raises(TooLarge, match=r"1000 bytes, over max_bytes \(999\)"):
            cached.max_bytes(999).fetch(url)
        assert server.hits[path] == 2

    def test_redirect_is_asked_each_time(self, server: MediaServer, cached: MediaFetcher) -> None:
        path, url = add(server, b"target", {"Cache-Control": "max-age=60"})
        redirect = f"/redirect?to={url}"
        for _ in range(2):
            assert cached.fetch(server.url(redirect)).data == b"target"
        assert (server.hits["/redirect"], server.hits[path]) == (2, 1)

    def test_least_recently_used_out_by_bytes(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        fetcher.http_cache_bytes(2500)
        fresh = {"Cache-Control": "max-age=60"}
        (a, a_url), (b, b_url), (c, c_url) = (
            add(server, n * 1000, fresh) for n in (b"a", b"b", b"c")
        )
        big, big_url = add(server, b"d" * 2501, fresh)
        for url in (a_url, b_url, a_url, c_url, a_url, b_url, big_url, big_url):
            fetcher.fetch(url)
        # c evicted b (a was used later); b's return evicted c; the big body is never kept.
        assert [server.hits[p] for p in (a, b, c, big)] == [1, 2, 1, 2]

    def test_option_round_trips_and_is_checked(self) -> None:
        fetcher = MediaFetcher().http_cache_bytes(64 << 20)
        assert MediaFetcher.from_dict(json.loads(json.dumps(fetcher.to_dict()))) == fetcher
        assert repr(fetcher) == f"MediaFetcher(http_cache_bytes={64 << 20})"
        with pytest.raises(InvalidOptions, match="FetchPolicy.http_cache_bytes must be >= 0"):
            fetcher.http_cache_bytes(-1)
