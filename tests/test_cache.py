"""The decoded-media cache: through the real app and preprocessor, fetching from a real HTTP
server on 127.0.0.1, the items read over NIXL by a real second process."""

import asyncio
import base64
import contextlib
import gc
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dynamo_media import (
    DecodeError,
    ImageLimits,
    ImageOptions,
    InvalidOptions,
    LimitExceeded,
    MediaDecoder,
    MediaFetcher,
    VideoOptions,
    decode_image,
    decode_video,
    tensor_sha256,
)
from dynamo_media._cache import DEFAULT_CACHE_BYTES, _serialised, cache_key
from dynamo_media._media import EncodedMedia, options_hash
from dynamo_media.nixl import RegisteredMedia, RegistrationPool
from dynamo_media.preprocess import MediaCache, MediaPreprocessor, PreprocessResult
from dynamo_media.server import Answer, Backend, ServerSettings, create_app, parse_config
from tests.images import pillow_bytes
from tests.media import numbered_video
from tests.media_server import MediaServer
from tests.nixl_peer import Peer
from tests.serve import serving
from tests.test_image import LOSSY, base
from tests.test_nixl import wait_until

KiB, MiB = 1 << 10, 1 << 20
IMAGE_BYTES = 3 * 240 * 320  # the test picture, decoded
COMPLETION = {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "ok"}}]}
FETCHER = {
    "allow_direct_ip": True,
    "allow_private_ips": True,
    "allow_direct_port": True,
    "allowed_media_domains": ["127.0.0.1"],
    "timeout_ms": 5000,
}


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


@pytest.fixture
def pool() -> Iterator[RegistrationPool]:
    # Zero-copy from 256 KiB: the 4-frame test video (900 KiB) is registered in place, the
    # picture (225 KiB, a CHW view) is copied.
    pool = RegistrationPool(capacity_bytes=64 * MiB, wait_ms=100, zero_copy_min_bytes=256 * KiB)
    registrations = pool.agent.registrations
    yield pool
    assert pool.stats()["lent"] == pool.stats()["lent_bytes"] == 0
    assert pool.agent.registrations == registrations  # no zero-copy registration left behind
    pool.close()


