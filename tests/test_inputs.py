"""The input distributions on ``/metrics`` after a mixed load against ``dynamo-media serve``, the
``dynamo-media stats`` summary of them, and the limit names that refusals are counted by."""

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynamo_media import LimitExceeded, decode_audio, decode_image, decode_video
from dynamo_media.cli import main
from dynamo_media.config import AudioLimits, ImageLimits, VideoLimits
from dynamo_media.server._inputs import codec_label
from tests.images import picture
from tests.media import ffmpeg, numbered_video
from tests.serve import serving
from tests.test_audio import FORMATS, tone
from tests.test_video import clip

MODEL = "dynamo-media-echo"
CONFIG = {
    "decoder": {
        "image": {"limits": {"max_image_width": 400}},
        "video": {"fps": 2.0, "max_frames": 128, "limits": {"max_alloc": 64 << 20}},
        "audio": {"sample_rate": 16000, "num_channels": 1, "limits": {"max_duration_seconds": 5}},
    },
    "server": {"pool_capacity_bytes": 256 << 20},
}


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def part(kind: str, data: bytes, mime: str) -> dict[str, Any]:
    return {"type": kind, kind: {"url": data_url(data, mime)}}


def wide_png() -> bytes:
    return ffmpeg(
        "wide.png", "-f", "lavfi", "-i", "testsrc2=size=640x480", "-frames:v", "1"
    ).read_bytes()


def send(url: str, parts: list[dict[str, Any]], **extra: Any) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": parts}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of an exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def loaded() -> Iterator[str]:
    """A frontend after a known mixed load: 6 items served, one of them twice (from the cache
    the second time), and one refused per modality."""
    jpeg = part("image_url", picture("y.jpg").read_bytes(), "image/jpeg")
    png = part("image_url", picture("l.png").read_bytes(), "image/png")
    wav = base64.b64encode(tone(*FORMATS["wav-s16"])).decode()
    with serving(CONFIG, quiet=True) as url:
        assert send(url, [jpeg, part("video_url", clip("h264.mp4"), "video/mp4")]) == 200
        assert send(url, [jpeg, png]) == 200
        mp3 = part("audio_url", tone(*FORMATS["mp3"]), "audio/mpeg")
        assert send(url, [part("video_url", clip("vp9.webm"), "video/webm"), mp3]) == 200
        assert send(url, [{"type": "input_audio", "input_audio": {"data": wav}}]) == 200
        # Refused: a 640-px-wide image, 50 frames of 720p in 64 MiB, 6 s of audio over 5.
        assert send(url, [part("image_url", wide_png(), "image/png")]) == 400
        big = numbered_video("big.mp4", size="1280x720").read_bytes()
        fifty = {"media_io_kwargs": {"video": {"num_frames": 50}}}
        assert send(url, [part("video_url", big, "video/mp4")], **fifty) == 400
        long = tone("long.mp3", "-c:a", "libmp3lame", seconds=6.0)
        assert send(url, [part("audio_url", long, "audio/mpeg")]) == 400
        yield url


