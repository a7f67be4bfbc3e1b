import asyncio
import base64
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dynamo_media import (
    DecodeError,
    EncodedMedia,
    FetchError,
    FetchPolicy,
    FetchTimeout,
    MediaFetcher,
    PolicyError,
    TooLarge,
    TooManyRedirects,
    UpstreamStatus,
)
from dynamo_media.fetch._policy import address_refusal, domain_allowed
from dynamo_media.fetch._url import parse_http_url
from dynamo_media.nixl import RegistrationPool
from dynamo_media.server import HttpBackend, create_app, parse_config
from dynamo_media.transforms import FetchURL
from tests.conftest import resolve_test_host
from tests.media_server import MediaServer

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class TestURLParsing:
    @pytest.mark.parametrize(
        ("url", "host"),
        [
            ("http://2130706433/", "127.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
            ("http://0x7f000001/", "127.0.0.1"),
            ("http://127.1/", "127.0.0.1"),
            ("http://0177.0.0.1/", "127.0.0.1"),
            ("http://0.0.0.0/", "0.0.0.0"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
            ("http://EXAMPLE.com./a", "example.com"),
            ("http://bücher.de/", "xn--bcher-kva.de"),
        ],
    )
    def test_hosts_are_canonical(self, url: str, host: str) -> None:
        assert parse_http_url(url).host == host

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("http://allowed.com@evil.com/", "credentials"),
            ("http://allowed.com\\@evil.com/", "backslash"),
            ("http://evil.com\\allowed.com/", "backslash"),
            ("http://%65vil.com/", "Percent-encoded"),
            ("http://ev il.com/", "space or control"),
            ("http://evil.com\n/", "space or control"),
            ("http://1.2.3.4.5/", "not a valid IPv4"),
            ("http://256.0.0.1/", "out of range"),
            ("http://a..com/", "Invalid host"),
            ("http://a.com:99999/", "Invalid port"),
            ("http:///x", "no host"),
            ("ftp://a.com/", "Not an http"),
        ],
    )
    def test_tricks_are_refused(self, url: str, message: str) -> None:
        with pytest.raises(PolicyError, match=message):
            parse_http_url(url)

    def test_default_port_is_not_explicit(self) -> None:
        assert not parse_http_url("http://a.com:80/").explicit_port
        assert parse_http_url("https://a.com:8443/").explicit_port


class TestPolicyPieces:
    @pytest.mark.parametrize(
        ("host", "allowed"),
        [
            ("google.com", True),
            ("img.google.com", False),
            ("img.cdn.test", True),
            ("a.b.cdn.test", True),
            ("cdn.test", False),
            ("evilcdn.test", False),
            ("google.com.evil.test", False),
        ],
    )
    def test_domain_allowlist(self, host: str, allowed: bool) -> None:
        entries = FetchPolicy(allowed_media_domains=("Google.COM.", "*.cdn.test"))
        assert entries.allowed_media_domains is not None
        assert domain_allowed(host, entries.allowed_media_domains) is allowed

    @pytest.mark.parametrize(
        ("ip", "reason"),
        [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "not globally routable"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fc00::1", "private"),
            ("::ffff:127.0.0.1", "loopback (IPv4-mapped 127.0.0.1)"),
            ("::ffff:10.0.0.1", "private (IPv4-mapped 10.0.0.1)"),
            ("93.184.216.34", None),
            ("2606:4700::1111", None),
        ],
    )
    def test_address_refusal(self, ip: str, reason: str | None) -> None:
        import ipaddress

        assert address_refusal(ipaddress.ip_address(ip)) == reason