class ReadingBackend(Backend):
    """Reads every descriptor over NIXL in a second process while it answers, and keeps what
    arrived."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.descriptors: list[dict[str, Any]] = []
        self.reads: list[dict[str, Any]] = []

    async def chat(self, payload: dict[str, Any]) -> Answer:
        for descriptors in payload.get("multi_modal_data", {}).values():
            for descriptor in descriptors:
                self.descriptors.append(descriptor)
                self.reads.append(self.peer.read(descriptor))
        return Answer(COMPLETION)

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": []}


@contextlib.contextmanager
def frontend(
    pool: RegistrationPool, peer: Peer, *, cache_bytes: int = 64 * MiB, **server: Any
) -> Iterator[tuple[TestClient, ReadingBackend]]:
    config = parse_config(
        {
            "fetcher": FETCHER,
            "decoder": {"image": {}, "video": {"fps": 2.0}},
            "server": {"cache_bytes": cache_bytes, **server},
        }
    )
    backend = ReadingBackend(peer)
    with TestClient(create_app(config, backend, pool)) as client:
        yield client, backend


def url_of(server: MediaServer, name: str, data: bytes, mime: str = "image/jpeg") -> str:
    return server.url(server.add(name, data, mime), host="127.0.0.1")


def part(url: str, kind: str = "image_url") -> dict[str, Any]:
    return {"type": kind, kind: {"url": url}}


def chat(client: TestClient, *parts: dict[str, Any], **media_io_kwargs: Any) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": list(parts)}]}
    if media_io_kwargs:
        body["media_io_kwargs"] = media_io_kwargs
    answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text


def decodes(client: TestClient, modality: str = "image") -> int:
    """How many items the app decoded: the count of its ``decode`` stage timings."""
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    labels = {"stage": "decode", "modality": modality}
    return int(registry.get_sample_value("dynamo_media_stage_seconds_count", labels) or 0)


def sha256s(backend: ReadingBackend) -> list[str]:
    assert all("error" not in read for read in backend.reads), backend.reads
    return [read["sha256"] for read in backend.reads]


class TestCacheThroughTheApp:
    def test_same_bytes_and_options_decode_once(
        self, server: MediaServer, pool: RegistrationPool, peer: Peer
    ) -> None:
        data = LOSSY["jpeg"]()
        url = url_of(server, "same.jpg", data)
        with frontend(pool, peer) as (client, backend):
            for _ in range(3):
                chat(client, part(url))
            assert decodes(client) == 1
            assert server.hits["/file/same.jpg"] == 3  # the fetch still happens: the key's hash
            assert sha256s(backend) == [tensor_sha256(decode_image(data).tensor)] * 3
            cache = client.app.state.cache  # type: ignore[attr-defined]
            assert cache.stats() | {"capacity_bytes": 0} == {
                "capacity_bytes": 0,
                "bytes": IMAGE_BYTES,
                "entries": 1,
                "held": 0,
                "hits": 2,
                "misses": 1,
                "evictions": 0,
                # no cache_dir: the file tier is off
                "disk_bytes": 0,
                "disk_entries": 0,
                "spills": 0,
                "restores": 0,
                "lost_spills": 0,
            }
            text = client.get("/metrics").text
            assert "dynamo_media_cache_hits_total 2.0" in text
            assert "dynamo_media_cache_misses_total 1.0" in text
            assert f"dynamo_media_cache_bytes {float(IMAGE_BYTES)}" in text
            assert "dynamo_media_cache_evictions_total 0.0" in text

    def test_other_media_io_kwargs_decode_again(
        self, server: MediaServer, pool: RegistrationPool, peer: Peer
    ) -> None:
        data = LOSSY["jpeg"]()
        url = url_of(server, "kwargs.jpg", data)
        with frontend(pool, peer) as (client, backend):
            chat(client, part(url))
            chat(client, part(url), image={"layout": "HWC"})
            assert decodes(client) == 2
            chat(client, part(url), image={"layout": "HWC"})
            chat(client, part(url))
            assert decodes(client) == 2
            chw = tensor_sha256(decode_image(data).tensor)
            hwc = tensor_sha256(decode_image(data, layout="HWC").tensor)
            assert chw != hwc
            assert sha256s(backend) == [chw, hwc, hwc, chw]

    def test_changed_bytes_behind_the_same_url_decode_again(
        self, server: MediaServer, pool: RegistrationPool, peer: Peer
    ) -> None:
        jpeg, webp = LOSSY["jpeg"](), LOSSY["webp"]()
        url = url_of(server, "changing", jpeg)
        with frontend(pool, peer) as (client, backend):
            chat(client, part(url))
            server.add("changing", webp, "image/webp")
            chat(client, part(url))
            assert decodes(client) == 2
            server.add("changing", jpeg, "image/jpeg")
            chat(client, part(url))  # the bytes are the key, not the URL: a hit
            assert decodes(client) == 2
            first, second = (tensor_sha256(decode_image(d).tensor) for d in (jpeg, webp))
            assert first != second
            assert sha256s(backend) == [first, second, first]

    def test_one_tensor_in_two_zero_copy_leases(
        self, server: MediaServer, pool: RegistrationPool, peer: Peer
    ) -> None:
        data = numbered_video("h264.mp4").read_bytes()
        url = url_of(server, "twice.mp4", data, "video/mp4")
        with frontend(pool, peer) as (client, backend):
            # THWC: the decoder's own contiguous frames (TCHW is a view, copied into the pool).
            chat(client, part(url, "video_url"), part(url, "video_url"), video={"layout": "THWC"})
            assert decodes(client, "video") == 1  # the second item waited for the first's decode
            first, second = backend.descriptors
            assert first["nixl_descriptor"]["addr"] == second["nixl_descriptor"]["addr"]
            assert first["lease"]["id"] != second["lease"]["id"]
            assert first["lease"]["guard_bytes"] == 0  # zero-copy: no copy into the pool
            local = decode_video(data, fps=2.0, layout="THWC")
            assert sha256s(backend) == [tensor_sha256(local.tensor)] * 2

    def test_failed_decode_is_not_cached(
        self, server: MediaServer, pool: RegistrationPool, peer: Peer
    ) -> None:
        url = url_of(server, "broken.jpg", b"\xff\xd8\xff not a jpeg")
        with frontend(pool, peer) as (client, _):
            body = {"model": "m", "messages": [{"role": "user", "content": [part(url)]}]}
            for _ in range(2):
                answer = client.post("/v1/chat/completions", json=body)
                assert answer.status_code == 400
                assert answer.json()["error"]["code"] == "DecodeError"
            stats = client.app.state.cache.stats()  # type: ignore[attr-defined]
            assert (stats["misses"], stats["hits"], stats["entries"]) == (2, 0, 0)

    def test_cache_bytes_0_turns_it_off(
        self, server: MediaServer, pool: RegistrationPool, peer: Peer
    ) -> None:
        url = url_of(server, "off.jpg", LOSSY["jpeg"]())
        with frontend(pool, peer, cache_bytes=0) as (client, backend):
            chat(client, part(url))
            chat(client, part(url))
            assert decodes(client) == 2
            assert client.app.state.cache is None  # type: ignore[attr-defined]
            assert "dynamo_media_cache" not in client.get("/metrics").text
            assert client.get("/health").json()["cache"] is None
            assert len(set(sha256s(backend))) == 1


VIDEO_BYTES = 4 * 3 * 240 * 320  # a 2 s test clip at 2 fps, decoded


def cache_of(client: TestClient) -> MediaCache:
    return client.app.state.cache  # type: ignore[attr-defined,no-any-return]


def spilled(client: TestClient, n: int) -> bool:
    """Waits until the cache has written ``n`` entries to files (its spill thread)."""
    return wait_until(lambda: cache_of(client).stats()["spills"] == n)


def clips() -> dict[str, bytes]:
    """Three 2 s test clips that decode slower than they read back (Note [spill crossover])."""
    vp9 = ["-c:v", "libvpx-vp9", "-cpu-used", "8"]
    return {
        "a.mp4": numbered_video("h264.mp4").read_bytes(),
        "b.webm": numbered_video("v.webm", codec=vp9).read_bytes(),
        "c.mp4": numbered_video("h264.mp4", fps=20).read_bytes(),
    }


class TestFileTier:
    """Note [memory tiers]: DRAM room for one entry, the rest go to files under cache_dir."""

    def test_a_spilled_entry_comes_back_and_a_backend_reads_it(
        self, server: MediaServer, pool: RegistrationPool, peer: Peer, tmp_path: Path
    ) -> None:
        data = clips()
        a, b = (url_of(server, name, data[name], "video/mp4") for name in ("a.mp4", "b.webm"))
        # THWC: the decoder's own contiguous frames, registered in place when read back.
        thwc = {"layout": "THWC"}
        with frontend(
            pool, peer, cache_bytes=VIDEO_BYTES * 3 // 2, cache_dir=str(tmp_path)
        ) as (client, backend):  # fmt: skip
            chat(client, part(a, "video_url"), video=thwc)
            chat(client, part(b, "video_url"), video=thwc)  # a leaves DRAM: a file
            assert spilled(client, 1)
            chat(client, part(a, "video_url"), video=thwc)  # read back; b goes to a file
            assert spilled(client, 2)
            assert decodes(client, "video") == 2
            s = cache_of(client).stats()
            assert (s["hits"], s["misses"], s["restores"], s["lost_spills"]) == (1, 2, 1, 0)
            assert (s["entries"], s["disk_entries"], s["disk_bytes"]) == (1, 1, VIDEO_BYTES)
            expected = [
                tensor_sha256(decode_video(data[name], fps=2.0, layout="THWC").tensor)
                for name in ("a.mp4", "b.webm", "a.mp4")
            ]
            assert sha256s(backend) == expected
            assert backend.descriptors[2]["lease"]["guard_bytes"] == 0  # zero-copy
            text = client.get("/metrics").text
            assert "dynamo_media_cache_restores_total 1.0" in text
            assert "dynamo_media_cache_spills_total 2.0" in text
            assert f"dynamo_media_cache_dir_bytes {float(VIDEO_BYTES)}" in text
        assert list(tmp_path.iterdir()) == []  # the app's shutdown deleted its directory

    def test_a_corrupted_file_is_a_miss(
        self, server: MediaServer, pool: RegistrationPool, peer: Peer, tmp_path: Path
    ) -> None:
        data = clips()
        a, b = (url_of(server, name, data[name], "video/mp4") for name in ("a.mp4", "b.webm"))
        with frontend(
            pool, peer, cache_bytes=VIDEO_BYTES * 3 // 2, cache_dir=str(tmp_path)
        ) as (client, backend):  # fmt: skip
            chat(client, part(a, "video_url"))
            chat(client, part(b, "video_url"))
            assert spilled(client, 1)
            (file,) = tmp_path.glob("*/*.bin")
            damaged = bytearray(file.read_bytes())
            damaged[1000] ^= 0xFF
            file.write_bytes(damaged)
            chat(client, part(a, "video_url"))  # answered: decoded again
            assert decodes(client, "video") == 3
            s = cache_of(client).stats()
            assert (s["hits"], s["misses"], s["restores"], s["lost_spills"]) == (0, 3, 0, 1)
            expected = tensor_sha256(decode_video(data["a.mp4"], fps=2.0).tensor)
            assert sha256s(backend)[2] == expected

    def test_shutdown_leaves_no_file(self, tmp_path: Path) -> None:
        """``dynamo-media serve`` as a process, stopped with SIGTERM."""
        config = {"server": {"cache_bytes": VIDEO_BYTES * 3 // 2, "cache_dir": str(tmp_path)}}
        with serving(config, quiet=True) as url:
            for clip in clips().values():
                video = "data:video/mp4;base64," + base64.b64encode(clip).decode()
                content = [{"type": "video_url", "video_url": {"url": video}}]
                body = {"model": "m", "messages": [{"role": "user", "content": content}]}
                assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 200
            assert wait_until(
                lambda: httpx.get(f"{url}/health").json()["cache"]["disk_entries"] == 2
            )
            assert len(list(tmp_path.glob("*/*.bin"))) == 2
        assert list(tmp_path.iterdir()) == []


def image_request(url: str, **options: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"messages": [{"role": "user", "content": [part(url)]}]}
    return request | ({"media_io_kwargs": {"image": options}} if options else {})


def run(preprocessor: MediaPreprocessor, *requests: dict[str, Any]) -> list[PreprocessResult]:
    async def process_all() -> list[PreprocessResult]:
        return list(await asyncio.gather(*(preprocessor.process(r) for r in requests)))

    return asyncio.run(process_all())


def data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


def rss_mib() -> float:
    """The resident set now: not the peak (``ru_maxrss``), which the rest of the suite sets."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB


