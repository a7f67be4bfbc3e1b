import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from dynamo_media import (
    DecodeError,
    EncodedMedia,
    InvalidOptions,
    LimitExceeded,
    MediaDecoder,
    MediaFetcher,
    VideoLimits,
    VideoOptions,
    decode_video,
    probe_video,
    sample_frame_indices,
)
from dynamo_media.config import SamplingRule
from dynamo_media.sampling import SAMPLING_RULES
from dynamo_media.transforms import CheckVideoLimits, Compose, DecodeVideo
from tests.conftest import DEVICES
from tests.media import CACHE, ffmpeg, numbered_video, read_frame_number
from tests.media_server import MediaServer
from tests.memory import peak_delta

# Containers and codecs users send; each clip is 50 frames at 25 fps with its index drawn in.
CODECS = {
    "h264.mp4": None,
    "h265.mp4": ["-c:v", "libx265", "-x265-params", "log-level=error", "-g", "25"],
    "vp8.webm": ["-c:v", "libvpx", "-g", "25", "-b:v", "1M"],
    "vp9.webm": ["-c:v", "libvpx-vp9", "-g", "25", "-b:v", "1M", "-cpu-used", "8"],
    "h264.mkv": ["-c:v", "libx264", "-g", "25"],
    "h264.mov": ["-c:v", "libx264", "-g", "25"],
    "mjpeg.avi": ["-c:v", "mjpeg", "-q:v", "3"],
    "anim.gif": ["-c:v", "gif"],
}


def clip(name: str = "h264.mp4") -> bytes:
    return numbered_video(name, codec=CODECS[name]).read_bytes()


def numbers(frames: torch.Tensor) -> list[int]:
    return [read_frame_number(f) for f in frames]


def vfr_clip() -> bytes:
    """Frames 0-24 at 25 fps, then 10 fps: 2.5 s of 50 frames."""
    src = numbered_video("vfr-src.mkv", codec=["-c:v", "ffv1"])
    return ffmpeg(
        "vfr.mp4",
        "-i",
        str(src),
        "-vf",
        "setpts='if(lt(N,25),N/25,1+(N-25)/10)/TB'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-g",
        "25",
    ).read_bytes()