class TestMediaFetcher:
    def test_fetches_with_mime_and_hash(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        path = server.add("one.png", PNG, "image/png")
        enc = fetcher.fetch(server.url(path))
        assert enc.data == PNG
        assert enc.mime == "image/png"
        assert enc.content_hash == hashlib.sha256(PNG).hexdigest()
        assert enc.source == server.url(path)
        assert server.hosts[-1] == f"media.test:{server.port}"  # Host header kept

    def test_sniffs_generic_mime(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        path = server.add("noext", PNG, "application/octet-stream")
        assert fetcher.fetch(server.url(path)).mime == "image/png"

    def test_chunked_body(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        server.add("big.bin", bytes(range(256)) * 4096)
        enc = fetcher.fetch(server.url("/chunked/big.bin"))
        assert enc.data == bytes(range(256)) * 4096

    def test_private_address_refused_without_a_request(self, server: MediaServer) -> None:
        server.hits.clear()
        fetcher = MediaFetcher(resolver=resolve_test_host).allow_direct_port(True)
        path = server.add("secret.png", PNG)
        with pytest.raises(PolicyError, match=r"resolves to 127\.0\.0\.1, a loopback address"):
            fetcher.fetch(server.url(path))
        assert server.hits[path] == 0

    def test_any_private_record_refuses(self) -> None:
        fetcher = MediaFetcher(
            resolver=lambda host, port: [
                *resolve_test_host("public.test", port),
                *resolve_test_host("rebind.test", port),
            ]
        )
        with pytest.raises(PolicyError, match=r"10\.0\.0\.7, a private address"):
            fetcher.fetch("http://public.test/x.png")

    @pytest.mark.parametrize(
        "host", ["127.0.0.1", "2130706433", "0x7f.1", "127.1", "[::ffff:127.0.0.1]", "0.0.0.0"]
    )
    def test_direct_ip_tricks_refused(self, server: MediaServer, host: str) -> None:
        server.hits.clear()
        fetcher = MediaFetcher(resolver=resolve_test_host).allow_direct_port(True)
        path = server.add("x.png", PNG)
        with pytest.raises(PolicyError, match="direct IPs are refused"):
            fetcher.fetch(f"http://{host}:{server.port}{path}")
        fetcher.allow_direct_ip(True)  # still a non-public address
        with pytest.raises(PolicyError, match="address; refused"):
            fetcher.fetch(f"http://{host}:{server.port}{path}")
        assert sum(server.hits.values()) == 0

    def test_explicit_port_refused_by_default(self, server: MediaServer) -> None:
        fetcher = MediaFetcher(resolver=resolve_test_host).allow_private_ips(True)
        with pytest.raises(PolicyError, match=r"names port \d+; explicit ports are refused"):
            fetcher.fetch(server.url("/file/x.png"))

    def test_allowlist(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        path = server.add("a.png", PNG)
        fetcher.allowed_media_domains(["MEDIA.test."])
        assert fetcher.fetch(server.url(path, host="Media.Test.")).data == PNG
        with pytest.raises(PolicyError, match="'other.test' .* not in allowed_media_domains"):
            fetcher.fetch(server.url(path, host="other.test"))
        assert server.hits[path] == 1

    def test_redirect_followed_and_rechecked(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        path = server.add("r.png", PNG)
        target = server.url(path)
        assert fetcher.fetch(server.url(f"/redirect?to={target}")).data == PNG
        fetcher.allowed_media_domains(["media.test"])
        evil = server.add("evil.png", PNG)
        with pytest.raises(PolicyError, match="'evil.test' .* not in allowed_media_domains"):
            fetcher.fetch(server.url(f"/redirect?to={server.url(evil, host='evil.test')}"))
        assert server.hits[evil] == 0

    def test_redirect_to_private_address_refused(self, server: MediaServer) -> None:
        server.hits.clear()
        # The first hop is allowed to be private here only through a mapped public name.
        fetcher = MediaFetcher(resolver=resolve_test_host).allow_direct_port(True)
        fetcher.allow_private_ips(True)
        inner = server.add("inner.png", PNG)
        hop = server.url(f"/redirect?to=http://127.0.0.1:{server.port}{inner}")
        with pytest.raises(PolicyError, match="direct IPs are refused"):
            fetcher.fetch(hop)
        assert server.hits[inner] == 0

    def test_too_many_redirects(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        url = server.url(server.add("deep.png", PNG))
        for _ in range(4):
            url = server.url(f"/redirect?to={url}")
        with pytest.raises(TooManyRedirects, match=r"Too many redirects .* \(max_redirects is 3\)"):
            fetcher.fetch(url)
        assert fetcher.max_redirects(4).fetch(url).data == PNG

    @pytest.mark.parametrize(
        ("status", "words"), [(404, "HTTP 404"), (500, "HTTP 500"), (204, "Unexpected HTTP 204")]
    )
    def test_http_errors(
        self, server: MediaServer, fetcher: MediaFetcher, status: int, words: str
    ) -> None:
        with pytest.raises(UpstreamStatus, match=f"^{words} fetching http://media.test") as info:
            fetcher.fetch(server.url(f"/status/{status}"))
        assert info.value.upstream_status == status
        assert isinstance(info.value, FetchError)

    def test_slow_response_hits_the_deadline(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        fetcher.timeout_ms(300)
        start = time.monotonic()
        with pytest.raises(FetchTimeout, match=r"longer than timeout_ms \(300\)"):
            fetcher.fetch(server.url("/slow?seconds=3"))
        assert time.monotonic() - start < 2

    def test_dripping_body_hits_one_deadline(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        # Each byte arrives well within the timeout, but the whole body does not.
        fetcher.timeout_ms(500)
        start = time.monotonic()
        with pytest.raises(FetchTimeout, match="longer than timeout_ms"):
            fetcher.fetch(server.url("/drip?bytes=50&every=0.05"))
        assert time.monotonic() - start < 1.5

    def test_max_bytes_from_content_length(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        path = server.add("large.bin", b"x" * 5000)
        with pytest.raises(TooLarge, match=r"5000 bytes, over max_bytes \(4096\)"):
            fetcher.max_bytes(4096).fetch(server.url(path))

    def test_max_bytes_while_streaming(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        server.add("stream.bin", b"x" * 300_000)
        with pytest.raises(TooLarge, match=r"over max_bytes \(100000\)"):
            fetcher.max_bytes(100_000).fetch(server.url("/chunked/stream.bin"))

    def test_unreachable(self, fetcher: MediaFetcher) -> None:
        with pytest.raises(FetchError, match="Cannot fetch") as info:
            fetcher.fetch("http://media.test:9/x.png")  # nothing listens on the discard port
        assert type(info.value) is FetchError  # none of the causes with a class of their own

    def test_unknown_host(self, fetcher: MediaFetcher) -> None:
        with pytest.raises(FetchError, match="Cannot resolve host 'nowhere.test'") as info:
            fetcher.fetch("http://nowhere.test/x.png")
        assert type(info.value) is FetchError

    def test_afetch_runs_concurrently(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        async def many() -> list[EncodedMedia]:
            return await asyncio.gather(
                *(fetcher.afetch(server.url("/slow?seconds=0.3")) for _ in range(8))
            )

        start = time.monotonic()
        results = asyncio.run(many())
        assert [r.data for r in results] == [b"late"] * 8
        assert time.monotonic() - start < 8 * 0.3 / 2


class TestPooledConnections:
    """A connection goes back to the pool when its body was read to the end, and only then."""

    def test_sequential_fetches_share_one_connection(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        body = os.urandom(120_000)
        path = server.add("reused.bin", body)
        urls = [server.url(path), server.url("/chunked/reused.bin")]
        urls.append(server.url(f"/redirect?to={urls[0]}"))  # an empty redirect body counts as read
        for url in urls * 3:
            assert fetcher.fetch(url).data == body
        assert len(set(server.peers[-len(urls) * 3 - 1 :])) == 1

    @pytest.mark.parametrize(
        ("path", "error"),
        [
            ("/file/cut.bin", TooLarge),  # refused by Content-Length, body unread
            ("/chunked/cut.bin", TooLarge),  # refused part way through the body
            ("/no/such/route", UpstreamStatus),  # a 404 with a body
        ],
    )
    def test_body_cut_short_closes_its_connection(
        self, server: MediaServer, fetcher: MediaFetcher, path: str, error: type[Exception]
    ) -> None:
        server.add("cut.bin", b"x" * 300_000)
        small = server.add("after.bin", b"after")
        fetcher.max_bytes(100_000)
        assert fetcher.fetch(server.url(small)).data == b"after"
        with pytest.raises(error):
            fetcher.fetch(server.url(path))
        # The next request does not read the rest of that body as its answer.
        assert fetcher.fetch(server.url(small)).data == b"after"
        assert server.peers[-1] != server.peers[-2]


class TestDataURL:
    def test_good(self) -> None:
        url = "data:image/png;base64," + base64.b64encode(PNG).decode()
        enc = MediaFetcher().fetch(url)
        assert enc.data == PNG
        assert enc.mime == "image/png"
        assert enc.source.startswith("data:image/png;base64,...(")
        assert base64.b64encode(PNG).decode() not in repr(enc)

    def test_no_mime_is_sniffed(self) -> None:
        enc = MediaFetcher().fetch("data:;base64," + base64.b64encode(PNG).decode())
        assert enc.mime == "image/png"

    def test_allowlist_does_not_apply(self) -> None:
        fetcher = MediaFetcher().allowed_media_domains(["example.com"])
        assert fetcher.fetch("data:image/png;base64," + base64.b64encode(PNG).decode()).data == PNG

    @pytest.mark.parametrize(
        ("url", "error", "message"),
        [
            ("data:image/png;base64,!!!notbase64", DecodeError, "Invalid base64"),
            ("data:image/png;base64,abc", DecodeError, "Invalid base64"),
            ("data:image/png;base64,YWJj=", DecodeError, "Invalid base64"),  # excess padding
            ("data:text/plain,hello", PolicyError, "Only base64"),
            ("data:image/png;base64", DecodeError, "no ','"),
        ],
    )
    def test_malformed(self, url: str, error: type, message: str) -> None:
        with pytest.raises(error, match=message):
            MediaFetcher().fetch(url)

    def test_afetch_decodes_a_small_one_in_place(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def no_thread() -> None:
            raise AssertionError("a fetch thread was asked for")

        monkeypatch.setattr("dynamo_media.fetch._fetcher.fetch_executor", no_thread)
        small = "data:image/png;base64," + base64.b64encode(PNG).decode()
        assert asyncio.run(MediaFetcher().afetch(small)).data == PNG
        large = "data:;base64," + base64.b64encode(bytes(200 << 10)).decode()  # 267 KiB of text
        with pytest.raises(AssertionError, match="fetch thread"):
            asyncio.run(MediaFetcher().afetch(large))

    def test_size_cap_applies_before_decoding(self) -> None:
        url = "data:image/png;base64," + "A" * 8000
        with pytest.raises(TooLarge, match=r"about 6000 bytes, over max_bytes \(1000\)"):
            MediaFetcher().max_bytes(1000).fetch(url)


class TestFileURL:
    def test_refused_by_default(self, tmp_path: Path) -> None:
        (tmp_path / "a.png").write_bytes(PNG)
        with pytest.raises(PolicyError, match="set allowed_local_media_path"):
            MediaFetcher().fetch(f"file://{tmp_path}/a.png")

    def test_under_the_root(self, tmp_path: Path) -> None:
        (tmp_path / "a.png").write_bytes(PNG)
        fetcher = MediaFetcher().allowed_local_media_path(str(tmp_path))
        assert fetcher.fetch(f"file://{tmp_path}/a.png").data == PNG

    def test_dotdot_and_symlinks_are_resolved(self, tmp_path: Path) -> None:
        root, outside = tmp_path / "media", tmp_path / "secret.png"
        root.mkdir()
        outside.write_bytes(PNG)
        (root / "link.png").symlink_to(outside)
        fetcher = MediaFetcher().allowed_local_media_path(str(root))
        for url in (f"file://{root}/../secret.png", f"file://{root}/link.png"):
            with pytest.raises(PolicyError, match="outside allowed_local_media_path"):
                fetcher.fetch(url)

    def test_missing_and_too_large(self, tmp_path: Path) -> None:
        fetcher = MediaFetcher().allowed_local_media_path(str(tmp_path)).max_bytes(10)
        with pytest.raises(FetchError, match="Cannot read") as info:
            fetcher.fetch(f"file://{tmp_path}/none.png")
        assert type(info.value) is FetchError
        (tmp_path / "a.png").write_bytes(PNG)
        with pytest.raises(TooLarge, match=rf"is {len(PNG)} bytes, over max_bytes \(10\)"):
            fetcher.fetch(f"file://{tmp_path}/a.png")

    def test_a_file_that_grows_while_read_is_too_large(self, tmp_path: Path) -> None:
        # A FIFO reports size 0 to fstat, then delivers whatever its writer sends.
        fifo = tmp_path / "grows.png"
        os.mkfifo(fifo)
        writer = threading.Thread(target=fifo.write_bytes, args=(PNG,))
        writer.start()
        fetcher = MediaFetcher().allowed_local_media_path(str(tmp_path)).max_bytes(10)
        with pytest.raises(TooLarge, match=r"grew past max_bytes \(10\) while it was read"):
            fetcher.fetch(f"file://{fifo}")
        writer.join()


def test_unsupported_scheme() -> None:
    with pytest.raises(PolicyError, match="Unsupported URL scheme 'ftp'"):
        MediaFetcher().fetch("ftp://example.com/a.png")


class TestFetchURL:
    def test_transform_fetches_and_passes_through(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        fetch = FetchURL(fetcher)
        enc = fetch(server.url(server.add("t.png", PNG)))
        assert fetch(enc) is enc
        assert asyncio.run(fetch.aforward(server.url("/file/t.png"))).data == PNG
        assert repr(fetch).startswith("FetchURL(timeout_ms=5000, max_bytes='256.0 MiB'")


@pytest.fixture(scope="module")
def frontend() -> Iterator[TestClient]:
    config = parse_config(
        {
            "fetcher": {
                "allow_direct_ip": True,
                "allow_private_ips": True,
                "allow_direct_port": True,
                "timeout_ms": 500,
                "max_redirects": 1,
                "max_bytes": 4096,
            },
            "decoder": {"image": {}},
        }
    )
    pool = RegistrationPool(capacity_bytes=1 << 20)
    try:
        # Nothing listens there: every request here fails before it reaches the backend.
        backend = HttpBackend("http://127.0.0.1:9", timeout_ms=1000)
        with TestClient(create_app(config, backend, pool)) as client:
            yield client
    finally:
        pool.close()


class TestServerAnswers:
    """The frontend answers every fetch failure 422, naming the class in ``code``."""

    @pytest.mark.parametrize(
        ("path", "code", "words"),
        [
            ("/slow?seconds=2", "FetchTimeout", "longer than timeout_ms (500)"),
            ("/status/404", "UpstreamStatus", "HTTP 404 fetching"),
            ("/file/large.bin", "TooLarge", "5000 bytes, over max_bytes (4096)"),
            ("/redirect?to=/redirect?to=/file/large.bin", "TooManyRedirects", "max_redirects is 1"),
        ],
    )
    def test_422_with_the_class_as_code(
        self, frontend: TestClient, server: MediaServer, path: str, code: str, words: str
    ) -> None:
        server.add("large.bin", b"x" * 5000)
        url = server.url(path, host="127.0.0.1")
        content = [{"type": "image_url", "image_url": {"url": url}}]
        answer = frontend.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": content}]},
        )
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["code"] == code
        assert error["param"] == "messages[0].content[0].image_url"
        assert words in error["message"]