class TestCacheThroughThePreprocessor:
    def test_concurrent_identical_requests_decode_once(
        self, server: MediaServer, fetcher: MediaFetcher, pool: RegistrationPool, peer: Peer
    ) -> None:
        data = numbered_video("h264.mp4").read_bytes()
        url = server.url(server.add("concurrent.mp4", data, "video/mp4"))
        decoder = MediaDecoder()
        decoder.enable_video({"fps": 2.0})
        cache = MediaCache(64 * MiB)
        preprocessor = MediaPreprocessor(decoder, fetcher, pool, max_workers=2, cache=cache)
        request = {"messages": [{"role": "user", "content": [part(url, "video_url")]}]}
        results = run(preprocessor, *[request] * 8)
        assert sum("decode" in r.items[0].timings for r in results) == 1
        stats = cache.stats()
        assert (stats["misses"], stats["hits"], stats["entries"], stats["held"]) == (1, 7, 1, 1)
        expected = tensor_sha256(decode_video(data, fps=2.0).tensor)
        for result in results:
            assert peer.read(result.multi_modal_data["video_url"][0])["sha256"] == expected
            result.release()
        assert cache.stats()["held"] == 0
        preprocessor.close()  # drops the unheld entries
        assert cache.stats()["bytes"] == cache.stats()["entries"] == 0

    def test_eviction_only_of_unheld_entries(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        url = server.url(server.add("evict.jpg", LOSSY["jpeg"](), "image/jpeg"))
        decoder = MediaDecoder()
        decoder.enable_image()
        cache = MediaCache(IMAGE_BYTES * 5 // 2)  # room for two
        preprocessor = MediaPreprocessor(decoder, fetcher, max_workers=2, cache=cache)
        # Three keys for the same bytes, one per option set, each IMAGE_BYTES decoded.
        a, b, c = (
            image_request(url),
            image_request(url, layout="HWC"),
            image_request(url, mode="RGB", background=[0, 0, 0]),
        )

        def stats() -> tuple[int, int, int, int]:
            s = cache.stats()
            assert s["bytes"] <= s["capacity_bytes"]
            return s["entries"], s["held"], s["misses"], s["evictions"]

        (held_a,), (held_b,) = run(preprocessor, a), run(preprocessor, b)
        assert stats() == (2, 2, 2, 0)
        (held_c,) = run(preprocessor, c)  # both entries held: served, not stored
        assert not held_c.items[0].cached.hit  # type: ignore[union-attr]
        assert stats() == (2, 2, 3, 0)
        held_c.release()
        held_a.release()
        (again_c,) = run(preprocessor, c)  # a is unheld now: evicted for c
        assert stats() == (2, 2, 4, 1)
        (again_b,) = run(preprocessor, b)  # b was held all along: still there
        assert again_b.items[0].cached.hit  # type: ignore[union-attr]
        (again_a,) = run(preprocessor, a)  # b and c held: a is decoded, not stored
        assert stats() == (2, 2, 5, 1)
        for result in (held_b, again_b, again_c, again_a):
            result.release()
        assert stats() == (2, 0, 5, 1)
        preprocessor.close()
        assert stats() == (0, 0, 5, 1)

    def test_no_hit_under_other_limits(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        url = server.url(server.add("limits.jpg", LOSSY["jpeg"](), "image/jpeg"))
        cache = MediaCache(64 * MiB)
        loose, tight = MediaDecoder(), MediaDecoder()
        loose.enable_image()
        tight.enable_image({"limits": {"max_image_width": 100}})
        (result,) = run(
            MediaPreprocessor(loose, fetcher, max_workers=1, cache=cache), image_request(url)
        )
        with pytest.raises(LimitExceeded, match="width"):
            run(MediaPreprocessor(tight, fetcher, max_workers=1, cache=cache), image_request(url))
        result.release()

    def test_many_cycles_with_churn_leave_nothing_behind(
        self, fetcher: MediaFetcher, pool: RegistrationPool, peer: Peer
    ) -> None:
        """1,000 requests (after 100 of warm-up) over 8 keys (3.1 MiB decoded) in a 1.5 MiB cache:
        hits, misses, evictions, entries held across requests (served, not stored), failed
        items, reads (early free), stale reads and unread releases. Nothing is left behind:
        no lease, budget byte or registration, no held entry, and memory stays flat."""
        images = {name: LOSSY[name]() for name in ("jpeg", "jpeg-gray", "jpeg-progressive")}
        # 900 KiB decoded: HWC is registered in place (zero-copy), CHW (a view) is copied.
        images["large"] = pillow_bytes(base().resize((640, 480)), "JPEG")
        # data: URLs, through the same fetch step: an HTTP fetch from the test server costs
        # ~40 ms a request (delayed ACKs), which would make this test a minute long.
        urls = {name: data_url(data) for name, data in images.items()}
        broken = data_url(b"\xff\xd8\xff not a jpeg")
        expected = {
            (name, layout): tensor_sha256(decode_image(data, layout=layout).tensor)
            for name, data in images.items()
            for layout in ("CHW", "HWC")
        }
        decoder = MediaDecoder()
        decoder.enable_image()
        cache = MediaCache(3 * MiB // 2)
        preprocessor = MediaPreprocessor(decoder, fetcher, pool, max_workers=2, cache=cache)
        rng = random.Random(15)
        outcomes = dict.fromkeys(
            ["failed", "read", "stale", "unread", "held", "not stored", "zero-copy"], 0
        )
        held: list[PreprocessResult] = []

        async def cycle() -> None:
            layout = rng.choice(["CHW", "HWC"])
            names = rng.sample(sorted(urls), rng.randint(1, 3))
            parts = [part(urls[name]) for name in names]
            if rng.random() < 0.1:
                parts.insert(rng.randrange(len(parts) + 1), part(broken))
            request = {"messages": [{"role": "user", "content": parts}]}
            if layout == "HWC":
                request["media_io_kwargs"] = {"image": {"layout": "HWC"}}
            try:
                result = await preprocessor.process(request)
            except DecodeError:
                outcomes["failed"] += 1  # the other items were released by the preprocessor
                return
            for item in result.items:
                assert isinstance(item.output, RegisteredMedia) and item.cached is not None
                outcomes["zero-copy"] += item.output.region.zero_copy
                outcomes["not stored"] += item.cached._entry is None  # its entries were held
            roll = rng.random()
            if roll < 0.2:
                descriptors = result.multi_modal_data["image_url"]
                for name, descriptor in zip(names, descriptors, strict=True):
                    assert peer.read(descriptor)["sha256"] == expected[name, layout]
                outcomes["read"] += 1
            elif roll < 0.3:
                result.release()
                descriptor = rng.choice(result.multi_modal_data["image_url"])
                assert peer.read(descriptor)["error"].startswith("ReadError: the lease")
                outcomes["stale"] += 1
            elif roll < 0.5:
                held.append(result)  # kept over the next requests: its entries cannot go
                outcomes["held"] += 1
                if len(held) > 2:
                    held.pop(0).release()
                return
            else:
                outcomes["unread"] += 1  # the backend failed before reading
            result.release()
            result.release()  # twice is harmless

        async def cycles(n: int) -> None:
            for _ in range(n):
                await cycle()

        asyncio.run(cycles(100))
        rss_warm, memo_warm = rss_mib(), len(_serialised)
        asyncio.run(cycles(1000))
        for result in held:
            result.release()
        held.clear()

        assert min(outcomes.values()) > 30, outcomes
        stats = cache.stats()
        assert stats["held"] == 0 and stats["bytes"] <= stats["capacity_bytes"], stats
        assert stats["hits"] > 300 and stats["misses"] > 300 and stats["evictions"] > 100, stats
        assert wait_until(lambda: pool.lent_regions == 0)
        assert pool.stats() == {
            "capacity_bytes": 64 * MiB,
            "lent_bytes": 0,
            "lent": 0,
            "zero_copy": 0,
        }
        assert pool._free == [(0, 64 * MiB)]  # coalesced back into one block
        # (the fixture checks that every zero-copy registration was deregistered)
        grown_mib = rss_mib() - rss_warm
        assert len(_serialised) <= memo_warm  # a request's merged options are forgotten
        assert grown_mib < 16, f"{grown_mib:.1f} MiB more resident after 1,000 cycles"
        preprocessor.close()
        assert cache.stats()["bytes"] == cache.stats()["entries"] == 0


class TestCacheKey:
    def test_every_option_and_the_bytes(self) -> None:
        media = EncodedMedia.from_bytes(b"bytes")
        key = cache_key("image", media, ImageOptions(), device="cpu")
        assert key == cache_key(
            "image", EncodedMedia.from_bytes(b"bytes"), ImageOptions(), device="cpu"
        )
        others = [
            cache_key("image", EncodedMedia.from_bytes(b"other"), ImageOptions(), device="cpu"),
            cache_key("image", media, ImageOptions(layout="HWC"), device="cpu"),
            cache_key(
                "image", media, ImageOptions(limits=ImageLimits(max_alloc=MiB)), device="cpu"
            ),
            cache_key("image", media, ImageOptions(), device="cuda"),
        ]
        assert len({key, *others}) == 5

    def test_is_the_options_hash_of_the_whole_options(self) -> None:
        media = EncodedMedia.from_bytes(b"bytes")

        def expected(modality: str, options: Any) -> str:
            what = {"modality": modality, "device": "cpu", "options": options.to_dict()}
            return options_hash(media.content_hash, what)

        options = VideoOptions(fps=2.0)
        for _ in range(2):  # serialised, then remembered for this object
            assert cache_key("video", media, options, device="cpu") == expected("video", options)
        # Equal options that serialise apart stay two keys (remembered by identity, not ==).
        assert VideoOptions(fps=2) == options
        assert cache_key("video", media, VideoOptions(fps=2), device="cpu") != expected(
            "video", options
        )
        for layout in ["CHW", "HWC"] * 20:  # a dead object's id, reused, is not mistaken
            options = ImageOptions(layout=layout)
            assert cache_key("image", media, options, device="cpu") == expected("image", options)


class TestMediaCache:
    def test_capacity(self) -> None:
        assert MediaCache().capacity_bytes == DEFAULT_CACHE_BYTES == 512 * MiB
        with pytest.raises(ValueError, match="capacity_bytes must be > 0, got 0"):
            MediaCache(0)
        assert (
            repr(MediaCache(MiB))
            == "MediaCache(capacity='1.0 MiB', bytes='0 B', entries=0, held=0)"
        )

    def test_a_failure_reaches_the_waiters(self) -> None:
        cache = MediaCache(MiB)

        async def fail() -> Any:
            await asyncio.sleep(0.05)
            raise DecodeError("corrupt")

        async def both() -> list[Any]:
            return await asyncio.gather(
                cache.get("k", fail), cache.get("k", fail), return_exceptions=True
            )

        outcomes = asyncio.run(both())
        assert [type(o) for o in outcomes] == [DecodeError, DecodeError]
        assert cache.stats()["misses"] == 1 and cache.stats()["entries"] == 0

    def test_each_hold_has_its_own_metadata(self) -> None:
        cache = MediaCache(MiB)
        decoded = decode_video(numbered_video("h264.mp4").read_bytes(), num_frames=4)

        async def decode() -> Any:
            return decoded

        async def twice() -> list[Any]:
            return [await cache.get("k", decode), await cache.get("k", decode)]

        first, second = asyncio.run(twice())
        assert second.hit and second.media.tensor is first.media.tensor
        first.media.metadata["frames_indices"].append(99)
        first.media.metadata["codec"] = "changed"
        assert second.media.metadata == decoded.metadata
        assert decoded.metadata["frames_indices"] == [0, 16, 33, 49]


class TestServerSettings:
    def test_cache_bytes(self) -> None:
        assert ServerSettings().cache_bytes == 512 * MiB
        assert parse_config({"server": {"cache_bytes": 0}}).settings.cache_bytes == 0
        with pytest.raises(InvalidOptions, match="server.cache_bytes must be >= 0, got -1"):
            parse_config({"server": {"cache_bytes": -1}})