class TestDecodeVideo:
    @pytest.mark.parametrize("name", sorted(CODECS))
    @pytest.mark.parametrize("strict", [False, True])
    def test_num_frames_in_every_container(self, name: str, strict: bool) -> None:
        out = decode_video(clip(name), num_frames=7, strict=strict)
        want = sample_frame_indices(50, 2.0, num_frames=7)
        assert out.metadata["frames_indices"] == want
        assert numbers(out.tensor) == want
        assert out.tensor.shape == (7, 3, 240, 320) and out.tensor.dtype == torch.uint8
        assert out.metadata["source_total_frames"] == 50

    @pytest.mark.parametrize("name", sorted(CODECS))
    def test_fps_in_every_container(self, name: str) -> None:
        out = decode_video(clip(name), fps=3.0)
        duration = out.metadata["source_duration_seconds"]
        assert duration == pytest.approx(2.0, abs=0.05)
        want = sample_frame_indices(50, duration, fps=3.0)
        assert len(want) == 6
        assert numbers(out.tensor) == out.metadata["frames_indices"] == want
        assert out.metadata["pts_seconds"] == pytest.approx([i / 25 for i in want], abs=1e-3)

    def test_all_frames_capped_by_max_frames(self) -> None:
        assert numbers(decode_video(clip()).tensor) == list(range(50))
        assert numbers(decode_video(clip(), max_frames=3).tensor) == [0, 25, 49]

    def test_more_frames_than_the_video_has(self) -> None:
        out = decode_video(clip(), num_frames=80)
        assert numbers(out.tensor) == list(range(50))
        with pytest.raises(InvalidOptions, match="80 frames requested but the video has only 50"):
            decode_video(clip(), num_frames=80, strict=True)

    @pytest.mark.parametrize(
        ("rule", "expected"),
        [
            ("uniform", [0, 16, 33, 49]),
            ("qwen2_vl", [0, 12, 25, 37]),
            ("llava_onevision", [0, 12, 25, 37]),
            ("internvl", [6, 18, 31, 43]),
        ],
    )
    @pytest.mark.parametrize("name", ["h264.mp4", "anim.gif"])
    def test_sampling_rules(self, name: str, rule: SamplingRule, expected: list[int]) -> None:
        out = decode_video(clip(name), sampling=rule, fps=2.0)
        assert numbers(out.tensor) == out.metadata["frames_indices"] == expected

    @pytest.mark.parametrize("rule", SAMPLING_RULES)
    @pytest.mark.parametrize(
        "kwargs",
        [{"fps": 0.5}, {"num_frames": 7}, {"num_frames": 80}, {"max_frames": 9}, {"fps": 3.0}],
    )
    def test_sampling_rules_return_the_chosen_frames(
        self, rule: SamplingRule, kwargs: dict
    ) -> None:
        out = decode_video(clip(), sampling=rule, **kwargs)
        duration = out.metadata["source_duration_seconds"]
        want = sample_frame_indices(50, duration, sampling=rule, **kwargs)
        assert numbers(out.tensor) == out.metadata["frames_indices"] == want

    def test_explicit_indices(self) -> None:
        assert numbers(decode_video(clip(), indices=[0, 7, 49]).tensor) == [0, 7, 49]
        assert numbers(decode_video(clip(), indices=(3, 60)).tensor) == [3]
        with pytest.raises(InvalidOptions, match="indices up to 60 .* only 50 frames"):
            decode_video(clip(), indices=[3, 60], strict=True)

    @pytest.mark.parametrize("name", ["h264.mp4", "anim.gif", "vp9.webm"])
    def test_time_window(self, name: str) -> None:
        # [0.5, 1.5): frames 13 (pts 0.52) to 37 (pts 1.48)
        out = decode_video(clip(name), num_frames=5, start_seconds=0.5, end_seconds=1.5)
        assert numbers(out.tensor) == [13, 19, 25, 31, 37]
        out = decode_video(clip(name), fps=3.0, start_seconds=0.52, end_seconds=1.48)
        assert numbers(out.tensor) == [13, 36]  # floor(0.96 s * 3) = 2; frame 37 starts at 1.48
        with pytest.raises(InvalidOptions, match="no frame starts in"):
            decode_video(clip(name), start_seconds=2.5)

    def test_time_window_reads_the_timestamps(self) -> None:
        # Frames 25-34 show at 10 fps from 1.0 s; a constant rate would put 1.0-2.0 s at 25-49.
        out = decode_video(
            vfr_clip(), sampling="llava_onevision", start_seconds=1.0, end_seconds=2.0
        )
        assert numbers(out.tensor) == list(range(25, 35))
        assert out.metadata["pts_seconds"][0] == pytest.approx(1.0, abs=1e-3)

    def test_conflicts_fail_before_reading(self) -> None:
        with pytest.raises(InvalidOptions, match="fps and indices are mutually exclusive"):
            decode_video(b"", fps=1.0, indices=[1])
        with pytest.raises(InvalidOptions, match=r"Invalid VideoOptions.sampling \('x'\)"):
            decode_video(b"", sampling="x")  # type: ignore[arg-type]

    def test_metadata_and_layout(self) -> None:
        out = decode_video(clip(), num_frames=2, layout="THWC")
        assert out.tensor.shape == (2, 240, 320, 3)
        meta = out.metadata
        assert meta["layout"] == "THWC" and meta["codec"] == "h264"
        assert (meta["width"], meta["height"]) == (320, 240)
        assert meta["source_fps"] == pytest.approx(25.0)
        tchw = decode_video(clip(), num_frames=2).tensor
        assert torch.equal(out.tensor, tchw.permute(0, 2, 3, 1))

    def test_variable_frame_rate(self) -> None:
        out = decode_video(vfr_clip(), num_frames=5)
        assert numbers(out.tensor) == [0, 12, 25, 37, 49]
        assert out.metadata["pts_seconds"] == pytest.approx([0.0, 0.48, 1.0, 2.2, 3.4], abs=1e-3)

    def test_frame_count_missing_from_header(self) -> None:
        from torchcodec.decoders import Demuxer

        data = clip("h264.mkv")
        assert Demuxer(data).streams[0].metadata.num_frames_from_header is None
        assert probe_video(data).total_frames == 50

    def test_resize_inside_the_decoder(self) -> None:
        out = decode_video(clip(), num_frames=4, max_pixels=160 * 120)
        assert out.tensor.shape == (4, 3, 120, 160)
        assert numbers(out.tensor) == [0, 16, 33, 49]
        assert (out.metadata["source_width"], out.metadata["width"]) == (320, 160)

    def test_resize_keeps_aspect_and_even_sizes(self) -> None:
        out = decode_video(clip(), num_frames=1, max_pixels=10_000)
        _, _, h, w = out.tensor.shape
        assert h * w <= 10_000 and h % 2 == 0 and w % 2 == 0
        assert w / h == pytest.approx(320 / 240, rel=0.05)

    def test_truncated_clip_strict_and_not(self) -> None:
        faststart = ["-c:v", "libx264", "-g", "25", "-movflags", "+faststart"]
        data = numbered_video("fast.mp4", codec=faststart).read_bytes()
        cut = data[: len(data) * 3 // 4]
        out = decode_video(cut, num_frames=10)
        kept = out.metadata["frames_indices"]
        asked = sample_frame_indices(probe_video(cut).total_frames, None, num_frames=10)
        assert 0 < len(kept) < len(asked) and set(kept) < set(asked)
        assert numbers(out.tensor) == kept
        with pytest.raises(DecodeError, match="failed to decode .* set strict=False"):
            decode_video(cut, num_frames=10, strict=True)

    def test_corrupt_packets(self) -> None:
        noisy = ffmpeg(
            "noisy.mkv",
            "-i",
            str(numbered_video("h264.mp4")),
            "-c",
            "copy",
            "-bsf:v",
            "noise=amount=50",
        ).read_bytes()
        with pytest.raises(DecodeError, match="failed to decode"):
            decode_video(noisy, num_frames=10, strict=True)
        with pytest.raises(DecodeError, match="no sampled frame could be decoded"):
            decode_video(noisy, num_frames=10)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "empty video data"),
            (b"not a video at all" * 100, "not a video container"),
        ],
    )
    def test_not_a_video(self, data: bytes, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            decode_video(data)

    def test_audio_only(self) -> None:
        tone = ffmpeg("tone.m4a", "-f", "lavfi", "-i", "sine=frequency=440:duration=1")
        with pytest.raises(DecodeError, match="no video stream"):
            decode_video(tone.read_bytes())

    @pytest.mark.parametrize("device", DEVICES)
    def test_devices(self, device: str) -> None:
        out = decode_video(clip(), num_frames=5, device=device)
        assert out.tensor.device.type == device
        assert numbers(out.tensor.cpu()) == [0, 12, 25, 37, 49]


class TestVideoLimits:
    def test_many_frames_refused_before_decoding(self) -> None:
        many = ffmpeg(
            "30000.mp4",
            "-f",
            "lavfi",
            "-i",
            "color=c=gray:size=320x240:rate=1000:duration=30",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "1000",
        ).read_bytes()
        with pytest.raises(
            LimitExceeded,
            match=r"30000 frames of 320x240 RGB need 6\.4 GiB, over limits\.max_alloc \(1\.0 GiB\)"
            "; lower fps, num_frames, max_frames or max_pixels",
        ):
            decode_video(many)
        result = peak_delta(
            setup=f"""
                from dynamo_media import decode_video
                data = open({str(_path("30000.mp4"))!r}, "rb").read()
                decode_video(data, num_frames=2)  # warm up
            """,
            body="decode_video(data)",
        )
        assert result["error"].startswith("LimitExceeded")
        assert result["peak_delta_mib"] < 20

    def test_resolution_and_duration(self) -> None:
        with pytest.raises(LimitExceeded, match=r"320x240, over limits.max_video_width"):
            decode_video(clip(), limits=VideoLimits(max_video_width=300))
        with pytest.raises(LimitExceeded, match=r"lasts 2\.0 s, over limits.max_duration_seconds"):
            decode_video(clip(), limits=VideoLimits(max_duration_seconds=1.5))

    def test_max_alloc_counts_the_resized_frames(self) -> None:
        limits = VideoLimits(max_alloc=10 * 160 * 120 * 3)
        with pytest.raises(LimitExceeded, match="11 frames of 320x240"):
            decode_video(clip(), num_frames=11, limits=VideoLimits(max_alloc=10 * 320 * 240 * 3))
        assert decode_video(clip(), num_frames=10, max_pixels=160 * 120, limits=limits)

    def test_max_alloc_counts_the_rules_frames(self) -> None:
        limits = VideoLimits(max_alloc=3 * 320 * 240 * 3)
        assert len(decode_video(clip(), fps=0.5, limits=limits).tensor) == 1
        with pytest.raises(LimitExceeded, match="4 frames of 320x240"):  # qwen2_vl: min_frames 4
            decode_video(clip(), sampling="qwen2_vl", fps=0.5, limits=limits)
        with pytest.raises(LimitExceeded, match="4 frames of 320x240"):
            CheckVideoLimits(limits, indices=[0, 1, 2, 3])(EncodedMedia.from_bytes(clip()))


def _path(name: str) -> Path:
    """The cached file of a recorded command."""
    return next(CACHE.glob(f"*-{name}"))


class TestTransforms:
    def test_check_then_decode(self) -> None:
        enc = EncodedMedia.from_bytes(clip(), mime="video/mp4")
        checked = CheckVideoLimits(num_frames=4)(enc)
        assert checked.probe.frames_indices == [0, 16, 33, 49]
        out = DecodeVideo(num_frames=4)(checked)
        assert numbers(out.tensor) == [0, 16, 33, 49]
        assert out.content_hash is not None
        with pytest.raises(LimitExceeded):
            CheckVideoLimits(VideoLimits(max_alloc=1000), num_frames=4)(enc)

    def test_check_and_decode_cannot_disagree(self) -> None:
        # This printed DecodeVideo(num_frames=16) and returned 4 frames before issue #14.
        enc = EncodedMedia.from_bytes(clip(), mime="video/mp4")
        pipe = Compose([CheckVideoLimits(num_frames=4), DecodeVideo(num_frames=16)])
        assert "CheckVideoLimits(num_frames=4" in repr(pipe)
        with pytest.raises(InvalidOptions, match="num_frames=4 vs 16"):
            pipe(enc)

    @pytest.mark.parametrize(
        "options",
        [
            {"sampling": "internvl", "num_frames": 4},
            {"indices": [1, 2, 40]},
            {"start_seconds": 0.5, "end_seconds": 1.5, "num_frames": 3},
            {"min_frames": 3, "fps": 0.5},
            {"frames_multiple": 4, "num_frames": 7},
        ],
    )
    def test_check_and_decode_agree_on_every_sampling_option(self, options: dict) -> None:
        enc = EncodedMedia.from_bytes(clip(), mime="video/mp4")
        checked = CheckVideoLimits(**options)(enc)
        assert numbers(DecodeVideo(**options)(checked).tensor) == checked.probe.frames_indices
        with pytest.raises(InvalidOptions, match="under other options"):
            DecodeVideo(num_frames=4)(checked)

    def test_disagreeing_rule_is_named(self) -> None:
        enc = EncodedMedia.from_bytes(clip(), mime="video/mp4")
        checked = CheckVideoLimits(sampling="internvl", num_frames=4)(enc)
        with pytest.raises(InvalidOptions, match="sampling='internvl' vs 'uniform'"):
            DecodeVideo(num_frames=4)(checked)

    def test_conflicting_options_fail_at_construction(self) -> None:
        with pytest.raises(InvalidOptions, match="mutually exclusive"):
            DecodeVideo(fps=2.0, num_frames=8)
        with pytest.raises(InvalidOptions, match="num_frames and indices are mutually exclusive"):
            CheckVideoLimits(num_frames=8, indices=[1])
        with pytest.raises(InvalidOptions, match="indices and start_seconds/end_seconds"):
            DecodeVideo(indices=[1], end_seconds=1.0)
        with pytest.raises(InvalidOptions, match=r"min_frames \(8\) must be <= max_frames"):
            DecodeVideo(min_frames=8, max_frames=4)
        with pytest.raises(InvalidOptions, match=r"Invalid VideoOptions.layout \('CTHW'\)"):
            DecodeVideo(layout="CTHW")  # type: ignore[arg-type]

    def test_pipeline_with_media_io_kwargs(
        self, server: MediaServer, fetcher: MediaFetcher
    ) -> None:
        decoder = MediaDecoder()
        decoder.enable_video({"fps": 2.0, "max_frames": 128})
        url = server.url(server.add("v.mp4", clip(), "video/mp4"))
        pipe = decoder.pipeline("video", fetcher=fetcher, overrides={"num_frames": 3})
        assert "DecodeVideo(num_frames=3, max_frames=128)" in repr(pipe)
        assert numbers(pipe(url).tensor) == [0, 25, 49]
        assert numbers(decoder.pipeline("video", fetcher=fetcher)(url).tensor) == [0, 16, 33, 49]
        # A rule keeps the configured fps; indices replace it.
        pipe = decoder.pipeline("video", fetcher=fetcher, overrides={"sampling": "internvl"})
        assert "DecodeVideo(sampling='internvl', fps=2.0, max_frames=128)" in repr(pipe)
        assert numbers(pipe(url).tensor) == [6, 18, 31, 43]
        pipe = decoder.pipeline("video", fetcher=fetcher, overrides={"indices": [1, 2, 3]})
        assert numbers(pipe(url).tensor) == [1, 2, 3]


class TestProbeSignatures:
    """probe_video and CheckVideoLimits take VideoOptions' names, but the output's (layout);
    tests/test_signatures.py checks decode_video and DecodeVideo."""

    @staticmethod
    def names(f: object) -> set[str]:
        params = inspect.signature(f).parameters.values()  # type: ignore[arg-type]
        return {p.name for p in params if p.name not in ("self", "source")}

    def test_probe_video(self) -> None:
        fields = {f.name for f in dataclasses.fields(VideoOptions)} - {"layout"}
        assert self.names(probe_video) == fields | {"device"}
        assert self.names(CheckVideoLimits.__init__) == fields | {"device"}