def bucket(name: str, le: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (f"{name}_bucket", tuple(sorted({**labels, "le": le}.items())))


def count(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


class TestInputMetrics:
    def test_counts_and_buckets_after_a_mixed_load(self, loaded: str) -> None:
        got = samples(httpx.get(f"{loaded}/metrics").text)
        expected = {
            # every item whose bytes arrived, refused ones included
            count("dynamo_media_input_bytes_count", modality="image"): 4,
            count("dynamo_media_input_bytes_count", modality="video"): 3,
            count("dynamo_media_input_bytes_count", modality="audio"): 3,
            # the served ones: 320x240 pictures and clips, 2 s long, 4 frames at 2 fps
            count("dynamo_media_input_image_pixels_count"): 3,
            bucket("dynamo_media_input_image_pixels", str(float(320 * 240))): 3,
            bucket("dynamo_media_input_video_source_pixels", str(float(320 * 240))): 2,
            bucket("dynamo_media_input_video_duration_seconds", "1.0"): 0,
            bucket("dynamo_media_input_video_duration_seconds", "5.0"): 2,
            bucket("dynamo_media_input_video_frames", "2.0"): 0,
            bucket("dynamo_media_input_video_frames", "4.0"): 2,
            bucket("dynamo_media_input_audio_duration_seconds", "1.0"): 0,
            bucket("dynamo_media_input_audio_duration_seconds", "5.0"): 2,
            count("dynamo_media_input_codecs_total", modality="image", codec="jpeg"): 2,
            count("dynamo_media_input_codecs_total", modality="image", codec="png"): 1,
            count("dynamo_media_input_codecs_total", modality="video", codec="h264"): 1,
            count("dynamo_media_input_codecs_total", modality="video", codec="vp9"): 1,
            count("dynamo_media_input_codecs_total", modality="audio", codec="mp3"): 1,
            count("dynamo_media_input_codecs_total", modality="audio", codec="pcm"): 1,
            count("dynamo_media_refusals_total", modality="image", limit="max_image_width"): 1,
            count("dynamo_media_refusals_total", modality="video", limit="max_alloc"): 1,
            count("dynamo_media_refusals_total", modality="audio", limit="max_duration_seconds"): 1,
            # the second jpeg; every other item was decoded (or refused while decoding)
            count("dynamo_media_cache_hits_total"): 1,
            count("dynamo_media_cache_misses_total"): 9,
        }
        assert {key: got.get(key) for key in expected} == expected
        codecs = {k for k in got if k[0] == "dynamo_media_input_codecs_total"}
        refusals = {k for k in got if k[0] == "dynamo_media_refusals_total"}
        assert len(codecs) == 6 and len(refusals) == 3  # no other label values

    def test_stats_command(self, loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["stats", loaded]) == 0
        out = capsys.readouterr().out
        bars = "#" * 30
        assert (
            "video frames sampled (2 items)\n"
            f"  <= 1{' ' * 45}0\n"
            f"  <= 2{' ' * 45}0\n"
            f"  <= 4{' ' * 13}{bars}  2\n"
        ) in out
        assert f"image pixels (3 items)\n  <= 320x240{' ' * 7}{bars}  3\n" in out
        assert "encoded bytes, audio (3 items)" in out
        assert (
            "codecs: audio mp3 1, audio pcm 1, image jpeg 2, image png 1, video h264 1, "
            "video vp9 1\n" in out
        )
        assert (
            "refusals: audio max_duration_seconds 1, image max_image_width 1, video max_alloc 1"
            in out
        )
        assert out.endswith("cache: hits 1, misses 9\n")

    def test_stats_command_without_a_server(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["stats", "http://127.0.0.1:9", "--timeout-ms", "2000"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: cannot read http://127.0.0.1:9/metrics: ")


@pytest.mark.parametrize(
    ("modality", "codec", "label"),
    [
        ("image", "jpeg", "jpeg"),
        ("image", "PNG", "png"),
        ("image", "ico", "other"),
        ("video", "hevc", "hevc"),
        ("video", "some-new-codec", "other"),
        ("audio", "pcm_s24le", "pcm"),
        ("audio", "opus", "opus"),
        ("audio", "wmav2", "other"),
    ],
)
def test_codec_labels_are_a_fixed_set(modality: str, codec: str, label: str) -> None:
    assert codec_label(modality, codec) == label


class TestLimitNames:
    """``LimitExceeded.limit`` names the option that refused the item, as the config spells it."""

    @pytest.mark.parametrize(
        ("limits", "name"),
        [
            (ImageLimits(max_image_width=100), "max_image_width"),
            (ImageLimits(max_image_height=100), "max_image_height"),
            (ImageLimits(max_alloc=1000), "max_alloc"),
        ],
    )
    def test_image(self, limits: ImageLimits, name: str) -> None:
        with pytest.raises(LimitExceeded) as info:
            decode_image(picture("y.jpg").read_bytes(), limits=limits)
        assert info.value.limit == name and f"limits.{name}" in str(info.value)

    @pytest.mark.parametrize(
        ("limits", "name"),
        [
            (VideoLimits(max_video_width=100), "max_video_width"),
            (VideoLimits(max_video_height=100), "max_video_height"),
            (VideoLimits(max_duration_seconds=1), "max_duration_seconds"),
            (VideoLimits(max_alloc=1000), "max_alloc"),
        ],
    )
    def test_video(self, limits: VideoLimits, name: str) -> None:
        with pytest.raises(LimitExceeded) as info:
            decode_video(clip("h264.mp4"), num_frames=4, limits=limits)
        assert info.value.limit == name and name in str(info.value)

    @pytest.mark.parametrize(
        ("limits", "name"),
        [
            (AudioLimits(max_duration_seconds=1), "max_duration_seconds"),
            (AudioLimits(max_alloc=1000), "max_alloc"),
        ],
    )
    def test_audio(self, limits: AudioLimits, name: str) -> None:
        with pytest.raises(LimitExceeded) as info:
            decode_audio(tone(*FORMATS["mp3"]), sample_rate=16000, limits=limits)
        assert info.value.limit == name and f"limits.{name}" in str(info.value)

    def test_named_for_its_item(self) -> None:
        err = LimitExceeded("too wide", limit="max_image_width").for_item("messages[0].content[0]")
        assert err.limit == "max_image_width" and err.param == "messages[0].content[0]"
