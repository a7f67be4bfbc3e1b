"""Regression tests for the fetch holes of issue #13: each attack, and what must happen instead."""

import asyncio
import ipaddress
import time
from collections.abc import Callable
from typing import ClassVar

import pytest

from dynamo_media import (
    FetchPolicy,
    FetchTimeout,
    InvalidOptions,
    MediaError,
    MediaFetcher,
    PolicyError,
)
from dynamo_media.fetch._fetch import fetch_executor
from dynamo_media.fetch._policy import address_refusal
from tests.media_server import MediaServer

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolver_for(hosts: dict[str, str]) -> Callable[[str, int], list[IPAddress]]:
    """A resolver that knows only ``hosts`` (name -> address)."""

    def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in hosts:
            raise OSError(f"unknown test host {host}")
        return [ipaddress.ip_address(hosts[host])]

    return resolve


def local_fetcher(hosts: dict[str, str], timeout_ms: int = 5000) -> MediaFetcher:
    """A fetcher that may reach the local test server under the names in ``hosts``."""
    return (
        MediaFetcher(resolver=resolver_for(hosts))
        .allow_private_ips(True)
        .allow_direct_port(True)
        .timeout_ms(timeout_ms)
    )


async def timed_afetch(fetcher: MediaFetcher, url: str) -> tuple[float, BaseException | None]:
    """Seconds from the ``afetch`` call to its end, and the error it raised (if any)."""
    start = time.monotonic()
    try:
        await fetcher.afetch(url)
    except MediaError as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


class TestOneDeadline:
    # The server sends the status line and headers one byte every 0.1 s: about 9 s in all.
    PATH = "/drip-headers?bytes=40&every=0.1"

    def test_dripping_headers_hit_the_deadline(self, server: MediaServer) -> None:
        fetcher = local_fetcher({"media.test": "127.0.0.1"}, timeout_ms=1000)
        start = time.monotonic()
        with pytest.raises(FetchTimeout, match=r"longer than timeout_ms \(1000\)"):
            fetcher.fetch(server.url(self.PATH))
        assert time.monotonic() - start < 3

    def test_many_dripping_headers_at_once(self, server: MediaServer) -> None:
        fetcher = local_fetcher({"media.test": "127.0.0.1"}, timeout_ms=1000)

        async def many() -> list[tuple[float, BaseException | None]]:
            url = server.url(self.PATH)
            return await asyncio.gather(*(timed_afetch(fetcher, url) for _ in range(16)))

        start = time.monotonic()
        results = asyncio.run(many())
        assert time.monotonic() - start < 3
        for _, error in results:
            assert isinstance(error, FetchTimeout)
            assert "longer than timeout_ms (1000)" in error.message

    def test_dripping_headers_across_a_redirect(self, server: MediaServer) -> None:
        fetcher = local_fetcher({"media.test": "127.0.0.1"}, timeout_ms=1000)
        start = time.monotonic()
        with pytest.raises(FetchTimeout, match=r"longer than timeout_ms \(1000\)"):
            fetcher.fetch(server.url(f"/redirect?to={server.url(self.PATH)}"))
        assert time.monotonic() - start < 3

    def test_connection_is_reused_after_a_deadline(self, server: MediaServer) -> None:
        # The deadline shuts down the socket of the fetch it bounds, not of the next one.
        fetcher = local_fetcher({"media.test": "127.0.0.1"}, timeout_ms=1000)
        path = server.add("after.bin", b"ok")
        with pytest.raises(FetchTimeout, match="timeout_ms"):
            fetcher.fetch(server.url("/slow?seconds=2"))
        for _ in range(3):
            assert fetcher.fetch(server.url(path)).data == b"ok"
        time.sleep(1.2)  # past the deadlines of the fetches above
        assert fetcher.fetch(server.url(path)).data == b"ok"


class TestQueuedFetches:
    def test_deadline_counts_from_the_afetch_call(self, server: MediaServer) -> None:
        # Every fetch thread is held by a slow fetch for 1 s; the fetches queued behind them
        # have 0.8 s, so they must fail as soon as a thread takes them.
        threads = fetch_executor()._max_workers
        blocking = local_fetcher({"media.test": "127.0.0.1"}, timeout_ms=1000)
        queued = local_fetcher({"media.test": "127.0.0.1"}, timeout_ms=800)
        url = server.url("/slow?seconds=3")

        async def many() -> list[tuple[float, BaseException | None]]:
            return await asyncio.gather(
                *(timed_afetch(blocking, url) for _ in range(threads)),
                *(timed_afetch(queued, url) for _ in range(8)),
            )

        results = asyncio.run(many())
        for seconds, error in results[:threads]:
            assert isinstance(error, FetchTimeout)
            assert "longer than timeout_ms (1000)" in error.message
            assert seconds < 1.0 + 0.5
        for seconds, error in results[threads:]:
            assert isinstance(error, FetchTimeout)
            assert "for a fetch thread" in error.message
            assert "timeout_ms (800)" in error.message
            assert seconds < 1.0 + 0.5  # when the first thread came free, not 0.8 s after


