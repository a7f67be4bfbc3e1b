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


KiB, MiB = 1 << 10, 1 << 20
THRESHOLD = 256 * KiB  # zero-copy from here; a 240x320 RGB image (225 KiB) is copied


@pytest.fixture
def pool() -> Iterator[RegistrationPool]:
    pool = RegistrationPool(capacity_bytes=64 << 20, wait_ms=100, zero_copy_min_bytes=THRESHOLD)
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

    def test_a_read_does_not_wait_for_the_frontend_to_progress(
        self, peer: Peer, pool: RegistrationPool
    ) -> None:
        """The backend's read ends while nothing progresses the frontend's agent; its
        notification arrives once something does (Note [notifications] in nixl/_agent.py)."""
        registered = register_media(decode_image(LOSSY["jpeg"]()), pool)
        assert pool._listener is not None
        pool._closed = True  # the listener stops: the frontend's agent is not progressed
        pool._listener.join()
        got = peer.read(registered.descriptor)
        assert "error" not in got, got  # a read carrying the notification waited 30 s, failed
        assert got["sha256"] == tensor_sha256(registered.media.tensor)
        assert pool.lent_regions == 1
        pool._closed, pool._listener = False, None
        pool.start_listener()
        assert wait_until(lambda: registered.released)

    def test_deferred_early_free_keeps_the_lease_for_another_reader(
        self, peer: Peer, pool: RegistrationPool
    ) -> None:
        """A request that may fail over keeps what a backend read (Note [early free])."""
        registered = register_media(decode_image(LOSSY["jpeg"]()), pool)
        registered.region.defer_early_free()
        assert "error" not in peer.read(registered.descriptor)
        assert wait_until(lambda: registered.region.read)  # the notification came, and waits
        assert not registered.released
        assert "error" not in peer.read(registered.descriptor)  # the next backend reads it too
        registered.region.allow_early_free()
        assert wait_until(lambda: registered.released and pool.lent_regions == 0)

    def test_a_release_that_fails_does_not_stop_the_listener(
        self, peer: Peer, pool: RegistrationPool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two zero-copy leases read while deferred; NIXL's deregister fails for the first: the
        listener releases the second too, and goes on freeing leases."""
        frame = torch.zeros(512, 512, 3, dtype=torch.uint8)  # 768 KiB: registered in place
        items = [register_media(DecodedMedia(frame.clone(), "image", {}), pool) for _ in "ab"]
        assert all(i.region.zero_copy for i in items)
        for item in items:
            item.region.defer_early_free()
            assert "error" not in peer.read(item.descriptor)
        assert wait_until(lambda: all(i.region.read for i in items))
        deregister = pool.agent.deregister
        failed = []

        def fail_once(handle: object) -> None:
            if not failed:
                failed.append(handle)
                raise RuntimeError("NIXL_ERR_BACKEND")
            deregister(handle)

        monkeypatch.setattr(pool.agent, "deregister", fail_once)
        for item in items:
            item.region.allow_early_free()
        assert wait_until(lambda: all(i.released for i in items) and pool.lent_regions == 0)
        assert failed and pool._listener is not None and pool._listener.is_alive()
        deregister(failed[0])  # the registration the failure left
        later = register_media(decode_image(LOSSY["jpeg"]()), pool)
        assert "error" not in peer.read(later.descriptor)
        assert wait_until(lambda: later.released)  # early free still works

    def test_released_region_is_an_error_not_garbage(
        self, peer: Peer, pool: RegistrationPool
    ) -> None:
        first = register_media(decode_image(LOSSY["jpeg"]()), pool)
        stale = first.descriptor
        first.release()
        got = peer.read(stale)
        assert got["error"].startswith("ReadError: the lease")
        # The same memory lent again to another item: the stale descriptor still fails.
        second = register_media(decode_image(LOSSY["jpeg"](), layout="HWC"), pool)
        assert second.region.offset == first.region.offset
        assert "released before it was read" in peer.read(stale)["error"]
        # A descriptor from before lease words (guards only) is still checked by its guards.
        guards_only = stale | {"lease": {"id": first.region.lease_id, "guard_bytes": 16}}
        assert "released before it was read" in peer.read(guards_only)["error"]
        assert "error" not in peer.read(second.descriptor)

    def test_many_cycles_leave_nothing_behind(self, peer: Peer, pool: RegistrationPool) -> None:
        """Both paths (copies under the threshold, zero-copy above it), random failures, stale
        reads, double releases: no lease, budget byte or registration is left behind."""
        rng = random.Random(7)
        sizes = [rng.randrange(1, THRESHOLD) for _ in range(12)]
        sizes += [rng.randrange(THRESHOLD, 3 * MiB) for _ in range(4)]
        tensors = [torch.randint(0, 255, (n,), dtype=torch.uint8) for n in sizes]
        registrations = get_agent().registrations
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcomes = {"failed": 0, "read": 0, "stale": 0, "zero-copy": 0}
        for i in range(1000):
            media = DecodedMedia(tensors[i % 16], "image", {"layout": "CHW"})
            registered: RegisteredMedia | None = None
            try:
                registered = register_media(media, pool)
                outcomes["zero-copy"] += registered.region.zero_copy
                roll = rng.random()
                if roll < 0.1:
                    raise RuntimeError("a decode failed after registration")
                if roll < 0.2:
                    got = peer.read(registered.descriptor)
                    assert got["sha256"] == tensor_sha256(media.tensor)
                    outcomes["read"] += 1
                elif roll < 0.25:
                    registered.release()
                    got = peer.read(registered.descriptor)
                    assert got["error"].startswith("ReadError: the lease"), got
                    outcomes["stale"] += 1
            except RuntimeError:
                outcomes["failed"] += 1
            finally:
                if registered is not None:
                    registered.release()
                    registered.release()  # twice is harmless
        assert min(outcomes.values()) > 30, outcomes
        assert wait_until(lambda: pool.lent_regions == 0)
        assert pool.stats() == {
            "capacity_bytes": 64 << 20,
            "lent_bytes": 0,
            "lent": 0,
            "zero_copy": 0,
        }
        assert pool._free == [(0, 64 << 20)]  # coalesced back into one block
        assert get_agent().registrations == registrations  # every zero-copy one deregistered
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
        assert repr(pipe).endswith(
            " -> NixlRegister(capacity='64.0 MiB', mem_type='Dram', zero_copy_min='256.0 KiB')\n)"
        )
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


def random_bytes(nbytes: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 255, (nbytes,), dtype=torch.uint8, generator=generator)


def register(tensor: torch.Tensor, pool: RegistrationPool) -> RegisteredMedia:
    return register_media(DecodedMedia(tensor, "image", {"layout": "HWC"}), pool)


class TestZeroCopy:
    def test_items_arrive_byte_identical_on_both_paths(
        self, peer: Peer, pool: RegistrationPool
    ) -> None:
        jpeg = LOSSY["jpeg"]()
        cases = {
            "HWC image, under the threshold": (decode_image(jpeg, layout="HWC"), False),
            "CHW view of the same pixels": (decode_image(jpeg), False),
            "small tensor": (DecodedMedia(random_bytes(4 * KiB), "image", {}), False),
            "large tensor": (DecodedMedia(random_bytes(5 * MiB), "image", {}), True),
            "float32 audio": (DecodedMedia(torch.rand(2, 48_000), "audio", {}), True),
        }
        for name, (media, zero_copy) in cases.items():
            registered = register_media(media, pool)
            assert registered.region.zero_copy is zero_copy, name
            if zero_copy:  # the decoded tensor itself, no copy
                assert registered.descriptor["nixl_descriptor"]["addr"] == media.tensor.data_ptr()
                assert registered.descriptor["lease"]["guard_bytes"] == 0
            got = peer.read(json.loads(json.dumps(registered.descriptor)))
            assert "error" not in got, (name, got)
            assert got["sha256"] == tensor_sha256(media.tensor), name
            assert (got["shape"], got["dtype"]) == (
                list(media.tensor.shape),
                str(media.tensor.dtype),
            )
            registered.release()
        assert wait_until(lambda: pool.lent_regions == 0)
        assert pool.stats()["lent_bytes"] == 0

    def test_descriptor_is_dynamos_shape(self, peer: Peer, pool: RegistrationPool) -> None:
        tensor = random_bytes(MiB)
        registered = register(tensor, pool)
        d = registered.descriptor
        assert d["nixl_metadata"].startswith("b64:")
        assert d["nixl_descriptor"] == {
            "addr": tensor.data_ptr(),
            "size": MiB,
            "mem_type": "Dram",
            "device_id": 0,
        }
        assert (d["shape"], d["dtype"]) == ([MiB], "UINT8")
        # A reader that knows nothing of leases (Dynamo's) reads the right bytes.
        bare = {k: v for k, v in d.items() if k != "lease"}
        assert peer.read(bare)["sha256"] == tensor_sha256(tensor)
        registered.release()

    def test_one_tensor_in_two_leases(self, peer: Peer, pool: RegistrationPool) -> None:
        media = DecodedMedia(random_bytes(MiB), "image", {})
        first, second = register_media(media, pool), register_media(media, pool)
        assert first.region.zero_copy and second.region.zero_copy
        first.release()  # NIXL keeps the other registration of the same memory
        assert peer.read(second.descriptor)["sha256"] == tensor_sha256(media.tensor)
        assert peer.read(first.descriptor)["error"].startswith("ReadError: the lease")
        second.release()

    def test_choice_of_path(self, pool: RegistrationPool) -> None:
        big = random_bytes(THRESHOLD)
        assert pool.zero_copy(big)
        assert not pool.zero_copy(big[:-1])  # under the threshold
        assert not pool.zero_copy(big.view(2, -1).t())  # not contiguous
        never = RegistrationPool(capacity_bytes=MiB, zero_copy_min_bytes=None)
        assert not never.zero_copy(big)
        never.close()
        with pytest.raises(ValueError, match="contiguous tensor on cpu"):
            pool.lend_in_place(big.view(2, -1).t())

    def test_one_budget_for_both_paths(self, pool: RegistrationPool) -> None:
        held = pool.lend_in_place(random_bytes(40 * MiB))
        assert pool.stats() == {
            "capacity_bytes": 64 * MiB,
            "lent_bytes": 40 * MiB + 256,
            "lent": 1,
            "zero_copy": 1,
        }
        with pytest.raises(Overloaded, match="registration pool is full"):
            pool.lend(30 * MiB)  # the slab has room, the budget has not
        with pytest.raises(Overloaded, match="registration pool is full"):
            pool.lend_in_place(random_bytes(30 * MiB))
        with pytest.raises(LimitExceeded, match="larger than the NIXL registration pool"):
            pool.lend_in_place(random_bytes(64 * MiB))
        held.release()
        pool.lend_in_place(random_bytes(30 * MiB)).release()
        assert pool.stats()["lent_bytes"] == 0

    def test_waiter_wakes_when_a_zero_copy_lease_ends(self, pool: RegistrationPool) -> None:
        import threading

        held = pool.lend_in_place(random_bytes(60 * MiB))
        threading.Timer(0.05, held.release).start()
        assert pool.lend(30 * MiB, wait_ms=2000).nbytes == 30 * MiB


class TestStaleReads:
    def test_nixl_alone_reads_deregistered_memory(self, peer: Peer, pool: RegistrationPool) -> None:
        """Why the lease word exists: without it a stale descriptor reads today's bytes."""
        tensor = random_bytes(MiB, seed=1)
        registered = register(tensor, pool)
        stale = {k: v for k, v in registered.descriptor.items() if k != "lease"}
        assert peer.read(stale)["sha256"] == tensor_sha256(tensor)  # the backend caches metadata
        registered.release()
        tensor.copy_(random_bytes(MiB, seed=2))  # the memory now holds another item
        assert peer.read(stale)["sha256"] == tensor_sha256(tensor)

    def test_pool_region_lent_again(self, peer: Peer, pool: RegistrationPool) -> None:
        first = register(random_bytes(4 * KiB, seed=1), pool)
        stale = first.descriptor
        first.release()
        second = register(random_bytes(4 * KiB, seed=2), pool)
        assert second.region.addr == first.region.addr
        assert peer.read(stale)["error"].startswith(
            f"ReadError: the lease {first.region.lease_id} was released before it was read"
        )
        assert peer.read(second.descriptor)["sha256"] == tensor_sha256(second.media.tensor)

    def test_zero_copy_memory_written_again(self, peer: Peer, pool: RegistrationPool) -> None:
        tensor = random_bytes(MiB, seed=1)
        registered = register(tensor, pool)
        stale = registered.descriptor
        registered.release()
        tensor.copy_(random_bytes(MiB, seed=2))
        assert peer.read(stale)["error"].startswith("ReadError: the lease")

    def test_zero_copy_memory_registered_again(self, peer: Peer, pool: RegistrationPool) -> None:
        """The same address, registered again for another item: NIXL serves it; the lease does
        not."""
        backing = random_bytes(2 * MiB, seed=1)
        first = register(backing[:MiB], pool)
        stale = first.descriptor
        first.release()
        backing.copy_(random_bytes(2 * MiB, seed=2))
        second = register(backing[:MiB], pool)
        assert second.descriptor["nixl_descriptor"]["addr"] == stale["nixl_descriptor"]["addr"]
        assert peer.read(stale)["error"].startswith("ReadError: the lease")
        assert peer.read(second.descriptor)["sha256"] == tensor_sha256(backing[:MiB])
        second.release()

    def test_zero_copy_memory_freed(self, peer: Peer, pool: RegistrationPool) -> None:
        registered = register(random_bytes(8 * MiB, seed=1), pool)
        stale = registered.descriptor
        registered.release()
        del registered  # the tensor's memory goes back to the allocator, maybe to the OS
        reused = [random_bytes(8 * MiB, seed=2) for _ in range(2)]
        assert peer.read(stale)["error"].startswith("ReadError:")
        assert reused
