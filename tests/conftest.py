from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

import pytest
import torch

from dynamo_media import MediaFetcher
from tests.media_server import MediaServer

# Dynamo's runtime logs at INFO by default, even after pytest's summary (at interpreter exit):
# keep the suite's last line pytest's own.
os.environ.setdefault("DYN_LOG", "warn")

HOSTS = {
    "media.test": "127.0.0.1",
    "other.test": "127.0.0.1",
    "evil.test": "127.0.0.1",
    "public.test": "93.184.216.34",
    "rebind.test": "10.0.0.7",
}


def resolve_test_host(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Maps the test names to addresses without touching DNS."""
    if host not in HOSTS:
        raise OSError(f"unknown test host {host}")
    return [ipaddress.ip_address(HOSTS[host])]


@pytest.fixture(scope="session")
def server() -> Iterator[MediaServer]:
    srv = MediaServer()
    yield srv
    srv.stop()


@pytest.fixture
def fetcher(server: MediaServer) -> MediaFetcher:
    """A fetcher that may reach the local test server (a private address, an explicit port)."""
    server.hits.clear()
    return (
        MediaFetcher(resolver=resolve_test_host)
        .allow_private_ips(True)
        .allow_direct_port(True)
        .timeout_ms(5000)
    )


def _cuda_devices() -> list[object]:
    # DYNAMO_MEDIA_REQUIRE_CUDA=1 runs the CUDA cases anyway, so that a missing GPU fails them.
    if torch.cuda.is_available() or os.environ.get("DYNAMO_MEDIA_REQUIRE_CUDA") == "1":
        return ["cpu", "cuda"]
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skip(reason="no CUDA device"))]


DEVICES = _cuda_devices()
