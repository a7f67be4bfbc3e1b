import json
import random
import resource
import time
from collections.abc import Iterator

import pytest
import torch

from dynamo_media import (
    DecodedMedia,
    LimitExceeded,
    MediaDecoder,
    MediaFetcher,
    Overloaded,
    decode_audio,
    decode_image,
    decode_video,
    tensor_sha256,
)
from dynamo_media.nixl import RegisteredMedia, RegistrationPool, get_agent, register_media
from dynamo_media.transforms import NixlRegister, ToDevice
from tests.conftest import DEVICES
from tests.media import numbered_video
from tests.media_server import MediaServer
from tests.nixl_peer import Peer
from tests.test_audio import FORMATS, tone
from tests.test_image import LOSSY


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


@pytest.fixture
def pool() -> Iterator[RegistrationPool]:
    pool = RegistrationPool(capacity_bytes=64 << 20, wait_ms=100)
    yield pool
    pool.close()


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def decoded_items() -> list[DecodedMedia]:
    return [
        decode_image(LOSSY["jpeg"]()),  # a CHW view: registration makes it contiguous
        decode_image(LOSSY["jpeg"](), layout="HWC"),
        decode_video(numbered_video("h264.mp4").read_bytes(), num_frames=8),
        decode_audio(tone(*FORMATS["mp3"]), sample_rate=16000, num_channels=1),
    ]


class TestTwoProcesses:
    def test_items_arrive_byte_identical(self, peer: Peer, pool: RegistrationPool) -> None:
        for media in decoded_items():
            registered = register_media(media, pool)
            descriptor = json.loads(json.dumps(registered.descriptor))  # survives JSON
            got = peer.read(descriptor)
            assert "error" not in got, got
            assert got["sha256"] == tensor_sha256(media.tensor)
            assert got["shape"] == list(media.tensor.shape)
            assert got["dtype"] == str(media.tensor.dtype)
            registered.release()
        assert pool.lent_regions == 0

    def test_descriptor_is_dynamos_shape(self, pool: RegistrationPool) -> None:
        media = decode_image(LOSSY["jpeg"]())
        d = register_media(media, pool).descriptor
        assert d["nixl_metadata"].startswith("b64:")
        assert d["nixl_descriptor"]["mem_type"] == "Dram"
        assert d["nixl_descriptor"]["size"] == 3 * 240 * 320
        assert (d["shape"], d["dtype"]) == ([3, 240, 320], "UINT8")
        assert d["metadata"]["Image"]["layout"] == "CHW"

    def test_early_free_on_the_backends_notification(
        self, peer: Peer, pool: RegistrationPool
    ) -> None:
        registered = register_media(decode_image(LOSSY["jpeg"]()), pool)
        assert pool.lent_regions == 1
        assert "error" not in peer.read(registered.descriptor)
        assert wait_until(lambda: pool.lent_regions == 0)  # freed before the request ends
        assert registered.released
        registered.release()  # the request's own release is then a no-op

    def test_released_region_is_an_error_not_garbage(
        self, peer: Peer, pool: RegistrationPool
    ) -> None:
        first = register_media(decode_image(LOSSY["jpeg"]()), pool)
        stale = first.descriptor
        first.release()
        got = peer.read(stale)
        assert got["error"].startswith("ReadError: the region of lease")
        # The same memory lent again to another item: the stale descriptor still fails.
        second = register_media(decode_image(LOSSY["jpeg"](), layout="HWC"), pool)
        assert second.region.offset == first.region.offset
        assert "released before it was read" in peer.read(stale)["error"]
        assert "error" not in peer.read(second.descriptor)

    def test_many_cycles_leave_nothing_behind(self, peer: Peer, pool: RegistrationPool) -> None:
        rng = random.Random(7)
        tensors = [
            torch.randint(0, 255, (rng.randrange(1, 300_000),), dtype=torch.uint8)
            for _ in range(16)
        ]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reads = 0
        for i in range(1000):
            media = DecodedMedia(tensors[i % 16], "image", {"layout": "CHW"})
            registered: RegisteredMedia | None = None
            try:
                registered = register_media(media, pool)
                roll = rng.random()
                if roll < 0.1:
                    raise RuntimeError("a decode failed after registration")
                if roll < 0.2:
                    got = peer.read(registered.descriptor)
                    assert got["sha256"] == tensor_sha256(media.tensor)
                    reads += 1
            except RuntimeError:
                pass
            finally:
                if registered is not None:
                    registered.release()
        assert reads > 50
        assert wait_until(lambda: pool.lent_regions == 0)
        assert pool.stats() == {"capacity_bytes": 64 << 20, "lent_bytes": 0, "lent": 0}
        assert pool._free == [(0, 64 << 20)]  # coalesced back into one block
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        assert grown_mib < 64


class TestPool:
    def test_full_pool_waits_then_overloaded(self, pool: RegistrationPool) -> None:
        held = [pool.lend(16 << 20) for _ in range(3)]
        start = time.monotonic()
        with pytest.raises(Overloaded, match="registration pool is full"):
            pool.lend(20 << 20)
        assert 0.09 < time.monotonic() - start < 1.0
        held.pop().release()
        assert pool.lend(15 << 20).nbytes == 15 << 20

    def test_waiter_wakes_on_release(self, pool: RegistrationPool) -> None:
        import threading

        big = pool.lend(60 << 20)
        threading.Timer(0.05, big.release).start()
        assert pool.lend(60 << 20, wait_ms=2000).nbytes == 60 << 20

    def test_item_larger_than_the_pool(self, pool: RegistrationPool) -> None:
        with pytest.raises(LimitExceeded, match="larger than the NIXL registration pool"):
            pool.lend(65 << 20)


class TestTransforms:
    def test_pipeline_ends_in_nixl_register(
        self, peer: Peer, pool: RegistrationPool, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        decoder = MediaDecoder()
        decoder.enable_image()
        pipe = decoder.pipeline("image", fetcher=fetcher, nixl=pool)
        assert repr(pipe).endswith(" -> NixlRegister(capacity='64.0 MiB', mem_type='Dram')\n)")
        out = pipe(server.url(server.add("n.jpg", LOSSY["jpeg"](), "image/jpeg")))
        assert isinstance(out, RegisteredMedia)
        assert peer.read(out.descriptor)["sha256"] == tensor_sha256(out.media.tensor)
        out.release()

    @pytest.mark.parametrize("device", DEVICES)
    def test_to_device(self, device: str) -> None:
        media = decode_image(LOSSY["jpeg"]())
        moved = ToDevice(device)(media)
        assert moved.tensor.device.type == device
        assert ToDevice(device)(moved) is moved  # already there: no copy
        assert torch.equal(moved.tensor.cpu(), media.tensor)

    def test_register_transform_uses_default_agent(self, pool: RegistrationPool) -> None:
        assert pool.agent is get_agent()
        out = NixlRegister(pool)(decode_image(LOSSY["jpeg"]()))
        assert out.region.nbytes == 3 * 240 * 320
        out.release()
