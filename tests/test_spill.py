"""The cache's file tier (``SpillDir``) on its own: entries written through NIXL's POSIX backend
(or plain I/O) come back byte for byte, the directory stays private and under its bound, a
damaged file is a miss, and nothing outlives the run. Through the app and a second process:
``TestFileTier`` in tests/test_cache.py."""

import stat
import subprocess
from pathlib import Path

import pytest
import torch

from dynamo_media import DecodedMedia, decode_image, decode_video
from dynamo_media._spill import SpillDir, read_seconds
from tests.images import picture
from tests.media import numbered_video

KiB = 1 << 10


def image_hwc() -> DecodedMedia:
    """A view with a non-trivial stride: HWC over CHW storage."""
    return decode_image(picture("y.jpg").read_bytes(), layout="HWC")


def video() -> DecodedMedia:
    return decode_video(numbered_video("h264.mp4").read_bytes(), num_frames=4)


def blob(nbytes: int, seed: int = 0) -> DecodedMedia:
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=generator)
    return DecodedMedia(data, "image", {"seed": seed}, None)


def files(spill: SpillDir) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in spill.path.iterdir()}


@pytest.mark.parametrize("io", ["nixl", "file"])
class TestSpillDir:
    def test_entries_come_back_byte_identical(self, tmp_path: Path, io: str) -> None:
        spill = SpillDir(tmp_path, 64 << 20, io=io)  # type: ignore[arg-type]
        assert spill.io == io  # NIXL's POSIX plugin is in the wheel
        try:
            for key, media in (("image", image_hwc()), ("video", video())):
                assert spill.put(key, media, decode_seconds=1.0)
                (name,) = files(spill)  # the one before was read back, and deleted
                mode = (spill.path / name).stat().st_mode
                assert stat.S_IMODE(mode) == 0o600
                taken = spill.take(key)
                assert taken is not None and key not in spill
                back, seconds = taken
                assert seconds == 1.0
                assert torch.equal(back.tensor, media.tensor)
                assert back.tensor.stride() == media.tensor.stride()
                assert back.tensor.shape == media.tensor.shape
                assert back.metadata == media.metadata and back.modality == media.modality
                assert files(spill) == {}  # read back: its file is gone
            assert stat.S_IMODE(spill.path.stat().st_mode) == 0o700
        finally:
            spill.close()

    def test_the_directory_never_passes_its_bound(self, tmp_path: Path, io: str) -> None:
        bound = 1000 * KiB
        spill = SpillDir(tmp_path, bound, io=io)  # type: ignore[arg-type]
        sizes = [300, 500, 100, 700, 200, 1000, 64, 400]
        try:
            for i, kib in enumerate(sizes):
                assert spill.put(f"k{i}", blob(kib * KiB, i), decode_seconds=1.0)
                on_disk = files(spill)
                assert sum(on_disk.values()) == spill.stats()["bytes"] <= bound
            # the newest that fit, oldest out first: 400 + 64 (1000 pushed the rest out)
            assert spill.stats() == {"capacity_bytes": bound, "bytes": 464 * KiB, "entries": 2}
            # larger than the bound: not written
            assert not spill.put("huge", blob(bound + 1), decode_seconds=1.0)
            # decoding again is no slower than reading back (Note [spill crossover])
            cheap = read_seconds(100 * KiB)
            assert not spill.put("cheap", blob(100 * KiB), decode_seconds=cheap)
            assert spill.stats()["entries"] == 2
            back = spill.take("k7")
            assert back is not None and torch.equal(back[0].tensor, blob(400 * KiB, 7).tensor)
        finally:
            spill.close()

    @pytest.mark.parametrize("damage", ["flip", "truncate", "grow", "delete"])
    def test_a_damaged_file_is_a_miss(self, tmp_path: Path, io: str, damage: str) -> None:
        spill = SpillDir(tmp_path, 1 << 20, io=io)  # type: ignore[arg-type]
        try:
            assert spill.put("k", blob(100 * KiB), decode_seconds=1.0)
            (name,) = files(spill)
            path = spill.path / name
            data = bytearray(path.read_bytes())
            if damage == "flip":
                data[50_000] ^= 1
                path.write_bytes(data)
            elif damage == "truncate":
                path.write_bytes(data[:-1])
            elif damage == "grow":
                path.write_bytes(data + b"\0")
            else:
                path.unlink()
            assert spill.take("k") is None
            assert files(spill) == {} and spill.stats()["bytes"] == 0
        finally:
            spill.close()


class TestRunDirectory:
    def test_close_removes_the_run_directory(self, tmp_path: Path) -> None:
        spill = SpillDir(tmp_path, 1 << 20)
        assert spill.put("k", blob(100 * KiB), decode_seconds=1.0)
        spill.close()
        assert list(tmp_path.iterdir()) == []
        assert not spill.put(
            "late", blob(100 * KiB), decode_seconds=1.0
        )  # after close, nothing is written
        assert list(tmp_path.iterdir()) == []

    def test_start_removes_what_a_dead_run_left(self, tmp_path: Path) -> None:
        gone = subprocess.Popen(["true"])
        gone.wait()
        stale = tmp_path / f"dynamo-media-cache-{gone.pid}-abc"
        stale.mkdir()
        (stale / "1.bin").write_bytes(b"x" * 10)
        live = SpillDir(tmp_path, 1 << 20)  # this process: alive, kept by the next start
        other = tmp_path / "not-ours"
        other.mkdir()
        try:
            second = SpillDir(tmp_path, 1 << 20)
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
                [live.path.name, second.path.name, "not-ours"]
            )
            second.close()
        finally:
            live.close()

    def test_bad_arguments(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="capacity_bytes must be > 0, got 0"):
            SpillDir(tmp_path, 0)
        with pytest.raises(ValueError, match=r"Invalid io \('disk'\)"):
            SpillDir(tmp_path, 1, io="disk")  # type: ignore[arg-type]