class TestEmbeddedIPv4:
    @pytest.mark.parametrize(
        ("ip", "reason"),
        [
            ("2002:7f00:1::", "loopback (6to4 127.0.0.1)"),
            ("2002:a9fe:a9fe::", "link-local (6to4 169.254.169.254)"),
            ("2002:a00:1::", "private (6to4 10.0.0.1)"),
            ("2002:5db8:d822::", None),
            ("64:ff9b::7f00:1", "loopback (NAT64 127.0.0.1)"),
            ("64:ff9b::a9fe:a9fe", "link-local (NAT64 169.254.169.254)"),
            ("64:ff9b::5db8:d822", None),
            ("2001:0:7f00:1::", "loopback (Teredo server 127.0.0.1)"),
            ("2001:0:5db8:d822::80ff:fffe", "loopback (Teredo client 127.0.0.1)"),
            ("2606:4700::5efe:7f00:1", "loopback (ISATAP 127.0.0.1)"),
            ("2606:4700::200:5efe:a9fe:a9fe", "link-local (ISATAP 169.254.169.254)"),
            ("2606:4700::200:5efe:5db8:d822", None),
            ("::ffff:127.0.0.1", "loopback (IPv4-mapped 127.0.0.1)"),
            ("::ffff:93.184.216.34", None),
            ("fec0::1", "site-local"),
        ],
    )
    def test_judged_by_the_ipv4_address(self, ip: str, reason: str | None) -> None:
        assert address_refusal(ipaddress.ip_address(ip)) == reason

    @pytest.mark.parametrize("ip", ["64:ff9b:1::7f00:1", "64:ff9b:1::5db8:d822", "::7f00:1"])
    def test_local_nat64_and_ipv4_compatible_refused(self, ip: str) -> None:
        assert address_refusal(ipaddress.ip_address(ip)) is not None

    @pytest.mark.parametrize(
        ("ip", "message"),
        [
            ("2002:7f00:1::", r"a loopback \(6to4 127\.0\.0\.1\) address; refused"),
            ("2002:a9fe:a9fe::", r"a link-local \(6to4 169\.254\.169\.254\) address; refused"),
            ("fec0::1", r"a site-local address; refused"),
        ],
    )
    def test_refused_as_a_host_and_from_dns(self, ip: str, message: str) -> None:
        direct = MediaFetcher().allow_direct_ip(True)
        with pytest.raises(PolicyError, match=message):
            direct.fetch(f"http://[{ip}]/x.png")
        resolved = MediaFetcher(resolver=resolver_for({"sneaky.test": ip}))
        with pytest.raises(PolicyError, match=rf"'sneaky.test' .* resolves to {ip}, {message}"):
            resolved.fetch("http://sneaky.test/x.png")


class TestLongValuesInMessages:
    @pytest.mark.parametrize(
        "url",
        [
            "http://" + "a" * 100_000 + "/x.png",
            "http://" + "a." * 50_000 + "test/x.png",
            "http://" + "1." * 50_000 + "1/x.png",
            "http://[" + "1:" * 50_000 + "]/x.png",
            "http://a.test:" + "9" * 100_000 + "/x.png",
            "a" * 100_000,
            "file:///" + "a" * 100_000,
        ],
    )
    def test_message_is_short(self, url: str) -> None:
        fetcher = MediaFetcher().allowed_local_media_path("/nonexistent")
        with pytest.raises(PolicyError) as info:
            fetcher.fetch(url)
        assert len(str(info.value)) < 500
        assert "chars)" in str(info.value)

    def test_host_not_in_allowlist_is_short(self) -> None:
        host = ".".join(["a" * 60] * 4)
        fetcher = MediaFetcher().allowed_media_domains(["example.com"])
        with pytest.raises(PolicyError, match="not in allowed_media_domains") as info:
            fetcher.fetch(f"http://{host}/x.png")
        assert host not in str(info.value)
        assert len(str(info.value)) < 400


class TestInternationalAllowlist:
    HOSTS: ClassVar[dict[str, str]] = {
        "xn--bcher-kva.example": "127.0.0.1",
        "img.xn--bcher-kva.example": "127.0.0.1",
    }

    @pytest.mark.parametrize(
        ("entry", "host"),
        [
            ("bücher.example", "bücher.example"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "bücher.example"),
            ("BÜCHER.example.", "Bücher.Example"),
            ("*.bücher.example", "img.bücher.example"),
            ("*.bücher.example", "img.xn--bcher-kva.example"),
            ("*.xn--bcher-kva.example", "img.bücher.example"),
        ],
    )
    def test_entry_matches_its_host_in_both_forms(
        self, server: MediaServer, entry: str, host: str
    ) -> None:
        fetcher = local_fetcher(self.HOSTS).allowed_media_domains([entry])
        path = server.add("idn.png", b"idn")
        assert fetcher.fetch(server.url(path, host=host)).data == b"idn"

    def test_entries_are_normalised_once(self) -> None:
        policy = FetchPolicy(allowed_media_domains=("Bücher.Example.", "*.BÜCHER.example"))
        assert policy.allowed_media_domains == ("xn--bcher-kva.example", "*.xn--bcher-kva.example")
        assert FetchPolicy.from_dict(policy.to_dict()) == policy

    def test_bad_entry_fails_at_construction(self) -> None:
        with pytest.raises(InvalidOptions, match=r"allowed_media_domains\[1\] .*'a\.\.b'"):
            MediaFetcher().allowed_media_domains(["example.com", "a..b"])


class TestBadHostNames:
    @pytest.mark.parametrize(
        ("host", "problem"),
        [
            ("a" * 64 + ".example", "IDNA cannot encode it"),
            ("ü" * 64 + ".example", "IDNA cannot encode it"),
            ("a..example", "IDNA cannot encode it"),
            (".".join(["a" * 60] * 5), r"304 characters, over 253"),
            ("-a.example", r"label '-a' must be letters, digits, '-' or '_'"),
            ("a*b.example", r"label 'a\*b' must be letters"),
        ],
    )
    def test_policy_error_names_the_host(self, host: str, problem: str) -> None:
        with pytest.raises(PolicyError, match=problem) as info:
            MediaFetcher().fetch(f"http://{host}/x.png")
        assert "Invalid host" in str(info.value)
        assert host[:20] in str(info.value)
